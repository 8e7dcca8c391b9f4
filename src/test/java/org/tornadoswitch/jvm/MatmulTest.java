package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.util.ThreadPool;

/**
 * The matmul kernels against a double-precision reference, and bit for bit against the scalar
 * {@link Gemm#reference} (the order the kernels sum in), on shapes that reach every path of the
 * Vector API GEMM: 6/4/2/1-row tiles of two and one vectors, partial panels, packed and in-place B,
 * several k-blocks, columns split across threads, 1-row and empty groups; plain, with bias,
 * accumulating, transposed both ways, and with the fused epilogues. surefire runs this class twice:
 * with the JVM's preferred vectors, and again with -XX:UseAVX=2 (8 lanes, 16 registers), so both tile
 * shapes are tested on any x86 machine.
 */
class MatmulTest {
    static final ThreadPool POOL = new ThreadPool(2);
    static final ThreadPool[] POOLS = {new ThreadPool(1), POOL, new ThreadPool(3)};

    @AfterAll
    static void close() {
        for (ThreadPool p : POOLS) p.close();
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
        Integer want = Integer.getInteger("tornadoswitch.test.vectorBits");
        if (want != null) assertEquals(want.intValue(), Ops.vectorBits(), "vector width of this surefire execution");
    }

    /** m, k, n that reach every tile, panel and block path for 8 and 16 lanes (KC = 256, NC = 1024). */
    static final int[][] ODD = {{1, 1, 1}, {7, 5, 3}, {13, 33, 70}, {9, 17, 48}, {6, 4, 128}, {2049, 16, 65}, {5, 300, 17},
            {25, 129, 33}, {11, 256, 8}, {3, 7, 300}, {64, 128, 256}, {1, 200, 100}, {30, 40, 4}, {50, 20, 2100}};

    @Test
    void everyFormEqualsTheReferenceOrderBitForBitOnEveryThreadCount() {
        for (int[] s : ODD) {
            int m = s[0], k = s[1], n = s[2];
            float[] a = OpsGradCheckTest.random(m * k, 21, 1), w = OpsGradCheckTest.random(k * n, 22, 1);
            float[] bias = OpsGradCheckTest.random(n, 23, 1), c0 = OpsGradCheckTest.random(m * n, 24, 1);
            float[] src = OpsGradCheckTest.random(m * n, 25, 1), d0 = OpsGradCheckTest.random(m * k, 26, 1);
            float[] g0 = OpsGradCheckTest.random(k * n, 27, 1);
            String shape = m + "x" + k + "x" + n;
            // NN: no init, bias, accumulate
            float[][] refNN = new float[3][m * n];
            Gemm.reference(a, 0, k, 1, w, 0, n, 1, refNN[0], 0, n, null, 0, 0, m, k, n);
            Gemm.reference(a, 0, k, 1, w, 0, n, 1, refNN[1], 0, n, bias, 0, 0, m, k, n);
            refNN[2] = c0.clone();
            Gemm.reference(a, 0, k, 1, w, 0, n, 1, refNN[2], 0, n, refNN[2], 0, n, m, k, n);
            // NT: dst[m x k] (+)= src[m x n] W^T
            float[] refNT = new float[m * k], refNTacc = d0.clone();
            Gemm.reference(src, 0, n, 1, w, 0, 1, n, refNT, 0, k, null, 0, 0, m, n, k);
            Gemm.reference(src, 0, n, 1, w, 0, 1, n, refNTacc, 0, k, refNTacc, 0, k, m, n, k);
            // TN: G[k x n] += a^T src
            float[] refTN = g0.clone();
            Gemm.reference(a, 0, 1, k, src, 0, n, 1, refTN, 0, n, refTN, 0, n, k, m, n);
            for (ThreadPool pool : POOLS) {
                String at = shape + " on " + pool.threads() + " threads";
                for (int mode = 0; mode < 3; mode++) {
                    float[] c = mode == 2 ? c0.clone() : OpsGradCheckTest.random(m * n, 99, 1);
                    Ops.matmul(pool, a, 0, w, 0, mode == 1 ? bias : null, 0, c, 0, m, k, n, mode == 2);
                    assertArrayEquals(refNN[mode], c, 0f, "NN mode " + mode + " " + at);
                }
                float[] d = OpsGradCheckTest.random(m * k, 98, 1);
                Ops.matmulNT(pool, src, 0, w, 0, d, 0, m, k, n, false);
                assertArrayEquals(refNT, d, 0f, "NT " + at);
                d = d0.clone();
                Ops.matmulNT(pool, src, 0, w, 0, d, 0, m, k, n, true);
                assertArrayEquals(refNTacc, d, 0f, "NT accumulating " + at);
                float[] g = g0.clone();
                Ops.matmulTN(pool, a, 0, src, 0, g, 0, m, k, n);
                assertArrayEquals(refTN, g, 0f, "TN " + at);
            }
        }
    }

    /** Operands at offsets inside bigger arrays, as views into one flat buffer are. */
    @Test
    void offsetsIntoLargerArraysAreRespected() {
        int m = 19, k = 37, n = 45, o = 13;
        float[] a = OpsGradCheckTest.random(o + m * k, 31, 1), w = OpsGradCheckTest.random(2 * o + k * n, 32, 1);
        float[] bias = OpsGradCheckTest.random(o + n, 33, 1), c = OpsGradCheckTest.random(3 * o + m * n + o, 34, 1), c0 = c.clone();
        Ops.matmul(POOL, a, o, w, 2 * o, bias, o, c, 3 * o, m, k, n, false);
        float[] ref = c0.clone();
        Gemm.reference(a, o, k, 1, w, 2 * o, n, 1, ref, 3 * o, n, bias, o, 0, m, k, n);
        assertArrayEquals(ref, c, 0f, "everything outside C is untouched and C is the product");
    }

    /** The epilogues: residual add after the bias, then ReLU, then the chunk callback over every row and column once. */
    @Test
    void fusedEpiloguesEqualTheSeparatePasses() {
        for (int[] s : new int[][] {{37, 24, 40}, {200, 130, 65}, {5, 9, 3}}) {
            int m = s[0], k = s[1], n = s[2];
            float[] a = OpsGradCheckTest.random(m * k, 41, 1), w = OpsGradCheckTest.random(k * n, 42, 1);
            float[] bias = OpsGradCheckTest.random(n, 43, 1), res = OpsGradCheckTest.random(m * n, 44, 1);
            float[] ref = new float[m * n];
            Gemm.reference(a, 0, k, 1, w, 0, n, 1, ref, 0, n, bias, 0, 0, m, k, n);
            for (int i = 0; i < ref.length; i++) ref[i] = Math.max(ref[i] + res[i], 0f);
            for (ThreadPool pool : POOLS) {
                float[] c = new float[m * n];
                int[] seen = new int[m * n];
                Gemm.task().single(Gemm.NN, a, 0, w, 0, null, 0, c, 0, m, k, n).bias(bias, 0).residual(res, 0).relu(true)
                        .epilogue((x, r0, r1, j0, j1) -> {
                            for (int i = r0; i < r1; i++) for (int j = j0; j < j1; j++) seen[i * n + j]++;
                        }).run(pool);
                assertArrayEquals(ref, c, 0f, m + "x" + k + "x" + n + " on " + pool.threads() + " threads");
                for (int i = 0; i < seen.length; i++) assertEquals(1, seen[i], "callback covers element " + i + " once");
            }
        }
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
        for (int[] kn : new int[][] {{24, 40}, {130, 17}, {7, 300}})
            for (ThreadPool pool : POOLS) groupedEqualsPerGroup(pool, new int[] {5, 0, 13, 1, 8, 0, 140, 2}, kn[0], kn[1]);
        for (ThreadPool pool : POOLS) groupedEqualsPerGroup(pool, new int[] {300, 0, 613, 7}, 20, 70); // several k-blocks of TN's shared B
        groupedEqualsPerGroup(POOL, new int[] {0, 0}, 16, 16); // no rows at all
        groupedEqualsPerGroup(POOL, new int[] {1, 1, 1}, 64, 3);
    }

    private static void groupedEqualsPerGroup(ThreadPool pool, int[] rows, int k, int n) {
        int groups = rows.length;
        int[] offset = new int[groups + 1];
        for (int x = 0; x < groups; x++) offset[x + 1] = offset[x] + rows[x];
        int t = offset[groups] + 3; // trailing rows that belong to no group stay untouched
        float[] a = OpsGradCheckTest.random(t * k, 11, 1), w = OpsGradCheckTest.random(groups * k * n, 12, 1);
        float[] bias = OpsGradCheckTest.random(groups * n, 13, 1), dy = OpsGradCheckTest.random(t * n, 14, 1);

        float[] c = new float[t * n], ref = new float[t * n];
        java.util.Arrays.fill(c, 7f);
        java.util.Arrays.fill(ref, 7f);
        Ops.groupedMatmul(pool, a, 0, w, 0, bias, 0, c, 0, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.matmul(POOL, a, offset[x] * k, w, x * k * n, bias, x * n, ref, offset[x] * n, rows[x], k, n, false);
        org.junit.jupiter.api.Assertions.assertArrayEquals(ref, c, 0f, "forward");

        float[] g = OpsGradCheckTest.random(groups * k * n, 15, 1), gRef = g.clone();
        Ops.groupedMatmulTN(pool, a, 0, dy, 0, g, 0, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.matmulTN(POOL, a, offset[x] * k, dy, offset[x] * n, gRef, x * k * n, rows[x], k, n);
        org.junit.jupiter.api.Assertions.assertArrayEquals(gRef, g, 0f, "weight gradients");

        float[] dx = new float[t * k], dxRef = new float[t * k];
        java.util.Arrays.fill(dx, 7f);
        java.util.Arrays.fill(dxRef, 7f);
        Ops.groupedMatmulNT(pool, dy, 0, w, 0, dx, 0, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) Ops.matmulNT(POOL, dy, offset[x] * n, w, x * k * n, dxRef, offset[x] * k, rows[x], k, n, false);
        org.junit.jupiter.api.Assertions.assertArrayEquals(dxRef, dx, 0f, "input gradients");
    }

    @Test
    void parallelBiasGradientsEqualTheSerialSumBitForBit() {
        for (ThreadPool pool : POOLS)
            for (int[] mn : new int[][] {{1, 1}, {7, 5}, {2048, 128}, {300, 17}, {33, 256}, {0, 40}}) {
                int m = mn[0], n = mn[1];
                float[] dy = OpsGradCheckTest.random(m * n + 5, 21, 1), db = OpsGradCheckTest.random(n + 2, 22, 1), ref = db.clone();
                Ops.biasGrad(dy, 5, m, n, ref, 2);
                Ops.biasGrad(pool, dy, 5, m, n, db, 2);
                assertArrayEquals(ref, db, 0f, m + "x" + n);
            }
        int[] rows = {5, 0, 13, 1, 80, 0, 140, 2};
        int groups = rows.length, n = 70;
        int[] offset = new int[groups + 1];
        for (int x = 0; x < groups; x++) offset[x + 1] = offset[x] + rows[x];
        float[] dy = OpsGradCheckTest.random(offset[groups] * n, 23, 1);
        for (ThreadPool pool : POOLS) {
            float[] db = OpsGradCheckTest.random(groups * n, 24, 1), ref = db.clone();
            for (int x = 0; x < groups; x++) Ops.biasGrad(dy, offset[x] * n, rows[x], n, ref, x * n);
            Ops.groupedBiasGrad(pool, dy, 0, offset, rows, groups, n, db, 0);
            assertArrayEquals(ref, db, 0f, "grouped, " + pool.threads() + " threads");
        }
    }

    @Test
    void vectorReluBackwardEqualsTheScalarLoop() {
        float[] h = OpsGradCheckTest.random(301, 25, 1), dh = OpsGradCheckTest.random(301, 26, 1);
        h[7] = 0f;
        h[8] = -0f;
        for (float scale : new float[] {1f, 1.25f}) {
            float[] v = dh.clone(), ref = dh.clone();
            VectorGemm.reluBackward(h, v, 3, 290, scale);
            for (int i = 3; i < 293; i++) ref[i] = h[i] <= 0f ? 0f : scale == 1f ? ref[i] : ref[i] * scale;
            assertArrayEquals(ref, v, 0f, "scale " + scale);
        }
    }
}
