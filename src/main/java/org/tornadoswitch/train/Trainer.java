package org.tornadoswitch.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Progress;
import org.tornadoswitch.util.Rng;

/** The training loop: batches, steps, progress, periodic evaluation and samples, metrics, checkpoints. */
public final class Trainer {
    public record Options(int steps, int evalEvery, int evalBatches, int finalEvalBatches, int saveEvery, Path metrics,
                          Path out, String prompt, int sampleLength, boolean quiet) {}

    /** Saves a checkpoint of the model after {@code step} steps. */
    @FunctionalInterface
    public interface Saver {
        void save(int step) throws IOException;
    }

    /** The loss stopped being finite; no checkpoint is written for that step. */
    public static final class DivergedException extends RuntimeException {
        public DivergedException(String message) {
            super(message);
        }
    }

    /** Training was stopped by {@link #requestStop()} (Ctrl-C) after a checkpoint was saved. */
    public static final class StoppedException extends RuntimeException {
        public final int step;

        public StoppedException(int step) {
            super("interrupted after step " + step);
            this.step = step;
        }
    }

    private static volatile boolean stopRequested;

    /** Asks a running loop to save and stop after its current step (called from a signal handler). */
    public static void requestStop() {
        stopRequested = true;
    }

    public record Summary(int steps, double trainLoss, double validLoss, double validAccuracy, double tokensPerS,
                          double seconds) {}

    private final SwitchModel model;
    private final CharTokenizer tok;
    private final Batcher data;
    private final Rng dataRng;
    private final Options opt;
    private final PrintWriter log;

    private final Saver saver;

    public Trainer(SwitchModel model, CharTokenizer tok, Batcher data, Rng dataRng, Options opt, Saver saver, PrintWriter log) {
        this.saver = saver;
        this.model = model;
        this.tok = tok;
        this.data = data;
        this.dataRng = dataRng;
        this.opt = opt;
        this.log = log;
    }

    public Summary run() throws IOException {
        var cfg = model.config();
        int first = model.step();
        long t0 = System.nanoTime();
        double trainSeconds = 0, lastLoss = Double.NaN;
        long trainTokens = 0;
        Evaluator.Result fin = null;
        MetricsWriter metrics = opt.metrics() == null ? null : new MetricsWriter(opt.metrics(), first > 0);
        // a bar in a terminal; in a log, one plain line every 30 s or tenth of the run
        Progress bar = opt.quiet() ? null : new Progress("train", opt.steps(), first, " steps", log, 30);
        try {
            for (int step = first + 1; step <= opt.steps(); step++) {
                if (stopRequested) {
                    saver.save(step - 1);
                    throw new StoppedException(step - 1);
                }
                data.nextTrain(dataRng);
                long s0 = System.nanoTime();
                SwitchModel.Stats s = model.trainStep(data.inputs(), data.targets(), cfg.batchSize(), cfg.seqLen());
                double dt = (System.nanoTime() - s0) / 1e9;
                if (!Double.isFinite(s.loss) || !Double.isFinite(s.gradNorm))
                    throw new DivergedException("loss " + s.loss + ", gradient norm " + s.gradNorm + " at step " + step
                            + ": training stopped; the last good checkpoint is kept (try a lower --lr)");
                trainSeconds += dt;
                trainTokens += s.tokens;
                lastLoss = s.loss;
                double tps = trainTokens / trainSeconds;
                ObjectNode rec = MetricsWriter.stepRecord(step, s, s.tokens / dt, (System.nanoTime() - t0) / 1e9);
                rec.put("train_s", trainSeconds); // time in training steps only: no evaluation, samples or checkpoints
                if (bar != null) {
                    bar.stepTo(step);
                    bar.setExtraMessage(String.format(" loss %.3f lb %.3f drop %.1f%% %.0f tok/s", s.loss, s.lbLoss,
                            100.0 * s.dropped / s.routed, tps));
                }
                double trainLoss = s.loss; // evaluation below reuses the model's stats object
                if (opt.evalEvery() > 0 && (step % opt.evalEvery() == 0 || step == opt.steps())) {
                    Evaluator.Result r = Evaluator.evaluate(model, data,
                            step == opt.steps() ? opt.finalEvalBatches() : opt.evalBatches(), cfg.seed());
                    if (step == opt.steps()) fin = r;
                    rec.put("valid_loss", r.loss());
                    rec.put("valid_accuracy", r.accuracy());
                    String line = String.format("step %d: train loss %.4f, valid loss %.4f, valid acc %.3f, %.0f tokens/s",
                            step, trainLoss, r.loss(), r.accuracy(), tps);
                    if (bar != null) bar.pause();
                    log.println();
                    log.println(line);
                    if (opt.sampleLength() > 0)
                        log.println("  sample: " + Sampler.generate(model, tok, opt.prompt(), opt.sampleLength(), 0.8, step)
                                .replace("\n", "\n          "));
                    log.flush();
                    if (bar != null) bar.resume();
                }
                if (metrics != null) metrics.write(rec);
                if (opt.saveEvery() > 0 && step % opt.saveEvery() == 0 && step < opt.steps()) saver.save(step);
            }
        } finally {
            if (bar != null) bar.close();
            if (metrics != null) metrics.close();
        }
        if (fin == null) fin = Evaluator.evaluate(model, data, opt.finalEvalBatches(), cfg.seed());
        return new Summary(opt.steps(), lastLoss, fin.loss(), fin.accuracy(),
                trainSeconds > 0 ? trainTokens / trainSeconds : 0, trainSeconds);
    }
}
