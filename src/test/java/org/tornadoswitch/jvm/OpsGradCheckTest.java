package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.function.Supplier;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * Finite-difference checks of each op's backward: the scalar L = sum(r * out) for a fixed random r,
 * so that d out = r, against central differences of L in every input element.
 */
class OpsGradCheckTest {
    static final ThreadPool POOL = new ThreadPool(2);
    static final double EPS = 1e-2;

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

    static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += (double) a[i] * b[i];
        return s;
    }

    /** Checks analytic d L / d x[i] against central differences, perturbing x in place. */
    static void check(String what, float[] x, float[] analytic, Supplier<Double> loss) {
        for (int i = 0; i < x.length; i++) {
            float keep = x[i];
            x[i] = (float) (keep + EPS);
            double lp = loss.get();
            x[i] = (float) (keep - EPS);
            double lm = loss.get();
            x[i] = keep;
            double num = (lp - lm) / (2 * EPS);
            assertEquals(num, analytic[i], 2e-3 + 1e-2 * Math.abs(num), what + "[" + i + "]");
        }
    }

    @Test
    void linearForwardAndBackward() {
        int m = 5, k = 7, n = 6; // k not a multiple of 4 exercises the remainder loops
        float[] x = random(m * k, 1, 1), w = random(k * n, 2, 1), b = random(n, 3, 1), r = random(m * n, 4, 1);
        float[] y = new float[m * n];
        Supplier<Double> loss = () -> {
            Ops.matmul(POOL, x, 0, w, 0, b, 0, y, 0, m, k, n, false);
            return dot(y, r);
        };
        // y[i,j] = b[j] + sum x[i,l] w[l,j], checked element by element
        loss.get();
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = b[j];
                for (int l = 0; l < k; l++) s += (double) x[i * k + l] * w[l * n + j];
                assertEquals(s, y[i * n + j], 1e-5);
            }
        float[] dw = new float[k * n], db = new float[n], wt = new float[n * k], dx = new float[m * k];
        Ops.matmulTN(POOL, x, 0, r, 0, dw, 0, m, k, n);
        Ops.biasGrad(r, 0, m, n, db, 0);
        Ops.transpose(w, 0, k, n, wt, 0);
        Ops.matmul(POOL, r, 0, wt, 0, null, 0, dx, 0, m, n, k, false);
        check("dx", x, dx, loss);
        check("dw", w, dw, loss);
        check("db", b, db, loss);
    }

    @Test
    void layerNorm() {
        int rows = 4, d = 9;
        float[] x = random(rows * d, 5, 2), g = random(d, 6, 1), b = random(d, 7, 1), r = random(rows * d, 8, 1);
        float[] y = new float[rows * d], mean = new float[rows], rstd = new float[rows];
        Supplier<Double> loss = () -> {
            Ops.layerNorm(POOL, x, 0, g, 0, b, 0, y, 0, mean, rstd, 0, rows, d);
            return dot(y, r);
        };
        loss.get();
        float[] dx = new float[rows * d], dg = new float[d], db = new float[d];
        Ops.layerNormBackward(POOL, x, 0, g, 0, mean, rstd, 0, r, 0, dx, 0, dg, 0, db, 0, rows, d, false);
        check("dx", x, dx, loss);
        check("dg", g, dg, loss);
        check("db", b, db, loss);
    }

    @Test
    void onePassLayerNormBackwardMatchesTheTwoPassOne() {
        int rows = 150, d = 24; // three blocks, the last one partial
        float[] x = random(rows * d, 41, 2), g = random(d, 42, 1), b = random(d, 43, 1), dy = random(rows * d, 44, 1);
        float[] y = new float[rows * d], mean = new float[rows], rstd = new float[rows];
        Ops.layerNorm(POOL, x, 0, g, 0, b, 0, y, 0, mean, rstd, 0, rows, d);
        float[] dx0 = random(rows * d, 45, 1), dg0 = random(d, 46, 1), db0 = random(d, 47, 1);
        float[] dx1 = dx0.clone(), dg1 = dg0.clone(), db1 = db0.clone();
        Ops.layerNormBackward(POOL, x, 0, g, 0, mean, rstd, 0, dy, 0, dx0, 0, dg0, 0, db0, 0, rows, d, true);
        float[] part = new float[Ops.layerNormPartials(rows, d)];
        Ops.layerNormBackwardOnePass(POOL, x, 0, g, 0, mean, rstd, 0, dy, 0, dx1, 0, dg1, 0, db1, 0, rows, d, true, part);
        for (int i = 0; i < dx0.length; i++) assertEquals(dx0[i], dx1[i], 1e-6, "dx[" + i + "]");
        for (int j = 0; j < d; j++) {
            assertEquals(dg0[j], dg1[j], 2e-5, "dg[" + j + "]");
            assertEquals(db0[j], db1[j], 2e-5, "db[" + j + "]");
        }
        // the block sums are added in block order: the same bits with any number of threads
        for (int threads : new int[] {1, 3}) {
            float[] dx2 = random(rows * d, 45, 1), dg2 = random(d, 46, 1), db2 = random(d, 47, 1);
            try (ThreadPool p = new ThreadPool(threads)) {
                Ops.layerNormBackwardOnePass(p, x, 0, g, 0, mean, rstd, 0, dy, 0, dx2, 0, dg2, 0, db2, 0, rows, d, true, part);
            }
            org.junit.jupiter.api.Assertions.assertArrayEquals(dx1, dx2);
            org.junit.jupiter.api.Assertions.assertArrayEquals(dg1, dg2);
            org.junit.jupiter.api.Assertions.assertArrayEquals(db1, db2);
        }
    }

    @Test
    void causalAttention() {
        int nSeq = 2, s = 5, heads = 2, d = 6;
        int n = nSeq * s * d;
        float[] q = random(n, 9, 1), k = random(n, 10, 1), v = random(n, 11, 1), r = random(n, 12, 1);
        float[] att = new float[nSeq * heads * s * s], out = new float[n];
        Supplier<Double> loss = () -> {
            Ops.attention(POOL, q, k, v, att, 0, out, nSeq, s, heads, d);
            return dot(out, r);
        };
        loss.get();
        // causality: the first token attends only to itself
        for (int bh = 0; bh < nSeq * heads; bh++) assertEquals(1f, att[bh * s * s], 1e-6);
        float[] dq = new float[n], dk = new float[n], dv = new float[n], scratch = new float[nSeq * heads * s];
        Ops.attentionBackward(POOL, q, k, v, att, 0, r, dq, dk, dv, scratch, nSeq, s, heads, d);
        check("dq", q, dq, loss);
        check("dk", k, dk, loss);
        check("dv", v, dv, loss);
    }

    @Test
    void softmaxLogSumExp() {
        float[] x = {0f, (float) Math.log(2), (float) Math.log(3), 100f, 100f, 100f};
        float[] lse = new float[2];
        Ops.softmaxRows(x, 0, 2, 3, lse, 0);
        assertEquals(Math.log(6), lse[0], 1e-6);
        assertEquals(100 + Math.log(3), lse[1], 1e-4); // no overflow for large logits
        assertEquals(0.5f, x[2], 1e-6);
        assertEquals(1 / 3f, x[4], 1e-6);
    }

    @Test
    void causalAttentionWithDropoutOnItsWeights() {
        int nSeq = 2, s = 5, heads = 2, d = 6, hd = d / heads;
        int n = nSeq * s * d;
        float rate = 0.3f;
        long key = 77;
        float[] q = random(n, 9, 1), k = random(n, 10, 1), v = random(n, 11, 1), r = random(n, 12, 1);
        float[] att = new float[nSeq * heads * s * s], out = new float[n], plain = new float[n];
        Ops.attention(POOL, q, k, v, att, 0, plain, nSeq, s, heads, d);
        Ops.attention(POOL, q, k, v, att, 0, out, nSeq, s, heads, d, 0f, key);
        assertEquals(0, java.util.Arrays.compare(plain, out), "rate 0 is plain attention");
        Supplier<Double> loss = () -> {
            Ops.attention(POOL, q, k, v, att, 0, out, nSeq, s, heads, d, rate, key);
            return dot(out, r);
        };
        loss.get();
        // out_i = sum_j att_ij * keep_ij * v_j, keep = 0 or 1 / (1 - rate); att holds the weights before dropout
        int dropped = 0;
        for (int bh = 0; bh < nSeq * heads; bh++) {
            int b = bh / heads, h = bh % heads;
            for (int i = 0; i < s; i++)
                for (int c = 0; c < hd; c++) {
                    double ref = 0;
                    for (int j = 0; j <= i; j++) {
                        float kp = Ops.keep(key, ((long) bh * s + i) * s + j, rate);
                        if (c == 0 && kp == 0f) dropped++;
                        ref += att[(bh * s + i) * s + j] * kp * v[(b * s + j) * d + h * hd + c];
                    }
                    assertEquals(ref, out[(b * s + i) * d + h * hd + c], 1e-5);
                }
        }
        assertTrue(dropped > 0 && dropped < nSeq * heads * s * (s + 1) / 2, "some weights dropped: " + dropped);
        float[] dq = new float[n], dk = new float[n], dv = new float[n], scratch = new float[nSeq * heads * s];
        Ops.attentionBackward(POOL, q, k, v, att, 0, r, dq, dk, dv, scratch, nSeq, s, heads, d, rate, key);
        check("dq", q, dq, loss);
        check("dk", k, dk, loss);
        check("dv", v, dv, loss);
    }

    @Test
    void dropoutMasksDropAboutTheirRate() {
        int kept = 0, n = 200_000;
        for (int i = 0; i < n; i++) {
            float f = Ops.keep(5, i, 0.4f);
            assertTrue(f == 0f || f == 1f / 0.6f);
            if (f > 0) kept++;
        }
        assertEquals(0.6, (double) kept / n, 0.005);
    }

    @Test
    void crossEntropy() {
        int rows = 4, n = 5;
        float[] logits = random(rows * n, 13, 3);
        int[] targets = {0, 4, 2, 2};
        float[] losses = new float[rows], dl = new float[rows * n];
        int[] correct = new int[rows];
        Supplier<Double> loss = () -> {
            Ops.crossEntropy(POOL, logits, targets, losses, correct, null, rows, n);
            double s = 0;
            for (float l : losses) s += l;
            return s / rows;
        };
        loss.get();
        Ops.crossEntropy(POOL, logits, targets, losses, correct, dl, rows, n);
        check("dlogits", logits, dl, loss);
        // a one-hot-like logit row gives near-zero loss and counts as correct
        float[] sure = new float[n];
        sure[3] = 30;
        Ops.crossEntropy(POOL, sure, new int[] {3}, losses, correct, null, 1, n);
        assertEquals(0, losses[0], 1e-6);
        assertEquals(1, correct[0]);
    }

    @Test
    void reluBackwardMasksNegativeInputs() {
        float[] h = {-1, 0, 2, 3}, dh = {1, 1, 1, 1};
        Ops.relu(h, 0, 4);
        Ops.reluBackward(h, dh, 0, 4);
        assertEquals(0, dh[0]);
        assertEquals(0, dh[1]);
        assertEquals(1, dh[2]);
        assertEquals(1, dh[3]);
    }

    @Test
    void adamMatchesItsDefinition() {
        float[] p = {1f}, g = {0.5f}, m = {0f}, v = {0f};
        Ops.adam(p, g, m, v, 0, 1, 0.1f, 1f, 0.9f, 0.999f, 1e-8f, 1);
        // first step: m_hat = g, v_hat = g^2, update = lr * sign(g)
        assertEquals(0.9f, p[0], 1e-6);
        assertEquals(0.05f, m[0], 1e-7);
        assertEquals(0.00025f, v[0], 1e-8);
    }

    @Test
    void vectorAdamEqualsTheScalarLoopBitForBit() {
        int n = 301, lo = 3, hi = 290;
        float[] p = random(n, 31, 1), g = random(n + 5, 32, 1), m = random(n, 33, 0.1), v = random(n, 34, 0.01);
        for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
        float[] p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
        float lr = 3e-4f, scale = 0.7f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
        int t = 7;
        Ops.adam(p, 0, g, 5, m, v, lo, hi, lr, scale, b1, b2, eps, t);
        float bc1 = (float) (1 - Math.pow(b1, t)), bc2 = (float) (1 - Math.pow(b2, t));
        float step = lr / bc1, inv = (float) (1.0 / Math.sqrt(bc2));
        for (int i = lo; i < hi; i++) { // the definition, element by element
            float gi = g[5 + i] * scale;
            m2[i] = b1 * m2[i] + (1 - b1) * gi;
            v2[i] = b2 * v2[i] + (1 - b2) * gi * gi;
            p2[i] -= step * m2[i] / ((float) Math.sqrt(v2[i]) * inv + eps);
        }
        org.junit.jupiter.api.Assertions.assertArrayEquals(p2, p, 0f, "parameters");
        org.junit.jupiter.api.Assertions.assertArrayEquals(m2, m, 0f, "first moment");
        org.junit.jupiter.api.Assertions.assertArrayEquals(v2, v, 0f, "second moment");
    }
}
