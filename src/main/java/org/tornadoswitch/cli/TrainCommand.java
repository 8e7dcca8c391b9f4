package org.tornadoswitch.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.tornadoswitch.Config;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.train.Checkpoint;
import org.tornadoswitch.train.Trainer;
import org.tornadoswitch.util.Rng;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Train a Switch Transformer (or the dense baseline) on a text; evaluates, samples and saves a checkpoint.")
public final class TrainCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    private java.io.PrintWriter out() {
        return spec.commandLine().getOut();
    }

    @Mixin ModelOptions model;
    @Mixin RunSetup setup;
    @Option(names = "--steps", description = "Training steps (default: ${DEFAULT-VALUE}).")
    int steps = 2000;
    @Option(names = "--eval-every", description = "Evaluate and print a sample every N steps; 0 = only at the end (default: ${DEFAULT-VALUE}).")
    int evalEvery = 250;
    @Option(names = "--eval-batches", description = "Validation batches per periodic evaluation; the final one uses the whole split (default: ${DEFAULT-VALUE}).")
    int evalBatches = 16;
    @Option(names = "--final-eval-batches", description = "Validation batches of the final evaluation; 0 = the whole split (default: ${DEFAULT-VALUE}).")
    int finalEvalBatches = 0;
    @Option(names = "--metrics", paramLabel = "FILE", description = "Write per-step metrics as JSON lines (default: OUT/metrics.jsonl).")
    Path metrics;
    @Option(names = "--out", paramLabel = "DIR", description = "Run directory for the checkpoint and metrics (default: ${DEFAULT-VALUE}).")
    Path out = Path.of("runs", "latest");
    @Option(names = "--prompt", description = "Prompt for samples (default: ${DEFAULT-VALUE}).")
    String prompt = "It is ";
    @Option(names = "--sample-length", description = "Characters per sample; 0 = no samples (default: ${DEFAULT-VALUE}).")
    int sampleLength = 200;
    @Option(names = "--quiet", description = "No progress bar.")
    boolean quiet;

    @Override
    public Integer call() throws Exception {
        Config cfg = model.toConfig();
        if (steps < 1) throw new IllegalArgumentException("--steps must be >= 1, got " + steps);
        if (evalEvery < 0) throw new IllegalArgumentException("--eval-every must be >= 0, got " + evalEvery);
        if (evalBatches < 0) throw new IllegalArgumentException("--eval-batches must be >= 0, got " + evalBatches);
        if (finalEvalBatches < 0) throw new IllegalArgumentException("--final-eval-batches must be >= 0, got " + finalEvalBatches);
        if (sampleLength < 0) throw new IllegalArgumentException("--sample-length must be >= 0, got " + sampleLength);
        RunSetup.Data data = setup.loadData(cfg, null);
        data.tokenizer().encode(prompt.isEmpty() ? "\n" : prompt);
        ParamLayout layout = new ParamLayout(cfg, data.tokenizer().size());
        long active = layout.size() - (long) cfg.layers() * (cfg.numExperts() - 1) * (2L * cfg.dModel() * cfg.dFf() + cfg.dFf() + cfg.dModel());
        out().printf("%s model: %d layers, d_model %d, %d expert(s), capacity factor %.2f; %,d parameters (%,d active per token); vocab %d; %,d train / %,d valid characters%n",
                cfg.switchBlocks() ? "Switch" : "Dense", cfg.layers(), cfg.dModel(), cfg.numExperts(), cfg.capacityFactor(),
                layout.size(), active, data.tokenizer().size(), data.batcher().trainSize(), data.batcher().validSize());
        try (SwitchModel m = setup.buildModel(cfg, data.tokenizer().size(), null)) {
            out().println("backend: " + m.backend().describe());
            Rng dataRng = new Rng(cfg.seed() ^ 0xDA7AL);
            Path metricsFile = metrics != null ? metrics : out.resolve("metrics.jsonl");
            Trainer trainer = new Trainer(m, data.tokenizer(), data.batcher(), dataRng,
                    new Trainer.Options(steps, evalEvery, evalBatches, finalEvalBatches, metricsFile, out, prompt, sampleLength, quiet), out());
            Trainer.Summary s = trainer.run();
            float[][] mv = m.backend().adamMoments();
            Checkpoint.save(out, new Checkpoint.State(cfg, data.tokenizer(), m.step(), dataRng.state(), m.dropRng().state(),
                    m.backend().params(), mv[0], mv[1]));
            out().printf("done: %d steps, train loss %.4f, valid loss %.4f, valid accuracy %.3f, %.0f tokens/s (%.1f s training)%n",
                    s.steps(), s.trainLoss(), s.validLoss(), s.validAccuracy(), s.tokensPerS(), s.seconds());
            out().println("checkpoint: " + out + "  metrics: " + metricsFile);
        }
        return 0;
    }
}
