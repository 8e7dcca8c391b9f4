package org.tornadoswitch.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code t5 ...}: Hugging Face SwitchTransformers (T5 encoder-decoder) checkpoints. */
@Command(name = "t5", mixinStandardHelpOptions = true,
        description = "Hugging Face SwitchTransformers checkpoints (T5 encoder-decoder): generate, logits, loss, finetune, tokenize.",
        subcommands = {T5GenerateCommand.class, T5LogitsCommand.class, T5LossCommand.class, T5FinetuneCommand.class, T5BenchCommand.class,
                T5TokenizeCommand.class})
public final class T5Command implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing t5 subcommand (generate, logits, loss, finetune, tokenize)");
    }
}
