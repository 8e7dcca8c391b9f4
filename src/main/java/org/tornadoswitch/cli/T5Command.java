package org.tornadoswitch.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code t5 ...}: Hugging Face SwitchTransformers (T5 encoder-decoder) checkpoints. */
@Command(name = "t5", mixinStandardHelpOptions = true,
        description = "Hugging Face SwitchTransformers checkpoints (T5 encoder-decoder): tokenize, ...",
        subcommands = {T5TokenizeCommand.class})
public final class T5Command implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing t5 subcommand (tokenize)");
    }
}
