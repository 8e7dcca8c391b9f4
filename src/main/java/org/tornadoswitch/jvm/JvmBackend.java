package org.tornadoswitch.jvm;

import static org.tornadoswitch.util.Rng.SITE_ATTN;
import static org.tornadoswitch.util.Rng.SITE_ATTN_RES;
import static org.tornadoswitch.util.Rng.SITE_FFN_RES;
import static org.tornadoswitch.util.Rng.SITE_HIDDEN;
import static org.tornadoswitch.util.Rng.SITE_JITTER;

import org.tornadoswitch.Config;
import org.tornadoswitch.backend.Backend;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.Routing;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * The reference backend: plain multi-threaded Java. Every buffer is allocated in the constructor,
 * sized for the largest batch; the step loop allocates no arrays. Expert rows are grouped (expert
 * e's tokens at rows [offset[e], offset[e+1])), so all experts together use at most one row per
 * token whatever the number of experts.
 */
public final class JvmBackend implements Backend {
    private static final int CHUNK = 1 << 16;
    /**
     * Up to this many experts the router's backward runs inside the per-token pass (its products are
     * e x d per token, small); above it the router's weight and input gradients are GEMMs.
     */
    static final int FUSED_ROUTER_MAX_EXPERTS = 8;

    private final Config cfg;
    private final ParamLayout p;
    private final ThreadPool pool;
    private final int maxT, d, f, e, vocab, layers, heads, maxS;
    private final boolean switching;
    /** Whether each block routes (sparse step: some blocks are dense). */
    private final boolean[] routes;
    /** Dropped tokens' FFN branch is zero (else their normalized input). */
    private final boolean zeroDropped;

    private final float[] w, g, m, v;
    /** Where each block's FFN weights and biases (and their gradients) lie in the flat buffers. */
    private final ExpertFfn.Params[] ffnParams, ffnGrads;
    private final int[] tokens, targets;
    private int nSeq, seqLen, nTok;
    /** Attention geometry of the current batch, and the options without dropout. */
    private Attention.Shape attShape;
    private final Attention.Options attNoDrop;
    private boolean hasTargets;
    private boolean training;
    /** Whether dLogits holds the gradient of the last forwardHead's logits (computed with its loss in a training pass). */
    private boolean dLogitsReady;
    private int step;

    // activations saved for the backward pass, per layer
    private final float[][] xIn, ln1, q, k, vv, attOut, xMid, ln2, probs, xe, he, ye;
    /** Log-sum-exp of each attention row (per layer): the backward recomputes the weights from it. */
    private final float[][] attLse;
    private final float[][] ln1Mean, ln1Rstd, ln2Mean, ln2Rstd, routerLse;
    /** Router input times the jitter noise, per layer, and whether the last pass jittered. */
    private final float[][] routerIn;
    private final boolean[] jittered;
    private final float[] lnf, lnfMean, lnfRstd, logits, losses;
    private final int[] correct;
    // backward scratch
    private final float[] dX, dLn, dA, dQ, dK, dV, dLogits, dXe, dHe, dYe, dProbs;
    /** dX through a residual branch's dropout mask (only with --dropout). */
    private final float[] dRes;
    /** Per-block partial sums of LayerNorm parameter gradients and of the router's (Wᵀ-shaped), and the router's Wᵀ. */
    private final float[] lnPartial, routerPartial, routerWt;
    /** d loss / d gate weight of one token's k assignments. */
    private final float[] dGate;
    private final double[] partial;
    // time per stage (Backend.STAGES), for bench
    private static final int ATTN = 0, ATTN_CORE = 1, ROUTER = 2, EXPERTS = 3, HEAD = 4, BWD_HEAD = 5, BWD_EXPERTS = 6,
            BWD_ROUTER = 7, BWD_ATTN_CORE = 8, BWD_ATTN = 9, BWD_EMBED = 10, GRAD_NORM = 11, OPTIMIZER = 12;
    private final long[] stageNs = new long[STAGES.length];
    private long mark;

    /** Adds the time since the last mark to {@code stage} and moves the mark. */
    private void lap(int stage) {
        long now = System.nanoTime();
        stageNs[stage] += now - mark;
        mark = now;
    }

    @Override
    public long[] threadIdleNanos() {
        return pool.idleNanos();
    }

    @Override
    public long[] stageNanos() {
        return stageNs.clone();
    }

    public JvmBackend(Config cfg, int vocab, float[] initialParams, int threads) {
        this.cfg = cfg;
        this.p = new ParamLayout(cfg, vocab);
        this.pool = new ThreadPool(threads);
        this.maxT = cfg.tokensPerBatch();
        this.maxS = cfg.seqLen();
        this.d = cfg.dModel();
        this.f = cfg.dFf();
        this.e = cfg.numExperts();
        this.vocab = vocab;
        this.layers = cfg.layers();
        this.heads = cfg.heads();
        this.switching = cfg.switchBlocks();
        this.routes = new boolean[layers];
        for (int l = 0; l < layers; l++) routes[l] = cfg.switchLayer(l);
        this.zeroDropped = cfg.droppedOutput() == Config.DroppedOutput.ZERO;
        this.attNoDrop = Attention.Options.causal((float) (1.0 / Math.sqrt(d / heads)));
        int n = p.size();
        if (initialParams.length != n) throw new IllegalArgumentException("expected " + n + " parameters, got " + initialParams.length);
        w = initialParams.clone();
        g = new float[n];
        ffnParams = new ExpertFfn.Params[layers];
        ffnGrads = new ExpertFfn.Params[layers];
        for (int l = 0; l < layers; l++) {
            ffnParams[l] = new ExpertFfn.Params(w, p.w1[l], w, p.b1[l], w, p.w2[l], w, p.b2[l]);
            ffnGrads[l] = new ExpertFfn.Params(g, p.w1[l], g, p.b1[l], g, p.w2[l], g, p.b2[l]);
        }
        m = new float[n];
        v = new float[n];
        tokens = new int[maxT];
        targets = new int[maxT];
        int td = maxT * d;
        xIn = alloc(layers + 1, td);
        ln1 = alloc(layers, td); q = alloc(layers, td); k = alloc(layers, td); vv = alloc(layers, td);
        attLse = alloc(layers, cfg.batchSize() * heads * maxS); attOut = alloc(layers, td); xMid = alloc(layers, td); ln2 = alloc(layers, td);
        probs = alloc(layers, maxT * e);
        int rows = maxT * (switching ? cfg.topK() : 1); // one row per kept assignment
        xe = alloc(layers, rows * d); he = alloc(layers, rows * f); ye = alloc(layers, rows * d);
        ln1Mean = alloc(layers, maxT); ln1Rstd = alloc(layers, maxT);
        ln2Mean = alloc(layers, maxT); ln2Rstd = alloc(layers, maxT);
        routerLse = alloc(layers, switching ? maxT : 0);
        routerIn = alloc(layers, switching && cfg.jitter() > 0 ? td : 0);
        jittered = new boolean[layers];
        lnf = new float[td]; lnfMean = new float[maxT]; lnfRstd = new float[maxT];
        logits = new float[maxT * vocab]; losses = new float[maxT]; correct = new int[maxT];
        dX = new float[td]; dLn = new float[td]; dA = new float[td]; dQ = new float[td]; dK = new float[td];
        dV = new float[td]; dLogits = new float[maxT * vocab]; dXe = new float[rows * d]; dHe = new float[rows * f];
        dYe = new float[rows * d]; dProbs = new float[maxT * e];
        dGate = new float[switching ? cfg.topK() : 1];
        dRes = new float[cfg.dropout() > 0 ? td : 0];
        lnPartial = new float[Ops.layerNormPartials(maxT, d)];
        boolean fusedRouter = switching && e <= FUSED_ROUTER_MAX_EXPERTS;
        routerPartial = new float[fusedRouter ? (maxT + Ops.LN_BLOCK - 1) / Ops.LN_BLOCK * (e * d + e) : 0];
        routerWt = new float[fusedRouter ? e * d : 0];
        partial = new double[(n + CHUNK - 1) / CHUNK];
    }

    /**
     * Elements (floats, ints and doubles alike) of every buffer the constructor allocates besides the
     * four parameter-sized ones (weights, gradients, Adam's two moments): activations, backward
     * scratch, token ids. In long, for the memory plan made before anything is allocated; the
     * largest single buffer is {@link #largestActivationBuffer}. Keep in step with the constructor
     * (JvmBackendMemoryTest checks it).
     */
    public static long plannedActivationElements(Config cfg, int vocab) {
        long t = cfg.tokensPerBatch(), d = cfg.dModel(), f = cfg.dFf(), e = cfg.numExperts(), layers = cfg.layers();
        boolean sw = cfg.switchBlocks();
        long td = t * d, rows = t * (sw ? cfg.topK() : 1), bhs = (long) cfg.batchSize() * cfg.heads() * cfg.seqLen();
        boolean fr = sw && e <= FUSED_ROUTER_MAX_EXPERTS;
        long perLayer = 8 * td                          // ln1, q, k, v, attOut, xMid, ln2 and the block input
                + bhs                                   // attention log-sum-exp
                + t * e                                 // router probabilities
                + rows * (2 * d + f)                    // expert input, hidden, output rows
                + 4 * t + (sw ? t : 0)                  // LayerNorm statistics, router log-sum-exp
                + (sw && cfg.jitter() > 0 ? td : 0);    // jittered router input
        long global = td                                // the last block's output (xIn[layers])
                + td + 2 * t + 2 * t * vocab + 2 * t    // final LayerNorm, logits, dLogits, losses, correct
                + 6 * td + rows * (2 * d + f) + t * e   // backward scratch
                + (cfg.dropout() > 0 ? td : 0)
                + 2 * t                                 // token ids and targets
                + (t + Ops.LN_BLOCK - 1) / Ops.LN_BLOCK * (2 * d + (fr ? e * d + e : 0)) + (fr ? e * d : 0); // partial sums
        return layers * perLayer + global;
    }

    /** Elements of the largest single activation buffer (must fit one Java array). */
    public static long largestActivationBuffer(Config cfg, int vocab) {
        long t = cfg.tokensPerBatch(), rows = t * (cfg.switchBlocks() ? cfg.topK() : 1);
        return Math.max(Math.max(t * cfg.dModel(), rows * cfg.dFf()), Math.max(t * vocab, rows * cfg.dModel()));
    }

    private static float[][] alloc(int count, int size) {
        float[][] a = new float[count][];
        for (int i = 0; i < count; i++) a[i] = new float[size];
        return a;
    }

    @Override
    public String describe() {
        return "jvm (" + pool.threads() + " threads)";
    }

    @Override
    public void setBatch(int[] inputs, int[] tgts, int nSeq, int seqLen) {
        if (seqLen > maxS || nSeq * seqLen > maxT)
            throw new IllegalArgumentException("batch " + nSeq + "x" + seqLen + " exceeds " + cfg.batchSize() + "x" + maxS);
        this.nSeq = nSeq;
        this.seqLen = seqLen;
        this.nTok = nSeq * seqLen;
        if (attShape == null || attShape.nSeq() != nSeq || attShape.sq() != seqLen)
            attShape = Attention.Shape.dense(nSeq, seqLen, heads, d / heads);
        System.arraycopy(inputs, 0, tokens, 0, nTok);
        hasTargets = tgts != null;
        dLogitsReady = false;
        if (hasTargets) System.arraycopy(tgts, 0, targets, 0, nTok);
    }

    @Override
    public void beginPass(boolean training, int step) {
        this.training = training;
        this.step = step;
    }

    @Override
    public float[] forwardToRouter(int l) {
        int t = nTok;
        mark = System.nanoTime();
        if (l == 0) embed();
        Ops.layerNorm(pool, xIn[l], 0, w, p.ln1G[l], w, p.ln1B[l], ln1[l], 0, ln1Mean[l], ln1Rstd[l], 0, t, d);
        Ops.matmul(pool, ln1[l], 0, w, p.wq[l], w, p.bq[l], q[l], 0, t, d, d, false);
        Ops.matmul(pool, ln1[l], 0, w, p.wk[l], w, p.bk[l], k[l], 0, t, d, d, false);
        Ops.matmul(pool, ln1[l], 0, w, p.wv[l], w, p.bv[l], vv[l], 0, t, d, d, false);
        float rate = dropRate();
        lap(ATTN);
        Attention.forward(pool, attShape, attOptions(l, rate), q[l], 0, k[l], 0, vv[l], 0, attOut[l], 0, attLse[l], 0);
        lap(ATTN_CORE);
        float[] mid = xMid[l], in = xIn[l];
        // mid = in + (keep *) (attOut Wo + bo): the residual (and its dropout) in the GEMM's epilogue
        if (rate > 0) Ops.matmulFused(pool, attOut[l], 0, w, p.wo[l], w, p.bo[l], mid, 0, t, d, d, null, 0, false,
                residualDropout.set(mid, in, d, key(l, SITE_ATTN_RES), rate));
        else Ops.matmulFused(pool, attOut[l], 0, w, p.wo[l], w, p.bo[l], mid, 0, t, d, d, in, 0, false, null);
        lap(ATTN);
        Ops.layerNorm(pool, mid, 0, w, p.ln2G[l], w, p.ln2B[l], ln2[l], 0, ln2Mean[l], ln2Rstd[l], 0, t, d);
        if (!routes[l]) {
            lap(ROUTER);
            return null;
        }
        jittered[l] = training && cfg.jitter() > 0;
        float[] rin = ln2[l];
        if (jittered[l]) {
            rin = routerIn[l];
            jitter(ln2[l], rin, l, t * d);
        }
        Ops.matmul(pool, rin, 0, w, p.routerW[l], w, p.routerB[l], probs[l], 0, t, d, e, false);
        Ops.softmaxRows(probs[l], 0, t, e, routerLse[l], 0);
        lap(ROUTER);
        return probs[l];
    }

    @Override
    public float[] routerLogSumExp(int l) {
        return routes[l] ? routerLse[l] : null;
    }

    /** Causal attention of layer l: scale 1/sqrt(hd), dropout on the weights at the given rate (the no-dropout options are shared). */
    private Attention.Options attOptions(int l, float rate) {
        return rate > 0 ? attNoDrop.withDropout(rate, key(l, SITE_ATTN)) : attNoDrop;
    }

    /** General dropout rate of this pass: attention weights and residual branches; 0 outside training. */
    private float dropRate() {
        return training ? (float) cfg.dropout() : 0f;
    }

    /** Dropout rate on the FFN hidden layer of block l: the expert rate in a Switch block, else the general one. */
    private float hiddenRate(int l) {
        return training ? (float) (routes[l] ? cfg.expertDropout() : cfg.dropout()) : 0f;
    }

    private long key(int l, int site) {
        return Rng.streamKey(cfg.seed(), step, l, site);
    }

    /** dst[i] = src[i] * keep(i) for i in [0, n): a dropout mask and its backward alike. */
    private void mask(float[] src, float[] dst, int n, long key, float rate) {
        pool.parallelFor(n, (lo, hi) -> {
            for (int i = lo; i < hi; i++) dst[i] = src[i] * Ops.keep(key, i, rate);
        });
    }

    /** Jitter noise factor of element i of layer l's router input in this step: U(1 - eps, 1 + eps). */
    private float jitterNoise(long key, int i) {
        float eps = (float) cfg.jitter();
        return 1f - eps + 2f * eps * Rng.uniform(key, i);
    }

    /** out = x * noise, element by element (the router's input in a training pass). */
    private void jitter(float[] x, float[] out, int l, int n) {
        long key = Rng.streamKey(cfg.seed(), step, l, SITE_JITTER);
        pool.parallelFor(n, (lo, hi) -> {
            for (int i = lo; i < hi; i++) out[i] = x[i] * jitterNoise(key, i);
        });
    }

    private void embed() {
        float[] x = xIn[0];
        for (int t = 0; t < nTok; t++) {
            System.arraycopy(w, p.tokEmb + tokens[t] * d, x, t * d, d);
            if (p.posEmb >= 0) {
                int po = p.posEmb + (t % seqLen) * d;
                for (int j = 0; j < d; j++) x[t * d + j] += w[po + j];
            }
        }
    }

    /** Row of assignment a's expert output in the grouped buffers, or -1 when dropped. */
    private static int row(Routing r, int a) {
        int s = r.slot[a];
        return s < 0 ? -1 : r.offset[r.expertOf[a]] + s;
    }

    /** Output scale of assignment a: its gate weight (scale_prob) or p / stop_gradient(p) = 1. */
    private float scale(int l, Routing r, int t) {
        return routes[l] && cfg.scaleProb() ? r.prob[t] : 1f;
    }

    @Override
    public void forwardFfn(int l, Routing r) {
        int t = nTok;
        float[] x = ln2[l], xs = xe[l], hs = he[l], ys = ye[l], mid = xMid[l], out = xIn[l + 1];
        float hidden = hiddenRate(l), rate = dropRate();
        int k = r.k, ne = r.experts;
        mark = System.nanoTime();
        ExpertFfn.gather(pool, x, r, xs, d);
        // the shared expert FFN, all experts in one pass per matrix (expert x's rows are [offset[x],
        // offset[x] + kept[x])); ReLU and the hidden dropout (by grouped row position) in the first GEMM's
        // epilogue; top-1: each kept token's out = mid + (keep *) s * y in the second's, as its row is done
        long kr = key(l, SITE_FFN_RES);
        ExpertFfn.forward(pool, ExpertFfn.Layout.IN_OUT, Ops.Activation.RELU, xs, ffnParams[l], null, hs, ys, r.offset, r.kept,
                ne, d, f, hidden, key(l, SITE_HIDDEN), ffnEpilogues, k > 1 ? null : combine.set(l, r, kr, rate));
        if (k > 1) {
            combineTopK(l, r, rate);
            lap(EXPERTS);
            return;
        }
        for (int i = 0; i < t; i++) { // dropped tokens: their input (scaled), or nothing
            if (row(r, i) >= 0) continue;
            int o = i * d;
            if (zeroDropped) {
                System.arraycopy(mid, o, out, o, d);
                continue;
            }
            float s = scale(l, r, i);
            if (rate > 0) { // residual dropout on the FFN branch
                for (int j = 0; j < d; j++) out[o + j] = mid[o + j] + Ops.keep(kr, o + j, rate) * (s * x[o + j]);
            } else {
                Ops.addScaled(mid, o, s, x, o, out, o, d);
            }
        }
        lap(EXPERTS);
    }

    /** out = mid + keep * sum_j g_j * (expert output, or the passthrough of a dropped assignment). */
    private void combineTopK(int l, Routing r, float rate) {
        int k = r.k;
        float[] x = ln2[l], ys = ye[l], mid = xMid[l], out = xIn[l + 1];
        long kr = key(l, SITE_FFN_RES);
        for (int i = 0; i < nTok; i++) {
            int o = i * d;
            java.util.Arrays.fill(out, o, o + d, 0f);
            for (int j = 0; j < k; j++) {
                int a = i * k + j, rr = row(r, a);
                if (rr < 0 && zeroDropped) continue;
                float s = r.prob[a];
                float[] src = rr >= 0 ? ys : x;
                int so = rr >= 0 ? rr * d : o;
                for (int c = 0; c < d; c++) out[o + c] += s * src[so + c];
            }
            if (rate > 0) for (int c = 0; c < d; c++) out[o + c] = mid[o + c] + Ops.keep(kr, o + c, rate) * out[o + c];
            else for (int c = 0; c < d; c++) out[o + c] = mid[o + c] + out[o + c];
        }
    }

    // GEMM epilogues, one reusable object each (nothing allocated per call); they run on the pool's threads

    /** mid = in + mid * keep (the attention branch's residual dropout), over each finished block of mid. */
    private static final class ResidualDropout implements Ops.Epilogue {
        float[] mid, in;
        int n;
        long key;
        float rate;

        ResidualDropout set(float[] mid, float[] in, int n, long key, float rate) {
            this.mid = mid; this.in = in; this.n = n; this.key = key; this.rate = rate;
            return this;
        }

        @Override
        public void apply(int group, int r0, int r1, int j0, int j1) {
            for (int i = r0; i < r1; i++)
                for (int j = j0, o = i * n + j0; j < j1; j++, o++) mid[o] = in[o] + mid[o] * Ops.keep(key, o, rate);
        }
    }

    /** Top-1 combine as the expert rows finish: out[token] = mid + (keep *) s * y[row], token = order[row]. */
    private final class Combine implements Ops.Epilogue {
        int l;
        Routing r;
        long key;
        float rate;

        Combine set(int l, Routing r, long key, float rate) {
            this.l = l; this.r = r; this.key = key; this.rate = rate;
            return this;
        }

        @Override
        public void apply(int group, int r0, int r1, int j0, int j1) {
            float[] ys = ye[l], mid = xMid[l], out = xIn[l + 1];
            for (int rr = r0; rr < r1; rr++) {
                int i = r.order[rr], o = i * d, so = rr * d;
                float s = scale(l, r, i);
                if (rate > 0) { // residual dropout on the FFN branch
                    for (int j = j0; j < j1; j++) out[o + j] = mid[o + j] + Ops.keep(key, o + j, rate) * (s * ys[so + j]);
                } else {
                    Ops.addScaled(mid, o + j0, s, ys, so + j0, out, o + j0, j1 - j0);
                }
            }
        }
    }

    private final ResidualDropout residualDropout = new ResidualDropout();
    private final ExpertFfn.Fused ffnEpilogues = new ExpertFfn.Fused();
    private final Combine combine = new Combine();

    /** A copy of an activation of the last pass, for tests: "mid" (after attention), "ln2", "out" (block output). */
    float[] peek(String what, int l) {
        return switch (what) {
            case "mid" -> xMid[l].clone();
            case "ln2" -> ln2[l].clone();
            case "out" -> xIn[l + 1].clone();
            case "expertOut" -> ye[l].clone();
            default -> throw new IllegalArgumentException(what);
        };
    }

    @Override
    public void forwardHead(double[] out) {
        int t = nTok;
        mark = System.nanoTime();
        Ops.layerNorm(pool, xIn[layers], 0, w, p.lnfG, w, p.lnfB, lnf, 0, lnfMean, lnfRstd, 0, t, d);
        Ops.matmul(pool, lnf, 0, w, p.headW, w, p.headB, logits, 0, t, d, vocab, false);
        if (!hasTargets || out == null) {
            lap(HEAD);
            return;
        }
        // a training pass is followed by its backward: the logit gradients come from the same pass over the logits
        dLogitsReady = training;
        Ops.crossEntropy(pool, logits, targets, losses, correct, training ? dLogits : null, t, vocab);
        lap(HEAD);
        double sum = 0;
        long c = 0;
        for (int i = 0; i < t; i++) {
            sum += losses[i];
            c += correct[i];
        }
        out[0] = sum;
        out[1] = c;
    }

    @Override
    public void logits(int t, float[] out) {
        System.arraycopy(logits, t * vocab, out, 0, vocab);
    }

    @Override
    public void zeroGrads() {
        mark = System.nanoTime();
        int n = g.length;
        pool.parallelFor(partial.length, (lo, hi) -> java.util.Arrays.fill(g, lo * CHUNK, Math.min(n, hi * CHUNK), 0f));
        lap(BWD_HEAD);
    }

    /** dst[M x K] (+)= src[M x N] W^T for W [K x N] at wOff. */
    private void matmulNT(float[] src, int sOff, int wOff, float[] dst, int dOff, int rows, int kDim, int nDim, boolean acc) {
        Ops.matmulNT(pool, src, sOff, w, wOff, dst, dOff, rows, kDim, nDim, acc);
    }

    /** Weight and bias gradients of y = x W + b: dW += x^T dy, db += colsum(dy). */
    private void linearGrads(float[] x, int xOff, float[] dy, int dyOff, int rows, int in, int out, int wOff, int bOff) {
        Ops.matmulTN(pool, x, xOff, dy, dyOff, g, wOff, rows, in, out);
        Ops.biasGrad(pool, dy, dyOff, rows, out, g, bOff);
    }

    @Override
    public void backwardHead() {
        int t = nTok;
        mark = System.nanoTime();
        if (!dLogitsReady) Ops.crossEntropy(pool, logits, targets, losses, correct, dLogits, t, vocab);
        dLogitsReady = false;
        linearGrads(lnf, 0, dLogits, 0, t, d, vocab, p.headW, p.headB);
        matmulNT(dLogits, 0, p.headW, dLn, 0, t, d, vocab, false);
        Ops.layerNormBackwardOnePass(pool, xIn[layers], 0, w, p.lnfG, lnfMean, lnfRstd, 0, dLn, 0, dX, 0,
                g, p.lnfG, g, p.lnfB, t, d, false, lnPartial);
        lap(BWD_HEAD);
    }

    @Override
    public void backwardFfn(int l, Routing r, float[] probGrad) {
        int t = nTok;
        float[] hs = he[l], xs = xe[l];
        float hidden = hiddenRate(l), rate = dropRate();
        mark = System.nanoTime();
        // dX is dL/d out; out = mid + keep * s * o, so dL/d mid = dX (kept in place), d o = s * keep * dX
        float[] dB = dX;
        if (rate > 0) {
            mask(dX, dRes, t * d, key(l, SITE_FFN_RES), rate);
            dB = dRes;
        }
        int k = r.k;
        if (k > 1) backwardCombineTopK(l, r, probGrad, dB);
        float[] dBf = dB;
        // per token, in parallel: expert-output gradients, passthrough, router logit gradients (softmax backward)
        pool.parallelFor(t, (lo, hi) -> tokenGradients(l, r, probGrad, dBf, lo, hi));
        // the shared expert FFN's backward, all experts in one pass per matrix as in forwardFfn
        ExpertFfn.backward(pool, ExpertFfn.Layout.IN_OUT, Ops.Activation.RELU, dYe, xs, null, hs, ffnParams[l], ffnGrads[l],
                dHe, dXe, r.offset, r.kept, r.experts, d, f, hidden, key(l, SITE_HIDDEN), ffnEpilogues);
        lap(BWD_EXPERTS);
        // one pass over blocks of tokens: the expert input gradients gathered back, the router's input
        // gradient added, LayerNorm 2's backward; weight-gradient partial sums per block, added in block order
        boolean fused = routes[l] && e <= FUSED_ROUTER_MAX_EXPERTS;
        if (fused) Ops.transpose(w, p.routerW[l], d, e, routerWt, 0);
        else if (routes[l]) { // many experts: the router's products as GEMMs, its input gradient dz Wᵀ into dA
            linearGrads(jittered[l] ? routerIn[l] : ln2[l], 0, dProbs, 0, t, d, e, p.routerW[l], p.routerB[l]);
            matmulNT(dProbs, 0, p.routerW[l], dA, 0, t, d, e, false);
        }
        int blocks = (t + Ops.LN_BLOCK - 1) / Ops.LN_BLOCK;
        pool.parallelFor(blocks, (lo, hi) -> {
            for (int blk = lo; blk < hi; blk++) inputGradients(l, r, blk, fused);
        });
        Ops.addPartials(lnPartial, blocks, d, g, p.ln2G[l], g, p.ln2B[l]);
        if (fused) {
            int rp = e * d + e;
            for (int blk = 0; blk < blocks; blk++)
                for (int x0 = 0; x0 < e; x0++) {
                    int po = blk * rp + x0 * d;
                    for (int j = 0; j < d; j++) g[p.routerW[l] + j * e + x0] += routerPartial[po + j];
                    g[p.routerB[l] + x0] += routerPartial[blk * rp + e * d + x0];
                }
        }
        lap(BWD_ROUTER);
    }

    /**
     * Tokens [lo, hi) of block l's FFN backward before the experts (top-1: expert-output gradients
     * dYe, the passthrough or zero gradient of dropped tokens into dLn, d loss / d gate probability);
     * then, in a Switch block, the router softmax backward in place: dz = p (dp - Σ p dp), plus the
     * z-loss gradient.
     */
    private void tokenGradients(int l, Routing r, float[] probGrad, float[] dB, int lo, int hi) {
        float[] x = ln2[l], ys = ye[l];
        if (r.k == 1) for (int i = lo; i < hi; i++) {
            int rr = row(r, i);
            float s = scale(l, r, i);
            int o = i * d;
            if (rr >= 0) {
                for (int j = 0; j < d; j++) dYe[rr * d + j] = s * dB[o + j];
            } else if (zeroDropped) {
                java.util.Arrays.fill(dLn, o, o + d, 0f);
            } else {
                for (int j = 0; j < d; j++) dLn[o + j] = s * dB[o + j]; // passthrough
            }
            if (routes[l]) {
                float[] src = rr >= 0 ? ys : x;
                int so = (rr >= 0 ? rr : i) * d;
                float dot = 0;
                if (rr >= 0 || !zeroDropped)
                    for (int j = 0; j < d; j++) dot += dB[o + j] * src[so + j];
                float dp = cfg.scaleProb() ? dot : dot / r.prob[i];
                for (int x0 = 0; x0 < e; x0++) dProbs[i * e + x0] = probGrad[x0];
                dProbs[i * e + r.expertOf[i]] += dp;
            }
        }
        if (!routes[l]) return;
        float[] pr = probs[l], lse = routerLse[l];
        // z-loss coef * mean_t lse_t^2: d/dz_t,i = coef * 2 * lse_t / T * p_t,i
        float zScale = (float) (2 * cfg.zLossCoef() / nTok);
        for (int i = lo; i < hi; i++) {
            int o = i * e;
            float dot = 0;
            for (int x0 = 0; x0 < e; x0++) dot += pr[o + x0] * dProbs[o + x0];
            for (int x0 = 0; x0 < e; x0++) dProbs[o + x0] = pr[o + x0] * (dProbs[o + x0] - dot);
            if (zScale != 0f) {
                float zg = zScale * lse[i];
                for (int x0 = 0; x0 < e; x0++) dProbs[o + x0] += zg * pr[o + x0];
            }
        }
    }

    /**
     * Block blk (tokens [blk·LN_BLOCK, ...)) of block l's FFN backward after the experts: dLn gets
     * the token's expert input gradient(s) (top-1: in place of, top-k: on top of, the passthrough),
     * the router's input gradient dz Wᵀ (times the jitter noise when the router input was jittered),
     * computed here with the router's weight and bias gradients of the block into routerPartial
     * (Wᵀ-shaped) when {@code router} (few experts), else read from dA where the GEMMs put it; then
     * LayerNorm 2's backward: dX += ..., its dg/db partials into lnPartial.
     */
    private void inputGradients(int l, Routing r, int blk, boolean router) {
        int t0 = blk * Ops.LN_BLOCK, t1 = Math.min(nTok, t0 + Ops.LN_BLOCK), k = r.k;
        int lp = blk * 2 * d, rp = blk * (e * d + e);
        java.util.Arrays.fill(lnPartial, lp, lp + 2 * d, 0f);
        if (router) java.util.Arrays.fill(routerPartial, rp, rp + e * d + e, 0f);
        boolean routerGemm = routes[l] && !router; // dz Wᵀ is in dA already
        float[] rin = jittered[l] ? routerIn[l] : ln2[l];
        long jKey = jittered[l] ? Rng.streamKey(cfg.seed(), step, l, SITE_JITTER) : 0;
        for (int i = t0; i < t1; i++) {
            int o = i * d;
            if (k == 1) {
                int rr = row(r, i);
                if (rr >= 0) System.arraycopy(dXe, rr * d, dLn, o, d);
            } else { // a token's k rows add up, on top of its passthrough gradient
                for (int j = 0; j < k; j++) {
                    int rr = row(r, i * k + j);
                    if (rr >= 0) for (int c = 0; c < d; c++) dLn[o + c] += dXe[rr * d + c];
                }
            }
            if (router) {
                int zo = i * e;
                if (jittered[l]) { // router input = x * noise: dx = (dz Wᵀ) * noise
                    for (int c = 0; c < d; c++) {
                        float sum = 0;
                        for (int x0 = 0; x0 < e; x0++) sum += dProbs[zo + x0] * routerWt[x0 * d + c];
                        dLn[o + c] += sum * jitterNoise(jKey, o + c);
                    }
                } else {
                    for (int x0 = 0; x0 < e; x0++) Ops.axpy(dProbs[zo + x0], routerWt, x0 * d, dLn, o, d);
                }
                for (int x0 = 0; x0 < e; x0++) { // dWᵀ[x0] += dz[x0] * input, db[x0] += dz[x0]
                    float z = dProbs[zo + x0];
                    Ops.axpy(z, rin, o, routerPartial, rp + x0 * d, d);
                    routerPartial[rp + e * d + x0] += z;
                }
            }
            if (routerGemm) {
                if (jittered[l]) for (int c = 0; c < d; c++) dLn[o + c] += dA[o + c] * jitterNoise(jKey, o + c);
                else for (int c = 0; c < d; c++) dLn[o + c] += dA[o + c];
            }
            Ops.layerNormBackwardRows(xMid[l], 0, w, p.ln2G[l], ln2Mean[l], ln2Rstd[l], 0, dLn, 0, dX, 0, d, true, i, i + 1,
                    lnPartial, lp);
        }
    }

    /**
     * Backward of {@link #combineTopK} given dB = d loss / d (branch): expert-output gradients, the
     * passthrough gradient into dLn, and the router gradient through the renormalized weights
     * g_j = p_j / S: d p_m = (d g_m - sum_j g_j d g_j) / S.
     */
    private void backwardCombineTopK(int l, Routing r, float[] probGrad, float[] dB) {
        int k = r.k;
        float[] x = ln2[l], ys = ye[l], pr = probs[l];
        for (int i = 0; i < nTok; i++) {
            int o = i * d;
            java.util.Arrays.fill(dLn, o, o + d, 0f);
            float gdg = 0, sum = 0;
            for (int j = 0; j < k; j++) {
                int a = i * k + j, rr = row(r, a);
                float s = r.prob[a];
                sum += pr[i * e + r.expertOf[a]];
                float dot = 0;
                if (rr >= 0) {
                    for (int c = 0; c < d; c++) dYe[rr * d + c] = s * dB[o + c];
                    for (int c = 0; c < d; c++) dot += dB[o + c] * ys[rr * d + c];
                } else if (!zeroDropped) {
                    for (int c = 0; c < d; c++) dLn[o + c] += s * dB[o + c]; // passthrough
                    for (int c = 0; c < d; c++) dot += dB[o + c] * x[o + c];
                }
                dGate[j] = dot;
                gdg += s * dot;
            }
            for (int x0 = 0; x0 < e; x0++) dProbs[i * e + x0] = probGrad[x0];
            for (int j = 0; j < k; j++) dProbs[i * e + r.expertOf[i * k + j]] += (dGate[j] - gdg) / sum;
        }
    }

    @Override
    public void backwardAttention(int l) {
        int t = nTok;
        mark = System.nanoTime();
        // mid = in + keep * (attOut Wo + bo): d in = dX (kept), d attOut = (keep * dX) Wo^T
        float rate = dropRate();
        float[] dB = dX;
        if (rate > 0) {
            mask(dX, dRes, t * d, key(l, SITE_ATTN_RES), rate);
            dB = dRes;
        }
        linearGrads(attOut[l], 0, dB, 0, t, d, d, p.wo[l], p.bo[l]);
        matmulNT(dB, 0, p.wo[l], dA, 0, t, d, d, false);
        lap(BWD_ATTN);
        Attention.backward(pool, attShape, attOptions(l, rate), q[l], 0, k[l], 0, vv[l], 0, attOut[l], 0, dA, 0, attLse[l], 0,
                dQ, 0, dK, 0, dV, 0, null, 0);
        lap(BWD_ATTN_CORE);
        linearGrads(ln1[l], 0, dQ, 0, t, d, d, p.wq[l], p.bq[l]);
        linearGrads(ln1[l], 0, dK, 0, t, d, d, p.wk[l], p.bk[l]);
        linearGrads(ln1[l], 0, dV, 0, t, d, d, p.wv[l], p.bv[l]);
        matmulNT(dQ, 0, p.wq[l], dLn, 0, t, d, d, false);
        matmulNT(dK, 0, p.wk[l], dLn, 0, t, d, d, true);
        matmulNT(dV, 0, p.wv[l], dLn, 0, t, d, d, true);
        Ops.layerNormBackwardOnePass(pool, xIn[l], 0, w, p.ln1G[l], ln1Mean[l], ln1Rstd[l], 0, dLn, 0, dX, 0,
                g, p.ln1G[l], g, p.ln1B[l], t, d, true, lnPartial);
        lap(BWD_ATTN);
    }

    @Override
    public void backwardEmbedding() {
        mark = System.nanoTime();
        for (int t = 0; t < nTok; t++) {
            int o = p.tokEmb + tokens[t] * d;
            for (int j = 0; j < d; j++) g[o + j] += dX[t * d + j];
            if (p.posEmb >= 0) {
                int po = p.posEmb + (t % seqLen) * d;
                for (int j = 0; j < d; j++) g[po + j] += dX[t * d + j];
            }
        }
        lap(BWD_EMBED);
    }

    @Override
    public double gradSquaredNorm() {
        int n = g.length;
        mark = System.nanoTime();
        pool.parallelFor(partial.length, (lo, hi) -> {
            for (int c = lo; c < hi; c++) partial[c] = Ops.sumSquares(g, c * CHUNK, Math.min(n, (c + 1) * CHUNK));
        });
        double s = 0;
        for (double x : partial) s += x;
        lap(GRAD_NORM);
        return s;
    }

    @Override
    public void adamStep(float lr, float gradScale, int t) {
        int n = w.length;
        float b1 = (float) cfg.beta1(), b2 = (float) cfg.beta2(), eps = (float) cfg.eps();
        mark = System.nanoTime();
        pool.parallelFor(partial.length, (lo, hi) ->
                Ops.adam(w, g, m, v, lo * CHUNK, Math.min(n, hi * CHUNK), lr, gradScale, b1, b2, eps, t));
        lap(OPTIMIZER);
    }

    @Override
    public float[] params() {
        return w.clone();
    }

    @Override
    public float[] grads() {
        return g.clone();
    }

    @Override
    public float[][] adamMoments() {
        return new float[][] {m.clone(), v.clone()};
    }

    @Override
    public void setParams(float[] params) {
        System.arraycopy(params, 0, w, 0, w.length);
    }

    @Override
    public void setAdamMoments(float[] mm, float[] vm) {
        System.arraycopy(mm, 0, m, 0, m.length);
        System.arraycopy(vm, 0, v, 0, v.length);
    }

    @Override
    public void close() {
        pool.close();
    }
}
