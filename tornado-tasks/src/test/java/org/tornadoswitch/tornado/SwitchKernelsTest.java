package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.TornadoExecutionPlan;
import uk.ac.manchester.tornado.api.enums.DataTransferMode;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The element-wise TornadoVM kernels (noise, embedding, expert combine and scatter, Adam) against
 * the JVM backend's ops on the same inputs, on the TornadoVM device (PoCL in CI). Tolerance: 1e-4
 * relative to the largest magnitude of the expected output. The GEMM, attention and row kernels have
 * tests of their own.
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
        FloatArray fx = FloatArray.fromArray(x), masked = new FloatArray(n), back = new FloatArray(n);
        FloatArray rates = FloatArray.fromArray(new float[] {rate, 0f, eps});
        IntArray fk = keys(key);
        run("noise", tg -> tg
                .task("mask", SwitchKernels::dropoutMask, fx, masked, n, fk, 0, rates, 0)
                .task("jitter_back", SwitchKernels::jitterBack, fx, back, n, fk, 0, rates, 2), fx, masked, back, rates, fk);
        int dropped = 0;
        for (int j = 0; j < n; j++) {
            float keep = Rng.uniform(key, j) < rate ? 0f : 1f / (1f - rate);
            dropped += keep == 0f ? 1 : 0;
            float noise = 1f - eps + 2f * eps * Rng.uniform(key, j);
            assertEquals(x[j] * keep, masked.get(j), 1e-6f, "mask " + j);
            assertEquals(x[j] * noise, back.get(j), 1e-6f, "jitter grad " + j);
        }
        assertEquals(rate, dropped / (double) n, 0.03, "fraction dropped");
    }

    @Test
    void adamMatchesTheJvmOp() {
        int n = 1000;
        float[] p = random(n, 15), g = random(n, 16), m = random(n, 17), v = random(n, 18);
        for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
        FloatArray fp = FloatArray.fromArray(p), fg = FloatArray.fromArray(g), fm = FloatArray.fromArray(m), fv = FloatArray.fromArray(v);
        int t = 3;
        float lr = 0.01f, scale = 0.5f;
        FloatArray hp = FloatArray.fromArray(new float[] {lr, scale, 0.9f, 0.999f, 1e-8f,
                (float) (1 - Math.pow(0.9, t)), (float) (1 - Math.pow(0.999, t))});
        Ops.adam(p, g, m, v, 0, n, lr, scale, 0.9f, 0.999f, 1e-8f, t);
        run("adam", tg -> tg.task("adam", SwitchKernels::adam, fp, fg, fm, fv, hp, n), fp, fg, fm, fv, hp);
        assertClose(p, fp, "params");
        assertClose(m, fm, "m");
        assertClose(v, fv, "v");
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
        // positions grouped by id, as the backend lists them: id v's positions from start[v] to start[v + 1]
        int[] start = new int[vocab + 1], order = new int[nTok];
        for (int t : tok) start[t + 1]++;
        for (int i = 0; i < vocab; i++) start[i + 1] += start[i];
        int[] fill = start.clone();
        for (int t = 0; t < nTok; t++) order[fill[tok[t]]++] = t;
        IntArray fo = IntArray.fromArray(order), fs = IntArray.fromArray(start);
        run("embedding", tg -> tg
                .task("fwd", SwitchKernels::embed, ft, fw, fx, 0, vocab * d, nTok, d, seq)
                .task("bwd", SwitchKernels::embedBack, fo, fs, fdx, fg, 0, d, vocab)
                .task("bwd_pos", SwitchKernels::posEmbedBack, fdx, fg, vocab * d, nTok, d, seq), ft, fo, fs, fw, fx, fdx, fg);
        assertClose(x, fx, "x");
        assertClose(gExp, fg, "grad");
    }

    @Test
    void expertCombineAndItsGradients() {
        int nTok = 6, d = 3, cap = 2, experts = 2, slots = cap * experts;
        // tokens 0,3 -> expert 0; tokens 1,4 -> expert 1; tokens 2,5 dropped
        int[] slotToken = {0, 3, 1, 4}, tokRow = {0, 2, -1, 1, 3, -1};
        float[] scale = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f};
        float[] ln = random(nTok * d, 21), mid = random(nTok * d, 22), ye = random(slots * d, 23), dx = random(nTok * d, 24);
        float[] dxe = random(slots * d, 25);
        float[] out = new float[nTok * d], dye = new float[slots * d], dln = new float[nTok * d];
        for (int s = 0; s < slots; s++)
            for (int j = 0; j < d; j++) {
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
        FloatArray fout = new FloatArray(nTok * d), fdye = new FloatArray(slots * d), fdln = new FloatArray(nTok * d);
        run("experts_io", tg -> tg
                .task("combine", SwitchKernels::expertCombine, fmid, fye, fln, ftr, fsc, fout, nTok, d, 1, 0, fkey, 0, rates, 0)
                .task("out_grad", SwitchKernels::expertBackOutput, fdx, fst, fsc, fdye, slots, d, 1)
                .task("scatter_grad", SwitchKernels::expertBackScatter, fdxe, fdx, ftr, fsc, fdln, nTok, d, 1, 0),
                fln, fmid, fye, fdx, fdxe, fsc, fst, ftr, fout, fdye, fdln, fkey, rates);
        assertClose(out, fout, "combine");
        assertClose(dye, fdye, "expert output grad");
        assertClose(dln, fdln, "scatter grad");
    }
}
