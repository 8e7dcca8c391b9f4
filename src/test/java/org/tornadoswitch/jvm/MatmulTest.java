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
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double ref = mode == 1 ? bias[j] : mode == 2 ? c0[i * n + j] : 0;
                        double mag = Math.abs(ref);
                        for (int l = 0; l < k; l++) {
                            ref += (double) a[i * k + l] * b[l * n + j];
                            mag += Math.abs((double) a[i * k + l] * b[l * n + j]);
                        }
                        assertEquals(ref, c[i * n + j], 1e-6 * mag + 1e-7, m + "x" + k + "x" + n + " mode " + mode + " at " + i + "," + j);
                    }
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
            Ops.matmulTN(POOL, a, 0, b, 0, c, 0, m, k, n);
            for (int r = 0; r < k; r++)
                for (int j = 0; j < n; j++) {
                    double ref = c0[r * n + j], mag = Math.abs(ref);
                    for (int i = 0; i < m; i++) {
                        ref += (double) a[i * k + r] * b[i * n + j];
                        mag += Math.abs((double) a[i * k + r] * b[i * n + j]);
                    }
                    assertEquals(ref, c[r * n + j], 1e-6 * mag + 1e-7, m + "x" + k + "x" + n + " at " + r + "," + j);
                }
        }
    }
}
