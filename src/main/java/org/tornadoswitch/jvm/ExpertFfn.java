package org.tornadoswitch.jvm;

import org.tornadoswitch.model.Routing;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * The expert FFN of both model families, forward and backward: {@code y = act(x W1 + b1) W2 + b2}
 * for every expert of a block in one pass per matrix, over the rows that routing grouped by expert
 * (expert x's rows are {@code [offset[x], offset[x] + rows[x])}, see {@link Routing#order}). A dense
 * block is one expert over all tokens. Biases are optional (the labml model has them, T5 has none),
 * and so is dropout on the hidden layer (by grouped row position, from a counter-based key).
 *
 * <p>Two weight layouts: {@link Layout#IN_OUT} ({@code W1 [E x d x f]}, {@code x W}: the labml
 * model's) and {@link Layout#OUT_IN} ({@code W1 [E x f x d]}, {@code x Wᵀ}: Hugging Face's
 * {@code nn.Linear} weights, kept as the checkpoint stores them).
 */
public final class ExpertFfn {
    private ExpertFfn() {}

    public enum Layout { IN_OUT, OUT_IN }

    /**
     * Where one block's FFN matrices lie: W1 and W2 of all its experts (expert x's at
     * {@code w1Off + x * d * f}), and their biases (null when there are none). Made once per block,
     * also for the gradients.
     */
    public record Params(float[] w1, int w1Off, float[] b1, int b1Off, float[] w2, int w2Off, float[] b2, int b2Off) {
        public static Params of(float[] w1, float[] w2) {
            return new Params(w1, 0, null, 0, w2, 0, null, 0);
        }
    }

    /** The grouped row of assignment a (its expert's first row + its slot), or -1 when it was dropped. */
    public static int row(Routing r, int a) {
        int s = r.slot[a];
        return s < 0 ? -1 : r.offset[r.expertOf[a]] + s;
    }

    /** xs[i] = x[token of kept assignment order[i]] for every kept assignment (rows [0, offset[E])). */
    public static void gather(ThreadPool pool, float[] x, Routing r, float[] xs, int d) {
        int k = r.k, kept = r.offset[r.experts];
        pool.parallelFor(kept, (lo, hi) -> {
            for (int i = lo; i < hi; i++) System.arraycopy(x, r.order[i] / k * d, xs, i * d, d);
        });
    }

    /**
     * Grouped forward: {@code hPre = xs W1 + b1} (per expert), {@code h = act(hPre)} then hidden
     * dropout, {@code ys = h W2 + b2}. With ReLU {@code hPre} may be null (the activation is applied
     * in place on h); other activations keep it for the backward. OUT_IN takes no biases.
     */
    public static void forward(ThreadPool pool, Layout layout, Ops.Activation act, float[] xs, Params p,
                               float[] hPre, float[] h, float[] ys, int[] offset, int[] rows, int groups,
                               int d, int f, float hiddenRate, long hiddenKey) {
        forward(pool, layout, act, xs, p, hPre, h, ys, offset, rows, groups, d, f, hiddenRate, hiddenKey, null, null);
    }

    /**
     * As above; with {@code fused} (the caller's reusable epilogues) the IN_OUT ReLU form runs the
     * ReLU and the hidden dropout in the first GEMM's epilogue and {@code outEpilogue} (may be null)
     * in the second's, e.g. the labml block's combine with the residual as each expert row is done.
     */
    public static void forward(ThreadPool pool, Layout layout, Ops.Activation act, float[] xs, Params p,
                               float[] hPre, float[] h, float[] ys, int[] offset, int[] rows, int groups,
                               int d, int f, float hiddenRate, long hiddenKey, Fused fused, Ops.Epilogue outEpilogue) {
        int kept = offset[groups];
        float[] pre = hPre == null ? h : hPre;
        if (fused != null && layout == Layout.IN_OUT && act == Ops.Activation.RELU && pre == h) {
            Ops.groupedMatmulFused(pool, xs, 0, p.w1, p.w1Off, p.b1, p.b1Off, h, 0, offset, rows, groups, d, f, true,
                    hiddenRate > 0f ? fused.hiddenDropout.set(h, f, hiddenKey, hiddenRate) : null);
            Ops.groupedMatmulFused(pool, h, 0, p.w2, p.w2Off, p.b2, p.b2Off, ys, 0, offset, rows, groups, f, d, false, outEpilogue);
            return;
        }
        if (outEpilogue != null) throw new IllegalArgumentException("an output epilogue needs the fused IN_OUT ReLU form");
        if (layout == Layout.IN_OUT) {
            Ops.groupedMatmul(pool, xs, 0, p.w1, p.w1Off, p.b1, p.b1Off, pre, 0, offset, rows, groups, d, f);
        } else {
            if (p.b1 != null || p.b2 != null) throw new IllegalArgumentException("the OUT_IN layout has no biases");
            outIn(pool, xs, p.w1, p.w1Off, pre, offset, rows, groups, f, d);
        }
        if (act == Ops.Activation.RELU && pre == h) Ops.relu(h, 0, kept * f);
        else Ops.activate(pool, act, pre, h, 0, kept * f);
        if (hiddenRate > 0f) hiddenDropout(pool, h, kept, f, hiddenRate, hiddenKey);
        if (layout == Layout.IN_OUT) Ops.groupedMatmul(pool, h, 0, p.w2, p.w2Off, p.b2, p.b2Off, ys, 0, offset, rows, groups, f, d);
        else outIn(pool, h, p.w2, p.w2Off, ys, offset, rows, groups, d, f);
    }

    /**
     * Every group's C_x = B_x W_xᵀ with W_x [k x n] at wOff + x·k·n; a decode step's few rows (at
     * most {@link Ops#GEMV_ROWS} in all) stream each used expert's matrix once across the threads
     * (2x the packed path's speed at switch-base-8's decode; its lane order differs from the GEMMs'
     * one FMA chain per element, so it is chosen here and not inside Ops.groupedMatmulNT, whose
     * forms all keep the same bits).
     */
    private static void outIn(ThreadPool pool, float[] b, float[] w, int wOff, float[] c, int[] offset, int[] rows, int groups,
                              int k, int n) {
        if (offset[groups] > Ops.GEMV_ROWS) {
            Ops.groupedMatmulNT(pool, b, 0, w, wOff, c, 0, offset, rows, groups, k, n);
            return;
        }
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.gemvNT(pool, b, offset[x] * n, w, wOff + x * k * n, c, offset[x] * k, rows[x], k, n);
    }

    /** x[i] *= 0 or 1 / (1 - rate) over the kept rows' hidden units, the mask a hash of (key, i). */
    private static void hiddenDropout(ThreadPool pool, float[] x, int kept, int f, float rate, long key) {
        float keepScale = 1f / (1f - rate);
        pool.parallelFor(kept, (lo, hi) -> {
            for (int i = lo * f, end = hi * f; i < end; i++) x[i] *= Rng.uniform(key, i) < rate ? 0f : keepScale;
        });
    }

    /**
     * Grouped backward given {@code dys} (d loss / d ys): weight gradients added into gw1/gw2 (and
     * gb1/gb2 where not null), {@code dh} scratch [rows x f], {@code dxs} = d loss / d xs (written).
     */
    public static void backward(ThreadPool pool, Layout layout, Ops.Activation act, float[] dys, float[] xs, float[] hPre,
                                float[] h, Params p, Params g, float[] dh, float[] dxs, int[] offset, int[] rows, int groups,
                                int d, int f, float hiddenRate, long hiddenKey) {
        backward(pool, layout, act, dys, xs, hPre, h, p, g, dh, dxs, offset, rows, groups, d, f, hiddenRate, hiddenKey, null);
    }

    /** As above; with {@code fused} the IN_OUT ReLU form runs ReLU's backward in the dh GEMM's epilogue. */
    public static void backward(ThreadPool pool, Layout layout, Ops.Activation act, float[] dys, float[] xs, float[] hPre,
                                float[] h, Params p, Params g, float[] dh, float[] dxs, int[] offset, int[] rows, int groups,
                                int d, int f, float hiddenRate, long hiddenKey, Fused fused) {
        int kept = offset[groups];
        boolean fuse = fused != null && layout == Layout.IN_OUT && act == Ops.Activation.RELU;
        if (layout == Layout.IN_OUT) {
            Ops.groupedMatmulTN(pool, h, 0, dys, 0, g.w2, g.w2Off, offset, rows, groups, f, d);
            if (g.b2 != null) Ops.groupedBiasGrad(pool, dys, 0, offset, rows, groups, d, g.b2, g.b2Off);
            if (fuse) // h after dropout: dropped units are 0 and get none; kept ones carry the 1/(1-rate) scale
                Ops.groupedMatmulNTFused(pool, dys, 0, p.w2, p.w2Off, dh, 0, offset, rows, groups, f, d,
                        fused.reluBackward.set(h, dh, f, hiddenRate > 0f ? 1f / (1f - hiddenRate) : 1f));
            else Ops.groupedMatmulNT(pool, dys, 0, p.w2, p.w2Off, dh, 0, offset, rows, groups, f, d);
        } else {
            Ops.groupedMatmulTN(pool, dys, 0, h, 0, g.w2, g.w2Off, offset, rows, groups, d, f);
            Ops.groupedMatmul(pool, dys, 0, p.w2, p.w2Off, null, 0, dh, 0, offset, rows, groups, d, f);
        }
        if (act != Ops.Activation.RELU) {
            if (hiddenRate > 0f) hiddenDropout(pool, dh, kept, f, hiddenRate, hiddenKey); // the same mask on the gradient
            Ops.activationBackward(pool, act, hPre, dh, 0, kept * f);
        } else if (!fuse) { // (fused: done in the dh GEMM's epilogue above)
            // h after dropout: dropped units are 0 and get no gradient; kept ones carry the 1/(1-rate) scale
            Ops.reluBackward(h, dh, 0, kept * f, hiddenRate > 0f ? 1f / (1f - hiddenRate) : 1f);
        }
        if (layout == Layout.IN_OUT) {
            Ops.groupedMatmulTN(pool, xs, 0, dh, 0, g.w1, g.w1Off, offset, rows, groups, d, f);
            if (g.b1 != null) Ops.groupedBiasGrad(pool, dh, 0, offset, rows, groups, f, g.b1, g.b1Off);
            Ops.groupedMatmulNT(pool, dh, 0, p.w1, p.w1Off, dxs, 0, offset, rows, groups, d, f);
        } else {
            Ops.groupedMatmulTN(pool, dh, 0, xs, 0, g.w1, g.w1Off, offset, rows, groups, f, d);
            Ops.groupedMatmul(pool, dh, 0, p.w1, p.w1Off, null, 0, dxs, 0, offset, rows, groups, f, d);
        }
    }

    /** One caller's reusable GEMM epilogues for the fused form (nothing allocated per call; one caller at a time). */
    public static final class Fused {
        final HiddenDropout hiddenDropout = new HiddenDropout();
        final ReluBackward reluBackward = new ReluBackward();
    }

    /** h *= keep by position in the grouped rows (dropout on the hidden layer, after the ReLU). */
    private static final class HiddenDropout implements Ops.Epilogue {
        float[] h;
        int n;
        long key;
        float rate;

        HiddenDropout set(float[] h, int n, long key, float rate) {
            this.h = h; this.n = n; this.key = key; this.rate = rate;
            return this;
        }

        @Override
        public void apply(int group, int r0, int r1, int j0, int j1) {
            for (int i = r0; i < r1; i++)
                for (int j = j0, o = i * n + j0; j < j1; j++, o++) h[o] *= Ops.keep(key, o, rate);
        }
    }

    /** dh = 0 where h <= 0, else dh * scale: ReLU's backward with the hidden dropout's 1 / (1 - rate). */
    private static final class ReluBackward implements Ops.Epilogue {
        float[] h, dh;
        int n;
        float scale;

        ReluBackward set(float[] h, float[] dh, int n, float scale) {
            this.h = h; this.dh = dh; this.n = n; this.scale = scale;
            return this;
        }

        @Override
        public void apply(int group, int r0, int r1, int j0, int j1) {
            if (j0 == 0 && j1 == n) Ops.reluBackward(h, dh, r0 * n, (r1 - r0) * n, scale); // whole rows: one run
            else for (int i = r0; i < r1; i++) Ops.reluBackward(h, dh, i * n + j0, j1 - j0, scale);
        }
    }
}
