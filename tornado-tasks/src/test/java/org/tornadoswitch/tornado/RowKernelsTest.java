package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.tornadoswitch.tornado.DeviceRun.assertClose;
import static org.tornadoswitch.tornado.DeviceRun.random;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.model.RouterChoice;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The work-group row and column reductions in both forms (32 lanes per row, one work item per row)
 * against the JVM ops: LayerNorm forward, input and parameter gradients, the router (softmax,
 * logsumexp, entropy, top-k with the host's tie rule, jitter), its statistics, cross-entropy, the gate
 * dot products and the gradient's sum of squares; 37 rows and widths that are no multiple of 32.
 */
class RowKernelsTest {
    static final ThreadPool POOL = new ThreadPool(1);

    @AfterAll
    static void close() {
        POOL.close();
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void layerNormForwardBackwardAndParameterGradients(KernelForm form) {
        int rows = 37, d = 24;
        float[] x = random(rows * d, 6), gb = random(2 * d, 7), dy = random(rows * d, 8);
        float[] y = new float[rows * d], mean = new float[rows], rstd = new float[rows];
        Ops.layerNorm(POOL, x, 0, gb, 0, gb, d, y, 0, mean, rstd, 0, rows, d);
        float[] dx = random(rows * d, 9), dxAcc = dx.clone(), g0 = random(2 * d, 10), dg = g0.clone();
        Ops.layerNormBackward(POOL, x, 0, gb, 0, mean, rstd, 0, dy, 0, dxAcc, 0, dg, 0, dg, d, rows, d, true);
        FloatArray fx = FloatArray.fromArray(x), fgb = FloatArray.fromArray(gb), fy = new FloatArray(rows * d);
        FloatArray fm = new FloatArray(rows), fr = new FloatArray(rows), fdy = FloatArray.fromArray(dy);
        FloatArray fdx = FloatArray.fromArray(dx), fg = FloatArray.fromArray(g0);
        KernelContext kc = new KernelContext();
        DeviceRun.run("layer_norm_" + form, tg -> tg
                        .task("fwd", RowKernels::layerNorm, kc, fx, fgb, 0, d, fy, fm, fr, rows, d)
                        .task("bwd", RowKernels::layerNormBackward, kc, fx, fgb, 0, fm, fr, fdy, fdx, rows, d, 1)
                        .task("params", RowKernels::layerNormParams, kc, fx, fm, fr, fdy, fg, 0, d, rows, d),
                new Object[] {"fwd", form.rowGrid(rows), "bwd", form.rowGrid(rows), "params", form.columnGrid(d)},
                fx, fgb, fy, fm, fr, fdy, fdx, fg);
        assertClose(y, fy, "y");
        assertClose(mean, fm, "mean");
        assertClose(rstd, fr, "rstd");
        assertClose(dxAcc, fdx, "dx (accumulated)");
        assertClose(dg, fg, "dgamma, dbeta (accumulated)");
    }

    @ParameterizedTest(name = "{0} k={1} jitter={2}")
    @CsvSource({"CPU,1,0", "GPU,1,0", "CPU,2,0.1", "GPU,2,0.1", "GPU,1,0.05"})
    void routerSoftmaxTopKAndStatisticsMatchTheHost(KernelForm form, int k, float eps) {
        int rows = 37, d = 20, e = 5;
        float[] x = random(rows * d, 11), w = random(d * e + e, 12);
        // a tie between experts 1 and 3 in row 4: the lower one must win
        for (int c = 0; c < d; c++) {
            w[c * e + 3] = w[c * e + 1];
        }
        w[d * e + 3] = w[d * e + 1];
        long key = Rng.streamKey(3, 9, 2, Rng.SITE_JITTER);
        float[] xin = x.clone();
        if (eps > 0) for (int i = 0; i < xin.length; i++) xin[i] *= 1f - eps + 2f * eps * Rng.uniform(key, i);
        float[] probs = new float[rows * e], lse = new float[rows];
        Ops.matmul(POOL, xin, 0, w, 0, w, d * e, probs, 0, rows, d, e, false);
        Ops.softmaxRows(probs, 0, rows, e, lse, 0);
        RouterChoice expected = new RouterChoice(rows, e, k);
        expected.fromProbs(probs, lse, rows);

        FloatArray fx = FloatArray.fromArray(x), fw = FloatArray.fromArray(w), fin = new FloatArray(eps > 0 ? rows * d : 1);
        FloatArray fp = new FloatArray(rows * e), fl = new FloatArray(rows), fe = new FloatArray(rows), fc = new FloatArray(rows * 2 * k);
        FloatArray fs = new FloatArray(e + 2), rates = FloatArray.fromArray(new float[] {0f, 0f, eps});
        IntArray keys = new IntArray(2);
        keys.set(0, (int) (key >> 32));
        keys.set(1, (int) key);
        int noise = 2 | (eps > 0 ? 0x100000 : 0);
        KernelContext kc = new KernelContext();
        DeviceRun.run("router_" + form + k, tg -> tg
                        .task("router", RowKernels::router, kc, fx, fw, 0, fin, fp, fl, fe, fc, keys, rates, rows, d, e, k, noise)
                        .task("stats", RowKernels::routerStats, kc, fp, fe, fl, fs, rows, e),
                new Object[] {"router", form.rowGrid(rows), "stats", form.columnGrid(e + 2)}, fx, fw, fin, fp, fl, fe, fc, fs, keys, rates);
        assertClose(probs, fp, "probs");
        assertClose(lse, fl, "lse");
        for (int a = 0; a < rows * k; a++) {
            assertEquals(expected.expert[a], (int) fc.get(2 * a), "expert of assignment " + a);
            assertEquals(expected.prob[a], fc.get(2 * a + 1), 1e-6, "probability of assignment " + a);
        }
        for (int x2 = 0; x2 < e; x2++) assertEquals(expected.probSum[x2], fs.get(x2), 1e-4 * rows, "P sum " + x2);
        assertEquals(expected.entropySum, fs.get(e), 1e-4 * expected.entropySum, "entropy sum");
        assertEquals(expected.lseSquaredSum, fs.get(e + 1), 1e-4 * expected.lseSquaredSum, "lse^2 sum");
    }

    @ParameterizedTest
    @EnumSource(KernelForm.class)
    void crossEntropyGateDotsAndSumOfSquares(KernelForm form) {
        int rows = 37, n = 45;
        float[] x = random(rows * n, 14);
        x[3 * n + 7] = x[3 * n + 9] = 5f; // a tied maximum: the first one is the argmax
        int[] targets = new int[rows];
        for (int i = 0; i < rows; i++) targets[i] = (i * 7) % n;
        targets[3] = 7;
        float[] losses = new float[rows], dl = new float[rows * n];
        int[] correct = new int[rows];
        Ops.crossEntropy(POOL, x, targets, losses, correct, dl, rows, n);
        // gates: 2 assignments per token; slots, passthrough and dropped-with-zero-output rows
        int t = 19, d = 21, k = 2;
        float[] db = random(t * d, 15), ye = random(10 * d, 16), ln = random(t * d, 17);
        int[] tokRow = new int[t * k];
        for (int a = 0; a < t * k; a++) tokRow[a] = a % 3 == 0 ? -1 : a % 10;
        float[][] gates = new float[2][t * k];
        for (int zero = 0; zero < 2; zero++)
            for (int a = 0; a < t * k; a++) {
                double s = 0;
                int r = tokRow[a];
                for (int c = 0; c < d; c++) s += db[(a / k) * d + c] * (r >= 0 ? ye[r * d + c] : zero == 0 ? ln[(a / k) * d + c] : 0f);
                gates[zero][a] = (float) s;
            }
        int np = 10000, chunk = 4096, chunks = 3;
        float[] gr = random(np, 18);
        double[] part = new double[chunks];
        for (int i = 0; i < np; i++) part[i / chunk] += (double) gr[i] * gr[i];

        FloatArray fx = FloatArray.fromArray(x), floss = new FloatArray(rows), fc = new FloatArray(rows), fdl = new FloatArray(rows * n);
        IntArray ft = IntArray.fromArray(targets), ftr = IntArray.fromArray(tokRow);
        FloatArray fdb = FloatArray.fromArray(db), fye = FloatArray.fromArray(ye), fln = FloatArray.fromArray(ln);
        FloatArray g0 = new FloatArray(t * k), g1 = new FloatArray(t * k), fgr = FloatArray.fromArray(gr), fpart = new FloatArray(chunks);
        KernelContext kc = new KernelContext();
        DeviceRun.run("ce_gates_" + form, tg -> tg
                        .task("ce", RowKernels::crossEntropy, kc, fx, ft, floss, fc, fdl, rows, n, 1f / rows)
                        .task("gate0", RowKernels::gateDots, kc, fdb, fye, fln, ftr, g0, t * k, d, k, 0)
                        .task("gate1", RowKernels::gateDots, kc, fdb, fye, fln, ftr, g1, t * k, d, k, 1)
                        .task("norm", RowKernels::sumSquares, kc, fgr, fpart, np, chunk, chunks),
                new Object[] {"ce", form.rowGrid(rows), "gate0", form.rowGrid(t * k), "gate1", form.rowGrid(t * k), "norm",
                        form.rowGrid(chunks)},
                fx, ft, floss, fc, fdl, fdb, fye, fln, ftr, g0, g1, fgr, fpart);
        assertClose(losses, floss, "loss");
        assertClose(dl, fdl, "dlogits");
        for (int i = 0; i < rows; i++) assertEquals(correct[i], (int) fc.get(i), "correct[" + i + "]");
        assertEquals(1, (int) fc.get(3), "the first of two tied maxima is the argmax");
        assertClose(gates[0], g0, "gate dots, dropped pass through");
        assertClose(gates[1], g1, "gate dots, dropped give zero");
        for (int c = 0; c < chunks; c++) assertEquals(part[c], fpart.get(c), 1e-4 * part[c], "partial " + c);
    }
}
