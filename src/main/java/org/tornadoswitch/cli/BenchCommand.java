package org.tornadoswitch.cli;

import java.util.concurrent.Callable;
import org.tornadoswitch.Config;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "bench", mixinStandardHelpOptions = true, description = "Fixed training benchmark: warm-up, then timed steps.")
public final class BenchCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    private java.io.PrintWriter out() {
        return spec.commandLine().getOut();
    }

    @Mixin ModelOptions model;
    @Mixin RunSetup setup;
    @Option(names = "--warmup-steps", description = "Untimed steps first (default: ${DEFAULT-VALUE}).")
    int warmupSteps = 5;
    @Option(names = "--steps", description = "Timed steps (default: ${DEFAULT-VALUE}).")
    int steps = 20;
    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Override
    public Integer call() {
        Config cfg = model.toConfig();
        if (steps < 1 || warmupSteps < 0) throw new IllegalArgumentException("--steps must be >= 1 and --warmup-steps >= 0");
        RunSetup.Data data = setup.loadData(cfg, null);
        Batcher b = data.batcher();
        Rng rng = new Rng(cfg.seed());
        try (SwitchModel m = setup.buildModel(cfg, data.tokenizer().size(), null)) {
            for (int i = 0; i < warmupSteps; i++) {
                b.nextTrain(rng);
                m.trainStep(b.inputs(), b.targets(), cfg.batchSize(), cfg.seqLen());
            }
            long t0 = System.nanoTime();
            double loss = 0;
            for (int i = 0; i < steps; i++) {
                b.nextTrain(rng);
                loss = m.trainStep(b.inputs(), b.targets(), cfg.batchSize(), cfg.seqLen()).loss;
            }
            double sec = (System.nanoTime() - t0) / 1e9;
            double stepMs = 1000 * sec / steps, tps = (double) steps * cfg.tokensPerBatch() / sec;
            if (json) {
                var o = new com.fasterxml.jackson.databind.ObjectMapper().createObjectNode();
                o.put("backend", setup.backend);
                o.put("device", m.backend().describe());
                o.put("tokens_per_s", tps);
                o.put("step_ms", stepMs);
                o.put("compile_s", m.backend().compileSeconds());
                o.put("loss", loss);
                o.put("steps", warmupSteps + steps);
                out().println(o.toString());
            }
            else
                out().printf("%s: %.1f ms/step, %.0f tokens/s, loss %.4f after %d steps%n",
                        m.backend().describe(), stepMs, tps, loss, warmupSteps + steps);
        }
        return 0;
    }
}
