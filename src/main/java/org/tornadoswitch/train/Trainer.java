package org.tornadoswitch.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/** The training loop: batches, steps, progress, periodic evaluation and samples, metrics, checkpoints. */
public final class Trainer {
    public record Options(int steps, int evalEvery, int evalBatches, int finalEvalBatches, Path metrics, Path out,
                          String prompt, int sampleLength, boolean quiet) {}

    public record Summary(int steps, double trainLoss, double validLoss, double validAccuracy, double tokensPerS,
                          double seconds) {}

    private final SwitchModel model;
    private final CharTokenizer tok;
    private final Batcher data;
    private final Rng dataRng;
    private final Options opt;
    private final PrintWriter log;

    public Trainer(SwitchModel model, CharTokenizer tok, Batcher data, Rng dataRng, Options opt, PrintWriter log) {
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
        ProgressBar bar = opt.quiet() ? null : new ProgressBarBuilder().setTaskName("train").setInitialMax(opt.steps())
                .setStyle(ProgressBarStyle.ASCII).setMaxRenderedLength(150).setUpdateIntervalMillis(1000).showSpeed().setUnit(" steps", 1)
                .startsFrom(first, java.time.Duration.ZERO).build();
        try {
            for (int step = first + 1; step <= opt.steps(); step++) {
                data.nextTrain(dataRng);
                long s0 = System.nanoTime();
                SwitchModel.Stats s = model.trainStep(data.inputs(), data.targets(), cfg.batchSize(), cfg.seqLen());
                double dt = (System.nanoTime() - s0) / 1e9;
                if (!Double.isFinite(s.loss))
                    throw new IllegalStateException("loss is " + s.loss + " at step " + step + "; stopping");
                trainSeconds += dt;
                trainTokens += s.tokens;
                lastLoss = s.loss;
                double tps = trainTokens / trainSeconds;
                ObjectNode rec = MetricsWriter.stepRecord(step, s, s.tokens / dt, (System.nanoTime() - t0) / 1e9);
                if (bar != null) {
                    bar.stepTo(step);
                    bar.setExtraMessage(String.format(" loss %.3f lb %.3f drop %.1f%% %.0f tok/s", s.loss, s.lbLoss,
                            100.0 * s.dropped / ((long) s.tokens * cfg.layers()), tps));
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
