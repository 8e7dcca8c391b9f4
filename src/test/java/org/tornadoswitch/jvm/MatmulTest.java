package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.util.ThreadPool;

/**
 * The matmul kernels against a double-precision reference, on shapes that reach every path of the
 * Vector API kernel: 4-row tiles of two and one vectors, single rows, and columns past the last
 * whole vector; plain, with bias, accumulating, and transposed (weight gradients).
 */
class MatmulTest {
    static final ThreadPool POOL = new ThreadPool(2);

    @AfterAll
    static void close() {
        POOL.close();
    }

    /** Element (row, col) of an operand in its layout. */
    interface Element {
        double at(int row, int col);
    }

    /**
     * Asserts c[i * cols + j] = start(i, j) + Σ_l a(i, l) · b(l, j) for every i < rows, j < cols,
     * against a double-precision sum, within fp32 rounding of the magnitudes summed.
     */
    static void assertProduct(int rows, int cols, int inner, Element a, Element b, Element start, float[] c, String what) {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                double ref = start.at(i, j), mag = Math.abs(ref);
                for (int l = 0; l < inner; l++) {
                    double p = a.at(i, l) * b.at(l, j);
                    ref += p;
                    mag += Math.abs(p);
                }
                assertEquals(ref, c[i * cols + j], 1e-6 * mag + 1e-7, what + " at " + i + "," + j);
            }
    }

    @Test
    void theTestsRunTheVectorKernels() {
        assertTrue(Ops.VECTOR, "surefire starts the JVM with --add-modules jdk.incubator.vector");
    }

    @Test
    void matmulMatchesTheReference() {
        int[][] shapes = {{1, 1, 1}, {7, 5, 3}, {13, 33, 70}, {9, 17, 48}, {64, 128, 256}, {6, 4, 128}, {2049, 16, 65}};
        for (int[] s : shapes) {
            int m = s[0], k = s[1], n = s[2];
            float[] a = OpsGradCheckTest.random(m * k, 1, 1), b = OpsGradCheckTest.random(k * n, 2, 1);
            float[] bias = OpsGradCheckTest.random(n, 3, 1), c0 = OpsGradCheckTest.random(m * n, 4, 1);
            for (int mode = 0; mode < 3; mode++) { // 0: no bias, 1: bias, 2: accumulate into c0
                float[] c = c0.clone();
                Ops.matmul(POOL, a, 0, b, 0, mode == 1 ? bias : null, 0, c, 0, m, k, n, mode == 2);
                int md = mode;
                assertProduct(m, n, k, (i, l) -> a[i * k + l], (l, j) -> b[l * n + j],
                        (i, j) -> md == 1 ? bias[j] : md == 2 ? c0[i * n + j] : 0, c, m + "x" + k + "x" + n + " mode " + mode);
            }
        }
    }

    @Test
    void transposedMatmulMatchesTheReference() {
        int[][] shapes = {{5, 7, 6}, {2048, 128, 256}, {33, 9, 70}, {100, 65, 128}};
        for (int[] s : shapes) {
            int m = s[0], k = s[1], n = s[2];
            float[] a = OpsGradCheckTest.random(m * k, 5, 1), b = OpsGradCheckTest.random(m * n, 6, 1);
            float[] c0 = OpsGradCheckTest.random(k * n, 7, 1), c = c0.clone();
            Ops.matmulTN(POOL, a, 0, b, 0, c, 0, m, k, n); // c [k x n] += aᵀ b
            assertProduct(k, n, m, (r, i) -> a[i * k + r], (i, j) -> b[i * n + j], (r, j) -> c0[r * n + j], c,
                    m + "x" + k + "x" + n);
        }
    }

    @Test
    void transposedWeightMatmulMatchesTheReference() {
        int[][] shapes = {{5, 7, 6}, {2048, 128, 65}, {33, 128, 4}, {9, 256, 128}};
        for (int[] s : shapes) { // dst[m x k] (+)= src[m x n] W^T, W [k x n]
            int m = s[0], k = s[1], n = s[2];
            float[] src = OpsGradCheckTest.random(m * n, 8, 1), w = OpsGradCheckTest.random(k * n, 9, 1);
            float[] c0 = OpsGradCheckTest.random(m * k, 10, 1);
            for (boolean acc : new boolean[] {false, true}) {
                float[] c = c0.clone();
                Ops.matmulNT(POOL, src, 0, w, 0, c, 0, m, k, n, acc);
                assertProduct(m, k, n, (i, l) -> src[i * n + l], (l, j) -> w[j * n + l], (i, j) -> acc ? c0[i * k + j] : 0, c,
                        m + "x" + k + "x" + n + " acc " + acc);
            }
        }
    }

    /** The grouped (all experts in one pass) kernels equal the plain ones applied group by group, bit for bit. */
    @Test
    void groupedKernelsEqualPerGroupKernels() {
        int[] rows = {5, 0, 13, 1, 8}; // an expert with no tokens, one with a single token
        int groups = rows.length, k = 24, n = 40;
        int[] offset = new int[groups + 1];
        for (int x = 0; x < groups; x++) offset[x + 1] = offset[x] + rows[x];
        int t = offset[groups] + 3; // trailing rows that belong to no group stay untouched
        float[] a = OpsGradCheckTest.random(t * k, 11, 1), w = OpsGradCheckTest.random(groups * k * n, 12, 1);
        float[] bias = OpsGradCheckTest.random(groups * n, 13, 1), dy = OpsGradCheckTest.random(t * n, 14, 1);

        float[] c = new float[t * n], ref = new float[t * n];
        java.util.Arrays.fill(c, 7f);
        java.util.Arrays.fill(ref, 7f);
        Ops.groupedMatmul(POOL, a, 0, w, 0, bias, 0, c, 0, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.matmul(POOL, a, offset[x] * k, w, x * k * n, bias, x * n, ref, offset[x] * n, rows[x], k, n, false);
        org.junit.jupiter.api.Assertions.assertArrayEquals(ref, c, 0f, "forward");

        float[] g = OpsGradCheckTest.random(groups * k * n, 15, 1), gRef = g.clone();
        Ops.groupedMatmulTN(POOL, a, 0, dy, 0, g, 0, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.matmulTN(POOL, a, offset[x] * k, dy, offset[x] * n, gRef, x * k * n, rows[x], k, n);
        org.junit.jupiter.api.Assertions.assertArrayEquals(gRef, g, 0f, "weight gradients");

        float[] dx = new float[t * k], dxRef = new float[t * k];
        java.util.Arrays.fill(dx, 7f);
        java.util.Arrays.fill(dxRef, 7f);
        Ops.groupedMatmulNT(POOL, dy, 0, w, 0, dx, 0, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.matmulNT(POOL, dy, offset[x] * n, w, x * k * n, dxRef, offset[x] * k, rows[x], k, n, false);
        org.junit.jupiter.api.Assertions.assertArrayEquals(dxRef, dx, 0f, "input gradients");
    }
}
