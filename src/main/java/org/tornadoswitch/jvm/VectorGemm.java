package org.tornadoswitch.jvm;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Register-blocked matrix multiply on the Vector API: C[i, j] = init + Σ_k A(i, k) B[k, j], where
 * A(i, k) = a[aOff + i·ai + k·ak] (so A may be read transposed in place), B is row-major with
 * leading dimension n, C is row-major [rows x n], and init is C itself (acc), the bias row, or 0.
 *
 * The micro-kernel keeps a 4-row × 2-vector tile of C in registers and streams k: per k it loads 2
 * vectors of B and broadcasts 4 scalars of A for 8 FMAs. Each C element is summed by one thread in
 * a fixed k order, so results do not depend on the thread count. Loaded only when the
 * jdk.incubator.vector module is present (see {@link Ops#VECTOR}).
 */
final class VectorGemm {
    private VectorGemm() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();

    /** Rows [i0, i1) of C. */
    static void rows(float[] a, int aOff, int ai, int ak, float[] b, int bOff, float[] bias, int biasOff,
                     float[] c, int cOff, int i0, int i1, int k, int n, boolean acc) {
        if (!acc) {
            for (int i = i0; i < i1; i++) {
                if (bias != null) System.arraycopy(bias, biasOff, c, cOff + i * n, n);
                else java.util.Arrays.fill(c, cOff + i * n, cOff + (i + 1) * n, 0f);
            }
        }
        int nv2 = n - n % (2 * L), nv1 = n - n % L;
        int i = i0;
        for (; i + 3 < i1; i += 4) {
            int j = 0;
            for (; j < nv2; j += 2 * L) tile4x2(a, aOff + i * ai, ai, ak, b, bOff + j, c, cOff + i * n + j, k, n);
            for (; j < nv1; j += L) tile4x1(a, aOff + i * ai, ai, ak, b, bOff + j, c, cOff + i * n + j, k, n);
            for (int r = 0; r < 4; r++) scalarTail(a, aOff + (i + r) * ai, ak, b, bOff, c, cOff + (i + r) * n, nv1, k, n);
        }
        for (; i < i1; i++) {
            for (int j = 0; j < nv1; j += L) tile1x1(a, aOff + i * ai, ak, b, bOff + j, c, cOff + i * n + j, k, n);
            scalarTail(a, aOff + i * ai, ak, b, bOff, c, cOff + i * n, nv1, k, n);
        }
    }

    // The tiles are kept small on purpose: a bigger one (4 x 4 vectors) exceeds C2's inlining
    // budget, the vector intrinsics then fail and every vector is allocated on the heap.
    private static void tile4x2(float[] a, int a0, int ai, int ak, float[] b, int b0, float[] c, int c0, int k, int n) {
        FloatVector s00 = FloatVector.zero(S), s01 = FloatVector.zero(S), s10 = FloatVector.zero(S), s11 = FloatVector.zero(S);
        FloatVector s20 = FloatVector.zero(S), s21 = FloatVector.zero(S), s30 = FloatVector.zero(S), s31 = FloatVector.zero(S);
        int a1 = a0 + ai, a2 = a1 + ai, a3 = a2 + ai;
        for (int kk = 0; kk < k; kk++) {
            int bk = b0 + kk * n, ak0 = kk * ak;
            FloatVector b0v = FloatVector.fromArray(S, b, bk), b1v = FloatVector.fromArray(S, b, bk + L);
            FloatVector x0 = FloatVector.broadcast(S, a[a0 + ak0]), x1 = FloatVector.broadcast(S, a[a1 + ak0]);
            FloatVector x2 = FloatVector.broadcast(S, a[a2 + ak0]), x3 = FloatVector.broadcast(S, a[a3 + ak0]);
            s00 = b0v.fma(x0, s00);
            s01 = b1v.fma(x0, s01);
            s10 = b0v.fma(x1, s10);
            s11 = b1v.fma(x1, s11);
            s20 = b0v.fma(x2, s20);
            s21 = b1v.fma(x2, s21);
            s30 = b0v.fma(x3, s30);
            s31 = b1v.fma(x3, s31);
        }
        s00.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s01.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
        c0 += n;
        s10.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s11.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
        c0 += n;
        s20.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s21.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
        c0 += n;
        s30.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s31.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
    }

    private static void tile4x1(float[] a, int a0, int ai, int ak, float[] b, int b0, float[] c, int c0, int k, int n) {
        FloatVector s0 = FloatVector.zero(S), s1 = FloatVector.zero(S), s2 = FloatVector.zero(S), s3 = FloatVector.zero(S);
        int a1 = a0 + ai, a2 = a1 + ai, a3 = a2 + ai;
        for (int kk = 0; kk < k; kk++) {
            FloatVector bv = FloatVector.fromArray(S, b, b0 + kk * n);
            int ak0 = kk * ak;
            s0 = bv.fma(FloatVector.broadcast(S, a[a0 + ak0]), s0);
            s1 = bv.fma(FloatVector.broadcast(S, a[a1 + ak0]), s1);
            s2 = bv.fma(FloatVector.broadcast(S, a[a2 + ak0]), s2);
            s3 = bv.fma(FloatVector.broadcast(S, a[a3 + ak0]), s3);
        }
        s0.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s1.add(FloatVector.fromArray(S, c, c0 + n)).intoArray(c, c0 + n);
        s2.add(FloatVector.fromArray(S, c, c0 + 2 * n)).intoArray(c, c0 + 2 * n);
        s3.add(FloatVector.fromArray(S, c, c0 + 3 * n)).intoArray(c, c0 + 3 * n);
    }

    private static void tile1x1(float[] a, int a0, int ak, float[] b, int b0, float[] c, int c0, int k, int n) {
        FloatVector s = FloatVector.zero(S);
        for (int kk = 0; kk < k; kk++)
            s = FloatVector.fromArray(S, b, b0 + kk * n).fma(FloatVector.broadcast(S, a[a0 + kk * ak]), s);
        s.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
    }

    /** Columns [j0, n) of one row, one element at a time (fewer than L columns). */
    private static void scalarTail(float[] a, int a0, int ak, float[] b, int bOff, float[] c, int c0, int j0, int k, int n) {
        for (int j = j0; j < n; j++) {
            float s = 0;
            for (int kk = 0; kk < k; kk++) s = Math.fma(a[a0 + kk * ak], b[bOff + kk * n + j], s);
            c[c0 + j] += s;
        }
    }

    /**
     * C[i, j] = (acc ? C[i, j] : 0) + Σ_k A[i, k] · B[j, k] for rows [i0, i1): A [rows x k] and
     * B [n x k] both row-major, so the gradient through a linear layer (dY · Wᵀ) needs no transposed
     * copy of W. Dot products run along k in vector lanes, a 2 x 4 block of them at a time.
     */
    static void rowsNT(float[] a, int aOff, float[] b, int bOff, float[] c, int cOff, int i0, int i1, int k, int n, boolean acc) {
        int i = i0;
        for (; i + 1 < i1; i += 2) {
            int j = 0;
            for (; j + 3 < n; j += 4) tileNT2x4(a, aOff + i * k, b, bOff + j * k, c, cOff + i * n + j, k, n, acc);
            for (; j < n; j++) {
                store(c, cOff + i * n + j, dot(a, aOff + i * k, b, bOff + j * k, k), acc);
                store(c, cOff + (i + 1) * n + j, dot(a, aOff + (i + 1) * k, b, bOff + j * k, k), acc);
            }
        }
        for (; i < i1; i++)
            for (int j = 0; j < n; j++) store(c, cOff + i * n + j, dot(a, aOff + i * k, b, bOff + j * k, k), acc);
    }

    private static void store(float[] c, int at, float v, boolean acc) {
        c[at] = acc ? c[at] + v : v;
    }

    private static void tileNT2x4(float[] a, int a0, float[] b, int b0, float[] c, int c0, int k, int n, boolean acc) {
        FloatVector s00 = FloatVector.zero(S), s01 = FloatVector.zero(S), s02 = FloatVector.zero(S), s03 = FloatVector.zero(S);
        FloatVector s10 = FloatVector.zero(S), s11 = FloatVector.zero(S), s12 = FloatVector.zero(S), s13 = FloatVector.zero(S);
        int a1 = a0 + k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k, kv = k - k % L, kk = 0;
        for (; kk < kv; kk += L) {
            FloatVector x0 = FloatVector.fromArray(S, a, a0 + kk), x1 = FloatVector.fromArray(S, a, a1 + kk);
            FloatVector y0 = FloatVector.fromArray(S, b, b0 + kk), y1 = FloatVector.fromArray(S, b, b1 + kk);
            FloatVector y2 = FloatVector.fromArray(S, b, b2 + kk), y3 = FloatVector.fromArray(S, b, b3 + kk);
            s00 = x0.fma(y0, s00);
            s01 = x0.fma(y1, s01);
            s02 = x0.fma(y2, s02);
            s03 = x0.fma(y3, s03);
            s10 = x1.fma(y0, s10);
            s11 = x1.fma(y1, s11);
            s12 = x1.fma(y2, s12);
            s13 = x1.fma(y3, s13);
        }
        float r00 = s00.reduceLanes(VectorOperators.ADD), r01 = s01.reduceLanes(VectorOperators.ADD);
        float r02 = s02.reduceLanes(VectorOperators.ADD), r03 = s03.reduceLanes(VectorOperators.ADD);
        float r10 = s10.reduceLanes(VectorOperators.ADD), r11 = s11.reduceLanes(VectorOperators.ADD);
        float r12 = s12.reduceLanes(VectorOperators.ADD), r13 = s13.reduceLanes(VectorOperators.ADD);
        for (; kk < k; kk++) {
            float x0 = a[a0 + kk], x1 = a[a1 + kk];
            r00 = Math.fma(x0, b[b0 + kk], r00);
            r01 = Math.fma(x0, b[b1 + kk], r01);
            r02 = Math.fma(x0, b[b2 + kk], r02);
            r03 = Math.fma(x0, b[b3 + kk], r03);
            r10 = Math.fma(x1, b[b0 + kk], r10);
            r11 = Math.fma(x1, b[b1 + kk], r11);
            r12 = Math.fma(x1, b[b2 + kk], r12);
            r13 = Math.fma(x1, b[b3 + kk], r13);
        }
        store(c, c0, r00, acc);
        store(c, c0 + 1, r01, acc);
        store(c, c0 + 2, r02, acc);
        store(c, c0 + 3, r03, acc);
        store(c, c0 + n, r10, acc);
        store(c, c0 + n + 1, r11, acc);
        store(c, c0 + n + 2, r12, acc);
        store(c, c0 + n + 3, r13, acc);
    }

    /** Σ x[xo + i] · y[yo + i] over i < len, in vector lanes (fixed order). */
    static float dot(float[] x, int xo, float[] y, int yo, int len) {
        int i = 0, lv = len - len % L;
        FloatVector s = FloatVector.zero(S);
        for (; i < lv; i += L) s = FloatVector.fromArray(S, x, xo + i).fma(FloatVector.fromArray(S, y, yo + i), s);
        float r = s.reduceLanes(VectorOperators.ADD);
        for (; i < len; i++) r = Math.fma(x[xo + i], y[yo + i], r);
        return r;
    }

    /** y[yo + i] += alpha · x[xo + i] for i < len. */
    static void axpy(float alpha, float[] x, int xo, float[] y, int yo, int len) {
        int i = 0, lv = len - len % L;
        FloatVector av = FloatVector.broadcast(S, alpha);
        for (; i < lv; i += L)
            FloatVector.fromArray(S, x, xo + i).fma(av, FloatVector.fromArray(S, y, yo + i)).intoArray(y, yo + i);
        for (; i < len; i++) y[yo + i] = Math.fma(alpha, x[xo + i], y[yo + i]);
    }

    /**
     * {@code iters} rounds of 12 independent vector FMA chains held in registers: no memory traffic,
     * so its rate is the core's single-precision FMA peak. Returns a value so the loop is not removed.
     */
    static float fmaChains(long iters) {
        FloatVector one = FloatVector.broadcast(S, 1f), h = FloatVector.broadcast(S, 1e-9f);
        FloatVector a0 = FloatVector.zero(S), a1 = FloatVector.zero(S), a2 = FloatVector.zero(S), a3 = FloatVector.zero(S);
        FloatVector a4 = FloatVector.zero(S), a5 = FloatVector.zero(S), a6 = FloatVector.zero(S), a7 = FloatVector.zero(S);
        FloatVector a8 = FloatVector.zero(S), a9 = FloatVector.zero(S), a10 = FloatVector.zero(S), a11 = FloatVector.zero(S);
        for (long i = 0; i < iters; i++) {
            a0 = a0.fma(one, h); a1 = a1.fma(one, h); a2 = a2.fma(one, h); a3 = a3.fma(one, h);
            a4 = a4.fma(one, h); a5 = a5.fma(one, h); a6 = a6.fma(one, h); a7 = a7.fma(one, h);
            a8 = a8.fma(one, h); a9 = a9.fma(one, h); a10 = a10.fma(one, h); a11 = a11.fma(one, h);
        }
        return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9).add(a10).add(a11)
                .reduceLanes(VectorOperators.ADD);
    }
}
