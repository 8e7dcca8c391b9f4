package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.tornadoswitch.util.ThreadPool;

/** Ops.gemvNT (a decode step's few rows against nn.Linear-layout weights) against double sums; same bits on any thread count. */
class GemvTest {
    @Test
    void fewRowsAgainstTransposedWeights() {
        try (ThreadPool one = new ThreadPool(1); ThreadPool three = new ThreadPool(3)) {
            for (int m = 1; m <= Ops.GEMV_ROWS; m++)
                for (int[] kn : new int[][] {{1, 1}, {37, 19}, {64, 48}, {100, 131}, {17, 300}}) {
                    int k = kn[0], n = kn[1];
                    float[] s = OpsGradCheckTest.random(m * n + 3, 41 + m, 1), w = OpsGradCheckTest.random(k * n + 5, 42, 1);
                    float[] c1 = new float[m * k + 2], c3 = new float[m * k + 2];
                    Ops.gemvNT(one, s, 3, w, 5, c1, 2, m, k, n);
                    Ops.gemvNT(three, s, 3, w, 5, c3, 2, m, k, n);
                    assertArrayEquals(c1, c3, "thread count changes the bits");
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < k; j++) {
                            double ref = 0;
                            for (int l = 0; l < n; l++) ref += (double) s[3 + i * n + l] * w[5 + j * n + l];
                            assertEquals(ref, c1[2 + i * k + j], 1e-5 * Math.sqrt(n), m + "x" + k + "x" + n + " [" + i + "," + j + "]");
                        }
                }
        }
    }
}
