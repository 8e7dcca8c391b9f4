package org.tornadoswitch.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.tornadoswitch.Config;
import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.train.Checkpoint;
import org.tornadoswitch.train.Trainer;
import org.tornadoswitch.util.Rng;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Train a Switch Transformer (or the dense baseline) on a text; evaluates, samples and saves checkpoints.")
public final class TrainCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    private java.io.PrintWriter out() {
        return spec.commandLine().getOut();
    }

    @Mixin ModelOptions model;
    @Mixin RunSetup setup;
    @Option(names = "--steps", description = "Total training steps (default: ${DEFAULT-VALUE}).")
    int steps = 2000;
    @Option(names = "--eval-every", description = "Evaluate and print a sample every N steps; 0 = only at the end (default: ${DEFAULT-VALUE}).")
    int evalEvery = 250;
    @Option(names = "--eval-batches", description = "Validation batches per periodic evaluation (default: ${DEFAULT-VALUE}).")
    int evalBatches = 16;
    @Option(names = "--final-eval-batches", description = "Validation batches of the final evaluation; 0 = the whole split (default: ${DEFAULT-VALUE}).")
    int finalEvalBatches = 0;
    @Option(names = "--metrics", paramLabel = "FILE", description = "Per-step metrics as JSON lines (default: OUT/metrics.jsonl).")
    Path metrics;
    @Option(names = "--out", paramLabel = "DIR", description = "Run directory: checkpoints/ and metrics (default: ${DEFAULT-VALUE}).")
    Path out = Path.of("runs", "latest");
    @Option(names = "--save-every", description = "Save a checkpoint every N steps, and always at the end; 0 = only at the end (default: ${DEFAULT-VALUE}).")
    int saveEvery = 500;
    @Option(names = "--keep", description = "Checkpoints kept in OUT/checkpoints, newest first (default: ${DEFAULT-VALUE}).")
    int keep = 3;
    @Option(names = "--resume", paramLabel = "DIR", description = "Continue the run in DIR from its newest checkpoint (config, data order, optimizer, RNGs); --out defaults to DIR.")
    Path resume;
    @Option(names = "--prompt", description = "Prompt for samples (default: ${DEFAULT-VALUE}).")
    String prompt = "It is ";
    @Option(names = "--sample-length", description = "Characters per sample; 0 = no samples (default: ${DEFAULT-VALUE}).")
    int sampleLength = 200;
    @Option(names = "--quiet", description = "No progress bar.")
    boolean quiet;

    @Override
    public Integer call() throws Exception {
        if (steps < 1) throw new IllegalArgumentException("--steps must be >= 1, got " + steps);
        if (evalEvery < 0) throw new IllegalArgumentException("--eval-every must be >= 0, got " + evalEvery);
        if (evalBatches < 0) throw new IllegalArgumentException("--eval-batches must be >= 0, got " + evalBatches);
        if (finalEvalBatches < 0) throw new IllegalArgumentException("--final-eval-batches must be >= 0, got " + finalEvalBatches);
        if (sampleLength < 0) throw new IllegalArgumentException("--sample-length must be >= 0, got " + sampleLength);
        if (saveEvery < 0) throw new IllegalArgumentException("--save-every must be >= 0, got " + saveEvery);
        if (keep < 1) throw new IllegalArgumentException("--keep must be >= 1, got " + keep);
        Checkpoint.State resumed = null;
        Config cfg;
        if (resume != null) {
            resumed = Checkpoint.load(resume, true);
            cfg = resumed.config();
            if (!spec.commandLine().getParseResult().hasMatchedOption("--out")) out = resume;
            if (resumed.step() >= steps)
                throw new IllegalArgumentException("the checkpoint in " + resume + " is at step " + resumed.step()
                        + "; pass --steps larger than that to continue");
        } else {
            cfg = model.toConfig();
        }
        // data and the memory plan first: a refused run writes nothing
        RunSetup.Data data = setup.loadData(cfg, resumed == null ? null : resumed.tokenizer());
        requireWritable(out);
        CharTokenizer tok = data.tokenizer();
        tok.encode(prompt.isEmpty() ? "\n" : prompt);
        ParamLayout layout = new ParamLayout(cfg, tok.size());
        long active = layout.size();
        for (int l = 0; l < cfg.layers(); l++) // a token uses one expert of each block
            active -= (long) (cfg.expertsIn(l) - 1) * (2L * cfg.dModel() * cfg.dFf() + cfg.dFf() + cfg.dModel());
        int t = cfg.tokensPerBatch();
        String capacity = !cfg.switchBlocks() ? "no router" : !cfg.dropTokens() ? "dropless"
                : "capacity " + cfg.capacity(t) + " per expert (evaluation "
                + (cfg.evalCapacity(t) >= t ? "dropless" : cfg.evalCapacity(t)) + ")";
        out().printf("%s model: %d layers%s, d_model %d, %d expert(s), %s; %,d parameters (%,d active per token); vocab %d; %,d train / %,d valid characters%n",
                cfg.switchBlocks() ? "Switch" : "Dense", cfg.layers(),
                cfg.switchBlocks() && cfg.switchLayerCount() < cfg.layers() ? " (" + cfg.switchLayerCount() + " Switch)" : "",
                cfg.dModel(), cfg.numExperts(), capacity,
                layout.size(), active, tok.size(), data.batcher().trainSize(), data.batcher().validSize());
        try (SwitchModel m = setup.buildModel(cfg, tok.size(), resumed == null ? null : resumed.params())) {
            out().println("backend: " + m.backend().describe());
            Rng dataRng = new Rng(cfg.seed() ^ 0xDA7AL);
            if (resumed != null) {
                if (resumed.adamM() != null) m.backend().setAdamMoments(resumed.adamM(), resumed.adamV());
                m.setStep(resumed.step());
                m.dropRng().setState(resumed.dropRng());
                dataRng.setState(resumed.dataRng());
                out().println("resuming " + resume + " at step " + resumed.step());
            }
            Path metricsFile = metrics != null ? metrics : out.resolve("metrics.jsonl");
            Trainer.Saver saver = step -> {
                float[][] mv = m.backend().adamMoments();
                Checkpoint.save(out, new Checkpoint.State(cfg, tok, step, dataRng.state(), m.dropRng().state(),
                        m.backend().params(), mv[0], mv[1]), keep, Checkpoint.DURABLE);
            };
            Trainer trainer = new Trainer(m, tok, data.batcher(), dataRng,
                    new Trainer.Options(steps, evalEvery, evalBatches, finalEvalBatches, saveEvery, metricsFile, out, prompt,
                            sampleLength, quiet), saver, out());
            installInterruptHandler(Trainer::requestStop);
            Trainer.Summary s;
            try {
                s = trainer.run();
            } catch (Trainer.StoppedException e) {
                out().println();
                out().println("interrupted: saved a checkpoint at step " + e.step + " in " + out.resolve("checkpoints")
                        + "; continue with: train --resume " + out + " --steps " + steps);
                out().flush();
                return 130;
            }
            saver.save(m.step());
            out().printf("done: %d steps, train loss %.4f, valid loss %.4f, valid accuracy %.3f, %.0f tokens/s (%.1f s training)%n",
                    s.steps(), s.trainLoss(), s.validLoss(), s.validAccuracy(), s.tokensPerS(), s.seconds());
            out().println("checkpoint: " + Checkpoint.checkpoints(out).get(0) + "  metrics: " + metricsFile);
        }
        return 0;
    }

    /** Fails before any work when the run directory cannot be written. */
    static void requireWritable(Path dir) {
        try {
            Files.createDirectories(dir);
            Path probe = Files.createTempFile(dir, ".write-test", ".tmp");
            Files.delete(probe);
        } catch (IOException | SecurityException e) {
            throw new IllegalArgumentException("output directory " + dir + " is not writable (" + e.getClass().getSimpleName()
                    + (e.getMessage() == null ? "" : ": " + e.getMessage()) + ")");
        }
    }

    /** Ctrl-C: finish the current step, save, exit 130 (a second Ctrl-C kills at once). */
    static void installInterruptHandler(Runnable requestStop) {
        try {
            sun.misc.Signal.handle(new sun.misc.Signal("INT"), sig -> {
                requestStop.run();
                sun.misc.Signal.handle(new sun.misc.Signal("INT"), sun.misc.SignalHandler.SIG_DFL);
            });
        } catch (IllegalArgumentException | UnsupportedOperationException e) {
            // no SIGINT on this platform: Ctrl-C ends the JVM as usual
        }
    }
}
