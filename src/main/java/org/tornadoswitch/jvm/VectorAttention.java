package org.tornadoswitch.jvm;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API body of {@link Attention}: one (sequence, head) unit at a time, flash style.
 *
 * Queries run in blocks of {@link #QB} rows and keys in blocks of {@link #KB}; a block's scores
 * S = scale·Q Kᵀ + bias live in a per-thread scratch tile (16 KiB, in L1) and never in a full
 * [sq x skv] matrix. The forward keeps a running max and sum per row (online softmax, rescaling
 * when a later key block raises the max) and saves the row log-sum-exp; the backward recomputes
 * P = exp(S - lse) block by block and accumulates dQ, dK, dV with D_i = dO_i·O_i (FlashAttention-2's
 * order of work). Each tile's work stops at its last visible key, so causal attention costs about
 * half of the full square.
 *
 * The products are small register-tiled kernels: scores and dO·Vᵀ against a transposed copy of K
 * and V (vectors along the keys, a query scalar broadcast), P·V, dS·K, Pᵀ·dO and dSᵀ·Q with vectors
 * along the head dimension. Every sum runs in a fixed order within one thread, and exp is a
 * polynomial of fused multiply-adds (not the Vector API's EXP, whose lanes are computed differently
 * by the interpreter and by C2), so results are the same in every JIT state and for any thread count.
 */
final class VectorAttention {
    private VectorAttention() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    /** Query rows per block and keys per block; W: the padding unit of a score row (whole vectors and whole 4-key tiles). */
    static final int QB = 32, KB = 128, W = Math.max(L, 4);
    /** Queries of a unit below which the scores are dot products along the head (no transposed K: a KV-cache decode row). */
    static final int TRANSPOSE_MIN = 4;


    private static final VectorSpecies<Float> S256 = FloatVector.SPECIES_256, S128 = FloatVector.SPECIES_128;

    static {
        if (L < 4 || L > 16) throw new ExceptionInInitializerError("vector length " + L + " floats: the lane sums assume 4, 8 or 16");
    }

    /** Σ x[xo + i] · y[yo + i] over i < len: vector lanes, then the tail (fixed order). */
    static float dot(float[] x, int xo, float[] y, int yo, int len) {
        int i = 0, lv = len - len % L;
        FloatVector s = FloatVector.zero(S);
        for (; i < lv; i += L) s = FloatVector.fromArray(S, x, xo + i).fma(FloatVector.fromArray(S, y, yo + i), s);
        // the lane sum in a fixed order: halves added down to 128 bits, then (0 + 2) + (1 + 3)
        FloatVector h2 = L == 16 ? ((FloatVector) s.reinterpretShape(S256, 0)).add((FloatVector) s.reinterpretShape(S256, 1)) : s;
        FloatVector h4 = L >= 8 ? ((FloatVector) h2.reinterpretShape(S128, 0)).add((FloatVector) h2.reinterpretShape(S128, 1)) : h2;
        float r = (h4.lane(0) + h4.lane(2)) + (h4.lane(1) + h4.lane(3));

        for (; i < len; i++) r = Math.fma(x[xo + i], y[yo + i], r);
        return r;
    }

    static int roundUp(int x, int m) {
        return (x + m - 1) / m * m;
    }

    // ---- exp: Cephes' expf polynomial on [-ln2/2, ln2/2], the same operations in lanes and in scalars ----

    private static final float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    private static final float MAGIC = 12582912f; // 1.5·2^23: adding it rounds to an integer in the low mantissa bits
    private static final int MAGIC_BITS = 0x4B400000;
    private static final float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f, P3 = 4.1665795894e-2f,
            P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;
    /** Below this exp underflows (the result would be subnormal): it is returned as 0. */
    private static final float EXP_MIN = -87.33f;

    /** e^x for x <= 88 (0 below EXP_MIN, -inf included): bit for bit what {@link #expRow} computes in its lanes. */
    static float exp(float x) {
        if (!(x >= EXP_MIN)) return x != x ? x : 0f;
        float t = Math.fma(x, LOG2E, MAGIC);
        float n = t - MAGIC;
        float r = Math.fma(n, -LN2_HI, x);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(Math.fma(Math.fma(Math.fma(Math.fma(r, P0, P1), r, P2), r, P3), r, P4), r, P5);
        float y = Math.fma(p, r * r, r) + 1f;
        return y * Float.intBitsToFloat((Float.floatToRawIntBits(t) - (MAGIC_BITS - 127)) << 23);
    }

    // ---- one unit ----

    /** Forward of heads [h0, h1) of sequence b: out and lse of their query rows. */
    static void forward(Attention.Args a, int b, int h0, int h1) {
        Attention.Shape s = a.s;
        int sq = s.sq(), hd = s.hd();
        int vendMax = a.o.visibleEnd(b, sq - 1, s.skv());
        boolean tr = sq >= TRANSPOSE_MIN;
        int ldk = roundUp(Math.max(vendMax, 1), W), ldS = roundUp(Math.max(1, Math.min(KB, vendMax)), W);
        int ktSize = tr ? hd * ldk : 0;
        float[] w = Attention.scratch((h1 - h0) * ktSize + QB * ldS + QB * hd + 2 * QB);
        // K of all the heads at once: their rows are one contiguous block per key
        if (tr) transpose(a.k, a.kOff + b * s.kvSeqStride() + h0 * hd, s.kvRowStride(), vendMax, (h1 - h0) * hd, w, 0, ldk);
        for (int h = h0; h < h1; h++) forwardHead(a, b, h, w, (h - h0) * ktSize, (h1 - h0) * ktSize, tr, ldk, ldS);
    }

    /** Forward of (b, h) with its Kᵀ at w[pKt] (ld ldk) when tr, and scratch from w[p0]. */
    private static void forwardHead(Attention.Args a, int b, int h, float[] w, int pKt, int p0, boolean tr, int ldk, int ldS) {
        Attention.Shape s = a.s;
        Attention.Options o = a.o;
        int sq = s.sq(), hd = s.hd(), qrs = s.qRowStride(), krs = s.kvRowStride();
        int qb = a.qOff + b * s.qSeqStride() + h * hd, ob = a.outOff + b * s.qSeqStride() + h * hd;
        int kb = a.kOff + b * s.kvSeqStride() + h * hd, vb = a.vOff + b * s.kvSeqStride() + h * hd;
        int lb = a.lseOff + (b * s.heads() + h) * sq;
        int pS = p0, pAcc = pS + QB * ldS, pM = pAcc + QB * hd, pL = pM + QB;
        for (int q0 = 0; q0 < sq; q0 += QB) {
            int q1 = Math.min(sq, q0 + QB), nr = q1 - q0;
            java.util.Arrays.fill(w, pAcc, pAcc + nr * hd, 0f);
            java.util.Arrays.fill(w, pM, pM + nr, Float.NEGATIVE_INFINITY);
            java.util.Arrays.fill(w, pL, pL + nr, 0f);
            int blockEnd = o.visibleEnd(b, q1 - 1, s.skv());
            for (int k0 = 0; k0 < blockEnd; k0 += KB) {
                int k1 = Math.min(blockEnd, k0 + KB), lenPad = roundUp(k1 - k0, W);
                scores(a.q, qb, qrs, a.k, kb, krs, w, tr, ldk, pS, ldS, a, b, q0, q1, k0, k1, pKt);
                for (int r = 0; r < nr; r++) {
                    int po = pS + r * ldS, ve = Math.min(o.visibleEnd(b, q0 + r, s.skv()), k1) - k0;
                    if (ve <= 0) {
                        java.util.Arrays.fill(w, po, po + lenPad, 0f);
                        continue;
                    }
                    float mOld = w[pM + r];
                    float mNew = Math.max(mOld, scaleBiasMax(w, po, ve, o, h, sq, s.skv(), q0 + r, k0));
                    if (mNew == Float.NEGATIVE_INFINITY) { // every visible score is -inf (bias): nothing yet
                        java.util.Arrays.fill(w, po, po + lenPad, 0f);
                        continue;
                    }
                    float corr = exp(mOld - mNew);
                    w[pL + r] = w[pL + r] * corr + expRow(w, po, ve, lenPad, mNew);
                    w[pM + r] = mNew;
                    if (corr != 1f && mOld != Float.NEGATIVE_INFINITY) scaleRow(w, pAcc + r * hd, hd, corr); // nothing yet to rescale after -inf
                    if (o.dropRate() > 0f) dropRow(w, po, ve, o, (((long) b * s.heads() + h) * sq + q0 + r) * s.skv() + k0);
                }
                // acc += P V, each 4-row tile up to its last visible key
                for (int r = 0; r < nr; r += 4) {
                    int rows = Math.min(4, nr - r);
                    int end = Math.min(o.visibleEnd(b, q0 + r + rows - 1, s.skv()), k1) - k0;
                    if (end > 0) accRows(w, pS + r * ldS, ldS, 1, a.v, vb + k0 * krs, krs, w, pAcc + r * hd, hd, rows, 0, end, hd);
                }
            }
            for (int r = 0; r < nr; r++) {
                int oi = ob + (q0 + r) * qrs;
                float l = w[pL + r];
                if (l > 0f) {
                    scaleInto(w, pAcc + r * hd, a.out, oi, hd, 1f / l);
                    a.lse[lb + q0 + r] = w[pM + r] + (float) Math.log(l);
                } else {
                    java.util.Arrays.fill(a.out, oi, oi + hd, 0f);
                    a.lse[lb + q0 + r] = Float.NEGATIVE_INFINITY;
                }
            }
        }
    }

    /** Backward of heads [h0, h1) of sequence b: their rows of dq, dk, dv overwritten, dBias added to. */
    static void backward(Attention.BackwardTask a, int b, int h0, int h1) {
        Attention.Shape s = a.s;
        int sq = s.sq(), skv = s.skv(), hd = s.hd(), qrs = s.qRowStride(), krs = s.kvRowStride(), width = (h1 - h0) * hd;
        int qRow0 = b * s.qSeqStride() + h0 * hd, kvRow0 = b * s.kvSeqStride() + h0 * hd;
        zeroRows(a.dq, a.dqOff + qRow0, qrs, sq, width);
        zeroRows(a.dk, a.dkOff + kvRow0, krs, skv, width);
        zeroRows(a.dv, a.dvOff + kvRow0, krs, skv, width);
        int vendMax = a.o.visibleEnd(b, sq - 1, skv);
        if (vendMax <= 0) return;
        boolean tr = sq >= TRANSPOSE_MIN;
        int ldk = roundUp(vendMax, W), ldS = roundUp(Math.min(KB, vendMax), W);
        int ktSize = tr ? hd * ldk : 0, nh = h1 - h0;
        float[] w = Attention.scratch(2 * nh * ktSize + 2 * QB * ldS + sq);
        if (tr) { // K and V of all the heads at once: their rows are contiguous blocks
            transpose(a.k, a.kOff + kvRow0, krs, vendMax, width, w, 0, ldk);
            transpose(a.v, a.vOff + kvRow0, krs, vendMax, width, w, nh * ktSize, ldk);
        }
        for (int h = h0; h < h1; h++)
            backwardHead(a, b, h, w, (h - h0) * ktSize, (nh + h - h0) * ktSize, 2 * nh * ktSize, tr, ldk, ldS);
    }

    /** dst rows [0, rows) of the given width at d0 (row stride rs) = 0; one fill when the rows are contiguous. */
    private static void zeroRows(float[] dst, int d0, int rs, int rows, int width) {
        if (rs == width) java.util.Arrays.fill(dst, d0, d0 + rows * width, 0f);
        else for (int r = 0; r < rows; r++) java.util.Arrays.fill(dst, d0 + r * rs, d0 + r * rs + width, 0f);
    }

    /** Backward of (b, h) with Kᵀ at w[pKt] and Vᵀ at w[pVt] (when tr), scratch from w[p0]. */
    private static void backwardHead(Attention.BackwardTask a, int b, int h, float[] w, int pKt, int pVt, int p0, boolean tr,
                                     int ldk, int ldS) {
        Attention.Shape s = a.s;
        Attention.Options o = a.o;
        int sq = s.sq(), skv = s.skv(), hd = s.hd(), qrs = s.qRowStride(), krs = s.kvRowStride();
        int qRow0 = b * s.qSeqStride() + h * hd, kvRow0 = b * s.kvSeqStride() + h * hd;
        int qb = a.qOff + qRow0, kb = a.kOff + kvRow0, vb = a.vOff + kvRow0;
        int gb = a.doutOff + qRow0, ob = a.outOff + qRow0, dqb = a.dqOff + qRow0, dkb = a.dkOff + kvRow0, dvb = a.dvOff + kvRow0;
        int lb = a.lseOff + (b * s.heads() + h) * sq;
        int pP = p0, pDs = pP + QB * ldS, pD = pDs + QB * ldS;
        for (int i = 0; i < sq; i++) w[pD + i] = dot(a.dout, gb + i * qrs, a.out, ob + i * qrs, hd);
        float scale = o.scale();
        for (int q0 = 0; q0 < sq; q0 += QB) {
            int q1 = Math.min(sq, q0 + QB), nr = q1 - q0;
            int blockEnd = o.visibleEnd(b, q1 - 1, skv);
            for (int k0 = 0; k0 < blockEnd; k0 += KB) {
                int k1 = Math.min(blockEnd, k0 + KB), len = k1 - k0, lenPad = roundUp(len, W);
                scores(a.q, qb, qrs, a.k, kb, krs, w, tr, ldk, pP, ldS, a, b, q0, q1, k0, k1, pKt);
                scores(a.dout, gb, qrs, a.v, vb, krs, w, tr, ldk, pDs, ldS, a, b, q0, q1, k0, k1, pVt);
                for (int r = 0; r < nr; r++) {
                    int po = pP + r * ldS, pd = pDs + r * ldS, i = q0 + r;
                    int ve = Math.min(o.visibleEnd(b, i, skv), k1) - k0;
                    float l = a.lse[lb + i];
                    if (ve <= 0 || l == Float.NEGATIVE_INFINITY) {
                        java.util.Arrays.fill(w, po, po + lenPad, 0f);
                        java.util.Arrays.fill(w, pd, pd + lenPad, 0f);
                        continue;
                    }
                    scaleBiasMax(w, po, ve, o, h, sq, skv, i, k0);
                    expRow(w, po, ve, lenPad, l);
                    int biasRow = (h * sq + i) * skv + k0;
                    dsRow(w, po, pd, ve, lenPad, w[pD + i], scale, o, (((long) b * s.heads() + h) * sq + i) * skv + k0,
                            a.dBias, a.dBias == null ? 0 : a.dBiasOff + biasRow);
                }
                // dV += P'ᵀ dO and dK += dSᵀ Q over the block's keys (4 at a time), from the first query row that sees them
                for (int j = 0; j < len; j += 4) {
                    int keys = Math.min(4, len - j);
                    int rLo = o.causal() ? Math.max(0, Math.min(nr, k0 + j - o.qPos0() - q0)) : 0;
                    if (rLo >= nr) continue;
                    int dvo = dvb + (k0 + j) * krs, dko = dkb + (k0 + j) * krs;
                    accRows(w, pP + rLo * ldS + j, 1, ldS, a.dout, gb + (q0 + rLo) * qrs, qrs, a.dv, dvo, krs, keys, 0, nr - rLo, hd);
                    accRows(w, pDs + rLo * ldS + j, 1, ldS, a.q, qb + (q0 + rLo) * qrs, qrs, a.dk, dko, krs, keys, 0, nr - rLo, hd);
                }
                // dQ += dS K, each 4-row tile up to its last visible key
                for (int r = 0; r < nr; r += 4) {
                    int rows = Math.min(4, nr - r);
                    int end = Math.min(o.visibleEnd(b, q0 + r + rows - 1, skv), k1) - k0;
                    if (end > 0)
                        accRows(w, pDs + r * ldS, ldS, 1, a.k, kb + k0 * krs, krs, a.dq, dqb + (q0 + r) * qrs, qrs, rows, 0, end, hd);
                }
            }
        }
    }

    // ---- row passes over a block of scores ----

    /** Row x[0, ve) *= scale, += bias row; returns the row max (lanes past ve are not read or changed). */
    private static float scaleBiasMax(float[] x, int po, int ve, Attention.Options o, int h, int sq, int skv, int i, int k0) {
        float scale = o.scale();
        float[] bias = o.bias();
        int bo = bias == null ? 0 : o.biasOff() + (h * sq + i) * skv + k0;
        FloatVector mx = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
        for (int j = 0; j < ve; j += L) {
            FloatVector y = FloatVector.fromArray(S, x, po + j).mul(scale);
            if (j + L <= ve) {
                if (bias != null) y = y.add(FloatVector.fromArray(S, bias, bo + j));
                mx = mx.max(y);
            } else { // the last, partial vector: lanes past ve are neither read from the bias nor counted
                VectorMask<Float> in = S.indexInRange(j, ve);
                if (bias != null) y = y.add(FloatVector.fromArray(S, bias, bo + j, in));
                mx = mx.max(FloatVector.broadcast(S, Float.NEGATIVE_INFINITY).blend(y, in));
            }
            y.intoArray(x, po + j);
        }
        return mx.reduceLanes(VectorOperators.MAX); // max is exact: any order gives the same
    }

    /**
     * x[j] = exp(x[j] - m) for j < ve and 0 on [ve, lenPad); returns the sum of the row in a fixed
     * order. The lanes compute exactly {@link #exp(float)}: Cephes' expf polynomial on
     * [-ln2/2, ln2/2] in fused multiply-adds, scaled by 2^n through the exponent bits. (Written out
     * here rather than as a method on vectors: C2 does not always inline such a method, and a
     * vector passed to a call that is not inlined is boxed.)
     */
    static float expRow(float[] x, int po, int ve, int lenPad, float m) {
        FloatVector acc = FloatVector.zero(S);
        int j = 0;
        for (; j < ve; j += L) {
            FloatVector v = FloatVector.fromArray(S, x, po + j).sub(m);
            if (j + L > ve) v = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY).blend(v, S.indexInRange(j, ve)); // lanes past ve: e^-inf = 0
            FloatVector t = v.fma(LOG2E, MAGIC);
            FloatVector n = t.sub(MAGIC);
            FloatVector r = n.fma(FloatVector.broadcast(S, -LN2_HI), v);
            r = n.fma(FloatVector.broadcast(S, -LN2_LO), r);
            FloatVector p = r.fma(P0, P1).fma(r, FloatVector.broadcast(S, P2)).fma(r, FloatVector.broadcast(S, P3))
                    .fma(r, FloatVector.broadcast(S, P4)).fma(r, FloatVector.broadcast(S, P5));
            FloatVector y = p.fma(r.mul(r), r).add(1f);
            FloatVector pow2 = t.reinterpretAsInts().sub(MAGIC_BITS - 127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
            FloatVector e = y.mul(pow2).blend(0f, v.compare(VectorOperators.LT, EXP_MIN));
            e.intoArray(x, po + j);
            acc = acc.add(e);
        }
        // the lane sum in a fixed order: halves added down to 128 bits, then (0 + 2) + (1 + 3)
        FloatVector h2 = L == 16 ? ((FloatVector) acc.reinterpretShape(S256, 0)).add((FloatVector) acc.reinterpretShape(S256, 1)) : acc;
        FloatVector h4 = L >= 8 ? ((FloatVector) h2.reinterpretShape(S128, 0)).add((FloatVector) h2.reinterpretShape(S128, 1)) : h2;
        float sum = (h4.lane(0) + h4.lane(2)) + (h4.lane(1) + h4.lane(3));
        for (; j < lenPad; j += L) FloatVector.zero(S).intoArray(x, po + j);
        return sum;
    }

    /** Weights of row index base + j times the dropout factor (0 or 1/(1 - rate)), j < ve. */
    private static void dropRow(float[] x, int po, int ve, Attention.Options o, long base) {
        float rate = o.dropRate();
        long key = o.dropKey();
        for (int j = 0; j < ve; j++) x[po + j] *= Ops.keep(key, base + j, rate);
    }

    /**
     * Given P (row po) and dP' = dO·V (row pd): dS = P (keep·dP' - D) into row pd, dBias += dS,
     * dS *= scale, and P *= keep (P' for dV); both rows zero on [ve, lenPad).
     */
    private static void dsRow(float[] x, int po, int pd, int ve, int lenPad, float dRow, float scale, Attention.Options o, long dropBase,
                              float[] dBias, int dbo) {
        if (o.dropRate() > 0f) {
            float rate = o.dropRate();
            long key = o.dropKey();
            for (int j = 0; j < ve; j++) {
                float kp = Ops.keep(key, dropBase + j, rate), p = x[po + j];
                x[pd + j] = p * (kp * x[pd + j] - dRow);
                x[po + j] = p * kp;
            }
            java.util.Arrays.fill(x, pd + ve, pd + roundUp(ve, L), 0f);
        } else {
            for (int j = 0; j < ve; j += L) {
                FloatVector p = FloatVector.fromArray(S, x, po + j);
                FloatVector ds = p.mul(FloatVector.fromArray(S, x, pd + j).sub(dRow));
                if (j + L > ve) ds = FloatVector.zero(S).blend(ds, S.indexInRange(j, ve)); // past ve: P = 0, dP unset
                ds.intoArray(x, pd + j);
            }
        }
        for (int j = 0; j < ve; j += L) { // the row holds whole vectors of dS now, zero past ve
            FloatVector ds = FloatVector.fromArray(S, x, pd + j);
            if (dBias != null) {
                if (j + L <= ve) FloatVector.fromArray(S, dBias, dbo + j).add(ds).intoArray(dBias, dbo + j);
                else {
                    VectorMask<Float> in = S.indexInRange(j, ve);
                    FloatVector.fromArray(S, dBias, dbo + j, in).add(ds).intoArray(dBias, dbo + j, in);
                }
            }
            ds.mul(scale).intoArray(x, pd + j);
        }
        java.util.Arrays.fill(x, pd + roundUp(ve, L), pd + lenPad, 0f);
    }

    private static void scaleRow(float[] x, int o, int n, float c) {
        int j = 0, vf = n - n % L;
        for (; j < vf; j += L) FloatVector.fromArray(S, x, o + j).mul(c).intoArray(x, o + j);
        for (; j < n; j++) x[o + j] *= c;
    }

    private static void scaleInto(float[] x, int xo, float[] y, int yo, int n, float c) {
        int j = 0, vf = n - n % L;
        for (; j < vf; j += L) FloatVector.fromArray(S, x, xo + j).mul(c).intoArray(y, yo + j);
        for (; j < n; j++) y[yo + j] = x[xo + j] * c;
    }

    /** dst[c·ld + j] = src[src0 + j·rs + c] for j < n (rows of one head), c < hd; columns [n, ld) zeroed. */
    private static void transpose(float[] src, int src0, int rs, int n, int hd, float[] dst, int d0, int ld) {
        int j = 0;
        for (; j + 3 < n; j += 4) { // four rows at a time: four stores side by side in each output row
            int r0 = src0 + j * rs, r1 = r0 + rs, r2 = r1 + rs, r3 = r2 + rs;
            for (int c = 0; c < hd; c++) {
                int o = d0 + c * ld + j;
                dst[o] = src[r0 + c];
                dst[o + 1] = src[r1 + c];
                dst[o + 2] = src[r2 + c];
                dst[o + 3] = src[r3 + c];
            }
        }
        for (; j < n; j++) {
            int r = src0 + j * rs;
            for (int c = 0; c < hd; c++) dst[d0 + c * ld + j] = src[r + c];
        }
        for (int c = 0; c < hd; c++) java.util.Arrays.fill(dst, d0 + c * ld + n, d0 + (c + 1) * ld, 0f);
    }

    // ---- products ----

    /**
     * Raw products of query-side rows [q0, q1) (A rows at a0 + i·lda) with key-side rows [k0, k1)
     * into the score tile (row r at pS + r·ldS, column j - k0): against the transposed copy at pT
     * (ld ldk) when tr, else as dot products along the head. Each 4-row tile stops at the whole
     * vector holding its last visible key.
     */
    private static void scores(float[] a, int a0, int lda, float[] k, int k0b, int krs, float[] w, boolean tr, int ldk,
                               int pS, int ldS, Attention.Args args, int b, int q0, int q1, int k0, int k1, int pT) {
        Attention.Options o = args.o;
        int hd = args.s.hd(), skv = args.s.skv();
        for (int i = q0; i < q1; i += 4) {
            int rows = Math.min(4, q1 - i);
            int end = Math.min(o.visibleEnd(b, i + rows - 1, skv), k1) - k0;
            if (end <= 0) continue;
            int c0 = pS + (i - q0) * ldS;
            if (tr) {
                int jEnd = roundUp(end, L);
                if (rows == 4) scoresT4(a, a0 + i * lda, lda, w, pT + k0, ldk, hd, w, c0, ldS, jEnd);
                else for (int r = 0; r < rows; r++) scoresT1(a, a0 + (i + r) * lda, w, pT + k0, ldk, hd, w, c0 + r * ldS, jEnd);
            } else {
                for (int r = 0; r < rows; r++) {
                    int ar = a0 + (i + r) * lda, e = Math.min(o.visibleEnd(b, i + r, skv), k1) - k0;
                    for (int j = 0; j < e; j++) w[c0 + r * ldS + j] = dot(a, ar, k, k0b + (k0 + j) * krs, hd);
                }
            }
        }
    }

    /** C[r][j] = Σ_c A[r][c] Bt[c][j] for 4 rows and j < jEnd (a multiple of L), two vectors of j at a time. */
    private static void scoresT4(float[] a, int a0, int lda, float[] bt, int b0, int ldb, int hd, float[] c, int c0, int ldc, int jEnd) {
        int a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda;
        int j = 0;
        for (; j + 2 * L <= jEnd; j += 2 * L) {
            FloatVector s00 = FloatVector.zero(S), s01 = FloatVector.zero(S), s10 = FloatVector.zero(S), s11 = FloatVector.zero(S);
            FloatVector s20 = FloatVector.zero(S), s21 = FloatVector.zero(S), s30 = FloatVector.zero(S), s31 = FloatVector.zero(S);
            for (int cc = 0; cc < hd; cc++) {
                int bk = b0 + cc * ldb + j;
                FloatVector y0 = FloatVector.fromArray(S, bt, bk), y1 = FloatVector.fromArray(S, bt, bk + L);
                FloatVector x0 = FloatVector.broadcast(S, a[a0 + cc]), x1 = FloatVector.broadcast(S, a[a1 + cc]);
                FloatVector x2 = FloatVector.broadcast(S, a[a2 + cc]), x3 = FloatVector.broadcast(S, a[a3 + cc]);
                s00 = y0.fma(x0, s00);
                s01 = y1.fma(x0, s01);
                s10 = y0.fma(x1, s10);
                s11 = y1.fma(x1, s11);
                s20 = y0.fma(x2, s20);
                s21 = y1.fma(x2, s21);
                s30 = y0.fma(x3, s30);
                s31 = y1.fma(x3, s31);
            }
            s00.intoArray(c, c0 + j);
            s01.intoArray(c, c0 + j + L);
            s10.intoArray(c, c0 + ldc + j);
            s11.intoArray(c, c0 + ldc + j + L);
            s20.intoArray(c, c0 + 2 * ldc + j);
            s21.intoArray(c, c0 + 2 * ldc + j + L);
            s30.intoArray(c, c0 + 3 * ldc + j);
            s31.intoArray(c, c0 + 3 * ldc + j + L);
        }
        if (j < jEnd) {
            FloatVector s0 = FloatVector.zero(S), s1 = FloatVector.zero(S), s2 = FloatVector.zero(S), s3 = FloatVector.zero(S);
            for (int cc = 0; cc < hd; cc++) {
                FloatVector y = FloatVector.fromArray(S, bt, b0 + cc * ldb + j);
                s0 = y.fma(FloatVector.broadcast(S, a[a0 + cc]), s0);
                s1 = y.fma(FloatVector.broadcast(S, a[a1 + cc]), s1);
                s2 = y.fma(FloatVector.broadcast(S, a[a2 + cc]), s2);
                s3 = y.fma(FloatVector.broadcast(S, a[a3 + cc]), s3);
            }
            s0.intoArray(c, c0 + j);
            s1.intoArray(c, c0 + ldc + j);
            s2.intoArray(c, c0 + 2 * ldc + j);
            s3.intoArray(c, c0 + 3 * ldc + j);
        }
    }

    /** One row of {@link #scoresT4}. */
    private static void scoresT1(float[] a, int a0, float[] bt, int b0, int ldb, int hd, float[] c, int c0, int jEnd) {
        for (int j = 0; j < jEnd; j += L) {
            FloatVector s0 = FloatVector.zero(S);
            for (int cc = 0; cc < hd; cc++) s0 = FloatVector.fromArray(S, bt, b0 + cc * ldb + j).fma(FloatVector.broadcast(S, a[a0 + cc]), s0);
            s0.intoArray(c, c0 + j);
        }
    }

    /**
     * C[r][c] += Σ_{k in [k0, k1)} A(r, k) B[k][c] for r < rows (at most 4) and c < n, with
     * A(r, k) = a[a0 + r·ai + k·ak] (so A may be read transposed), B[k][c] = b[b0 + k·ldb + c],
     * C[r][c] = cc[c0 + r·ldc + c]: vectors along c, two at a time, a scalar tail for n mod L.
     */
    static void accRows(float[] a, int a0, int ai, int ak, float[] b, int b0, int ldb, float[] cc, int c0, int ldc,
                        int rows, int k0, int k1, int n) {
        int j = 0;
        if (rows == 4) {
            for (; j + 2 * L <= n; j += 2 * L) acc4x2(a, a0, ai, ak, b, b0 + j, ldb, cc, c0 + j, ldc, k0, k1);
            for (; j + L <= n; j += L) acc4x1(a, a0, ai, ak, b, b0 + j, ldb, cc, c0 + j, ldc, k0, k1);
        } else {
            for (int r = 0; r < rows; r++)
                for (int jj = 0; jj + L <= n; jj += L) acc1x1(a, a0 + r * ai, ak, b, b0 + jj, ldb, cc, c0 + r * ldc + jj, k0, k1);
            j = n - n % L;
        }
        for (; j < n; j++) // columns past the last whole vector
            for (int r = 0; r < rows; r++) {
                float sum = 0;
                for (int kk = k0; kk < k1; kk++) sum = Math.fma(a[a0 + r * ai + kk * ak], b[b0 + kk * ldb + j], sum);
                cc[c0 + r * ldc + j] += sum;
            }
    }

    private static void acc4x2(float[] a, int a0, int ai, int ak, float[] b, int b0, int ldb, float[] c, int c0, int ldc, int k0, int k1) {
        FloatVector s00 = FloatVector.zero(S), s01 = FloatVector.zero(S), s10 = FloatVector.zero(S), s11 = FloatVector.zero(S);
        FloatVector s20 = FloatVector.zero(S), s21 = FloatVector.zero(S), s30 = FloatVector.zero(S), s31 = FloatVector.zero(S);
        int a1 = a0 + ai, a2 = a1 + ai, a3 = a2 + ai;
        for (int kk = k0; kk < k1; kk++) {
            int bk = b0 + kk * ldb, ka = kk * ak;
            FloatVector y0 = FloatVector.fromArray(S, b, bk), y1 = FloatVector.fromArray(S, b, bk + L);
            FloatVector x0 = FloatVector.broadcast(S, a[a0 + ka]), x1 = FloatVector.broadcast(S, a[a1 + ka]);
            FloatVector x2 = FloatVector.broadcast(S, a[a2 + ka]), x3 = FloatVector.broadcast(S, a[a3 + ka]);
            s00 = y0.fma(x0, s00);
            s01 = y1.fma(x0, s01);
            s10 = y0.fma(x1, s10);
            s11 = y1.fma(x1, s11);
            s20 = y0.fma(x2, s20);
            s21 = y1.fma(x2, s21);
            s30 = y0.fma(x3, s30);
            s31 = y1.fma(x3, s31);
        }
        addInto(s00, c, c0);
        addInto(s01, c, c0 + L);
        addInto(s10, c, c0 + ldc);
        addInto(s11, c, c0 + ldc + L);
        addInto(s20, c, c0 + 2 * ldc);
        addInto(s21, c, c0 + 2 * ldc + L);
        addInto(s30, c, c0 + 3 * ldc);
        addInto(s31, c, c0 + 3 * ldc + L);
    }

    private static void acc4x1(float[] a, int a0, int ai, int ak, float[] b, int b0, int ldb, float[] c, int c0, int ldc, int k0, int k1) {
        FloatVector s0 = FloatVector.zero(S), s1 = FloatVector.zero(S), s2 = FloatVector.zero(S), s3 = FloatVector.zero(S);
        int a1 = a0 + ai, a2 = a1 + ai, a3 = a2 + ai;
        for (int kk = k0; kk < k1; kk++) {
            FloatVector y = FloatVector.fromArray(S, b, b0 + kk * ldb);
            int ka = kk * ak;
            s0 = y.fma(FloatVector.broadcast(S, a[a0 + ka]), s0);
            s1 = y.fma(FloatVector.broadcast(S, a[a1 + ka]), s1);
            s2 = y.fma(FloatVector.broadcast(S, a[a2 + ka]), s2);
            s3 = y.fma(FloatVector.broadcast(S, a[a3 + ka]), s3);
        }
        addInto(s0, c, c0);
        addInto(s1, c, c0 + ldc);
        addInto(s2, c, c0 + 2 * ldc);
        addInto(s3, c, c0 + 3 * ldc);
    }

    private static void acc1x1(float[] a, int a0, int ak, float[] b, int b0, int ldb, float[] c, int c0, int k0, int k1) {
        FloatVector s = FloatVector.zero(S);
        for (int kk = k0; kk < k1; kk++) s = FloatVector.fromArray(S, b, b0 + kk * ldb).fma(FloatVector.broadcast(S, a[a0 + kk * ak]), s);
        addInto(s, c, c0);
    }

    private static void addInto(FloatVector s, float[] c, int at) {
        s.add(FloatVector.fromArray(S, c, at)).intoArray(c, at);
    }
}
