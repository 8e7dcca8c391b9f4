package org.tornadoswitch.hf;

import java.util.Arrays;
import org.tornadoswitch.hf.T5Config.Stack;
import org.tornadoswitch.hf.T5Weights.Block;
import org.tornadoswitch.jvm.Attention;
import org.tornadoswitch.jvm.ExpertFfn;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.model.Routing;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * The JVM backend of the SwitchTransformers model: the same kernels as the labml model's backend
 * ({@link Ops}: Vector API GEMMs, grouped expert GEMMs, the norm family), multi-threaded, each
 * output element summed by one thread in a fixed order. Weights stay in HF's {@code [out, in]}
 * layout, so every linear layer is {@code y = x Wᵀ} ({@link Ops#matmulNT}).
 *
 * <p>Activation buffers grow to the largest batch seen and are reused; the numbers of a pass do not
 * depend on the thread count. Training noise (dropout, router jitter) is a counter-based hash of
 * (seed, step, block, site, element), so a step's masks are redrawn in the backward pass.
 */
public final class T5JvmBackend implements T5Backend {
    // noise sites beside Rng's (jitter 1, attention weights 2, attention residual 3, FFN residual 4, FFN hidden 5)
    private static final int SITE_XATTN = 6, SITE_XRES = 7, SITE_EMBED = 8, SITE_FINAL = 9;
    private static final int IGNORE = -100;

    private final T5Config c;
    private final T5Weights w;
    private T5Weights g;
    private final ThreadPool pool;
    /**
     * A pool of one thread (runs every body inline): a decode step's small element-wise passes and
     * attention rows cost less than handing them to the workers.
     */
    private final ThreadPool serial = new ThreadPool(1);
    /** Floats below which a pass runs inline. */
    private static final int SMALL = 1 << 15;
    private final int d, inner, f, heads, dkv, vocab, experts;
    private final float eps;
    private final Ops.Activation act;
    private long seed;
    private boolean training;
    private int step;
    /** Training noise: the config's dropout_rate and router_jitter_noise unless overridden. */
    private double dropout, jitterNoise;
    private final StackState enc, dec;

    // incremental decoding
    private boolean decoding;
    private int rowsPerSeq, maxLen, pos;
    private float[][] cacheK, cacheV, crossK, crossV;
    private int[] kvLenRows = new int[0];

    // head
    private float[] decNormed = new float[0], decOut = new float[0], decR = new float[0], logits = new float[0];
    private float[] rowLse = new float[0];
    private int[] labels = new int[0];
    private int headRows;

    // backward scratch
    private float[] dX = new float[0], dN = new float[0], dA = new float[0], dQ = new float[0], dK = new float[0],
            dV = new float[0], dT = new float[0], dProbs = new float[0], dLogits = new float[0], dEncOut = new float[0];
    private float[] dYe = new float[0], dXe = new float[0], dHe = new float[0];

    /** One stack's inputs and the activations of its last forward pass, per block. */
    private final class StackState {
        final Stack s;
        final int layers;
        final boolean isDec;
        int nSeq, len, tokens, cap = -1, lenCap = -1;
        int[] ids = new int[0], lengths = new int[0];
        boolean masked;
        final float[][] xIn, n1, r1, q, k, v, a, lse, mid, nX, rX, qx, kx, vx, ax, lseX, mid2, nF, rF, rin, probs, lseR,
                xe, hPre, h, ye;
        final boolean[] jittered;
        float[] bias = new float[0], dBias = new float[0];
        int biasSq, biasSkv;
        float[] out = new float[0], rOut = new float[0];

        StackState(Stack s) {
            this.s = s;
            this.layers = c.layers(s);
            this.isDec = s == Stack.DECODER;
            int L = layers;
            xIn = new float[L + 1][];
            n1 = new float[L][]; r1 = new float[L][]; q = new float[L][]; k = new float[L][]; v = new float[L][];
            a = new float[L][]; lse = new float[L][]; mid = new float[L][];
            nX = new float[L][]; rX = new float[L][]; qx = new float[L][]; kx = new float[L][]; vx = new float[L][];
            ax = new float[L][]; lseX = new float[L][]; mid2 = new float[L][];
            nF = new float[L][]; rF = new float[L][]; rin = new float[L][]; probs = new float[L][]; lseR = new float[L][];
            xe = new float[L][]; hPre = new float[L][]; h = new float[L][]; ye = new float[L][];
            jittered = new boolean[L];
        }

        /** The block's FFN input: after the cross-attention in the decoder, after the self-attention in the encoder. */
        float[] ffnIn(int l) {
            return isDec ? mid2[l] : mid[l];
        }

        /** The input ids of {@code nSeq} sequences of {@code len}. */
        void set(int[] input, int nSeq, int len) {
            this.nSeq = nSeq;
            this.len = len;
            this.tokens = nSeq * len;
            ids = grow(ids, tokens);
            System.arraycopy(input, 0, ids, 0, tokens);
        }

        /** Buffers for {@code t} tokens (and the cross-attention's {@code te} encoder tokens). */
        void ensure(int t, int te) {
            if (t <= cap && (!isDec || kx[0] == null || kx[0].length >= te * inner)) return;
            int n = Math.max(t, cap);
            cap = n;
            boolean gated = act != Ops.Activation.RELU;
            for (int l = 0; l <= layers; l++) xIn[l] = new float[n * d];
            for (int l = 0; l < layers; l++) {
                boolean sparse = c.isSparse(s, l);
                n1[l] = new float[n * d]; r1[l] = new float[n];
                q[l] = new float[n * inner]; k[l] = new float[n * inner]; v[l] = new float[n * inner];
                a[l] = new float[n * inner]; lse[l] = new float[n * heads]; mid[l] = new float[n * d];
                if (isDec) {
                    int m = Math.max(te, kx[l] == null ? 0 : kx[l].length / inner);
                    nX[l] = new float[n * d]; rX[l] = new float[n]; qx[l] = new float[n * inner];
                    kx[l] = new float[m * inner]; vx[l] = new float[m * inner];
                    ax[l] = new float[n * inner]; lseX[l] = new float[n * heads]; mid2[l] = new float[n * d];
                }
                nF[l] = new float[n * d]; rF[l] = new float[n];
                rin[l] = null; // allocated on the first jittered pass
                probs[l] = sparse ? new float[n * experts] : null;
                lseR[l] = sparse ? new float[n] : null;
                xe[l] = new float[n * d]; h[l] = new float[n * f]; hPre[l] = gated ? new float[n * f] : null;
                ye[l] = new float[n * d];
            }
            out = new float[n * d];
            rOut = new float[n];
        }
    }

    public T5JvmBackend(T5Weights weights, int threads) {
        this.w = weights;
        this.c = weights.config();
        this.pool = new ThreadPool(threads);
        d = c.dModel();
        inner = c.innerDim();
        f = c.dFf();
        heads = c.numHeads();
        dkv = c.dKv();
        vocab = c.vocabSize();
        experts = c.numExperts();
        eps = (float) c.layerNormEpsilon();
        act = switch (c.activation()) {
            case RELU -> Ops.Activation.RELU;
            case GELU -> Ops.Activation.GELU;
            case GELU_NEW, GELU_TANH -> Ops.Activation.GELU_TANH;
            case SILU -> Ops.Activation.SILU;
        };
        seed = 42;
        dropout = c.dropoutRate();
        jitterNoise = c.routerJitterNoise();
        enc = new StackState(Stack.ENCODER);
        dec = new StackState(Stack.DECODER);
    }

    /** The pool for a pass over about {@code work} floats: inline when small. */
    private ThreadPool pool(long work) {
        return work < SMALL ? serial : pool;
    }

    @Override
    public String describe() {
        return "jvm (" + pool.threads() + " threads)";
    }

    @Override
    public T5Config config() {
        return c;
    }

    @Override
    public T5Weights params() {
        return w;
    }

    @Override
    public double gradSquaredNorm() {
        T5Weights gw = grads();
        double total = 0;
        for (T5Weights.Tensor t : gw.tensors()) {
            if (!w.usedInForward(t) || !gw.present(t)) continue;
            int n = t.numel(), chunk = 1 << 16, parts = (n + chunk - 1) / chunk;
            double[] part = new double[parts];
            float[] a = t.data();
            int off = t.off();
            pool.parallelFor(parts, (lo, hi) -> {
                for (int c = lo; c < hi; c++) part[c] = Ops.sumSquares(a, off + c * chunk, off + Math.min(n, (c + 1) * chunk));
            });
            for (double x : part) total += x;
        }
        return total;
    }

    @Override
    public void optimizerStep(T5Optimizer optimizer, float gradScale, int t, double lr) {
        optimizer.step(w, grads(), gradScale, t, lr, pool);
    }

    @Override
    public T5Weights grads() {
        if (g == null) g = new T5Weights(c);
        return g;
    }

    @Override
    public void setTrainingNoise(double dropout, double jitter, long seed) {
        if (!(dropout >= 0 && dropout < 1)) throw new IllegalArgumentException("dropout must be in [0, 1), got " + dropout);
        if (!(jitter >= 0 && jitter < 1)) throw new IllegalArgumentException("jitter must be in [0, 1), got " + jitter);
        this.dropout = dropout;
        this.jitterNoise = jitter;
        this.seed = seed;
    }

    @Override
    public void beginPass(boolean training, int step) {
        this.training = training;
        this.step = step;
    }

    private StackState st(Stack s) {
        return s == Stack.ENCODER ? enc : dec;
    }

    /** Key of a noise stream: block codes 0..1023 in the encoder, 1024.. in the decoder; 1023 / 2047 the stack's embedding and final norm. */
    private long key(StackState s, int layer, int site) {
        return Rng.streamKey(seed, step, (s.isDec ? 1024 : 0) + layer, site);
    }

    private float rate() {
        return training ? (float) dropout : 0f;
    }

    private static float keep(long key, long i, float rate) {
        return Rng.uniform(key, i) < rate ? 0f : 1f / (1f - rate);
    }

    /** x[i] *= keep(i) over [0, n): a dropout mask and, applied to a gradient, its backward. */
    private void dropout(float[] x, int n, long key, float rate) {
        if (rate <= 0f) return;
        pool(n).parallelFor(n, (lo, hi) -> {
            for (int i = lo; i < hi; i++) x[i] *= keep(key, i, rate);
        });
    }

    /** out = base + keep ⊙ branch over [0, n) (a residual with dropout on its branch). */
    private void residual(float[] base, float[] branch, float[] out, int n, long key, float rate) {
        pool(n).parallelFor(n, (lo, hi) -> {
            if (rate > 0f) for (int i = lo; i < hi; i++) out[i] = base[i] + keep(key, i, rate) * branch[i];
            else for (int i = lo; i < hi; i++) out[i] = base[i] + branch[i];
        });
    }

    private static int[] grow(int[] a, int n) {
        return a.length >= n ? a : new int[n];
    }

    private static float[] grow(float[] a, int n) {
        return a.length >= n ? a : new float[n];
    }

    // ---- inputs ----

    @Override
    public void setEncoderInput(int[] ids, int[] lengths, int nSeq, int seqLen) {
        StackState s = enc;
        s.set(ids, nSeq, seqLen);
        s.lengths = grow(s.lengths, nSeq);
        s.masked = false;
        for (int b = 0; b < nSeq; b++) {
            int n = lengths == null ? seqLen : lengths[b];
            if (n < 1 || n > seqLen) throw new IllegalArgumentException("sequence " + b + " has length " + n + " of " + seqLen);
            s.lengths[b] = n;
            if (n < seqLen) s.masked = true;
        }
        s.ensure(s.tokens, 0);
        embed(s);
    }

    @Override
    public void setDecoderInput(int[] ids, int nSeq, int seqLen) {
        if (nSeq != enc.nSeq) throw new IllegalArgumentException("decoder batch " + nSeq + " != encoder batch " + enc.nSeq);
        decoding = false;
        StackState s = dec;
        s.set(ids, nSeq, seqLen);
        s.ensure(s.tokens, enc.tokens);
        embed(s);
    }

    private void embed(StackState s) {
        float[] x = s.xIn[0];
        for (int t = 0; t < s.tokens; t++) {
            int id = s.ids[t];
            if (id < 0 || id >= vocab) throw new IllegalArgumentException("token id " + id + " is outside the vocabulary [0, " + vocab + ")");
            System.arraycopy(w.stack(s.s).embed, id * d, x, t * d, d);
        }
        dropout(x, s.tokens * d, key(s, 1023, SITE_EMBED), rate());
    }

    // ---- relative position bias ----

    /**
     * T5's bucket of a relative position (key position - query position), in the fp32 arithmetic of
     * HF's {@code _relative_position_bucket}: exact buckets for small distances, logarithmic ones
     * up to {@code maxDistance}, the last bucket beyond.
     */
    static int bucket(int rel, boolean bidirectional, int numBuckets, int maxDistance) {
        int ret = 0, n = numBuckets;
        if (bidirectional) {
            n /= 2;
            if (rel > 0) ret += n;
            rel = Math.abs(rel);
        } else {
            rel = -Math.min(rel, 0);
        }
        int maxExact = n / 2;
        if (rel < maxExact) return ret + rel;
        float ratio = (float) rel / (float) maxExact;
        float l = (float) Math.log(ratio);
        float denom = (float) Math.log((double) maxDistance / maxExact);
        float v = l / denom * (float) (n - maxExact);
        int large = maxExact + (int) v;
        return ret + Math.min(large, n - 1);
    }

    /** bias[(h * sq + i) * skv + j] = table[bucket(j - (i + qPos0)), h] for the stack's direction. */
    private void computeBias(StackState s, int sq, int skv, int qPos0) {
        float[] table = w.stack(s.s).relBias;
        s.bias = grow(s.bias, heads * sq * skv);
        s.biasSq = sq;
        s.biasSkv = skv;
        float[] b = s.bias;
        int nb = c.relativeAttentionNumBuckets(), md = c.relativeAttentionMaxDistance();
        boolean bidir = !s.isDec;
        pool((long) heads * sq * skv).parallelFor(sq, (lo, hi) -> {
            for (int i = lo; i < hi; i++)
                for (int j = 0; j < skv; j++) {
                    int bk = bucket(j - (i + qPos0), bidir, nb, md) * heads;
                    for (int hh = 0; hh < heads; hh++) b[(hh * sq + i) * skv + j] = table[bk + hh];
                }
        });
    }

    /** Adds dBias [heads x sq x skv] into the table's gradient, bucket by bucket (one thread per head, fixed order). */
    private void biasBackward(StackState s) {
        float[] gt = grads().stack(s.s).relBias;
        int sq = s.biasSq, skv = s.biasSkv, nb = c.relativeAttentionNumBuckets(), md = c.relativeAttentionMaxDistance();
        boolean bidir = !s.isDec;
        float[] db = s.dBias;
        pool.parallelFor(heads, (lo, hi) -> {
            for (int hh = lo; hh < hi; hh++)
                for (int i = 0; i < sq; i++)
                    for (int j = 0; j < skv; j++) gt[bucket(j - i, bidir, nb, md) * heads + hh] += db[(hh * sq + i) * skv + j];
        });
    }

    // ---- forward ----

    @Override
    public float[] forwardAttention(Stack stack, int l) {
        StackState s = st(stack);
        Block b = w.stack(stack).blocks[l];
        int t = s.tokens;
        float rate = rate();
        float[] x = s.xIn[l];
        Ops.rmsNorm(pool((long) t * d), x, 0, b.ln1, 0, s.n1[l], 0, s.r1[l], 0, t, d, eps);
        linear(s.n1[l], b.q, s.q[l], t, inner, d);
        boolean cached = s.isDec && decoding;
        if (cached) {
            // this token's key and value go into the cache at pos; the query attends to positions [0, pos]
            linear(s.n1[l], b.k, dK, t, inner, d);
            linear(s.n1[l], b.v, dV, t, inner, d);
            for (int r = 0; r < t; r++) {
                System.arraycopy(dK, r * inner, cacheK[l], (r * maxLen + pos) * inner, inner);
                System.arraycopy(dV, r * inner, cacheV[l], (r * maxLen + pos) * inner, inner);
            }
            if (l == 0) computeBias(s, 1, pos + 1, pos);
            var shape = new Attention.Shape(t, 1, pos + 1, heads, dkv, inner, inner, maxLen * inner, inner);
            var opt = Attention.Options.full(1f).withBias(s.bias, 0);
            Attention.forward(pool((long) t * (pos + 1) * inner), shape, opt, s.q[l], 0, cacheK[l], 0, cacheV[l], 0, s.a[l], 0, s.lse[l], 0);
        } else {
            linear(s.n1[l], b.k, s.k[l], t, inner, d);
            linear(s.n1[l], b.v, s.v[l], t, inner, d);
            if (l == 0) computeBias(s, s.len, s.len, 0);
            var shape = Attention.Shape.dense(s.nSeq, s.len, heads, dkv);
            var opt = (s.isDec ? Attention.Options.causal(1f) : Attention.Options.full(1f)).withBias(s.bias, 0)
                    .withDropout(rate, key(s, l, Rng.SITE_ATTN));
            if (!s.isDec && s.masked) opt = opt.withKvLen(s.lengths);
            Attention.forward(pool, shape, opt, s.q[l], 0, s.k[l], 0, s.v[l], 0, s.a[l], 0, s.lse[l], 0);
        }
        linear(s.a[l], b.o, dT(t * d), t, d, inner);
        residual(x, dT, s.mid[l], t * d, key(s, l, Rng.SITE_ATTN_RES), rate);
        if (s.isDec) crossAttention(s, b, l, rate);
        float[] in = s.ffnIn(l);
        Ops.rmsNorm(pool((long) t * d), in, 0, b.lnF, 0, s.nF[l], 0, s.rF[l], 0, t, d, eps);
        if (!b.sparse) return null;
        float[] rin = s.nF[l];
        s.jittered[l] = training && jitterNoise > 0;
        if (s.jittered[l]) {
            if (s.rin[l] == null || s.rin[l].length < t * d) s.rin[l] = new float[s.cap * d];
            rin = s.rin[l];
            jitter(s.nF[l], rin, t * d, key(s, l, Rng.SITE_JITTER));
        }
        linear(rin, b.router, s.probs[l], t, experts, d);
        if (b.routerBias != null)
            for (int i = 0; i < t; i++) for (int e = 0; e < experts; e++) s.probs[l][i * experts + e] += b.routerBias[e];
        Ops.softmaxRows(s.probs[l], 0, t, experts, s.lseR[l], 0);
        return s.probs[l];
    }

    private float[] dT(int n) {
        dT = grow(dT, n);
        return dT;
    }

    private void crossAttention(StackState s, Block b, int l, float rate) {
        int t = s.tokens;
        Ops.rmsNorm(pool((long) t * d), s.mid[l], 0, b.lnX, 0, s.nX[l], 0, s.rX[l], 0, t, d, eps);
        linear(s.nX[l], b.qx, s.qx[l], t, inner, d);
        if (decoding) {
            int per = rowsPerSeq;
            kvLenRows = grow(kvLenRows, per);
            for (int e = 0; e < enc.nSeq; e++) {
                Arrays.fill(kvLenRows, 0, per, enc.lengths[e]);
                var shape = new Attention.Shape(per, 1, enc.len, heads, dkv, inner, inner, 0, inner);
                var opt = Attention.Options.full(1f).withKvLen(kvLenRows);
                int qo = e * per * inner, ko = e * enc.len * inner;
                Attention.forward(pool((long) per * enc.len * inner), shape, opt, s.qx[l], qo, crossK[l], ko, crossV[l], ko, s.ax[l], qo,
                        s.lseX[l], e * per * heads);
            }
        } else {
            linear(enc.out, b.kx, s.kx[l], enc.tokens, inner, d);
            linear(enc.out, b.vx, s.vx[l], enc.tokens, inner, d);
            var shape = Attention.Shape.cross(s.nSeq, s.len, enc.len, heads, dkv);
            var opt = Attention.Options.full(1f).withDropout(rate, key(s, l, SITE_XATTN));
            if (enc.masked) opt = opt.withKvLen(enc.lengths);
            Attention.forward(pool, shape, opt, s.qx[l], 0, s.kx[l], 0, s.vx[l], 0, s.ax[l], 0, s.lseX[l], 0);
        }
        linear(s.ax[l], b.ox, dT(t * d), t, d, inner);
        residual(s.mid[l], dT, s.mid2[l], t * d, key(s, l, SITE_XRES), rate);
    }

    private void jitter(float[] x, float[] out, int n, long key) {
        float je = (float) jitterNoise;
        pool.parallelFor(n, (lo, hi) -> {
            for (int i = lo; i < hi; i++) out[i] = x[i] * (1f - je + 2f * je * Rng.uniform(key, i));
        });
    }

    @Override
    public float[] routerLogSumExp(Stack s, int l) {
        return st(s).lseR[l];
    }

    /** y[T x out] = x[T x in] Wᵀ for W [out x in] (HF's nn.Linear); a decode step's few rows stream W once. */
    private void linear(float[] x, float[] wt, float[] y, int t, int out, int in) {
        if (t <= Ops.GEMV_ROWS) Ops.gemvNT(pool, x, 0, wt, 0, y, 0, t, out, in);
        else Ops.matmulNT(pool, x, 0, wt, 0, y, 0, t, out, in, false);
    }

    /** Backward of {@link #linear}: dW += dyᵀ x (when dW is not null) and dx (+)= dy W. */
    private void linearBack(float[] x, float[] wt, float[] dW, float[] dy, float[] dx, boolean acc, int t, int out, int in) {
        if (dW != null) Ops.matmulTN(pool, dy, 0, x, 0, dW, 0, t, out, in);
        if (dx != null) Ops.matmul(pool, dy, 0, wt, 0, null, 0, dx, 0, t, out, in, acc);
    }

    @Override
    public void forwardFfn(Stack stack, int l, Routing r) {
        StackState s = st(stack);
        Block b = w.stack(stack).blocks[l];
        int t = s.tokens;
        float rate = rate();
        ExpertFfn.gather(pool, s.nF[l], r, s.xe[l], d);
        ExpertFfn.forward(pool, ExpertFfn.Layout.OUT_IN, act, s.xe[l], ExpertFfn.Params.of(b.wi, b.wo), s.hPre[l], s.h[l],
                s.ye[l], r.offset, r.kept, r.experts, d, f, rate, key(s, l, Rng.SITE_HIDDEN));
        float[] in = s.ffnIn(l), out = s.xIn[l + 1], ys = s.ye[l];
        long kr = key(s, l, Rng.SITE_FFN_RES);
        boolean scale = b.sparse;
        pool((long) t * d).parallelFor(t, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                int o = i * d, row = ExpertFfn.row(r, i);
                if (row < 0) { // dropped: only the residual (HF gives the branch 0)
                    System.arraycopy(in, o, out, o, d);
                    continue;
                }
                float p = scale ? r.prob[i] : 1f;
                int so = row * d;
                if (rate > 0f) for (int j = 0; j < d; j++) out[o + j] = in[o + j] + keep(kr, o + j, rate) * (p * ys[so + j]);
                else for (int j = 0; j < d; j++) out[o + j] = in[o + j] + p * ys[so + j];
            }
        });
    }

    @Override
    public void finishEncoder() {
        StackState s = enc;
        int t = s.tokens;
        Ops.rmsNorm(pool, s.xIn[s.layers], 0, w.encoder.finalNorm, 0, s.out, 0, s.rOut, 0, t, d, eps);
        dropout(s.out, t * d, key(s, 1023, SITE_FINAL), rate());
    }

    @Override
    public void forwardHead(int[] lbl, double[] out) {
        StackState s = dec;
        int t = s.tokens;
        headRows = t;
        decNormed = grow(decNormed, t * d);
        decOut = grow(decOut, t * d);
        decR = grow(decR, t);
        Ops.rmsNorm(pool((long) t * d), s.xIn[s.layers], 0, w.decoder.finalNorm, 0, decOut, 0, decR, 0, t, d, eps);
        dropout(decOut, t * d, key(s, 1023, SITE_FINAL), rate());
        if (c.tieWordEmbeddings()) {
            float sc = (float) Math.pow(d, -0.5);
            float[] o = decOut;
            pool((long) t * d).parallelFor(t, (lo, hi) -> {
                for (int i = lo * d; i < hi * d; i++) o[i] *= sc;
            });
        }
        logits = grow(logits, t * vocab);
        linear(decOut, w.lmHead, logits, t, vocab, d);
        if (lbl == null) return;
        labels = grow(labels, t);
        System.arraycopy(lbl, 0, labels, 0, t);
        rowLse = grow(rowLse, t);
        float[] lg = logits, ls = rowLse;
        int[] lb = labels;
        pool.parallelFor(t, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                if (lb[i] == IGNORE) continue;
                if (lb[i] < 0 || lb[i] >= vocab) throw new IllegalArgumentException("label " + lb[i] + " is outside the vocabulary");
                int r = i * vocab;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = 0; j < vocab; j++) max = Math.max(max, lg[r + j]);
                double sum = 0;
                for (int j = 0; j < vocab; j++) sum += Math.exp(lg[r + j] - max);
                ls[i] = max + (float) Math.log(sum);
            }
        });
        double sum = 0;
        int n = 0;
        for (int i = 0; i < t; i++) {
            if (lb[i] == IGNORE) continue;
            sum += (double) rowLse[i] - logits[i * vocab + lb[i]];
            n++;
        }
        out[0] = sum;
        out[1] = n;
    }

    @Override
    public float[] logits() {
        return logits;
    }

    // ---- backward ----

    private void ensureBackward() {
        int tMax = Math.max(enc.cap, dec.cap), wMax = Math.max(d, inner);
        dX = grow(dX, tMax * wMax);
        dN = grow(dN, tMax * wMax);
        dA = grow(dA, tMax * wMax);
        dQ = grow(dQ, tMax * inner);
        dK = grow(dK, tMax * inner);
        dV = grow(dV, tMax * inner);
        dT = grow(dT, tMax * wMax);
        dProbs = grow(dProbs, tMax * experts);
        dEncOut = grow(dEncOut, enc.cap * d);
        dLogits = grow(dLogits, dec.tokens * vocab);
    }

    @Override
    public void zeroGrads() {
        T5Weights gw = grads();
        gw.clearAbsent();
        for (float[] a : gw.arrays()) {
            float[] z = a;
            int chunk = 1 << 16, n = (z.length + chunk - 1) / chunk;
            pool.parallelFor(n, (lo, hi) -> Arrays.fill(z, lo * chunk, Math.min(z.length, hi * chunk), 0f));
        }
    }

    @Override
    public void backwardHead(float ceScale) {
        ensureBackward();
        StackState s = dec;
        int t = headRows;
        float[] lg = logits, dl = dLogits, ls = rowLse;
        int[] lb = labels;
        pool.parallelFor(t, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                int r = i * vocab;
                if (lb[i] == IGNORE) {
                    Arrays.fill(dl, r, r + vocab, 0f);
                    continue;
                }
                float l = ls[i];
                for (int j = 0; j < vocab; j++) dl[r + j] = (float) Math.exp(lg[r + j] - l) * ceScale;
                dl[r + lb[i]] -= ceScale;
            }
        });
        T5Weights gw = grads();
        // logits = decOut lmᵀ: d lm += dlogitsᵀ decOut, d decOut = dlogits lm
        Ops.matmulTN(pool, dl, 0, decOut, 0, gw.lmHead, 0, t, vocab, d);
        Ops.matmul(pool, dl, 0, w.lmHead, 0, null, 0, dN, 0, t, vocab, d, false);
        if (c.tieWordEmbeddings()) {
            float sc = (float) Math.pow(d, -0.5);
            float[] dn = dN;
            pool.parallelFor(t, (lo, hi) -> {
                for (int i = lo * d; i < hi * d; i++) dn[i] *= sc;
            });
        }
        dropout(dN, t * d, key(s, 1023, SITE_FINAL), rate());
        Ops.rmsNormBackward(pool, s.xIn[s.layers], 0, w.decoder.finalNorm, 0, decR, 0, dN, 0, dX, 0, gw.decoder.finalNorm, 0,
                t, d, false);
        Arrays.fill(dEncOut, 0, enc.tokens * d, 0f);
        s.dBias = grow(s.dBias, heads * s.biasSq * s.biasSkv);
        Arrays.fill(s.dBias, 0, heads * s.biasSq * s.biasSkv, 0f);
    }

    @Override
    public void backwardFfn(Stack stack, int l, Routing r, float[] probGrad, float zScale) {
        StackState s = st(stack);
        Block b = w.stack(stack).blocks[l];
        Block gb = grads().stack(stack).blocks[l];
        int t = s.tokens;
        float rate = rate();
        // dX = d loss / d out; out = in + keep ⊙ (p · y): d in = dX, d (p · y) = keep ⊙ dX (in dA)
        float[] dB = dA;
        System.arraycopy(dX, 0, dB, 0, t * d);
        dropout(dB, t * d, key(s, l, Rng.SITE_FFN_RES), rate);
        // the router: d p_t = <dB_t, y_row> for kept tokens (dropped tokens' branch is 0)
        if (b.sparse) {
            float[] ys = s.ye[l], dp = dProbs;
            int perSeq = s.len;
            pool.parallelFor(t, (lo, hi) -> {
                for (int i = lo; i < hi; i++) {
                    int bq = i / perSeq;
                    for (int e = 0; e < experts; e++) dp[i * experts + e] = probGrad == null ? 0f : probGrad[bq * experts + e];
                    int row = ExpertFfn.row(r, i);
                    if (row < 0) continue;
                    float dot = 0;
                    for (int j = 0; j < d; j++) dot += dB[i * d + j] * ys[row * d + j];
                    dp[i * experts + r.expertOf[i]] += dot;
                }
            });
        }
        // experts: d y_row = p · dB_t; backward through wo, the activation, hidden dropout and wi; d x into dN
        int kept = r.offset[r.experts];
        dYe = grow(dYe, kept * d);
        dXe = grow(dXe, kept * d);
        dHe = grow(dHe, kept * f);
        float[] dy = dYe, dxe = dXe, dn = dN;
        boolean scale = b.sparse;
        pool.parallelFor(t, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                int row = ExpertFfn.row(r, i);
                if (row < 0) continue;
                float p = scale ? r.prob[i] : 1f;
                for (int j = 0; j < d; j++) dy[row * d + j] = p * dB[i * d + j];
            }
        });
        if (b.sparse) for (int e = 0; e < r.experts; e++) if (r.kept[e] == 0) grads().markAbsent(gb, e);
        ExpertFfn.backward(pool, ExpertFfn.Layout.OUT_IN, act, dy, s.xe[l], s.hPre[l], s.h[l], ExpertFfn.Params.of(b.wi, b.wo),
                ExpertFfn.Params.of(gb.wi, gb.wo), dHe, dxe, r.offset, r.kept, r.experts, d, f, rate, key(s, l, Rng.SITE_HIDDEN));
        pool.parallelFor(t, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                int row = ExpertFfn.row(r, i);
                if (row < 0) Arrays.fill(dn, i * d, i * d + d, 0f);
                else System.arraycopy(dxe, row * d, dn, i * d, d);
            }
        });
        if (b.sparse) routerBackward(s, b, gb, l, zScale);
        Ops.rmsNormBackward(pool, s.ffnIn(l), 0, b.lnF, 0, s.rF[l], 0, dN, 0, dX, 0, gb.lnF, 0, t, d, true);
    }

    /** Softmax backward of the router (with the z-loss term), then its weights and input gradients into dN. */
    private void routerBackward(StackState s, Block b, Block gb, int l, float zScale) {
        int t = s.tokens;
        float[] pr = s.probs[l], lse = s.lseR[l], dp = dProbs;
        pool.parallelFor(t, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                int o = i * experts;
                float dot = 0;
                for (int e = 0; e < experts; e++) dot += pr[o + e] * dp[o + e];
                float zg = zScale * lse[i];
                for (int e = 0; e < experts; e++) dp[o + e] = pr[o + e] * (dp[o + e] - dot) + zg * pr[o + e];
            }
        });
        float[] rin = s.jittered[l] ? s.rin[l] : s.nF[l];
        Ops.matmulTN(pool, dp, 0, rin, 0, gb.router, 0, t, experts, d);
        if (gb.routerBias != null) Ops.biasGrad(dp, 0, t, experts, gb.routerBias, 0);
        if (s.jittered[l]) {
            Ops.matmul(pool, dp, 0, b.router, 0, null, 0, dT(t * d), 0, t, experts, d, false);
            long key = key(s, l, Rng.SITE_JITTER);
            float je = (float) jitterNoise;
            float[] dn = dN, dt = dT;
            pool.parallelFor(t * d, (lo, hi) -> {
                for (int i = lo; i < hi; i++) dn[i] += dt[i] * (1f - je + 2f * je * Rng.uniform(key, i));
            });
        } else {
            Ops.matmul(pool, dp, 0, b.router, 0, null, 0, dN, 0, t, experts, d, true);
        }
    }

    @Override
    public void backwardAttention(Stack stack, int l) {
        StackState s = st(stack);
        Block b = w.stack(stack).blocks[l];
        Block gb = grads().stack(stack).blocks[l];
        int t = s.tokens;
        float rate = rate();
        if (s.isDec) crossBackward(s, b, gb, l, rate);
        // mid = x + keep ⊙ (a Woᵀ)
        float[] dB = dN;
        System.arraycopy(dX, 0, dB, 0, t * d);
        dropout(dB, t * d, key(s, l, Rng.SITE_ATTN_RES), rate);
        linearBack(s.a[l], b.o, gb.o, dB, dA, false, t, d, inner);
        var shape = Attention.Shape.dense(s.nSeq, s.len, heads, dkv);
        var opt = (s.isDec ? Attention.Options.causal(1f) : Attention.Options.full(1f)).withBias(s.bias, 0)
                .withDropout(rate, key(s, l, Rng.SITE_ATTN));
        if (!s.isDec && s.masked) opt = opt.withKvLen(s.lengths);
        Attention.backward(pool, shape, opt, s.q[l], 0, s.k[l], 0, s.v[l], 0, s.a[l], 0, dA, 0, s.lse[l], 0,
                dQ, 0, dK, 0, dV, 0, s.dBias, 0);
        linearBack(s.n1[l], b.q, gb.q, dQ, dN, false, t, inner, d);
        linearBack(s.n1[l], b.k, gb.k, dK, dN, true, t, inner, d);
        linearBack(s.n1[l], b.v, gb.v, dV, dN, true, t, inner, d);
        Ops.rmsNormBackward(pool, s.xIn[l], 0, b.ln1, 0, s.r1[l], 0, dN, 0, dX, 0, gb.ln1, 0, t, d, true);
    }

    private void crossBackward(StackState s, Block b, Block gb, int l, float rate) {
        int t = s.tokens, te = enc.tokens;
        float[] dB = dN;
        System.arraycopy(dX, 0, dB, 0, t * d);
        dropout(dB, t * d, key(s, l, SITE_XRES), rate);
        linearBack(s.ax[l], b.ox, gb.ox, dB, dA, false, t, d, inner);
        var shape = Attention.Shape.cross(s.nSeq, s.len, enc.len, heads, dkv);
        var opt = Attention.Options.full(1f).withDropout(rate, key(s, l, SITE_XATTN));
        if (enc.masked) opt = opt.withKvLen(enc.lengths);
        dK = grow(dK, te * inner);
        dV = grow(dV, te * inner);
        Attention.backward(pool, shape, opt, s.qx[l], 0, s.kx[l], 0, s.vx[l], 0, s.ax[l], 0, dA, 0, s.lseX[l], 0,
                dQ, 0, dK, 0, dV, 0, null, 0);
        linearBack(enc.out, b.kx, gb.kx, dK, dEncOut, true, te, inner, d);
        linearBack(enc.out, b.vx, gb.vx, dV, dEncOut, true, te, inner, d);
        linearBack(s.nX[l], b.qx, gb.qx, dQ, dN, false, t, inner, d);
        Ops.rmsNormBackward(pool, s.mid[l], 0, b.lnX, 0, s.rX[l], 0, dN, 0, dX, 0, gb.lnX, 0, t, d, true);
    }

    /** Embedding gradient: embed[id] += keep ⊙ dX (tied: both stacks add into the one table; serial, in token order). */
    private void embedBackward(StackState s) {
        int t = s.tokens;
        dropout(dX, t * d, key(s, 1023, SITE_EMBED), rate());
        float[] gs = grads().stack(s.s).embed;
        for (int i = 0; i < t; i++) {
            int o = s.ids[i] * d;
            for (int j = 0; j < d; j++) gs[o + j] += dX[i * d + j];
        }
    }

    @Override
    public void backwardDecoderInput() {
        biasBackward(dec);
        embedBackward(dec);
    }

    @Override
    public void backwardEncoderOutput() {
        StackState s = enc;
        int t = s.tokens;
        dropout(dEncOut, t * d, key(s, 1023, SITE_FINAL), rate());
        Ops.rmsNormBackward(pool, s.xIn[s.layers], 0, w.encoder.finalNorm, 0, s.rOut, 0, dEncOut, 0, dX, 0,
                grads().encoder.finalNorm, 0, t, d, false);
        s.dBias = grow(s.dBias, heads * s.biasSq * s.biasSkv);
        Arrays.fill(s.dBias, 0, heads * s.biasSq * s.biasSkv, 0f);
    }

    @Override
    public void backwardEncoderInput() {
        biasBackward(enc);
        embedBackward(enc);
    }

    // ---- incremental decoding ----

    @Override
    public void beginDecoding(int rows, int maxLen) {
        this.rowsPerSeq = rows;
        this.maxLen = maxLen;
        int n = enc.nSeq * rows, te = enc.tokens;
        StackState s = dec;
        s.nSeq = n;
        s.len = 1;
        s.tokens = n;
        s.ensure(n, te);
        int L = s.layers;
        if (cacheK == null || cacheK[0].length < n * maxLen * inner || crossK[0].length < te * inner) {
            cacheK = new float[L][n * maxLen * inner];
            cacheV = new float[L][n * maxLen * inner];
            crossK = new float[L][te * inner];
            crossV = new float[L][te * inner];
        }
        dK = grow(dK, n * inner);
        dV = grow(dV, n * inner);
        for (int l = 0; l < L; l++) {
            Block b = w.decoder.blocks[l];
            linear(enc.out, b.kx, crossK[l], te, inner, d);
            linear(enc.out, b.vx, crossV[l], te, inner, d);
        }
        decoding = true;
    }

    @Override
    public void decodeStep(int[] ids, int p) {
        if (!decoding) throw new IllegalStateException("beginDecoding first");
        if (p >= maxLen) throw new IllegalArgumentException("position " + p + " beyond the cache of " + maxLen);
        pos = p;
        StackState s = dec;
        System.arraycopy(ids, 0, s.ids = grow(s.ids, s.tokens), 0, s.tokens);
        embed(s);
    }

    @Override
    public void reorderCache(int[] source, int len) {
        int n = dec.tokens;
        float[] tmp = grow(dT, n * len * inner);
        dT = tmp;
        for (int l = 0; l < dec.layers; l++) {
            for (float[] cache : new float[][] {cacheK[l], cacheV[l]}) {
                for (int r = 0; r < n; r++) System.arraycopy(cache, source[r] * maxLen * inner, tmp, r * len * inner, len * inner);
                for (int r = 0; r < n; r++) System.arraycopy(tmp, r * len * inner, cache, r * maxLen * inner, len * inner);
            }
        }
    }

    @Override
    public void close() {
        pool.close();
        serial.close();
    }
}
