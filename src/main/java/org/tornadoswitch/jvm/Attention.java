package org.tornadoswitch.jvm;

import org.tornadoswitch.util.ThreadPool;

/**
 * Multi-head scaled dot-product attention, forward and backward, for every attention of the
 * project's models: causal self-attention (labml), non-causal self-attention with an additive bias
 * and key padding (T5 encoder), cross-attention, and one KV-cached decoding row (causal with a
 * query position offset). The contract: {@link Shape} (addressing) and
 * {@link Options} (masks, bias, dropout, KV-cache offset).
 *
 * Flash-style: the forward keeps no [sq x skv] weights, only each query row's log-sum-exp, and the
 * backward recomputes the weights from it. The work is cut into (sequence, head) units; each unit
 * is computed by one thread in a fixed order, so the results do not depend on the thread count.
 * Nothing is allocated per call once each thread's scratch has grown to the largest shape seen.
 */
public final class Attention {
    private Attention() {}

    /**
     * Geometry. nSeq sequences; sq query rows, skv key/value rows per sequence; heads heads of
     * width hd. Element addressing (floats):
     *   Q[b,i,h,c] = q[qOff + b*qSeqStride + i*qRowStride + h*hd + c]     (also out, dout, dq)
     *   K[b,j,h,c] = k[kOff + b*kvSeqStride + j*kvRowStride + h*hd + c]   (also v, dk, dv)
     */
    public record Shape(int nSeq, int sq, int skv, int heads, int hd,
                        int qSeqStride, int qRowStride, int kvSeqStride, int kvRowStride) {
        public Shape {
            if (nSeq < 0 || sq < 1 || skv < 1 || heads < 1 || hd < 1)
                throw new IllegalArgumentException("bad attention shape: nSeq=" + nSeq + " sq=" + sq + " skv=" + skv
                        + " heads=" + heads + " hd=" + hd);
        }

        /** The common case: [nSeq*s x heads*hd] row-major buffers, sq = skv = s. */
        public static Shape dense(int nSeq, int s, int heads, int hd) {
            return cross(nSeq, s, s, heads, hd);
        }

        /** [nSeq*sq x heads*hd] queries against [nSeq*skv x heads*hd] keys (cross-attention). */
        public static Shape cross(int nSeq, int sq, int skv, int heads, int hd) {
            int d = heads * hd;
            return new Shape(nSeq, sq, skv, heads, hd, sq * d, d, skv * d, d);
        }
    }

    /**
     * Options. Key j is visible to query i of sequence b iff
     *   (!causal || j <= i + qPos0) && (kvLen == null || j < kvLen[b]).
     * score(b,h,i,j) = scale * Q·K + (bias == null ? 0 : bias[biasOff + (h*sq + i)*skv + j]).
     * Dropout (rate > 0) multiplies weight (b,h,i,j) after the softmax by Ops.keep(key, idx, rate),
     * idx = (((long) b*heads + h)*sq + i)*skv + j. A query row with no visible key gets output 0
     * and contributes no gradient.
     */
    public record Options(boolean causal, int qPos0, int[] kvLen, float scale,
                          float[] bias, int biasOff, float dropRate, long dropKey) {
        public Options {
            if (!(dropRate >= 0f && dropRate < 1f)) throw new IllegalArgumentException("dropout rate must be in [0, 1), got " + dropRate);
        }

        /** labml: causal, no bias, no dropout. */
        public static Options causal(float scale) {
            return new Options(true, 0, null, scale, null, 0, 0f, 0L);
        }

        /** Non-causal, no bias, no dropout (T5 encoder and cross-attention; T5 uses scale 1). */
        public static Options full(float scale) {
            return new Options(false, 0, null, scale, null, 0, 0f, 0L);
        }

        public Options withDropout(float rate, long key) {
            return new Options(causal, qPos0, kvLen, scale, bias, biasOff, rate, key);
        }

        public Options withBias(float[] bias, int off) {
            return new Options(causal, qPos0, kvLen, scale, bias, off, dropRate, dropKey);
        }

        public Options withKvLen(int[] kvLen) {
            return new Options(causal, qPos0, kvLen, scale, bias, biasOff, dropRate, dropKey);
        }

        public Options withQPos0(int qPos0) {
            return new Options(causal, qPos0, kvLen, scale, bias, biasOff, dropRate, dropKey);
        }

        /** Keys [0, end) are visible to query row i of sequence b (visibility is a prefix of the keys). */
        int visibleEnd(int b, int i, int skv) {
            int end = skv;
            if (causal) end = (int) Math.max(0, Math.min(end, (long) i + qPos0 + 1));
            if (kvLen != null) end = Math.min(end, kvLen[b]);
            return Math.max(end, 0);
        }
    }

    /**
     * Forward: out = softmax(scores) V per (b, h). Saves the log-sum-exp of each query row,
     * lse[lseOff + (b*heads + h)*sq + i] (natural log, of the scores incl. bias), for the backward.
     * Rows with no visible key: lse = -inf, out = 0.
     */
    public static void forward(ThreadPool pool, Shape s, Options o,
                               float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                               float[] out, int outOff, float[] lse, int lseOff) {
        ForwardTask t = FORWARD.get();
        t.set(s, o, q, qOff, k, kOff, v, vOff, out, outOff, lse, lseOff);
        t.group = headGroup(pool, s);
        try {
            pool.parallelFor(s.nSeq() * (s.heads() / t.group), t);
        } finally {
            t.release();
        }
    }

    /**
     * Backward given the forward's out and lse: writes dq, dk, dv (overwritten, not accumulated;
     * same addressing as q, k, v); when dBias != null ADDS d loss / d bias into
     * dBias[dBiasOff + (h*sq + i)*skv + j] (summed over sequences in a fixed order).
     */
    public static void backward(ThreadPool pool, Shape s, Options o,
                                float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                                float[] out, int outOff, float[] dout, int doutOff, float[] lse, int lseOff,
                                float[] dq, int dqOff, float[] dk, int dkOff, float[] dv, int dvOff,
                                float[] dBias, int dBiasOff) {
        BackwardTask t = BACKWARD.get();
        t.set(s, o, q, qOff, k, kOff, v, vOff, out, outOff, dout, doutOff, lse, lseOff, dq, dqOff, dk, dkOff, dv, dvOff,
                dBias, dBiasOff);
        t.group = dBias != null ? 1 : headGroup(pool, s);
        try {
            // with dBias, one unit per head runs the sequences in order: each dBias element has one writer
            pool.parallelFor(dBias != null ? s.heads() : s.nSeq() * (s.heads() / t.group), t);
        } finally {
            t.release();
        }
    }

    /**
     * Heads per work unit: all heads of a sequence when there are enough sequences to keep every
     * thread busy (their rows are then read as whole contiguous blocks), else one. Each (b, h) is
     * computed the same way in either case.
     */
    private static int headGroup(ThreadPool pool, Shape s) {
        return s.nSeq() >= 2 * pool.threads() ? s.heads() : 1;
    }

    private static final ThreadLocal<ForwardTask> FORWARD = ThreadLocal.withInitial(ForwardTask::new);
    private static final ThreadLocal<BackwardTask> BACKWARD = ThreadLocal.withInitial(BackwardTask::new);
    private static final ThreadLocal<float[][]> SCRATCH = ThreadLocal.withInitial(() -> new float[1][0]);

    /** A per-thread scratch array of at least n floats (grown, never shrunk). */
    static float[] scratch(int n) {
        float[][] holder = SCRATCH.get();
        if (holder[0].length < n) holder[0] = new float[n];
        return holder[0];
    }

    /** The arguments of one call, held by the calling thread's task object so that no lambda is allocated. */
    abstract static class Args {
        Shape s;
        Options o;
        float[] q, k, v, out, lse;
        int qOff, kOff, vOff, outOff, lseOff;
        /** Heads per work unit (see headGroup): unit u is sequence u / (heads / group), heads from (u mod (heads / group)) · group. */
        int group = 1;

        void setCommon(Shape s, Options o, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                       float[] out, int outOff, float[] lse, int lseOff) {
            if (o.kvLen() != null && o.kvLen().length < s.nSeq())
                throw new IllegalArgumentException("kvLen has " + o.kvLen().length + " entries for " + s.nSeq() + " sequences");
            this.s = s; this.o = o; this.q = q; this.qOff = qOff; this.k = k; this.kOff = kOff; this.v = v; this.vOff = vOff;
            this.out = out; this.outOff = outOff; this.lse = lse; this.lseOff = lseOff;
        }

        void releaseCommon() {
            s = null; o = null; q = k = v = out = lse = null;
        }

        int qBase(int b, int h) {
            return b * s.qSeqStride() + h * s.hd();
        }

        int kvBase(int b, int h) {
            return b * s.kvSeqStride() + h * s.hd();
        }

        /** Score of (b, h, i, j) without the bias, recomputed in the same order by forward and backward. */
        float score(int qi, int kj) {
            return o.scale() * dot(q, qi, k, kj, s.hd());
        }

        float bias(int h, int i, int j) {
            return o.bias() == null ? 0f : o.bias()[o.biasOff() + (h * s.sq() + i) * s.skv() + j];
        }

        long dropIndex(int b, int h, int i, int j) {
            return (((long) b * s.heads() + h) * s.sq() + i) * s.skv() + j;
        }
    }

    private static final class ForwardTask extends Args implements ThreadPool.RangeBody {
        void set(Shape s, Options o, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                 float[] out, int outOff, float[] lse, int lseOff) {
            setCommon(s, o, q, qOff, k, kOff, v, vOff, out, outOff, lse, lseOff);
        }

        void release() {
            releaseCommon();
        }

        @Override
        public void run(int lo, int hi) {
            int groups = s.heads() / group;
            for (int u = lo; u < hi; u++) {
                int b = u / groups, h0 = (u % groups) * group;
                if (Ops.VECTOR) VectorAttention.forward(this, b, h0, h0 + group);
                else for (int h = h0; h < h0 + group; h++) unit(b, h);
            }
        }

        /** The plain-loop forward of one (b, h) (without the Vector API). */
        private void unit(int b, int h) {
            int sq = s.sq(), skv = s.skv(), hd = s.hd(), u = b * s.heads() + h;
            float[] p = scratch(skv);
            float rate = o.dropRate();
            {
                int qb = qBase(b, h), kb = kvBase(b, h);
                for (int i = 0; i < sq; i++) {
                    int qi = qOff + qb + i * s.qRowStride(), oi = outOff + qb + i * s.qRowStride();
                    int li = lseOff + u * sq + i;
                    int end = o.visibleEnd(b, i, skv);
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j < end; j++) {
                        float x = score(qi, kOff + kb + j * s.kvRowStride()) + bias(h, i, j);
                        p[j] = x;
                        max = Math.max(max, x);
                    }
                    java.util.Arrays.fill(out, oi, oi + hd, 0f);
                    if (max == Float.NEGATIVE_INFINITY) { // no visible key (or all masked by the bias)
                        lse[li] = Float.NEGATIVE_INFINITY;
                        continue;
                    }
                    float sum = 0;
                    for (int j = 0; j < end; j++) {
                        float e = (float) Math.exp(p[j] - max);
                        p[j] = e;
                        sum += e;
                    }
                    lse[li] = max + (float) Math.log(sum);
                    float inv = 1f / sum;
                    for (int j = 0; j < end; j++) {
                        float w = p[j] * inv;
                        if (rate > 0f) w *= Ops.keep(o.dropKey(), dropIndex(b, h, i, j), rate);
                        if (w != 0f) axpy(w, v, vOff + kb + j * s.kvRowStride(), out, oi, hd);
                    }
                }
            }
        }
    }

    static final class BackwardTask extends Args implements ThreadPool.RangeBody {
        float[] dout, dq, dk, dv, dBias;
        int doutOff, dqOff, dkOff, dvOff, dBiasOff;

        void set(Shape s, Options o, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                 float[] out, int outOff, float[] dout, int doutOff, float[] lse, int lseOff,
                 float[] dq, int dqOff, float[] dk, int dkOff, float[] dv, int dvOff, float[] dBias, int dBiasOff) {
            setCommon(s, o, q, qOff, k, kOff, v, vOff, out, outOff, lse, lseOff);
            this.dout = dout; this.doutOff = doutOff; this.dq = dq; this.dqOff = dqOff; this.dk = dk; this.dkOff = dkOff;
            this.dv = dv; this.dvOff = dvOff; this.dBias = dBias; this.dBiasOff = dBiasOff;
        }

        void release() {
            releaseCommon();
            dout = dq = dk = dv = dBias = null;
        }

        @Override
        public void run(int lo, int hi) {
            if (dBias != null) {
                for (int h = lo; h < hi; h++)
                    for (int b = 0; b < s.nSeq(); b++) units(b, h, h + 1);
            } else {
                int groups = s.heads() / group;
                for (int u = lo; u < hi; u++) units(u / groups, (u % groups) * group, (u % groups) * group + group);
            }
        }

        private void units(int b, int h0, int h1) {
            if (Ops.VECTOR) VectorAttention.backward(this, b, h0, h1);
            else for (int h = h0; h < h1; h++) unit(b, h);
        }

        /**
         * One (b, h): with P recomputed from lse, dV_j = Σ_i P'_ij dO_i (P' = P·keep),
         * dS_ij = P_ij (keep_ij dO_i·V_j - D_i) with D_i = dO_i·O_i, dQ_i = scale Σ_j dS_ij K_j,
         * dK_j = scale Σ_i dS_ij Q_i, dBias_ij += dS_ij.
         */
        private void unit(int b, int h) {
            int sq = s.sq(), skv = s.skv(), hd = s.hd();
            int qb = qBase(b, h), kb = kvBase(b, h), u = b * s.heads() + h;
            float rate = o.dropRate();
            for (int i = 0; i < sq; i++) java.util.Arrays.fill(dq, dqOff + qb + i * s.qRowStride(), dqOff + qb + i * s.qRowStride() + hd, 0f);
            for (int j = 0; j < skv; j++) {
                int r = kb + j * s.kvRowStride();
                java.util.Arrays.fill(dk, dkOff + r, dkOff + r + hd, 0f);
                java.util.Arrays.fill(dv, dvOff + r, dvOff + r + hd, 0f);
            }
            for (int i = 0; i < sq; i++) {
                float l = lse[lseOff + u * sq + i];
                if (l == Float.NEGATIVE_INFINITY) continue;
                int ri = qb + i * s.qRowStride();
                int qi = qOff + ri, gi = doutOff + ri;
                float di = dot(dout, gi, out, outOff + ri, hd);
                int end = o.visibleEnd(b, i, skv);
                for (int j = 0; j < end; j++) {
                    int rj = kb + j * s.kvRowStride();
                    float p = (float) Math.exp(score(qi, kOff + rj) + bias(h, i, j) - l);
                    float kp = rate > 0f ? Ops.keep(o.dropKey(), dropIndex(b, h, i, j), rate) : 1f;
                    float dpv = dot(dout, gi, v, vOff + rj, hd);
                    axpy(p * kp, dout, gi, dv, dvOff + rj, hd);
                    float ds = p * (kp * dpv - di);
                    if (dBias != null) dBias[dBiasOff + (h * sq + i) * skv + j] += ds;
                    float dss = o.scale() * ds;
                    axpy(dss, k, kOff + rj, dq, dqOff + ri, hd);
                    axpy(dss, q, qi, dk, dkOff + rj, hd);
                }
            }
        }
    }

    private static float dot(float[] x, int xo, float[] y, int yo, int len) {
        float s = 0;
        for (int i = 0; i < len; i++) s = Math.fma(x[xo + i], y[yo + i], s);
        return s;
    }

    private static void axpy(float a, float[] x, int xo, float[] y, int yo, int len) {
        for (int i = 0; i < len; i++) y[yo + i] = Math.fma(a, x[xo + i], y[yo + i]);
    }
}
