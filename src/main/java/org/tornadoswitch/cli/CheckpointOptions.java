package org.tornadoswitch.cli;

import java.nio.file.Path;
import picocli.CommandLine.Option;

/** The run directory a trained model is loaded from. */
public final class CheckpointOptions {
    @Option(names = "--checkpoint", paramLabel = "DIR", description = "Run directory written by train (default: ${DEFAULT-VALUE}).")
    Path checkpoint = Path.of("runs", "latest");
}
