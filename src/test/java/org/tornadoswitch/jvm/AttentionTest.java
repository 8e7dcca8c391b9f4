package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * {@link Attention} against a plain-loop double-precision reference (forward output and log-sum-exp),
 * and its backward against central differences of that reference's loss L = Σ r · out, for every
 * option: causal, qPos0, kvLen, bias (with dBias), dropout, cross shape, strided and fused buffers,
 * rows with no visible key. Also: bit-identical results for 1, 2 and 3 threads and over repeated
 * calls (JIT state), and the labml model's dropout mask (same weights as Ops.attention drops).
 */
class AttentionTest {
    static final ThreadPool POOL = new ThreadPool(2);
    static final double H = 1e-4; // finite-difference step, in double

    @AfterAll
    static void close() {
        POOL.close();
    }

    static float[] random(int n, long seed, double scale) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) ((r.nextDouble() * 2 - 1) * scale);
        return a;
    }

    static double[] toDouble(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = a[i];
        return d;
    }

    /** One problem: shape, options and buffers with their offsets (K and V may share one array). */
    static final class Case {
        final Attention.Shape s;
        final Attention.Options o;
        final float[] q, kv, r, bias;
        final int qOff, kOff, vOff, outOff, qLen, kvLen;
        final boolean fused;

        /** Dense buffers: q, k, v separate, offsets 0 (or the given q/k/v offsets into larger arrays). */
        Case(Attention.Shape s, Attention.Options o, int qOff, int kOff, int vOff, boolean fused, long seed) {
            this.s = s;
            this.qOff = qOff;
            this.kOff = kOff;
            this.vOff = vOff;
            this.outOff = qOff;
            this.fused = fused;
            this.qLen = qOff + (s.nSeq() - 1) * s.qSeqStride() + (s.sq() - 1) * s.qRowStride() + s.heads() * s.hd() + 3;
            int kvEnd = Math.max(kOff, vOff) + (s.nSeq() - 1) * s.kvSeqStride() + (s.skv() - 1) * s.kvRowStride()
                    + s.heads() * s.hd() + 2;
            this.kvLen = kvEnd;
            this.q = random(qLen, seed, 1.5);
            this.kv = random(kvEnd, seed + 1, 1.5);
            this.r = random(qLen, seed + 2, 1);
            this.bias = o.bias() == null ? null : o.bias();
            this.o = o;
        }

        /** The v array: the same as k when fused, else a separate one of the same layout. */
        float[] v() {
            return fused ? kv : vSep;
        }

        private float[] vSep;

        Case withSeparateV(long seed) {
            vSep = random(kvLen, seed, 1.5);
            return this;
        }

        boolean addressedQ(int idx) {
            int x = idx - qOff;
            if (x < 0) return false;
            for (int b = 0; b < s.nSeq(); b++)
                for (int i = 0; i < s.sq(); i++) {
                    int base = b * s.qSeqStride() + i * s.qRowStride();
                    if (x >= base && x < base + s.heads() * s.hd()) return true;
                }
            return false;
        }
    }

    /** Double-precision reference: out (at q's addressing, other elements 0) and lse. */
    static double[][] reference(Attention.Shape s, Attention.Options o, double[] q, int qOff, double[] k, int kOff,
                                double[] v, int vOff, double[] bias, int outLen) {
        double[] out = new double[outLen], lse = new double[s.nSeq() * s.heads() * s.sq()];
        int hd = s.hd();
        for (int b = 0; b < s.nSeq(); b++)
            for (int h = 0; h < s.heads(); h++)
                for (int i = 0; i < s.sq(); i++) {
                    int qi = qOff + b * s.qSeqStride() + i * s.qRowStride() + h * hd;
                    double[] sc = new double[s.skv()];
                    boolean[] vis = new boolean[s.skv()];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < s.skv(); j++) {
                        vis[j] = (!o.causal() || j <= i + o.qPos0()) && (o.kvLen() == null || j < o.kvLen()[b]);
                        if (!vis[j]) continue;
                        int kj = kOff + b * s.kvSeqStride() + j * s.kvRowStride() + h * hd;
                        double dot = 0;
                        for (int c = 0; c < hd; c++) dot += q[qi + c] * k[kj + c];
                        sc[j] = o.scale() * dot + (bias == null ? 0 : bias[o.biasOff() + (h * s.sq() + i) * s.skv() + j]);
                        max = Math.max(max, sc[j]);
                    }
                    int li = (b * s.heads() + h) * s.sq() + i;
                    if (max == Double.NEGATIVE_INFINITY) {
                        lse[li] = Double.NEGATIVE_INFINITY;
                        continue;
                    }
                    double sum = 0;
                    for (int j = 0; j < s.skv(); j++) if (vis[j]) sum += sc[j] = Math.exp(sc[j] - max);
                    lse[li] = max + Math.log(sum);
                    for (int j = 0; j < s.skv(); j++) {
                        if (!vis[j]) continue;
                        double p = sc[j] / sum;
                        if (o.dropRate() > 0)
                            p *= Ops.keep(o.dropKey(), (((long) b * s.heads() + h) * s.sq() + i) * s.skv() + j, o.dropRate());
                        int vj = vOff + b * s.kvSeqStride() + j * s.kvRowStride() + h * hd;
                        for (int c = 0; c < hd; c++) out[qi + c] += p * v[vj + c];
                    }
                }
        return new double[][] {out, lse};
    }

    /**
     * Runs one case: forward against the reference, backward (dq, dk, dv, dBias) against central
     * differences of the reference loss, and that the backward overwrites dq/dk/dv and adds to dBias.
     */
    static void check(String what, Case c) {
        Attention.Shape s = c.s;
        Attention.Options o = c.o;
        float[] v = c.v();
        float[] out = new float[c.qLen], lse = new float[s.nSeq() * s.heads() * s.sq() + 2];
        Arrays.fill(out, 9f); // elements outside the addressed rows must stay as they are
        Attention.forward(POOL, s, o, c.q, c.qOff, c.kv, c.kOff, v, c.vOff, out, c.outOff, lse, 1);
        double[] qd = toDouble(c.q), kd = toDouble(c.kv), vd = c.fused ? kd : toDouble(v);
        double[] bd = c.bias == null ? null : toDouble(c.bias);
        double[][] ref = reference(s, o, qd, c.qOff, kd, c.kOff, vd, c.vOff, bd, c.qLen);
        for (int i = 0; i < c.qLen; i++) {
            double want = c.addressedQ(i) ? ref[0][i] : 9.0;
            assertEquals(want, out[i], 2e-5 + 2e-5 * Math.abs(want), what + ": out[" + i + "]");
        }
        for (int i = 0; i < ref[1].length; i++) {
            if (ref[1][i] == Double.NEGATIVE_INFINITY) assertEquals(Float.NEGATIVE_INFINITY, lse[1 + i], what + ": lse[" + i + "]");
            else assertEquals(ref[1][i], lse[1 + i], 2e-5 + 2e-6 * Math.abs(ref[1][i]), what + ": lse[" + i + "]");
        }
        // dout = r on the addressed rows
        float[] dout = new float[c.qLen];
        for (int i = 0; i < c.qLen; i++) dout[i] = c.addressedQ(i) ? c.r[i] : 0f;
        float[] dq = new float[c.qLen], dkv = new float[c.kvLen], dvSep = c.fused ? dkv : new float[c.kvLen];
        float[] dBias = c.bias == null ? null : random(c.bias.length, 99, 1);
        float[] dBias0 = dBias == null ? null : dBias.clone();
        Runnable back = () -> Attention.backward(POOL, s, o, c.q, c.qOff, c.kv, c.kOff, v, c.vOff, out, c.outOff, dout, c.qOff,
                lse, 1, dq, c.qOff, dkv, c.kOff, dvSep, c.vOff, dBias, o.biasOff());
        back.run();
        float[] dq1 = dq.clone(), dk1 = dkv.clone(), dv1 = dvSep.clone();
        if (dBias == null) { // a second call gives the same: dq, dk, dv are overwritten, not accumulated
            back.run();
            assertArrayEquals(dq1, dq, what + ": dq overwritten");
            assertArrayEquals(dk1, dkv, what + ": dk overwritten");
            assertArrayEquals(dv1, dvSep, what + ": dv overwritten");
        }
        java.util.function.Supplier<Double> loss = () -> {
            double[] o2 = reference(s, o, qd, c.qOff, kd, c.kOff, vd, c.vOff, bd, c.qLen)[0];
            double l = 0;
            for (int i = 0; i < c.qLen; i++) l += dout[i] * o2[i];
            return l;
        };
        fd(what + ": dq", qd, dq1, loss, null);
        fd(what + ": dk" + (c.fused ? "v" : ""), kd, dk1, loss, null);
        if (!c.fused) fd(what + ": dv", vd, dv1, loss, null);
        if (dBias != null) fd(what + ": dBias", bd, dBias, loss, dBias0);
    }

    /** Elements checked per array: all of a small one, this many spread over a large one. */
    static final int FD_MAX = 300;

    /** analytic[i] (minus base[i], for accumulated outputs) against central differences of loss in x[i]. */
    static void fd(String what, double[] x, float[] analytic, java.util.function.Supplier<Double> loss, float[] base) {
        double maxAbs = 0;
        int count = Math.min(x.length, FD_MAX);
        for (int c = 0; c < count; c++) {
            int i = count == x.length ? c : (int) ((long) c * x.length / count + c % 7) % x.length;
            double keep = x[i];
            x[i] = keep + H;
            double lp = loss.get();
            x[i] = keep - H;
            double lm = loss.get();
            x[i] = keep;
            double num = (lp - lm) / (2 * H);
            double got = analytic[i] - (base == null ? 0 : base[i]);
            maxAbs = Math.max(maxAbs, Math.abs(num));
            assertEquals(num, got, 1e-4 + 1e-3 * Math.abs(num), what + "[" + i + "]");
        }
        assertTrue(maxAbs > 1e-3, what + ": the gradient is not all zero");
    }

    static float[] randomBias(Attention.Shape s, int off, long seed) {
        return random(off + s.heads() * s.sq() * s.skv() + 1, seed, 2);
    }

    @Test
    void labmlCausal() {
        Attention.Shape s = Attention.Shape.dense(2, 5, 2, 3);
        check("causal", new Case(s, Attention.Options.causal((float) (1 / Math.sqrt(3))), 0, 0, 0, false, 1).withSeparateV(4));
    }

    @Test
    void causalAtVectorWidths() {
        // head widths that are and are not multiples of the vector length, sequences not multiples of a tile
        for (int hd : new int[] {8, 17, 32}) {
            Attention.Shape s = Attention.Shape.dense(1, 11, 2, hd);
            check("causal hd=" + hd, new Case(s, Attention.Options.causal((float) (1 / Math.sqrt(hd))), 0, 0, 0, false, 10 + hd)
                    .withSeparateV(20 + hd));
        }
    }

    @Test
    void causalWithDropout() {
        Attention.Shape s = Attention.Shape.dense(2, 6, 2, 4);
        check("dropout", new Case(s, Attention.Options.causal(0.5f).withDropout(0.3f, 77), 0, 0, 0, false, 2).withSeparateV(5));
    }

    @Test
    void encoderWithBiasAndKeyPadding() {
        Attention.Shape s = Attention.Shape.dense(3, 5, 2, 4);
        float[] bias = randomBias(s, 3, 6);
        Attention.Options o = Attention.Options.full(1f).withBias(bias, 3).withKvLen(new int[] {5, 3, 1});
        check("encoder", new Case(s, o, 0, 0, 0, false, 3).withSeparateV(7));
    }

    @Test
    void decoderCausalWithBiasAndDropout() {
        Attention.Shape s = Attention.Shape.dense(2, 6, 3, 4);
        float[] bias = randomBias(s, 0, 8);
        Attention.Options o = Attention.Options.causal(1f).withBias(bias, 0).withDropout(0.25f, -5);
        check("decoder", new Case(s, o, 0, 0, 0, false, 9).withSeparateV(10));
    }

    @Test
    void crossAttentionWithFusedKvAndPadding() {
        // queries [2*3 x 8] in a wider buffer (row stride 11, offset 2), keys and values column blocks of one [2*7 x 16] buffer
        int heads = 2, hd = 4, d = heads * hd;
        Attention.Shape s = new Attention.Shape(2, 3, 7, heads, hd, 3 * 11, 11, 7 * 2 * d, 2 * d);
        Attention.Options o = Attention.Options.full(0.7f).withKvLen(new int[] {7, 4});
        check("cross", new Case(s, o, 2, 1, 1 + d, true, 11));
    }

    @Test
    void kvCachedDecodeRow() {
        // one new query at position 8 against a cache of 12 rows of which 9 are filled: causal with qPos0 and the bias row
        Attention.Shape s = Attention.Shape.cross(3, 1, 12, 2, 8);
        float[] bias = randomBias(s, 0, 12);
        Attention.Options o = Attention.Options.causal(1f).withQPos0(8).withBias(bias, 0).withKvLen(new int[] {12, 9, 12});
        check("decode", new Case(s, o, 0, 0, 0, false, 13).withSeparateV(14));
    }

    @Test
    void causalBlockWithQueryOffset() {
        // 3 queries at positions 4..6 against 7 keys (a chunk of a longer causal sequence)
        Attention.Shape s = Attention.Shape.cross(2, 3, 7, 2, 5);
        check("qPos0", new Case(s, Attention.Options.causal(0.4f).withQPos0(4), 0, 0, 0, false, 15).withSeparateV(16));
    }

    @Test
    void longSequencesSpanSeveralQueryAndKeyBlocks() {
        // 40 queries (two query blocks) against 300 keys (three key blocks): the online softmax
        // rescales across key blocks, and a causal offset and padding end rows mid-block
        Attention.Shape s = Attention.Shape.cross(1, 40, 300, 1, 2);
        float[] bias = randomBias(s, 0, 51);
        check("long causal", new Case(s, Attention.Options.causal(0.5f).withQPos0(250).withBias(bias, 0).withKvLen(new int[] {285}),
                0, 0, 0, false, 52).withSeparateV(53));
        // scores that grow along the keys, so that a later block raises the running max
        Attention.Shape s2 = Attention.Shape.cross(2, 35, 260, 1, 3);
        float[] ramp = new float[35 * 260];
        for (int i = 0; i < ramp.length; i++) ramp[i] = 8f * (i % 260) / 260f;
        check("long full", new Case(s2, Attention.Options.full(1f).withBias(ramp, 0), 0, 0, 0, false, 54).withSeparateV(55));
    }

    @Test
    void rowsWithoutVisibleKeys() {
        // sequence 1 has no keys at all; causal with a negative offset hides every key from the first query
        Attention.Shape s = Attention.Shape.cross(2, 3, 4, 2, 4);
        Attention.Options o = Attention.Options.causal(1f).withQPos0(-1).withKvLen(new int[] {4, 0});
        Case c = new Case(s, o, 0, 0, 0, false, 17).withSeparateV(18);
        check("empty rows", c);
        float[] out = new float[c.qLen], lse = new float[12];
        Attention.forward(POOL, s, o, c.q, 0, c.kv, 0, c.v(), 0, out, 0, lse, 0);
        assertEquals(Float.NEGATIVE_INFINITY, lse[0]);
        for (int i = 6; i < 12; i++) assertEquals(Float.NEGATIVE_INFINITY, lse[i], "sequence 1 row " + i);
        for (int i = 0; i < 8; i++) assertEquals(0f, out[i]);
    }

    @Test
    void sameDropoutMaskAsTheLabmlOp() {
        int nSeq = 2, sl = 6, heads = 2, d = 8, hd = d / heads, n = nSeq * sl * d;
        float[] q = random(n, 21, 1), k = random(n, 22, 1), v = random(n, 23, 1);
        float[] att = new float[nSeq * heads * sl * sl], old = new float[n], now = new float[n], lse = new float[nSeq * heads * sl];
        Ops.attention(POOL, q, k, v, att, 0, old, nSeq, sl, heads, d, 0.4f, 1234L);
        Attention.forward(POOL, Attention.Shape.dense(nSeq, sl, heads, hd),
                Attention.Options.causal((float) (1 / Math.sqrt(hd))).withDropout(0.4f, 1234L), q, 0, k, 0, v, 0, now, 0, lse, 0);
        for (int i = 0; i < n; i++) assertEquals(old[i], now[i], 1e-5, "out[" + i + "]");
    }

    @Test
    void polynomialExpIsAccurateAndTheSameInLanesAndScalars() {
        org.junit.jupiter.api.Assumptions.assumeTrue(Ops.VECTOR, "needs the Vector API");
        int n = 20_011; // not a multiple of the vector length: the last vector is partial
        float[] x = new float[n + 64];
        for (int i = 0; i < n; i++) x[i] = -100f + 100f * i / (n - 1); // [-100, 0], both sides of the underflow
        x[5] = Float.NEGATIVE_INFINITY;
        float[] lanes = x.clone();
        float sum = VectorAttention.expRow(lanes, 0, n, n + 64 - (n + 64) % 16, 0f);
        double ref = 0;
        for (int i = 0; i < n; i++) {
            float e = VectorAttention.exp(x[i]);
            assertEquals(Float.floatToRawIntBits(e), Float.floatToRawIntBits(lanes[i]), "lane " + i + " of exp(" + x[i] + ")");
            double m = Math.exp(x[i]);
            if (x[i] >= -87.33f) assertEquals(m, e, 3e-7 * m, "exp(" + x[i] + ")");
            else assertEquals(0f, e, "exp(" + x[i] + ") underflows to 0");
            ref += e;
        }
        for (int i = n; i < n + 48; i++) assertEquals(0f, lanes[i], "zero past the row");
        assertEquals(ref, sum, 1e-5 * ref);
    }

    /** Forward and backward outputs of one configuration, for the determinism checks. */
    static float[][] run(ThreadPool pool, Attention.Shape s, Attention.Options o, float[] q, float[] k, float[] v, float[] dout) {
        int n = q.length;
        float[] out = new float[n], lse = new float[s.nSeq() * s.heads() * s.sq()];
        float[] dq = new float[n], dk = new float[k.length], dv = new float[k.length];
        float[] dBias = o.bias() == null ? null : new float[o.bias().length];
        Attention.forward(pool, s, o, q, 0, k, 0, v, 0, out, 0, lse, 0);
        Attention.backward(pool, s, o, q, 0, k, 0, v, 0, out, 0, dout, 0, lse, 0, dq, 0, dk, 0, dv, 0, dBias, 0);
        return new float[][] {out, lse, dq, dk, dv, dBias == null ? new float[0] : dBias};
    }

    @Test
    void bitIdenticalAcrossThreadCountsAndRepeats() {
        Attention.Shape s = Attention.Shape.dense(3, 33, 4, 32);
        int n = 3 * 33 * 4 * 32;
        float[] q = random(n, 31, 1), k = random(n, 32, 1), v = random(n, 33, 1), dout = random(n, 34, 1);
        float[] bias = random(4 * 33 * 33, 35, 1);
        Attention.Options[] opts = {
                Attention.Options.causal(0.2f).withDropout(0.1f, 3),
                Attention.Options.full(1f).withBias(bias, 0).withKvLen(new int[] {33, 20, 7})};
        for (Attention.Options o : opts) {
            float[][] base = run(POOL, s, o, q, k, v, dout);
            for (int threads : new int[] {1, 3}) {
                try (ThreadPool p = new ThreadPool(threads)) {
                    float[][] got = run(p, s, o, q, k, v, dout);
                    for (int x = 0; x < base.length; x++) assertArrayEquals(base[x], got[x], threads + " threads, output " + x);
                }
            }
            for (int rep = 0; rep < 100; rep++) { // the JIT compiles the kernels meanwhile
                float[][] got = run(POOL, s, o, q, k, v, dout);
                for (int x = 0; x < base.length; x++) assertArrayEquals(base[x], got[x], "repeat " + rep + ", output " + x);
            }
        }
    }
}
