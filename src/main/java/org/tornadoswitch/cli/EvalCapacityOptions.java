package org.tornadoswitch.cli;

import org.tornadoswitch.Config;
import picocli.CommandLine.Option;

/**
 * Overrides of a checkpoint's evaluation capacity for `eval` and `generate`: they change no
 * parameter, so a model trained with labml's rule can still generate without dropping tokens.
 */
public final class EvalCapacityOptions {
    @Option(names = "--eval-capacity-factor", paramLabel = "F",
            description = "Capacity factor of this evaluation or generation; 0 = the training capacity (default: the checkpoint's).")
    Double evalCapacityFactor;
    @Option(names = "--eval-drop-tokens", negatable = true,
            description = "--no-eval-drop-tokens: drop no token in this evaluation or generation (default: the checkpoint's).")
    Boolean evalDropTokens;

    /** The checkpoint's config with the overrides given on the command line, validated. */
    public Config apply(Config c) {
        if (evalCapacityFactor != null) c = c.with("evalCapacityFactor", evalCapacityFactor);
        if (evalDropTokens != null) c = c.with("evalDropTokens", evalDropTokens);
        return c.validate();
    }
}
