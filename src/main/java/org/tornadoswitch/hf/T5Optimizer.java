package org.tornadoswitch.hf;

import java.util.HashMap;
import java.util.Map;
import org.tornadoswitch.hf.T5Weights.Tensor;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.ThreadPool;

/**
 * The optimizers of {@code t5 finetune}, per HF tensor (the state of a tensor is its own, as in
 * torch, so Adafactor's factored second moments are those of each {@code [out, in]} matrix):
 * <ul>
 * <li>{@link #sgd}: {@code p - lr · g}, nothing else;
 * <li>{@link #adam}: torch's AdamW (bias-corrected moments, decoupled weight decay);
 * <li>{@link #adafactor}: transformers' {@code Adafactor} (eps (1e-30, 1e-3), clip_threshold 1,
 *     decay_rate -0.8, no first moment): with {@code lr == null} HF's defaults
 *     {@code relative_step=True, scale_parameter=True} (lr = min(1e-2, 1/sqrt(t)) · max(1e-3, RMS(p))),
 *     with an lr T5 fine-tuning's recommendation {@code relative_step=False, scale_parameter=False}.
 * </ul>
 * Tensors without a gradient in a step are skipped, as torch skips a parameter whose grad is None:
 * an untied model's shared.weight (the forward never reads it) and the experts no token reached in
 * that batch; Adam's and Adafactor's step count is per tensor, as torch's state["step"].
 */
public abstract class T5Optimizer {
    private static final int CHUNK = 1 << 14;

    public abstract String describe();

    /** One update from the gradients times {@code gradScale} (global-norm clipping; 1 = none); {@code t} counts from 1. */
    public abstract void step(T5Weights params, T5Weights grads, float gradScale, int t, double lr, ThreadPool pool);

    /** The learning rate given (null for Adafactor's relative step). */
    public abstract Double lr();

    public static T5Optimizer sgd(double lr) {
        return new Sgd(lr);
    }

    public static T5Optimizer adam(double lr, double beta1, double beta2, double eps, double weightDecay) {
        return new Adam(lr, beta1, beta2, eps, weightDecay);
    }

    /** {@code lr} null: HF's default relative step with parameter scaling; else a fixed lr without them. */
    public static T5Optimizer adafactor(Double lr) {
        return new Adafactor(lr);
    }

    /** A tensor, its gradient, and its own step count (from 1). */
    @FunctionalInterface
    interface TensorStep {
        void apply(Tensor p, Tensor g, int step);
    }

    private final Map<String, Integer> steps = new HashMap<>();

    /** Every tensor that got a gradient this step (as torch skips a parameter whose grad is None). */
    void forEachWithGrad(T5Weights params, T5Weights grads, TensorStep f) {
        for (Tensor p : params.tensors()) {
            Tensor g = grads.tensor(p.name());
            if (!params.usedInForward(p) || !grads.present(g)) continue;
            f.apply(p, g, steps.merge(p.name(), 1, Integer::sum));
        }
    }

    /** Runs body over [0, n) in chunks on the pool. */
    static void chunks(ThreadPool pool, int n, ThreadPool.RangeBody body) {
        int c = (n + CHUNK - 1) / CHUNK;
        pool.parallelFor(c, (lo, hi) -> body.run(lo * CHUNK, Math.min(n, hi * CHUNK)));
    }

    static final class Sgd extends T5Optimizer {
        private final double lr;

        Sgd(double lr) {
            this.lr = lr;
        }

        @Override
        public String describe() {
            return "sgd (lr " + lr + ")";
        }

        @Override
        public Double lr() {
            return lr;
        }

        @Override
        public void step(T5Weights params, T5Weights grads, float gradScale, int t, double lrNow, ThreadPool pool) {
            float l = (float) lrNow;
            forEachWithGrad(params, grads, (p, g, ts) -> {
                float[] pd = p.data(), gd = g.data();
                int po = p.off(), go = g.off();
                chunks(pool, p.numel(), (lo, hi) -> {
                    for (int i = lo; i < hi; i++) pd[po + i] -= l * (gd[go + i] * gradScale);
                });
            });
        }
    }

    static final class Adam extends T5Optimizer {
        private final double lr, beta1, beta2, eps, wd;
        private final Map<String, float[][]> state = new HashMap<>();

        Adam(double lr, double beta1, double beta2, double eps, double wd) {
            this.lr = lr;
            this.beta1 = beta1;
            this.beta2 = beta2;
            this.eps = eps;
            this.wd = wd;
        }

        @Override
        public String describe() {
            return "adamw (lr " + lr + ", betas " + beta1 + "/" + beta2 + ", eps " + eps + ", weight decay " + wd + ")";
        }

        @Override
        public Double lr() {
            return lr;
        }

        @Override
        public void step(T5Weights params, T5Weights grads, float gradScale, int t, double lrNow, ThreadPool pool) {
            forEachWithGrad(params, grads, (p, g, ts) -> {
                int n = p.numel();
                float[][] mv = state.computeIfAbsent(p.name(), k -> new float[][] {new float[n], new float[n]});
                float[] pd = p.data(), gd = g.data();
                int po = p.off(), go = g.off();
                float decay = (float) (1 - lrNow * wd);
                chunks(pool, n, (lo, hi) -> {
                    if (wd != 0) for (int i = lo; i < hi; i++) pd[po + i] *= decay;
                    Ops.adam(pd, po, gd, go, mv[0], mv[1], lo, hi, (float) lrNow, gradScale, (float) beta1, (float) beta2, (float) eps, ts);
                });
            });
        }
    }

    static final class Adafactor extends T5Optimizer {
        private static final double EPS1 = 1e-30, EPS2 = 1e-3, CLIP = 1.0, DECAY = -0.8;
        private final Double lr;
        private final boolean relativeStep, scaleParameter;
        /** Per tensor: the row and column second moments (2-D) or the full one (1-D). */
        private final Map<String, float[][]> state = new HashMap<>();

        Adafactor(Double lr) {
            this.lr = lr;
            this.relativeStep = lr == null;
            this.scaleParameter = lr == null;
        }

        @Override
        public String describe() {
            return relativeStep ? "adafactor (relative step, scale_parameter)" : "adafactor (lr " + lr + ")";
        }

        @Override
        public Double lr() {
            return lr;
        }

        @Override
        public void step(T5Weights params, T5Weights grads, float gradScale, int t, double lrNow, ThreadPool pool) {
            forEachWithGrad(params, grads, (p, g, ts) -> stepTensor(p, g, gradScale, ts, lrNow, pool));
        }

        private void stepTensor(Tensor p, Tensor g, float gradScale, int t, double lrNow, ThreadPool pool) {
            int n = p.numel(), rows = p.rows(), cols = p.cols();
            boolean factored = p.shape().length >= 2;
            float[][] st = state.computeIfAbsent(p.name(),
                    k -> factored ? new float[][] {new float[rows], new float[cols]} : new float[][] {new float[n]});
            float[] pd = p.data(), gd = g.data();
            int po = p.off(), go = g.off();
            double rms = Math.sqrt(sumSquares(pool, pd, po, n) / n);
            double rel = relativeStep ? Math.min(1e-2, 1.0 / Math.sqrt(t)) : lrNow;
            double step = (scaleParameter ? Math.max(EPS2, rms) : 1.0) * rel;
            float beta2t = (float) (1.0 - Math.pow(t, DECAY)), one = 1f - beta2t;
            double gs2 = (double) gradScale * gradScale;
            if (factored) {
                float[] row = st[0], col = st[1];
                float[] rf = scratch(0, rows), cf = scratch(1, cols);
                // running means of g² + eps1 over each row (dim -1) and each column (dim -2)
                pool.parallelFor(rows, (lo, hi) -> {
                    for (int r = lo; r < hi; r++) {
                        double s = gs2 * Ops.sumSquares(gd, go + r * cols, go + (r + 1) * cols) + cols * EPS1;
                        row[r] = row[r] * beta2t + (float) (s / cols) * one;
                    }
                });
                int blocks = (cols + COL_BLOCK - 1) / COL_BLOCK;
                pool.parallelFor(blocks, (lo, hi) -> {
                    double[] acc = new double[COL_BLOCK];
                    for (int bk = lo; bk < hi; bk++) {
                        int j0 = bk * COL_BLOCK, j1 = Math.min(cols, j0 + COL_BLOCK);
                        java.util.Arrays.fill(acc, 0);
                        for (int r = 0; r < rows; r++) {
                            int o = go + r * cols;
                            for (int j = j0; j < j1; j++) {
                                double x = gd[o + j];
                                acc[j - j0] += x * x;
                            }
                        }
                        for (int j = j0; j < j1; j++) {
                            double s = gs2 * acc[j - j0] + rows * EPS1;
                            col[j] = col[j] * beta2t + (float) (s / rows) * one;
                            cf[j] = (float) (1.0 / Math.sqrt(col[j]));
                        }
                    }
                });
                double rm = 0;
                for (int r = 0; r < rows; r++) rm += row[r];
                float rowMean = (float) (rm / rows);
                for (int r = 0; r < rows; r++) rf[r] = (float) (1.0 / Math.sqrt(row[r] / rowMean));
                // update = rf_r · cf_j · g: its RMS first, then p -= step / max(1, RMS) · update, without storing it
                double[] part = new double[rows];
                pool.parallelFor(rows, (lo, hi) -> {
                    for (int r = lo; r < hi; r++) part[r] = (double) rf[r] * rf[r] * gs2 * Ops.sumSquaresScaled(gd, go + r * cols, cf, 0, cols);
                });
                double ss = 0;
                for (double x : part) ss += x;
                float scale = (float) (step / Math.max(1.0, Math.sqrt(ss / n) / CLIP));
                pool.parallelFor(rows, (lo, hi) -> {
                    for (int r = lo; r < hi; r++) {
                        float k = scale * rf[r] * gradScale;
                        int o = go + r * cols, q = po + r * cols;
                        for (int j = 0; j < cols; j++) pd[q + j] -= k * cf[j] * gd[o + j];
                    }
                });
            } else {
                float[] v = st[0], upd = scratch(0, n);
                chunks(pool, n, (lo, hi) -> {
                    for (int i = lo; i < hi; i++) {
                        float x = gd[go + i] * gradScale;
                        v[i] = v[i] * beta2t + (x * x + (float) EPS1) * one;
                        upd[i] = (float) (1.0 / Math.sqrt(v[i])) * x;
                    }
                });
                double urms = Math.sqrt(sumSquares(pool, upd, 0, n) / n);
                float scale = (float) (step / Math.max(1.0, urms / CLIP));
                chunks(pool, n, (lo, hi) -> {
                    for (int i = lo; i < hi; i++) pd[po + i] -= upd[i] * scale;
                });
            }
        }

        private static final int COL_BLOCK = 256;
        private float[][] bufs = {new float[0], new float[0]};

        private float[] scratch(int which, int n) {
            if (bufs[which].length < n) bufs[which] = new float[n];
            return bufs[which];
        }

        /** Σ a² over [off, off + n), chunk sums (vector lanes, fixed order) added in double. */
        private static double sumSquares(ThreadPool pool, float[] a, int off, int n) {
            int chunk = 1 << 16, parts = (n + chunk - 1) / chunk;
            double[] part = new double[parts];
            pool.parallelFor(parts, (lo, hi) -> {
                for (int c = lo; c < hi; c++) part[c] = Ops.sumSquares(a, off + c * chunk, off + Math.min(n, (c + 1) * chunk));
            });
            double s = 0;
            for (double x : part) s += x;
            return s;
        }
    }
}
