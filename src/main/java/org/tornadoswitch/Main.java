package org.tornadoswitch;

import java.io.PrintWriter;
import org.tornadoswitch.backend.Backends;
import org.tornadoswitch.cli.BenchCommand;
import org.tornadoswitch.cli.ChartCommand;
import org.tornadoswitch.cli.DevicesCommand;
import org.tornadoswitch.cli.EvalCommand;
import org.tornadoswitch.cli.GenerateCommand;
import org.tornadoswitch.cli.T5Command;
import org.tornadoswitch.cli.TrainCommand;
import org.tornadoswitch.data.Corpus;
import org.tornadoswitch.train.Checkpoint;
import picocli.CommandLine;
import picocli.CommandLine.Command;

@Command(name = "tornado-switch", mixinStandardHelpOptions = true, version = "tornado-switch 0.1.0",
        description = "A Switch Transformer (mixture-of-experts) character language model, trained in Java.",
        subcommands = {TrainCommand.class, GenerateCommand.class, EvalCommand.class, BenchCommand.class, ChartCommand.class,
                DevicesCommand.class, T5Command.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand (train, generate, eval, bench, devices, t5)");
    }

    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main());
        cl.setCaseInsensitiveEnumValuesAllowed(true); // --drop-policy position
        // bad usage: one line and exit code 2, no usage dump
        cl.setParameterExceptionHandler((ex, args) -> {
            PrintWriter err = ex.getCommandLine().getErr();
            err.println("error: " + ex.getMessage() + " (try --help)");
            return CommandLine.ExitCode.USAGE;
        });
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            PrintWriter err = cmd.getErr();
            if (ex instanceof Config.ConfigException || ex instanceof Corpus.DataException
                    || ex instanceof Checkpoint.CheckpointException || ex instanceof org.tornadoswitch.hf.HfFormatException
                    || ex instanceof IllegalArgumentException) {
                err.println("error: " + ex.getMessage());
                return CommandLine.ExitCode.USAGE;
            }
            if (ex instanceof org.tornadoswitch.train.Trainer.DivergedException) {
                err.println("error: " + ex.getMessage());
                return 1;
            }
            if (ex instanceof Backends.BackendUnavailableException) {
                err.println("error: " + ex.getMessage());
                return 3;
            }
            throw ex;
        });
        return cl;
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }
}
