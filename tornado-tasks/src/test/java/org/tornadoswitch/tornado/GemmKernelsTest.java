package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.tornadoswitch.tornado.DeviceRun.assertClose;
import static org.tornadoswitch.tornado.DeviceRun.random;
import static org.tornadoswitch.tornado.GemmKernels.ACCUMULATE;
import static org.tornadoswitch.tornado.GemmKernels.EPI_RELU;
import static org.tornadoswitch.tornado.GemmKernels.EPI_RESIDUAL;
import static org.tornadoswitch.tornado.GemmKernels.GATHER;
import static org.tornadoswitch.tornado.GemmKernels.HIDDEN_DROPOUT;
import static org.tornadoswitch.tornado.GemmKernels.RELU_MASK;
import static org.tornadoswitch.tornado.GemmKernels.SHARED_INPUT;
import static org.tornadoswitch.tornado.GemmKernels.VALID_ROWS;
import static org.tornadoswitch.tornado.GemmKernels.flags;
import static org.tornadoswitch.tornado.GemmKernels.topK;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The GEMM kernels in both forms (panel and tiled, both run on the test device) against the JVM's
 * matmuls: grouped experts with gathered, partly empty and empty groups, top-2 assignments, shared-input
 * Q/K/V groups, every epilogue, K longer than one panel, and shapes that are no multiple of any tile.
 */
class GemmKernelsTest {
    static final ThreadPool POOL = new ThreadPool(1);
    /** Initial value of outputs; rows beyond a group's kept count are not compared (TornadoVM does not send a write-only output). */
    static final float UNTOUCHED = 7.25f;

    @AfterAll
    static void close() {
        POOL.close();
    }

    /** Three experts of capacity 37: full, 5 kept, none kept; assignments of top-2 over 50 tokens. */
    static final int G = 3, CAP = 37, TOKENS = 50, TOPK = 2;
    static final int[] KEPT = {37, 5, 0}, OFFSETS = {0, 37, 42, 42};

    static int[] rowMap(long seed) {
        Rng r = new Rng(seed);
        int[] m = new int[G * CAP];
        for (int g = 0; g < G; g++)
            for (int s = 0; s < CAP; s++) m[g * CAP + s] = s < KEPT[g] ? (s % 7 == 3 ? -1 : r.nextInt(TOKENS * TOPK)) : -1;
        return m;
    }

    /** Rows of x picked by the row map: token a / k, zeros for -1. */
    static float[] gathered(float[] x, int[] map, int g, int k) {
        float[] out = new float[CAP * k];
        for (int s = 0; s < CAP; s++) {
            int a = map[g * CAP + s];
            if (a >= 0) System.arraycopy(x, (a / TOPK) * k, out, s * k, k);
        }
        return out;
    }

    static float[] filled(int n) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, UNTOUCHED);
        return a;
    }

    static KernelContext kc() {
        return new KernelContext();
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void expertsForwardGathersRowsAppliesReluAndHiddenDropout(KernelForm form) {
        int k = 19, n = 21;
        float rate = 0.3f;
        long key = Rng.streamKey(3, 4, 1, Rng.SITE_HIDDEN);
        float[] x = random(TOKENS * k, 1), w = random(G * (k * n + n), 2);
        int[] map = rowMap(3);
        float[] expected = filled(G * CAP * n);
        for (int g = 0; g < G; g++) {
            if (KEPT[g] == 0) continue;
            float[] xg = gathered(x, map, g, k);
            Ops.matmul(POOL, xg, 0, w, g * k * n, w, G * k * n + g * n, expected, g * CAP * n, KEPT[g], k, n, false);
            for (int s = 0; s < KEPT[g]; s++)
                for (int c = 0; c < n; c++) {
                    int i = (g * CAP + s) * n + c;
                    float v = Math.max(0f, expected[i]);
                    expected[i] = v * (Rng.uniform(key, (long) (OFFSETS[g] + s) * n + c) < rate ? 0f : 1f / (1f - rate));
                }
        }
        FloatArray fx = FloatArray.fromArray(x), fw = FloatArray.fromArray(w), fy = FloatArray.fromArray(filled(G * CAP * n));
        IntArray fmap = IntArray.fromArray(map), foff = IntArray.fromArray(OFFSETS), keys = keys(key);
        FloatArray rates = FloatArray.fromArray(new float[] {0f, rate, 0f}), res = new FloatArray(1);
        int fl = flags(G, EPI_RELU | GATHER | VALID_ROWS | HIDDEN_DROPOUT | topK(TOPK));
        DeviceRun.run("experts_fwd_" + form, tg -> tg.task("t", form.linear(), kc(), fx, fmap, foff, fw, fy, res, keys, rates, CAP, n, k, 0, fl,
                        1), new Object[] {"t", form.gemmGrid(CAP, n, G)}, fx, fmap, foff, fw, fy, res, keys, rates);
        assertKeptRows(expected, fy, n, "y");
    }

    /** Compares the kept rows of each group only. */
    static void assertKeptRows(float[] expected, FloatArray actual, int n, String what) {
        for (int g = 0; g < G; g++)
            if (KEPT[g] > 0) assertClose(expected, actual, g * CAP * n, KEPT[g] * n, what + " of group " + g);
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void sharedInputQkvAndResidualWithDropoutAndAPanelLongerThanOne(KernelForm form) {
        int rows = 45, d = 13;
        float[] x = random(rows * d, 4), w = random(3 * (d * d + d), 5);
        float[] qkv = new float[3 * rows * d];
        for (int g = 0; g < 3; g++) {
            int wo = g * (d * d + d);
            Ops.matmul(POOL, x, 0, w, wo, w, wo + d * d, qkv, g * rows * d, rows, d, d, false);
        }
        FloatArray fx = FloatArray.fromArray(x), fw = FloatArray.fromArray(w), fy = new FloatArray(3 * rows * d);
        IntArray none = new IntArray(1), noOff = new IntArray(2), keys = keys(0L);
        FloatArray rates = new FloatArray(3), res = new FloatArray(1);
        DeviceRun.run("qkv_" + form, tg -> tg.task("t", form.linear(), kc(), fx, none, noOff, fw, fy, res, keys, rates, rows, d, d, 0,
                flags(3, SHARED_INPUT), 0), new Object[] {"t", form.gemmGrid(rows, d, 3)}, fx, none, noOff, fw, fy, res, keys, rates);
        assertClose(qkv, fy, "qkv");

        // residual + dropout, with K = 600 > one panel of 512
        int k = 600, n = 5, m = 9;
        float rate = 0.25f;
        long key = Rng.streamKey(9, 1, 0, Rng.SITE_ATTN_RES);
        float[] a = random(m * k, 6), w2 = random(k * n + n, 7), r = random(m * n, 8), y = new float[m * n];
        Ops.matmul(POOL, a, 0, w2, 0, w2, k * n, y, 0, m, k, n, false);
        for (int i = 0; i < m * n; i++) y[i] = r[i] + (Rng.uniform(key, i) < rate ? 0f : 1f / (1f - rate)) * y[i];
        FloatArray fa = FloatArray.fromArray(a), fw2 = FloatArray.fromArray(w2), fr = FloatArray.fromArray(r), fo = new FloatArray(m * n);
        IntArray k2 = keys(key);
        FloatArray rates2 = FloatArray.fromArray(new float[] {rate, 0f, 0f});
        DeviceRun.run("residual_" + form, tg -> tg.task("t", form.linear(), kc(), fa, none, noOff, fw2, fo, fr, k2, rates2, m, n, k, 0,
                flags(1, EPI_RESIDUAL), 0), new Object[] {"t", form.gemmGrid(m, n, 1)}, fa, none, noOff, fw2, fo, fr, k2, rates2);
        assertClose(y, fo, "residual");
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void inputGradientsOfExpertsWithReluMaskAndOfQkvSummed(KernelForm form) {
        int in = 19, out = 21;
        float rate = 0.2f;
        float[] dy = random(G * CAP * out, 9), w = random(G * in * out, 10), h = random(G * CAP * in, 11);
        float[] expected = filled(G * CAP * in);
        for (int g = 0; g < G; g++) {
            if (KEPT[g] == 0) continue;
            Ops.matmulNT(POOL, dy, g * CAP * out, w, g * in * out, expected, g * CAP * in, KEPT[g], in, out, false);
            for (int i = g * CAP * in; i < (g * CAP + KEPT[g]) * in; i++) expected[i] = h[i] <= 0f ? 0f : expected[i] / (1f - rate);
        }
        FloatArray fdy = FloatArray.fromArray(dy), fw = FloatArray.fromArray(w), fh = FloatArray.fromArray(h);
        FloatArray fdx = FloatArray.fromArray(filled(G * CAP * in));
        IntArray foff = IntArray.fromArray(OFFSETS);
        FloatArray rates = FloatArray.fromArray(new float[] {0f, rate, 0f});
        DeviceRun.run("experts_dx_" + form, tg -> tg.task("t", form.inputGrad(), kc(), fdy, fw, fdx, fh, foff, rates, CAP, in, out, 0,
                flags(G, VALID_ROWS | RELU_MASK), 1), new Object[] {"t", form.gemmGrid(CAP, in, G)}, fdy, fw, fdx, fh, foff, rates);
        assertKeptRows(expected, fdx, in, "dx");

        // dLn += dQ Wq^T + dK Wk^T + dV Wv^T, weights interleaved with biases
        int rows = 33, d = 17;
        float[] dqkv = random(3 * rows * d, 12), wq = random(3 * (d * d + d), 13), base = random(rows * d, 14), exp2 = base.clone();
        for (int g = 0; g < 3; g++) Ops.matmulNT(POOL, dqkv, g * rows * d, wq, g * (d * d + d), exp2, 0, rows, d, d, true);
        FloatArray fd = FloatArray.fromArray(dqkv), fwq = FloatArray.fromArray(wq), fln = FloatArray.fromArray(base), noH = new FloatArray(1);
        IntArray noOff = new IntArray(2);
        DeviceRun.run("qkv_dx_" + form, tg -> tg.task("t", form.inputGrad(), kc(), fd, fwq, fln, noH, noOff, rates, rows, d, d, 0,
                flags(3, SHARED_INPUT | ACCUMULATE), 0), new Object[] {"t", form.gemmGrid(rows, d, 1)}, fd, fwq, fln, noH, noOff, rates);
        assertClose(exp2, fln, "dLn");
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void weightGradientsOfGatheredExpertsSharedQkvAndManyRows(KernelForm form) {
        int in = 19, out = 21;
        float[] x = random(TOKENS * in, 15), dy = random(G * CAP * out, 16), g0 = random(G * (in * out + out), 17);
        int[] map = rowMap(18);
        float[] expected = g0.clone();
        for (int g = 0; g < G; g++) {
            if (KEPT[g] == 0) continue;
            float[] xg = gathered(x, map, g, in);
            Ops.matmulTN(POOL, xg, 0, dy, g * CAP * out, expected, g * in * out, KEPT[g], in, out);
            Ops.biasGrad(dy, g * CAP * out, KEPT[g], out, expected, G * in * out + g * out);
        }
        FloatArray fx = FloatArray.fromArray(x), fdy = FloatArray.fromArray(dy), fg = FloatArray.fromArray(g0);
        IntArray fmap = IntArray.fromArray(map), foff = IntArray.fromArray(OFFSETS);
        DeviceRun.run("experts_dw_" + form, tg -> tg.task("t", form.weightGrad(), kc(), fx, fmap, foff, fdy, fg, CAP, out, in, 0,
                flags(G, GATHER | VALID_ROWS | topK(TOPK))), new Object[] {"t", form.gemmGrid(in + 1, out, G)}, fx, fmap, foff, fdy, fg);
        assertClose(expected, fg, "dW, db");

        // Q, K, V share the input; 1100 rows is more than two panels of 512
        int rows = 1100, d = 9;
        float[] ln = random(rows * d, 19), dqkv = random(3 * rows * d, 20), gq = random(3 * (d * d + d), 21), expQ = gq.clone();
        for (int g = 0; g < 3; g++) {
            int wo = g * (d * d + d);
            Ops.matmulTN(POOL, ln, 0, dqkv, g * rows * d, expQ, wo, rows, d, d);
            Ops.biasGrad(dqkv, g * rows * d, rows, d, expQ, wo + d * d);
        }
        FloatArray fln = FloatArray.fromArray(ln), fd = FloatArray.fromArray(dqkv), fgq = FloatArray.fromArray(gq);
        IntArray none = new IntArray(1), noOff = new IntArray(2);
        DeviceRun.run("qkv_dw_" + form, tg -> tg.task("t", form.weightGrad(), kc(), fln, none, noOff, fd, fgq, rows, d, d, 0,
                flags(3, SHARED_INPUT)), new Object[] {"t", form.gemmGrid(d + 1, d, 3)}, fln, none, noOff, fd, fgq);
        assertClose(expQ, fgq, "dWqkv, dbqkv");
    }

    static IntArray keys(long key) {
        IntArray a = new IntArray(2);
        a.set(0, (int) (key >> 32));
        a.set(1, (int) key);
        return a;
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void aCapacityOfZeroOrOneIsHandled(KernelForm form) {
        // capacity 1: two experts of one row; capacity 0 cannot be launched (no rows) and is skipped by the planner
        int k = 3, n = 4;
        float[] x = random(2 * k, 22), w = random(2 * (k * n + n), 23), expected = new float[2 * n];
        for (int g = 0; g < 2; g++) Ops.matmul(POOL, x, g * k, w, g * k * n, w, 2 * k * n + g * n, expected, g * n, 1, k, n, false);
        FloatArray fx = FloatArray.fromArray(x), fw = FloatArray.fromArray(w), fy = new FloatArray(2 * n), rates = new FloatArray(3), res = new FloatArray(1);
        IntArray none = new IntArray(1), off = IntArray.fromArray(new int[] {0, 1, 2}), keys = keys(0);
        DeviceRun.run("cap1_" + form, tg -> tg.task("t", form.linear(), kc(), fx, none, off, fw, fy, res, keys, rates, 1, n, k, 0,
                flags(2, VALID_ROWS), 0), new Object[] {"t", form.gemmGrid(1, n, 2)}, fx, none, off, fw, fy, res, keys, rates);
        assertClose(expected, fy, "y");
        assertEquals(expected.length, fy.getSize());
    }
}
