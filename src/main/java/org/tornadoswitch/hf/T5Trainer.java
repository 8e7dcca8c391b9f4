package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import org.tornadoswitch.train.Checkpoint;
import org.tornadoswitch.train.Trainer.DivergedException;
import org.tornadoswitch.util.Progress;

/**
 * The fine-tuning loop of {@code t5 finetune}: seeded batches of the training examples, HF's
 * objective (cross-entropy + z-loss and load-balancing loss times the config's coefficients) in
 * training mode, backward, global-norm clipping, the optimizer; metrics as JSON lines, periodic
 * validation, checkpoints ({@code OUT/checkpoints/step-N/}, each a Hugging Face model directory, the
 * newest {@code keep} kept) and the final model in {@code OUT} itself.
 */
public final class T5Trainer {
    public record Options(int steps, int batchSize, int evalEvery, int evalBatches, int saveEvery, int keep, double clip,
                          int warmup, Path out, Path metrics, boolean quiet, Path modelDir) {}

    public record Summary(int steps, double trainLoss, double validLoss, double validCe, double tokensPerS, double seconds) {}

    private static volatile boolean stopRequested;

    /** Ctrl-C: the loop saves a checkpoint after the current step and throws {@link Stopped}. */
    public static void requestStop() {
        stopRequested = true;
    }

    public static final class Stopped extends RuntimeException {
        public final int step;

        Stopped(int step) {
            super("interrupted after step " + step);
            this.step = step;
        }
    }

    private final T5Model model;
    private final T5Optimizer opt;
    private final List<T5Data.Example> train, valid;
    private final Options o;
    private final PrintWriter log;
    private final T5Data.Sampler sampler;

    public T5Trainer(T5Model model, T5Optimizer opt, List<T5Data.Example> train, List<T5Data.Example> valid, long seed, Options o,
                     PrintWriter log) {
        this.model = model;
        this.opt = opt;
        this.train = train;
        this.valid = valid;
        this.o = o;
        this.log = log;
        this.sampler = new T5Data.Sampler(train, seed);
    }

    /** The learning rate of step t: linear warm-up over {@code warmup} steps, then constant (the optimizer's own lr). */
    double lr(int t) {
        Double base = opt.lr();
        if (base == null) return 0; // Adafactor's relative step has its own schedule
        return o.warmup() > 0 && t <= o.warmup() ? base * t / o.warmup() : base;
    }

    public Summary run() throws IOException {
        T5Backend be = model.backend();
        T5Config c = model.config();
        long t0 = System.nanoTime();
        double trainSeconds = 0, lastLoss = Double.NaN;
        long tokens = 0;
        double[] fin = null;
        Files.createDirectories(o.out());
        try (BufferedWriter metrics = Files.newBufferedWriter(o.metrics(), StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
             Progress bar = o.quiet() ? null : new Progress("finetune", o.steps(), 0, " steps", log, 30)) {
            for (int step = 1; step <= o.steps(); step++) {
                if (stopRequested) {
                    saveCheckpoint(step - 1);
                    throw new Stopped(step - 1);
                }
                List<T5Data.Example> ex = sampler.next(o.batchSize());
                T5Model.Batch b = T5Data.batch(ex, c);
                long s0 = System.nanoTime();
                T5Model.Losses l = model.forward(b, true, step);
                if (!Double.isFinite(l.total()))
                    throw new DivergedException("loss " + l.total() + " at step " + step + ": fine-tuning stopped; the last checkpoint is kept (try a lower --lr)");
                model.backward();
                double norm = Math.sqrt(be.gradSquaredNorm());
                float scale = o.clip() > 0 && norm > o.clip() ? (float) (o.clip() / (norm + 1e-6)) : 1f;
                double lr = lr(step);
                be.optimizerStep(opt, scale, step, lr);
                double dt = (System.nanoTime() - s0) / 1e9;
                int batchTokens = 0;
                for (T5Data.Example e : ex) batchTokens += e.input().length + e.labels().length;
                trainSeconds += dt;
                tokens += batchTokens;
                lastLoss = l.total();
                ObjectNode rec = Json.MAPPER.createObjectNode();
                rec.put("step", step);
                rec.put("loss", l.total());
                rec.put("ce", l.ce());
                rec.put("encoder_z_loss", l.encoderZLoss());
                rec.put("decoder_z_loss", l.decoderZLoss());
                rec.put("encoder_aux_loss", l.encoderAuxLoss());
                rec.put("decoder_aux_loss", l.decoderAuxLoss());
                rec.put("dropped", l.routed() == 0 ? 0 : (double) l.dropped() / l.routed());
                rec.put("lr", opt.lr() == null ? Double.NaN : lr);
                rec.put("grad_norm", norm);
                rec.put("tokens_per_s", batchTokens / dt);
                rec.put("epoch", sampler.epoch());
                rec.put("elapsed_s", (System.nanoTime() - t0) / 1e9);
                rec.put("train_s", trainSeconds);
                if (bar != null) {
                    bar.stepTo(step);
                    bar.setExtraMessage(String.format(" loss %.3f ce %.3f drop %.1f%% %.0f tok/s", l.total(), l.ce(),
                            100.0 * l.dropped() / Math.max(1, l.routed()), tokens / trainSeconds));
                }
                if (valid != null && (o.evalEvery() > 0 && step % o.evalEvery() == 0 || step == o.steps())) {
                    double[] v = evaluate(o.evalBatches());
                    if (step == o.steps()) fin = v;
                    rec.put("valid_loss", v[0]);
                    rec.put("valid_ce", v[1]);
                    if (bar != null) bar.pause();
                    log.printf("%nstep %d: train loss %.4f, valid loss %.4f, valid ce %.4f%n", step, l.total(), v[0], v[1]);
                    log.flush();
                    if (bar != null) bar.resume();
                }
                metrics.write(Json.MAPPER.writeValueAsString(rec));
                metrics.newLine();
                metrics.flush();
                if (o.saveEvery() > 0 && step % o.saveEvery() == 0 && step < o.steps()) saveCheckpoint(step);
            }
        }
        T5Checkpoint.writeInto(o.out(), c, be.params(), o.modelDir(), state(o.steps()));
        return new Summary(o.steps(), lastLoss, fin == null ? Double.NaN : fin[0], fin == null ? Double.NaN : fin[1],
                trainSeconds > 0 ? tokens / trainSeconds : 0, trainSeconds);
    }

    /** {mean total loss over the batches, token-weighted cross-entropy} of the validation examples, eval mode. */
    double[] evaluate(int maxBatches) {
        double total = 0, ceSum = 0;
        int batches = 0, ceTokens = 0;
        for (int i = 0; i < valid.size() && (maxBatches <= 0 || batches < maxBatches); i += o.batchSize(), batches++) {
            T5Model.Losses l = model.forward(T5Data.batch(valid.subList(i, Math.min(valid.size(), i + o.batchSize())), model.config()),
                    false, 0);
            total += l.total();
            ceSum += l.ce() * l.tokens();
            ceTokens += l.tokens();
        }
        return new double[] {total / batches, ceSum / ceTokens};
    }

    private ObjectNode state(int step) {
        ObjectNode s = Json.MAPPER.createObjectNode();
        s.put("step", step);
        s.put("optimizer", opt.describe());
        s.put("batch_size", o.batchSize());
        s.put("epoch", sampler.epoch());
        s.put("aux_loss", model.auxLossMode().name().toLowerCase(java.util.Locale.ROOT));
        return s;
    }

    private void saveCheckpoint(int step) throws IOException {
        if (step < 1) return;
        Path root = o.out().resolve("checkpoints");
        Files.createDirectories(root);
        T5Checkpoint.save(root.resolve(String.format("step-%08d", step)), model.config(), model.backend().params(), o.modelDir(), state(step));
        List<Path> all;
        try (var st = Files.list(root)) {
            all = st.filter(p -> p.getFileName().toString().startsWith("step-") && Files.isRegularFile(p.resolve("trainer_state.json")))
                    .sorted(java.util.Comparator.comparing((Path p) -> p.getFileName().toString()).reversed()).toList();
        }
        for (int i = Math.max(1, o.keep()); i < all.size(); i++) Checkpoint.deleteTree(all.get(i));
    }
}
