package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.TornadoExecutionPlan;
import uk.ac.manchester.tornado.api.enums.DataTransferMode;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * Each TornadoVM kernel against the JVM backend's op on the same inputs, on the TornadoVM device
 * (PoCL in CI). Tolerance: 1e-4 relative to the largest magnitude of the expected output.
 */
class SwitchKernelsTest {
    static final ThreadPool POOL = new ThreadPool(1);
    static final double REL = 1e-4;

    @AfterAll
    static void close() {
        POOL.close();
    }

    static float[] random(int n, long seed) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (r.nextDouble() * 2 - 1);
        return a;
    }

    /** Runs one task; inputs and outputs are all sent and all read back. */
    static void run(String name, java.util.function.Consumer<TaskGraph> task, Object... arrays) {
        TaskGraph tg = new TaskGraph("test_" + name).transferToDevice(DataTransferMode.EVERY_EXECUTION, arrays);
        task.accept(tg);
        tg.transferToHost(DataTransferMode.EVERY_EXECUTION, arrays);
        try (TornadoExecutionPlan plan = new TornadoExecutionPlan(tg.snapshot())) {
            plan.withDevice(TornadoDevices.select(System.getProperty("tornado.test.device"))).execute();
        } catch (Exception e) {
            throw new AssertionError("kernel " + name + " failed on the device", e);
        }
    }

    static void assertClose(float[] expected, FloatArray actual, String what) {
        double max = 0;
        for (float x : expected) max = Math.max(max, Math.abs(x));
        for (int i = 0; i < expected.length; i++)
            assertEquals(expected[i], actual.get(i), REL * Math.max(max, 1e-3), what + "[" + i + "]");
    }

    @Test
    void groupedLinearWithReluMatchesPerGroupMatmuls() {
        int groups = 3, rows = 5, in = 6, out = 7;
        float[] x = random(groups * rows * in, 1), w = random(groups * (in * out + out), 2);
        int bOff = groups * in * out;
        float[] expected = new float[groups * rows * out];
        for (int e = 0; e < groups; e++) {
            Ops.matmul(POOL, x, e * rows * in, w, e * in * out, w, bOff + e * out, expected, e * rows * out, rows, in, out, false);
        }
        Ops.relu(expected, 0, expected.length);
        FloatArray fx = FloatArray.fromArray(x), fw = FloatArray.fromArray(w), fy = new FloatArray(expected.length);
        run("grouped_linear", tg -> tg.task("t", SwitchKernels::groupedLinear, fx, fw, 0, bOff, fy, groups, rows, in, out, 1), fx, fw, fy);
        assertClose(expected, fy, "y");
    }

    @Test
    void linearBackwardKernelsMatchTheJvmOps() {
        int groups = 2, rows = 6, in = 5, out = 4;
        float[] x = random(groups * rows * in, 3), w = random(groups * in * out, 4), dy = random(groups * rows * out, 5);
        float[] dxExp = new float[groups * rows * in], dwExp = new float[groups * in * out], dbExp = new float[groups * out];
        float[] wt = new float[in * out];
        for (int e = 0; e < groups; e++) {
            Ops.transpose(w, e * in * out, in, out, wt, 0);
            Ops.matmul(POOL, dy, e * rows * out, wt, 0, null, 0, dxExp, e * rows * in, rows, out, in, false);
            Ops.matmulTN(POOL, x, e * rows * in, dy, e * rows * out, dwExp, e * in * out, rows, in, out);
            Ops.biasGrad(dy, e * rows * out, rows, out, dbExp, e * out);
        }
        FloatArray fx = FloatArray.fromArray(x), fw = FloatArray.fromArray(w), fdy = FloatArray.fromArray(dy);
        FloatArray fdx = new FloatArray(dxExp.length), fg = new FloatArray(dwExp.length + dbExp.length);
        run("linear_backward", tg -> tg
                .task("in", SwitchKernels::groupedLinearBackInput, fdy, fw, 0, fdx, groups, rows, in, out, 0)
                .task("w", SwitchKernels::groupedLinearBackWeight, fx, fdy, fg, 0, groups, rows, in, out)
                .task("b", SwitchKernels::groupedLinearBackBias, fdy, fg, dwExp.length, groups, rows, out), fx, fw, fdy, fdx, fg);
        assertClose(dxExp, fdx, "dx");
        float[] gExp = new float[dwExp.length + dbExp.length];
        System.arraycopy(dwExp, 0, gExp, 0, dwExp.length);
        System.arraycopy(dbExp, 0, gExp, dwExp.length, dbExp.length);
        assertClose(gExp, fg, "dW, db");
    }

    @Test
    void layerNormForwardAndBackward() {
        int rows = 5, d = 8;
        float[] x = random(rows * d, 6), gb = random(2 * d, 7), dy = random(rows * d, 8);
        float[] y = new float[rows * d], mean = new float[rows], rstd = new float[rows];
        Ops.layerNorm(POOL, x, 0, gb, 0, gb, d, y, 0, mean, rstd, 0, rows, d);
        float[] dx = random(rows * d, 9), dxAcc = dx.clone(), dg = new float[2 * d];
        Ops.layerNormBackward(POOL, x, 0, gb, 0, mean, rstd, 0, dy, 0, dxAcc, 0, dg, 0, dg, d, rows, d, true);
        FloatArray fx = FloatArray.fromArray(x), fgb = FloatArray.fromArray(gb), fy = new FloatArray(rows * d);
        FloatArray fm = new FloatArray(rows), fr = new FloatArray(rows), fdy = FloatArray.fromArray(dy);
        FloatArray fdx = FloatArray.fromArray(dx), fg = new FloatArray(2 * d);
        run("layer_norm", tg -> tg
                .task("fwd", SwitchKernels::layerNorm, fx, fgb, 0, d, fy, fm, fr, rows, d)
                .task("bwd_in", SwitchKernels::layerNormBackInput, fx, fgb, 0, fm, fr, fdy, fdx, rows, d, 1)
                .task("bwd_param", SwitchKernels::layerNormBackParams, fx, fm, fr, fdy, fg, 0, d, rows, d), fx, fgb, fy, fm, fr, fdy, fdx, fg);
        assertClose(y, fy, "y");
        assertClose(dxAcc, fdx, "dx (accumulated)");
        assertClose(dg, fg, "dgamma, dbeta");
    }

    /** Noise key pair (high, low) and rates {dropout, expert dropout, jitter} as the backend uploads them. */
    static IntArray keys(long... keys) {
        IntArray a = new IntArray(2 * keys.length);
        for (int i = 0; i < keys.length; i++) {
            a.set(2 * i, (int) (keys[i] >> 32));
            a.set(2 * i + 1, (int) keys[i]);
        }
        return a;
    }

    @Test
    void deviceNoiseIsTheJvmNoiseBitForBit() {
        long[] ks = {Rng.streamKey(42, 1, 0, Rng.SITE_ATTN), Rng.streamKey(7, 123456, 5, Rng.SITE_JITTER), -1L, 0x8000000000000000L};
        int n = 5000;
        for (int i = 0; i < ks.length; i++) {
            IntArray fk = keys(ks);
            FloatArray out = new FloatArray(n);
            int at = 2 * i;
            run("uniform_" + i, tg -> tg.task("u", SwitchKernels::uniformFill, fk, at, out, n), fk, out);
            for (int j = 0; j < n; j++)
                assertEquals(Float.floatToIntBits(Rng.uniform(ks[i], j)), Float.floatToIntBits(out.get(j)), "key " + i + " index " + j);
        }
        // a dropout mask and the jitter factor, as the JVM backend applies them
        float rate = 0.3f, eps = 0.05f;
        long key = ks[1];
        float[] x = random(n, 30);
        FloatArray fx = FloatArray.fromArray(x), masked = new FloatArray(n), jit = new FloatArray(n), back = new FloatArray(n);
        FloatArray rates = FloatArray.fromArray(new float[] {rate, 0f, eps});
        IntArray fk = keys(key);
        run("noise", tg -> tg
                .task("mask", SwitchKernels::dropoutMask, fx, masked, n, fk, 0, rates, 0)
                .task("jitter", SwitchKernels::jitter, fx, jit, n, fk, 0, rates, 2)
                .task("jitter_back", SwitchKernels::jitterBack, fx, back, n, fk, 0, rates, 2), fx, masked, jit, back, rates, fk);
        int dropped = 0;
        for (int j = 0; j < n; j++) {
            float keep = Rng.uniform(key, j) < rate ? 0f : 1f / (1f - rate);
            dropped += keep == 0f ? 1 : 0;
            float noise = 1f - eps + 2f * eps * Rng.uniform(key, j);
            assertEquals(x[j] * keep, masked.get(j), 1e-6f, "mask " + j);
            assertEquals(x[j] * noise, jit.get(j), 1e-6f, "jitter " + j);
            assertEquals(x[j] * noise, back.get(j), 1e-6f, "jitter grad " + j);
        }
        assertEquals(rate, dropped / (double) n, 0.03, "fraction dropped");
    }

    @ParameterizedTest(name = "dropout={0}")
    @ValueSource(floats = {0f, 0.3f})
    void causalAttentionForwardAndBackward(float drop) {
        int nSeq = 2, s = 6, heads = 2, d = 8, n = nSeq * s * d, a = nSeq * heads * s * s;
        float[] q = random(n, 10), k = random(n, 11), v = random(n, 12), dout = random(n, 13);
        float[] att = new float[a], out = new float[n], dq = new float[n], dk = new float[n], dv = new float[n];
        long key = Rng.streamKey(5, 2, 1, Rng.SITE_ATTN);
        IntArray fkey = keys(key);
        FloatArray rates = FloatArray.fromArray(new float[] {drop, 0f, 0f});
        Ops.attention(POOL, q, k, v, att, 0, out, nSeq, s, heads, d, drop, key);
        Ops.attentionBackward(POOL, q, k, v, att, 0, dout, dq, dk, dv, new float[nSeq * heads * s], nSeq, s, heads, d, drop, key);
        FloatArray fq = FloatArray.fromArray(q), fk = FloatArray.fromArray(k), fv = FloatArray.fromArray(v);
        FloatArray fatt = new FloatArray(a), fout = new FloatArray(n), fdo = FloatArray.fromArray(dout), fds = new FloatArray(a);
        FloatArray fdq = new FloatArray(n), fdk = new FloatArray(n), fdv = new FloatArray(n);
        run("attention", tg -> tg
                .task("fwd", SwitchKernels::attention, fq, fk, fv, fatt, fout, nSeq, s, heads, d, fkey, 0, rates, 0)
                .task("scores", SwitchKernels::attentionBackScores, fatt, fdo, fv, fds, nSeq, s, heads, d, fkey, 0, rates, 0)
                .task("query", SwitchKernels::attentionBackQuery, fds, fk, fdq, nSeq, s, heads, d)
                .task("key_value", SwitchKernels::attentionBackKeyValue, fds, fatt, fq, fdo, fdk, fdv, nSeq, s, heads, d, fkey, 0, rates, 0),
                fq, fk, fv, fatt, fout, fdo, fds, fdq, fdk, fdv, fkey, rates);
        assertClose(att, fatt, "att");
        assertClose(out, fout, "out");
        assertClose(dq, fdq, "dq");
        assertClose(dk, fdk, "dk");
        assertClose(dv, fdv, "dv");
    }

    @Test
    void routerSoftmaxAndCrossEntropy() {
        int rows = 7, n = 5;
        float[] x = random(rows * n, 14), sm = x.clone(), lse = new float[rows];
        Ops.softmaxRows(sm, 0, rows, n, lse, 0);
        int[] targets = {0, 1, 2, 3, 4, 0, 1};
        float[] losses = new float[rows], dl = new float[rows * n];
        int[] correct = new int[rows];
        Ops.crossEntropy(POOL, x, targets, losses, correct, dl, rows, n);
        FloatArray fs = FloatArray.fromArray(x), fl = FloatArray.fromArray(x), fdl = new FloatArray(rows * n);
        FloatArray floss = new FloatArray(rows), fc = new FloatArray(rows), flse = new FloatArray(rows);
        IntArray ft = IntArray.fromArray(targets);
        run("softmax_ce", tg -> tg
                .task("softmax", SwitchKernels::softmaxRows, fs, flse, rows, n)
                .task("ce", SwitchKernels::crossEntropy, fl, ft, floss, fc, fdl, rows, n, 1f / rows), fs, flse, fl, ft, floss, fc, fdl);
        assertClose(sm, fs, "softmax");
        assertClose(lse, flse, "logsumexp");
        assertClose(losses, floss, "loss");
        assertClose(dl, fdl, "dlogits");
        for (int i = 0; i < rows; i++) assertEquals(correct[i], (int) fc.get(i), "correct[" + i + "]");
    }

    @Test
    void adamAndGradientNorm() {
        int n = 1000;
        float[] p = random(n, 15), g = random(n, 16), m = random(n, 17), v = random(n, 18);
        for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
        FloatArray fp = FloatArray.fromArray(p), fg = FloatArray.fromArray(g), fm = FloatArray.fromArray(m), fv = FloatArray.fromArray(v);
        int t = 3;
        float lr = 0.01f, scale = 0.5f;
        FloatArray hp = FloatArray.fromArray(new float[] {lr, scale, 0.9f, 0.999f, 1e-8f,
                (float) (1 - Math.pow(0.9, t)), (float) (1 - Math.pow(0.999, t))});
        FloatArray partial = new FloatArray(4);
        double ss = 0;
        for (float x : g) ss += x * x;
        Ops.adam(p, g, m, v, 0, n, lr, scale, 0.9f, 0.999f, 1e-8f, t);
        run("adam", tg -> tg
                .task("norm", SwitchKernels::sumSquares, fg, partial, n, 256, 4)
                .task("adam", SwitchKernels::adam, fp, fg, fm, fv, hp, n), fp, fg, fm, fv, hp, partial);
        assertClose(p, fp, "params");
        assertClose(m, fm, "m");
        assertClose(v, fv, "v");
        double sum = 0;
        for (int c = 0; c < 4; c++) sum += partial.get(c);
        assertEquals(ss, sum, 1e-4 * ss);
    }

    @Test
    void embeddingForwardAndBackward() {
        int vocab = 5, d = 4, nTok = 12, seq = 4;
        float[] w = random(vocab * d + seq * d, 19), dx = random(nTok * d, 20);
        int[] tok = {0, 1, 2, 3, 4, 0, 0, 1, 2, 2, 4, 4};
        float[] x = new float[nTok * d], gExp = new float[w.length];
        for (int t = 0; t < nTok; t++)
            for (int j = 0; j < d; j++) {
                x[t * d + j] = w[tok[t] * d + j] + w[vocab * d + (t % seq) * d + j];
                gExp[tok[t] * d + j] += dx[t * d + j];
                gExp[vocab * d + (t % seq) * d + j] += dx[t * d + j];
            }
        FloatArray fw = FloatArray.fromArray(w), fx = new FloatArray(nTok * d), fdx = FloatArray.fromArray(dx), fg = new FloatArray(w.length);
        IntArray ft = IntArray.fromArray(tok);
        run("embedding", tg -> tg
                .task("fwd", SwitchKernels::embed, ft, fw, fx, 0, vocab * d, nTok, d, seq)
                .task("bwd", SwitchKernels::embedBack, ft, fdx, fg, 0, nTok, d, vocab)
                .task("bwd_pos", SwitchKernels::posEmbedBack, fdx, fg, vocab * d, nTok, d, seq), ft, fw, fx, fdx, fg);
        assertClose(x, fx, "x");
        assertClose(gExp, fg, "grad");
    }

    @Test
    void expertGatherCombineAndTheirGradients() {
        int nTok = 6, d = 3, cap = 2, experts = 2, slots = cap * experts;
        // tokens 0,3 -> expert 0; tokens 1,4 -> expert 1; tokens 2,5 dropped
        int[] slotToken = {0, 3, 1, 4}, tokRow = {0, 2, -1, 1, 3, -1};
        float[] scale = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f};
        float[] ln = random(nTok * d, 21), mid = random(nTok * d, 22), ye = random(slots * d, 23), dx = random(nTok * d, 24);
        float[] dxe = random(slots * d, 25);
        float[] xe = new float[slots * d], out = new float[nTok * d], dye = new float[slots * d], dln = new float[nTok * d];
        for (int s = 0; s < slots; s++)
            for (int j = 0; j < d; j++) {
                xe[s * d + j] = ln[slotToken[s] * d + j];
                dye[s * d + j] = scale[slotToken[s]] * dx[slotToken[s] * d + j];
            }
        for (int t = 0; t < nTok; t++)
            for (int j = 0; j < d; j++) {
                float o = tokRow[t] >= 0 ? ye[tokRow[t] * d + j] : ln[t * d + j];
                out[t * d + j] = mid[t * d + j] + scale[t] * o;
                dln[t * d + j] = tokRow[t] >= 0 ? dxe[tokRow[t] * d + j] : scale[t] * dx[t * d + j];
            }
        FloatArray fln = FloatArray.fromArray(ln), fmid = FloatArray.fromArray(mid), fye = FloatArray.fromArray(ye);
        FloatArray fdx = FloatArray.fromArray(dx), fdxe = FloatArray.fromArray(dxe), fsc = FloatArray.fromArray(scale);
        IntArray fst = IntArray.fromArray(slotToken), ftr = IntArray.fromArray(tokRow), fkey = keys(0L);
        FloatArray rates = new FloatArray(3);
        FloatArray fxe = new FloatArray(slots * d), fout = new FloatArray(nTok * d), fdye = new FloatArray(slots * d), fdln = new FloatArray(nTok * d);
        run("experts_io", tg -> tg
                .task("gather", SwitchKernels::expertGather, fln, fst, fxe, slots, d, 1)
                .task("combine", SwitchKernels::expertCombine, fmid, fye, fln, ftr, fsc, fout, nTok, d, 1, 0, fkey, 0, rates, 0)
                .task("out_grad", SwitchKernels::expertBackOutput, fdx, fst, fsc, fdye, slots, d, 1)
                .task("scatter_grad", SwitchKernels::expertBackScatter, fdxe, fdx, ftr, fsc, fdln, nTok, d, 1, 0),
                fln, fmid, fye, fdx, fdxe, fsc, fst, ftr, fxe, fout, fdye, fdln, fkey, rates);
        assertClose(xe, fxe, "gather");
        assertClose(out, fout, "combine");
        assertClose(dye, fdye, "expert output grad");
        assertClose(dln, fdln, "scatter grad");
    }
}
