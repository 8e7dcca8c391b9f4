package org.tornadoswitch.jvm;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API species every JVM kernel uses, and small kernels on it: lane sums in a fixed
 * order, dot products, LayerNorm rows, sums of squares, and the small register-tiled products of
 * the per-head attention in {@link Ops#attention} (C[i, j] = init + Σ_k A(i, k) B[k, j] in 4-row ×
 * 2-vector tiles; A(i, k) = a[aOff + i·ai + k·ak]). The model's GEMMs are {@link Gemm}. Loaded only
 * when the jdk.incubator.vector module is present (see {@link Ops#VECTOR}).
 */
final class VectorGemm {
    private VectorGemm() {}

    /**
     * The vectors the kernels use: the JVM's preferred shape ({@code FloatVector.SPECIES_PREFERRED}:
     * 16 lanes with AVX-512, 8 with AVX2), or 128/256/512 bits when {@code -Dtornadoswitch.vectorBits}
     * says so (to test another shape; a wider one than the hardware's runs without intrinsics, slowly).
     */
    static final VectorSpecies<Float> S = species(System.getProperty("tornadoswitch.vectorBits"));

    static VectorSpecies<Float> species(String bits) {
        if (bits == null || bits.isBlank()) return FloatVector.SPECIES_PREFERRED;
        return switch (bits.trim()) {
            case "128" -> FloatVector.SPECIES_128;
            case "256" -> FloatVector.SPECIES_256;
            case "512" -> FloatVector.SPECIES_512;
            default -> throw new IllegalArgumentException("tornadoswitch.vectorBits must be 128, 256 or 512, got '" + bits + "'");
        };
    }
    static final int L = S.length();

    /**
     * Rotations by 8, 4, 2 and 1 lanes for {@link #hsum} (those under L used). reduceLanes(ADD) is not
     * used: its order is unspecified and differs between interpreted and JIT-compiled code, which made
     * results depend on warm-up and thread timing. Static final fields, not an array: C2 then knows each
     * shuffle's exact class without a type profile (a method compiled from tier 2 has none, and a
     * shuffle of unknown class boxed every vector of the loops around it).
     */
    private static final VectorShuffle<Float> ROT8 = L > 8 ? VectorShuffle.iota(S, 8, 1, true) : null,
            ROT4 = L > 4 ? VectorShuffle.iota(S, 4, 1, true) : null, ROT2 = VectorShuffle.iota(S, 2, 1, true),
            ROT1 = VectorShuffle.iota(S, 1, 1, true);

    /** Sum of the lanes in a fixed pairwise order (lane i += lane i + h, halving h), the same in every JIT state. */
    static float hsum(FloatVector v) {
        if (L > 8) v = v.add(v.rearrange(ROT8));
        if (L > 4) v = v.add(v.rearrange(ROT4));
        v = v.add(v.rearrange(ROT2));
        return v.add(v.rearrange(ROT1)).lane(0);
    }

    /** Rows [i0, i1) of C, with B's and C's leading dimension n. */
    static void rows(float[] a, int aOff, int ai, int ak, float[] b, int bOff, float[] bias, int biasOff,
                     float[] c, int cOff, int i0, int i1, int k, int n, boolean acc) {
        rows(a, aOff, ai, ak, b, bOff, n, bias, biasOff, c, cOff, n, i0, i1, k, n, acc);
    }

    /** Rows [i0, i1) of C; B[kk, j] = b[bOff + kk·ldb + j] and C[i, j] = c[cOff + i·ldc + j] (sub-matrices of wider rows). */
    static void rows(float[] a, int aOff, int ai, int ak, float[] b, int bOff, int ldb, float[] bias, int biasOff,
                     float[] c, int cOff, int ldc, int i0, int i1, int k, int n, boolean acc) {
        if (!acc) {
            for (int i = i0; i < i1; i++) {
                if (bias != null) System.arraycopy(bias, biasOff, c, cOff + i * ldc, n);
                else java.util.Arrays.fill(c, cOff + i * ldc, cOff + i * ldc + n, 0f);
            }
        }
        int nv2 = n - n % (2 * L), nv1 = n - n % L;
        int i = i0;
        for (; i + 3 < i1; i += 4) {
            int j = 0;
            for (; j < nv2; j += 2 * L) tile4x2(a, aOff + i * ai, ai, ak, b, bOff + j, ldb, c, cOff + i * ldc + j, ldc, k);
            for (; j < nv1; j += L) tile4x1(a, aOff + i * ai, ai, ak, b, bOff + j, ldb, c, cOff + i * ldc + j, ldc, k);
            for (int r = 0; r < 4; r++) scalarTail(a, aOff + (i + r) * ai, ak, b, bOff, ldb, c, cOff + (i + r) * ldc, nv1, k, n);
        }
        for (; i < i1; i++) {
            for (int j = 0; j < nv1; j += L) tile1x1(a, aOff + i * ai, ak, b, bOff + j, ldb, c, cOff + i * ldc + j, k);
            scalarTail(a, aOff + i * ai, ak, b, bOff, ldb, c, cOff + i * ldc, nv1, k, n);
        }
    }

    // The tiles are kept small on purpose: a bigger one (4 x 4 vectors) exceeds C2's inlining
    // budget, the vector intrinsics then fail and every vector is allocated on the heap.
    private static void tile4x2(float[] a, int a0, int ai, int ak, float[] b, int b0, int ldb, float[] c, int c0, int ldc, int k) {
        FloatVector s00 = FloatVector.zero(S), s01 = FloatVector.zero(S), s10 = FloatVector.zero(S), s11 = FloatVector.zero(S);
        FloatVector s20 = FloatVector.zero(S), s21 = FloatVector.zero(S), s30 = FloatVector.zero(S), s31 = FloatVector.zero(S);
        int a1 = a0 + ai, a2 = a1 + ai, a3 = a2 + ai;
        for (int kk = 0; kk < k; kk++) {
            int bk = b0 + kk * ldb, ak0 = kk * ak;
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
        c0 += ldc;
        s10.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s11.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
        c0 += ldc;
        s20.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s21.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
        c0 += ldc;
        s30.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s31.add(FloatVector.fromArray(S, c, c0 + L)).intoArray(c, c0 + L);
    }

    private static void tile4x1(float[] a, int a0, int ai, int ak, float[] b, int b0, int ldb, float[] c, int c0, int ldc, int k) {
        FloatVector s0 = FloatVector.zero(S), s1 = FloatVector.zero(S), s2 = FloatVector.zero(S), s3 = FloatVector.zero(S);
        int a1 = a0 + ai, a2 = a1 + ai, a3 = a2 + ai;
        for (int kk = 0; kk < k; kk++) {
            FloatVector bv = FloatVector.fromArray(S, b, b0 + kk * ldb);
            int ak0 = kk * ak;
            s0 = bv.fma(FloatVector.broadcast(S, a[a0 + ak0]), s0);
            s1 = bv.fma(FloatVector.broadcast(S, a[a1 + ak0]), s1);
            s2 = bv.fma(FloatVector.broadcast(S, a[a2 + ak0]), s2);
            s3 = bv.fma(FloatVector.broadcast(S, a[a3 + ak0]), s3);
        }
        s0.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
        s1.add(FloatVector.fromArray(S, c, c0 + ldc)).intoArray(c, c0 + ldc);
        s2.add(FloatVector.fromArray(S, c, c0 + 2 * ldc)).intoArray(c, c0 + 2 * ldc);
        s3.add(FloatVector.fromArray(S, c, c0 + 3 * ldc)).intoArray(c, c0 + 3 * ldc);
    }

    private static void tile1x1(float[] a, int a0, int ak, float[] b, int b0, int ldb, float[] c, int c0, int k) {
        FloatVector s = FloatVector.zero(S);
        for (int kk = 0; kk < k; kk++)
            s = FloatVector.fromArray(S, b, b0 + kk * ldb).fma(FloatVector.broadcast(S, a[a0 + kk * ak]), s);
        s.add(FloatVector.fromArray(S, c, c0)).intoArray(c, c0);
    }

    /** Columns [j0, n) of one row, one element at a time (fewer than L columns). */
    private static void scalarTail(float[] a, int a0, int ak, float[] b, int bOff, int ldb, float[] c, int c0, int j0, int k, int n) {
        for (int j = j0; j < n; j++) {
            float s = 0;
            for (int kk = 0; kk < k; kk++) s = Math.fma(a[a0 + kk * ak], b[bOff + kk * ldb + j], s);
            c[c0 + j] += s;
        }
    }

    /**
     * C[i, j] = (acc ? C[i, j] : 0) + Σ_k A[i, k] · B[j, k] for rows [i0, i1): A [rows x k] and
     * B [n x k] both row-major, so the gradient through a linear layer (dY · Wᵀ) needs no transposed
     * copy of W. Dot products run along k in vector lanes, a 2 x 4 block of them at a time.
     */
    static void rowsNT(float[] a, int aOff, float[] b, int bOff, float[] c, int cOff, int i0, int i1, int k, int n, boolean acc) {
        rowsNT(a, aOff, k, b, bOff, k, c, cOff, n, i0, i1, k, n, acc);
    }

    /** {@link #rowsNT} with row strides lda, ldb, ldc (sub-matrices of wider rows). */
    static void rowsNT(float[] a, int aOff, int lda, float[] b, int bOff, int ldb, float[] c, int cOff, int ldc,
                       int i0, int i1, int k, int n, boolean acc) {
        int i = i0;
        for (; i + 1 < i1; i += 2) {
            int j = 0;
            for (; j + 3 < n; j += 4) tileNT2x4(a, aOff + i * lda, lda, b, bOff + j * ldb, ldb, c, cOff + i * ldc + j, ldc, k, acc);
            for (; j < n; j++) {
                store(c, cOff + i * ldc + j, dot(a, aOff + i * lda, b, bOff + j * ldb, k), acc);
                store(c, cOff + (i + 1) * ldc + j, dot(a, aOff + (i + 1) * lda, b, bOff + j * ldb, k), acc);
            }
        }
        for (; i < i1; i++)
            for (int j = 0; j < n; j++) store(c, cOff + i * ldc + j, dot(a, aOff + i * lda, b, bOff + j * ldb, k), acc);
    }

    private static void store(float[] c, int at, float v, boolean acc) {
        c[at] = acc ? c[at] + v : v;
    }

    private static void tileNT2x4(float[] a, int a0, int lda, float[] b, int b0, int ldb, float[] c, int c0, int ldc, int k,
                                  boolean acc) {
        FloatVector s00 = FloatVector.zero(S), s01 = FloatVector.zero(S), s02 = FloatVector.zero(S), s03 = FloatVector.zero(S);
        FloatVector s10 = FloatVector.zero(S), s11 = FloatVector.zero(S), s12 = FloatVector.zero(S), s13 = FloatVector.zero(S);
        int a1 = a0 + lda, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb, kv = k - k % L, kk = 0;
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
        float r00 = hsum(s00), r01 = hsum(s01);
        float r02 = hsum(s02), r03 = hsum(s03);
        float r10 = hsum(s10), r11 = hsum(s11);
        float r12 = hsum(s12), r13 = hsum(s13);
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
        store(c, c0 + ldc, r10, acc);
        store(c, c0 + ldc + 1, r11, acc);
        store(c, c0 + ldc + 2, r12, acc);
        store(c, c0 + ldc + 3, r13, acc);
    }

    /** Σ x[xo + i] · y[yo + i] over i < len, in vector lanes (fixed order). */
    static float dot(float[] x, int xo, float[] y, int yo, int len) {
        int i = 0, lv = len - len % L;
        FloatVector s = FloatVector.zero(S);
        for (; i < lv; i += L) s = FloatVector.fromArray(S, x, xo + i).fma(FloatVector.fromArray(S, y, yo + i), s);
        float r = hsum(s);
        for (; i < len; i++) r = Math.fma(x[xo + i], y[yo + i], r);
        return r;
    }


    /** One row of LayerNorm: y = (x - mean) / std · g + b, with mean and 1/std stored at {@code stat}. */
    static void layerNormRow(float[] x, int r, float[] g, int gOff, float[] b, int bOff, float[] y, int o, int d,
                             float[] mean, float[] rstd, int stat, float eps) {
        normRow(x, r, g, gOff, b, bOff, y, o, d, mean, rstd, stat, eps, true);
    }

    /** One row of T5's RMS norm: y = x / sqrt(mean(x²) + eps) · g (no mean, no bias), 1/rms stored at {@code stat}. */
    static void rmsNormRow(float[] x, int r, float[] g, int gOff, float[] y, int o, int d, float[] rstd, int stat, float eps) {
        normRow(x, r, g, gOff, null, 0, y, o, d, null, rstd, stat, eps, false);
    }

    /**
     * The norm family: with {@code center} LayerNorm (mean subtracted, bias b added, mean stored),
     * without it the RMS norm (mean taken as 0, b and mean unused).
     */
    private static void normRow(float[] x, int r, float[] g, int gOff, float[] b, int bOff, float[] y, int o, int d,
                                float[] mean, float[] rstd, int stat, float eps, boolean center) {
        int dv = d - d % L, j = 0;
        float mu = 0;
        FloatVector acc;
        if (center) {
            acc = FloatVector.zero(S);
            for (; j < dv; j += L) acc = acc.add(FloatVector.fromArray(S, x, r + j));
            float sum = hsum(acc);
            for (; j < d; j++) sum += x[r + j];
            mu = sum / d;
        }
        FloatVector muv = FloatVector.broadcast(S, mu);
        acc = FloatVector.zero(S);
        for (j = 0; j < dv; j += L) {
            FloatVector z = FloatVector.fromArray(S, x, r + j).sub(muv);
            acc = z.fma(z, acc);
        }
        float var = hsum(acc);
        for (; j < d; j++) var += (x[r + j] - mu) * (x[r + j] - mu);
        float rs = (float) (1.0 / Math.sqrt(var / d + eps));
        if (center) mean[stat] = mu;
        rstd[stat] = rs;
        FloatVector rsv = FloatVector.broadcast(S, rs);
        if (center) {
            for (j = 0; j < dv; j += L)
                FloatVector.fromArray(S, x, r + j).sub(muv).mul(rsv).fma(FloatVector.fromArray(S, g, gOff + j), FloatVector.fromArray(S, b, bOff + j))
                        .intoArray(y, o + j);
            for (; j < d; j++) y[o + j] = (x[r + j] - mu) * rs * g[gOff + j] + b[bOff + j];
        } else {
            for (j = 0; j < dv; j += L)
                FloatVector.fromArray(S, x, r + j).mul(rsv).mul(FloatVector.fromArray(S, g, gOff + j)).intoArray(y, o + j);
            for (; j < d; j++) y[o + j] = x[r + j] * rs * g[gOff + j];
        }
    }

    /** One row of LayerNorm's input gradient: dx (+)= rs · (dy·g - mean(dy·g) - x̂ · mean(dy·g·x̂)). */
    static void layerNormBackRow(float[] x, int r, float[] g, int gOff, float mu, float rs, float[] dy, int o,
                                 float[] dx, int q, int d, boolean acc) {
        normBackRow(x, r, g, gOff, mu, rs, dy, o, dx, q, d, acc, true);
    }

    /** One row of the RMS norm's input gradient: dx (+)= rs · (dy·g - x̂ · mean(dy·g·x̂)), x̂ = x · rs. */
    static void rmsNormBackRow(float[] x, int r, float[] g, int gOff, float rs, float[] dy, int o, float[] dx, int q, int d,
                               boolean acc) {
        normBackRow(x, r, g, gOff, 0f, rs, dy, o, dx, q, d, acc, false);
    }

    private static void normBackRow(float[] x, int r, float[] g, int gOff, float mu, float rs, float[] dy, int o,
                                    float[] dx, int q, int d, boolean acc, boolean center) {
        int dv = d - d % L, j = 0;
        FloatVector muv = FloatVector.broadcast(S, mu), rsv = FloatVector.broadcast(S, rs);
        FloatVector s1 = FloatVector.zero(S), s2 = FloatVector.zero(S);
        for (; j < dv; j += L) {
            FloatVector dxh = FloatVector.fromArray(S, dy, o + j).mul(FloatVector.fromArray(S, g, gOff + j));
            FloatVector xh = FloatVector.fromArray(S, x, r + j).sub(muv).mul(rsv);
            s1 = s1.add(dxh);
            s2 = dxh.fma(xh, s2);
        }
        float sdy = hsum(s1), sdyx = hsum(s2);
        for (; j < d; j++) {
            float dxh = dy[o + j] * g[gOff + j];
            sdy += dxh;
            sdyx += dxh * (x[r + j] - mu) * rs;
        }
        float m1 = center ? sdy / d : 0f, m2 = sdyx / d;
        FloatVector m1v = FloatVector.broadcast(S, m1), m2v = FloatVector.broadcast(S, m2);
        for (j = 0; j < dv; j += L) {
            FloatVector xh = FloatVector.fromArray(S, x, r + j).sub(muv).mul(rsv);
            FloatVector v = FloatVector.fromArray(S, dy, o + j).mul(FloatVector.fromArray(S, g, gOff + j)).sub(m1v)
                    .sub(xh.mul(m2v)).mul(rsv);
            if (acc) v = v.add(FloatVector.fromArray(S, dx, q + j));
            v.intoArray(dx, q + j);
        }
        for (; j < d; j++) {
            float xh = (x[r + j] - mu) * rs;
            float v = rs * (dy[o + j] * g[gOff + j] - m1 - xh * m2);
            dx[q + j] = acc ? dx[q + j] + v : v;
        }
    }

    /**
     * db[dbOff + j] += Σ_i dy[dyOff + i·ld + j] over i < m, for j < width (a multiple of L): each
     * column summed in row order, lane by lane, so the bits are the scalar loop's.
     */
    static void columnSums(float[] dy, int dyOff, int ld, int m, int width, float[] db, int dbOff) {
        for (int j = 0; j < width; j += L) {
            FloatVector s = FloatVector.fromArray(S, db, dbOff + j);
            for (int i = 0, o = dyOff + j; i < m; i++, o += ld) s = s.add(FloatVector.fromArray(S, dy, o));
            s.intoArray(db, dbOff + j);
        }
    }

    /** dh[o] = h[o] <= 0 ? 0 : dh[o] * scale over [o0, o0 + len): ReLU's backward (scale = 1 leaves dh as it is). */
    static void reluBackward(float[] h, float[] dh, int o0, int len, float scale) {
        int i = o0, ev = o0 + len / L * L, end = o0 + len;
        FloatVector zero = FloatVector.zero(S);
        for (; i < ev; i += L) {
            FloatVector hv = FloatVector.fromArray(S, h, i), dv = FloatVector.fromArray(S, dh, i);
            if (scale != 1f) dv = dv.mul(scale);
            dv.blend(zero, hv.compare(jdk.incubator.vector.VectorOperators.LE, 0f)).intoArray(dh, i);
        }
        for (; i < end; i++) {
            if (h[i] <= 0f) dh[i] = 0f;
            else if (scale != 1f) dh[i] *= scale;
        }
    }

    /**
     * Adam's update over whole vectors of [lo, hi) (see {@link Ops#adam}); returns where the scalar
     * tail starts. The same operations in the same order as the scalar loop, no FMA contraction, and
     * IEEE sqrt and division lane by lane: the same bits.
     */
    static int adam(float[] p, int pOff, float[] g, int gOff, float[] m, float[] v, int lo, int hi, float gradScale,
                    float beta1, float beta2, float ob1, float ob2, float stepSize, float invSqrtBc2, float eps) {
        int i = lo, end = lo + (hi - lo) / L * L;
        for (; i < end; i += L) {
            FloatVector gi = FloatVector.fromArray(S, g, gOff + i).mul(gradScale);
            FloatVector mi = FloatVector.fromArray(S, m, i).mul(beta1).add(gi.mul(ob1));
            FloatVector vi = FloatVector.fromArray(S, v, i).mul(beta2).add(gi.mul(ob2).mul(gi));
            mi.intoArray(m, i);
            vi.intoArray(v, i);
            FloatVector den = vi.sqrt().mul(invSqrtBc2).add(eps);
            FloatVector pi = FloatVector.fromArray(S, p, pOff + i);
            pi.sub(mi.mul(stepSize).div(den)).intoArray(p, pOff + i);
        }
        return i;
    }

    /**
     * LayerNorm's parameter-gradient partials of one row: part[p + j] += dy·x̂, part[p + d + j] += dy,
     * x̂ = (x - mu)·rs; the scalar loop's operations (no FMA), so the same bits.
     */
    static void lnParamPartials(float[] x, int r, float mu, float rs, float[] dy, int o, float[] part, int p, int d) {
        int j = 0, dv = d - d % L;
        for (; j < dv; j += L) {
            FloatVector dyv = FloatVector.fromArray(S, dy, o + j);
            FloatVector xh = FloatVector.fromArray(S, x, r + j).sub(mu).mul(rs);
            FloatVector.fromArray(S, part, p + j).add(dyv.mul(xh)).intoArray(part, p + j);
            FloatVector.fromArray(S, part, p + d + j).add(dyv).intoArray(part, p + d + j);
        }
        for (; j < d; j++) {
            part[p + j] += dy[o + j] * ((x[r + j] - mu) * rs);
            part[p + d + j] += dy[o + j];
        }
    }

    /** out[oo + j] = x[xo + j] + z · y[yo + j] for j < n: a multiply, then an add (no FMA), the scalar loop's bits. */
    static void addScaled(float[] x, int xo, float z, float[] y, int yo, float[] out, int oo, int n) {
        int j = 0, nv = n - n % L;
        for (; j < nv; j += L)
            FloatVector.fromArray(S, x, xo + j).add(FloatVector.fromArray(S, y, yo + j).mul(z)).intoArray(out, oo + j);
        for (; j < n; j++) out[oo + j] = x[xo + j] + z * y[yo + j];
    }

    /** Σ x[i]² over [lo, hi): float vector lanes within blocks of 1024, the blocks added in double. */
    static double sumSquares(float[] x, int lo, int hi) {
        double total = 0;
        for (int b = lo; b < hi; b += 1024) {
            int end = Math.min(hi, b + 1024), ev = b + (end - b) / (2 * L) * (2 * L), i = b;
            FloatVector s0 = FloatVector.zero(S), s1 = FloatVector.zero(S);
            for (; i < ev; i += 2 * L) {
                FloatVector v0 = FloatVector.fromArray(S, x, i), v1 = FloatVector.fromArray(S, x, i + L);
                s0 = v0.fma(v0, s0);
                s1 = v1.fma(v1, s1);
            }
            double part = hsum(s0.add(s1));
            for (; i < end; i++) part += (double) x[i] * x[i];
            total += part;
        }
        return total;
    }

    /** Σ (x[xo + i] · w[wo + i])² over i < n: float vector lanes within blocks of 1024, the blocks added in double. */
    static double sumSquaresScaled(float[] x, int xo, float[] w, int wo, int n) {
        double total = 0;
        for (int b = 0; b < n; b += 1024) {
            int end = Math.min(n, b + 1024), ev = b + (end - b) / L * L, i = b;
            FloatVector s0 = FloatVector.zero(S);
            for (; i < ev; i += L) {
                FloatVector v = FloatVector.fromArray(S, x, xo + i).mul(FloatVector.fromArray(S, w, wo + i));
                s0 = v.fma(v, s0);
            }
            double part = hsum(s0);
            for (; i < end; i++) {
                double v = (double) x[xo + i] * w[wo + i];
                part += v * v;
            }
            total += part;
        }
        return total;
    }

    /**
     * Rows [j0, j1) of W [k x n] against the m (at most 4) rows of S [m x n]: C[i, j] = S_i · W_j,
     * each W row read once for all m dots (lanes in a fixed order, then {@link #hsum}). One kernel
     * per row count: vectors merged through branches would be boxed by C2.
     */
    static void gemvRowsNT(float[] s, int sOff, int m, float[] w, int wOff, float[] c, int cOff, int k, int n, int j0, int j1) {
        switch (m) {
            case 1 -> gemv1(s, sOff, w, wOff, c, cOff, n, j0, j1);
            case 2 -> gemv2(s, sOff, w, wOff, c, cOff, k, n, j0, j1);
            case 3 -> {
                gemv2(s, sOff, w, wOff, c, cOff, k, n, j0, j1);
                gemv1(s, sOff + 2 * n, w, wOff, c, cOff + 2 * k, n, j0, j1);
            }
            default -> {
                gemv2(s, sOff, w, wOff, c, cOff, k, n, j0, j1);
                gemv2(s, sOff + 2 * n, w, wOff, c, cOff + 2 * k, k, n, j0, j1);
            }
        }
    }

    private static void gemv1(float[] s, int sOff, float[] w, int wOff, float[] c, int cOff, int n, int j0, int j1) {
        int nv = n - n % L;
        for (int j = j0; j < j1; j++) {
            int wr = wOff + j * n, l = 0;
            FloatVector a0 = FloatVector.zero(S);
            for (; l < nv; l += L) a0 = FloatVector.fromArray(S, w, wr + l).fma(FloatVector.fromArray(S, s, sOff + l), a0);
            float r0 = hsum(a0);
            for (; l < n; l++) r0 = Math.fma(s[sOff + l], w[wr + l], r0);
            c[cOff + j] = r0;
        }
    }

    private static void gemv2(float[] s, int sOff, float[] w, int wOff, float[] c, int cOff, int k, int n, int j0, int j1) {
        int nv = n - n % L, s1 = sOff + n;
        for (int j = j0; j < j1; j++) {
            int wr = wOff + j * n, l = 0;
            FloatVector a0 = FloatVector.zero(S), a1 = FloatVector.zero(S);
            for (; l < nv; l += L) {
                FloatVector wv = FloatVector.fromArray(S, w, wr + l);
                a0 = wv.fma(FloatVector.fromArray(S, s, sOff + l), a0);
                a1 = wv.fma(FloatVector.fromArray(S, s, s1 + l), a1);
            }
            float r0 = hsum(a0), r1 = hsum(a1);
            for (; l < n; l++) {
                float x = w[wr + l];
                r0 = Math.fma(s[sOff + l], x, r0);
                r1 = Math.fma(s[s1 + l], x, r1);
            }
            c[cOff + j] = r0;
            c[cOff + k + j] = r1;
        }
    }
}
