package org.tornadoswitch.cli;

import java.util.concurrent.Callable;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.train.Checkpoint;
import org.tornadoswitch.train.Sampler;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "generate", mixinStandardHelpOptions = true, description = "Generate text from a prompt with a trained model.")
public final class GenerateCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    private java.io.PrintWriter out() {
        return spec.commandLine().getOut();
    }

    @Mixin CheckpointOptions ckpt;
    @Mixin RunSetup setup;
    @Mixin EvalCapacityOptions capacity;
    @Option(names = "--prompt", description = "Text to continue (default: ${DEFAULT-VALUE}).")
    String prompt = "It is ";
    @Option(names = "--length", description = "Characters to generate (default: ${DEFAULT-VALUE}).")
    int length = 500;
    @Option(names = "--temperature", description = "0 = greedy; otherwise sample at this temperature (default: ${DEFAULT-VALUE}).")
    double temperature = 0.8;
    @Option(names = "--seed", description = "Sampling seed (default: ${DEFAULT-VALUE}).")
    long seed = 1;

    @Override
    public Integer call() {
        if (length < 0) throw new IllegalArgumentException("--length must be >= 0, got " + length);
        if (!(temperature >= 0)) throw new IllegalArgumentException("--temperature must be >= 0, got " + temperature);
        Checkpoint.State st = Checkpoint.load(ckpt.checkpoint, false);
        org.tornadoswitch.Config cfg = capacity.apply(st.config());
        st.tokenizer().encode(prompt.isEmpty() ? "\n" : prompt); // fails with the offending character
        try (SwitchModel m = setup.buildModel(cfg, st.tokenizer().size(), st.params())) {
            out().println(Sampler.generate(m, st.tokenizer(), prompt, length, temperature, seed));
        }
        return 0;
    }
}
