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
}
