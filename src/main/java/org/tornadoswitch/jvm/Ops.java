package org.tornadoswitch.jvm;

import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * The JVM backend's numeric kernels, forward and backward side by side. Arrays are row-major and
 * addressed by offset so that views into one flat buffer need no copies. Inner loops are written so
 * that C2 vectorizes them (one store per iteration, unit stride).
 */
public final class Ops {
    private Ops() {}

    public static final float LN_EPS = 1e-5f;
    /**
     * Whether the Vector API kernels ({@link VectorGemm}) are used: only when the JVM was started
     * with {@code --add-modules jdk.incubator.vector} (the scripts do), else the scalar loops below.
     */
    public static final boolean VECTOR = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent()
            && !Boolean.getBoolean("tornadoswitch.scalar");
    /** Width in bits of the vectors the kernels use (0 when the scalar loops run). */
    public static int vectorBits() {
        return VECTOR ? VectorGemm.L * 32 : 0;
    }

    /** Rows of B kept hot while a slice of dW's rows is updated (matmulTN). */
    private static final int TN_BLOCK = 64;

    /**
     * C[M x N] = (acc ? C : bias or 0) + A[M x K] B[K x N]. Parallel over rows of C.
     * {@code bias} may be null.
     */
    public static void matmul(ThreadPool pool, float[] a, int aOff, float[] b, int bOff, float[] bias, int biasOff,
                              float[] c, int cOff, int m, int k, int n, boolean acc) {
        if (VECTOR) {
            Gemm.task().single(Gemm.NN, a, aOff, b, bOff, null, 0, c, cOff, m, k, n).bias(bias, biasOff).accumulate(acc).run(pool);
            return;
        }
        pool.parallelFor(m, (lo, hi) -> matmulRows(a, aOff, b, bOff, bias, biasOff, c, cOff, lo, hi, k, n, acc));
    }

    static void matmulRows(float[] a, int aOff, float[] b, int bOff, float[] bias, int biasOff,
                           float[] c, int cOff, int lo, int hi, int k, int n, boolean acc) {
        for (int i = lo; i < hi; i++) {
            int ci = cOff + i * n, ai = aOff + i * k;
            if (!acc) {
                if (bias != null) System.arraycopy(bias, biasOff, c, ci, n);
                else java.util.Arrays.fill(c, ci, ci + n, 0f);
            }
            int kk = 0;
            for (; kk + 3 < k; kk += 4) {
                float a0 = a[ai + kk], a1 = a[ai + kk + 1], a2 = a[ai + kk + 2], a3 = a[ai + kk + 3];
                if (a0 == 0f && a1 == 0f && a2 == 0f && a3 == 0f) continue; // ReLU zeros
                int b0 = bOff + kk * n, b1 = b0 + n, b2 = b1 + n, b3 = b2 + n;
                for (int j = 0; j < n; j++)
                    c[ci + j] += a0 * b[b0 + j] + a1 * b[b1 + j] + a2 * b[b2 + j] + a3 * b[b3 + j];
            }
            for (; kk < k; kk++) {
                float a0 = a[ai + kk];
                int b0 = bOff + kk * n;
                for (int j = 0; j < n; j++) c[ci + j] += a0 * b[b0 + j];
            }
        }
    }

    /**
     * dst[M x K] (+)= src[M x N] W^T for W [K x N] row-major, without a transposed copy of W.
     * Parallel over rows of dst.
     */
    public static void matmulNT(ThreadPool pool, float[] src, int sOff, float[] w, int wOff, float[] dst, int dOff,
                                int m, int k, int n, boolean acc) {
        if (VECTOR) {
            Gemm.task().single(Gemm.NT, src, sOff, w, wOff, null, 0, dst, dOff, m, k, n).accumulate(acc).run(pool);
            return;
        }
        pool.parallelFor(m, (lo, hi) -> scalarNT(src, sOff, w, wOff, dst, dOff, lo, hi, k, n, acc));
    }

    /** Rows of S that {@link #gemvNT} takes at most. */
    public static final int GEMV_ROWS = 4;

    /**
     * dst[m x K] = src[m x N] W^T for few rows (m <= {@link #GEMV_ROWS}: a decode step with W in
     * nn.Linear's [out, in] layout): the rows of W are streamed once, split across the threads by
     * output column, each element one dot product in vector lanes in a fixed order (so the bits do
     * not depend on the thread count).
     */
    public static void gemvNT(ThreadPool pool, float[] src, int sOff, float[] w, int wOff, float[] dst, int dOff, int m, int k, int n) {
        if (m < 1 || m > GEMV_ROWS) throw new IllegalArgumentException("gemvNT takes 1.." + GEMV_ROWS + " rows, got " + m);
        int chunk = 16, parts = (k + chunk - 1) / chunk;
        if (!VECTOR) {
            pool.parallelFor(parts, (lo, hi) -> scalarNT(src, sOff, w, wOff, dst, dOff, 0, m, k, n, false, lo * chunk, Math.min(k, hi * chunk)));
            return;
        }
        pool.parallelFor(parts, (lo, hi) -> VectorGemm.gemvRowsNT(src, sOff, m, w, wOff, dst, dOff, k, n, lo * chunk, Math.min(k, hi * chunk)));
    }

    private static void scalarNT(float[] src, int sOff, float[] w, int wOff, float[] dst, int dOff, int lo, int hi,
                                 int k, int n, boolean acc) {
        scalarNT(src, sOff, w, wOff, dst, dOff, lo, hi, k, n, acc, 0, k);
    }

    /** Rows [lo, hi) and columns [j0, j1) of dst (+)= src W^T, plain loops. */
    private static void scalarNT(float[] src, int sOff, float[] w, int wOff, float[] dst, int dOff, int lo, int hi,
                                 int k, int n, boolean acc, int j0, int j1) {
        for (int i = lo; i < hi; i++)
            for (int j = j0; j < j1; j++) {
                float s = 0;
                for (int l = 0; l < n; l++) s += src[sOff + i * n + l] * w[wOff + j * n + l];
                dst[dOff + i * k + j] = acc ? dst[dOff + i * k + j] + s : s;
            }
    }

    /**
     * All experts' linear layers in one parallel pass ({@link Gemm}). Group x owns rows
     * [offset[x], offset[x] + rows[x]) of the token-side matrices and the x-th [k x n] block of the
     * weights (and n-block of the bias). The work is cut into 6-row slices across all groups, so 64
     * small experts cost one hand-off to the pool, not 64. Nothing is allocated per call.
     */
    /** Every group's C_x = A_x W_x + bias_x (see {@link Gemm}); rows of C past the groups are untouched. */
    public static void groupedMatmul(ThreadPool pool, float[] a, int aOff, float[] w, int wOff, float[] bias, int biasOff,
                                     float[] c, int cOff, int[] offset, int[] rows, int groups, int k, int n) {
        if (!VECTOR) {
            for (int x = 0; x < groups; x++)
                if (rows[x] > 0) matmul(pool, a, aOff + offset[x] * k, w, wOff + x * k * n, bias, biasOff + x * n,
                        c, cOff + offset[x] * n, rows[x], k, n, false);
            return;
        }
        Gemm.task().set(Gemm.NN, a, aOff, w, wOff, null, 0, c, cOff, offset, rows, groups, k, n).bias(bias, biasOff).run(pool);
    }

    /** Every group's weight gradient G_x += A_x^T B_x, G_x the x-th [k x n] block of g at gOff. */
    public static void groupedMatmulTN(ThreadPool pool, float[] a, int aOff, float[] b, int bOff, float[] g, int gOff,
                                       int[] offset, int[] rows, int groups, int k, int n) {
        if (!VECTOR) {
            for (int x = 0; x < groups; x++)
                if (rows[x] > 0) matmulTN(pool, a, aOff + offset[x] * k, b, bOff + offset[x] * n, g, gOff + x * k * n, rows[x], k, n);
            return;
        }
        // the "w" slot is the gradient written, the "b" slot the token-side B
        Gemm.task().set(Gemm.TN, a, aOff, g, gOff, b, bOff, null, 0, offset, rows, groups, k, n).run(pool);
    }

    /** Every group's C_x[rows x k] = B_x[rows x n] W_x^T, W_x the x-th [k x n] block of w at wOff. */
    public static void groupedMatmulNT(ThreadPool pool, float[] b, int bOff, float[] w, int wOff, float[] c, int cOff,
                                       int[] offset, int[] rows, int groups, int k, int n) {
        if (!VECTOR) {
            for (int x = 0; x < groups; x++) {
                int r = offset[x], m = rows[x], wo = wOff + x * k * n;
                if (m > 0) pool.parallelFor(m, (lo, hi) -> scalarNT(b, bOff + r * n, w, wo, c, cOff + r * k, lo, hi, k, n, false));
            }
            return;
        }
        Gemm.task().set(Gemm.NT, b, bOff, w, wOff, null, 0, c, cOff, offset, rows, groups, k, n).run(pool);
    }

    /**
     * Called once a block of a product's output is final: rows [r0, r1) of the whole output (for a
     * grouped product, rows of all groups' C) and columns [j0, j1), all in group {@code group}. Runs on
     * the pool's threads, each block once: it may read anything and write the block's own elements
     * (or elements that only this block maps to), so a dropout mask or a scatter costs no extra pass.
     * It must not use the pool itself.
     */
    public interface Epilogue {
        void apply(int group, int r0, int r1, int j0, int j1);
    }

    /**
     * C[M x N] = A W + bias, then + res (laid out like C; may be null), then ReLU when {@code relu},
     * then {@code ep} (may be null) on each finished block: the linear layer's epilogue fused into
     * the GEMM, while the block is in cache.
     */
    public static void matmulFused(ThreadPool pool, float[] a, int aOff, float[] w, int wOff, float[] bias, int biasOff,
                                   float[] c, int cOff, int m, int k, int n, float[] res, int resOff, boolean relu, Epilogue ep) {
        if (VECTOR) {
            Gemm.task().single(Gemm.NN, a, aOff, w, wOff, null, 0, c, cOff, m, k, n).bias(bias, biasOff).residual(res, resOff)
                    .relu(relu).epilogue(ep).run(pool);
            return;
        }
        matmul(pool, a, aOff, w, wOff, bias, biasOff, c, cOff, m, k, n, false);
        scalarEpilogue(pool, c, cOff, 0, m, n, res, resOff, relu, ep, 0);
    }

    /** {@link #groupedMatmul} with the epilogue of {@link #matmulFused} (ReLU, then ep per block; no residual). */
    public static void groupedMatmulFused(ThreadPool pool, float[] a, int aOff, float[] w, int wOff, float[] bias, int biasOff,
                                          float[] c, int cOff, int[] offset, int[] rows, int groups, int k, int n,
                                          boolean relu, Epilogue ep) {
        if (VECTOR) {
            Gemm.task().set(Gemm.NN, a, aOff, w, wOff, null, 0, c, cOff, offset, rows, groups, k, n).bias(bias, biasOff)
                    .relu(relu).epilogue(ep).run(pool);
            return;
        }
        groupedMatmul(pool, a, aOff, w, wOff, bias, biasOff, c, cOff, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) scalarEpilogue(pool, c, cOff, offset[x], offset[x] + rows[x], n, null, 0, relu, ep, x);
    }

    /** {@link #groupedMatmulNT} with {@code ep} on each finished block of C (e.g. ReLU's backward mask). */
    public static void groupedMatmulNTFused(ThreadPool pool, float[] b, int bOff, float[] w, int wOff, float[] c, int cOff,
                                            int[] offset, int[] rows, int groups, int k, int n, Epilogue ep) {
        if (VECTOR) {
            Gemm.task().set(Gemm.NT, b, bOff, w, wOff, null, 0, c, cOff, offset, rows, groups, k, n).epilogue(ep).run(pool);
            return;
        }
        groupedMatmulNT(pool, b, bOff, w, wOff, c, cOff, offset, rows, groups, k, n);
        for (int x = 0; x < groups; x++)
            if (rows[x] > 0) scalarEpilogue(pool, c, cOff, offset[x], offset[x] + rows[x], k, null, 0, false, ep, x);
    }

    /** The fused epilogue as separate passes, for the scalar kernels: rows [r0, r1) of C [.. x n]. */
    private static void scalarEpilogue(ThreadPool pool, float[] c, int cOff, int r0, int r1, int n, float[] res, int resOff,
                                       boolean relu, Epilogue ep, int group) {
        if (res != null || relu)
            for (int i = r0 * n; i < r1 * n; i++) {
                float v = c[cOff + i];
                if (res != null) v += res[resOff + i];
                c[cOff + i] = relu ? Math.max(v, 0f) : v;
            }
        if (ep != null) pool.parallelFor(r1 - r0, (lo, hi) -> ep.apply(group, r0 + lo, r0 + hi, 0, n));
    }

    /** C[K x N] += A[M x K]^T B[M x N] (weight gradients). Parallel over rows of C. */
    public static void matmulTN(ThreadPool pool, float[] a, int aOff, float[] b, int bOff, float[] c, int cOff,
                                int m, int k, int n) {
        if (VECTOR) {
            // row r of C is column r of A: read A transposed in place (stride 1 across rows, k along the sum)
            Gemm.task().single(Gemm.TN, a, aOff, c, cOff, b, bOff, null, 0, m, k, n).run(pool);
            return;
        }
        pool.parallelFor(k, (lo, hi) -> {
            for (int m0 = 0; m0 < m; m0 += TN_BLOCK) {
                int m1 = Math.min(m, m0 + TN_BLOCK);
                for (int r = lo; r < hi; r++) {
                    int cr = cOff + r * n;
                    int mm = m0;
                    for (; mm + 3 < m1; mm += 4) {
                        float a0 = a[aOff + mm * k + r], a1 = a[aOff + (mm + 1) * k + r];
                        float a2 = a[aOff + (mm + 2) * k + r], a3 = a[aOff + (mm + 3) * k + r];
                        if (a0 == 0f && a1 == 0f && a2 == 0f && a3 == 0f) continue;
                        int b0 = bOff + mm * n, b1 = b0 + n, b2 = b1 + n, b3 = b2 + n;
                        for (int j = 0; j < n; j++)
                            c[cr + j] += a0 * b[b0 + j] + a1 * b[b1 + j] + a2 * b[b2 + j] + a3 * b[b3 + j];
                    }
                    for (; mm < m1; mm++) {
                        float a0 = a[aOff + mm * k + r];
                        int b0 = bOff + mm * n;
                        for (int j = 0; j < n; j++) c[cr + j] += a0 * b[b0 + j];
                    }
                }
            }
        });
    }

    /** dst[cols x rows] = src[rows x cols]^T. */
    public static void transpose(float[] src, int sOff, int rows, int cols, float[] dst, int dOff) {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) dst[dOff + j * rows + i] = src[sOff + i * cols + j];
    }

    /** db[N] += column sums of dY[M x N]. */
    public static void biasGrad(float[] dy, int dyOff, int m, int n, float[] db, int dbOff) {
        for (int i = 0; i < m; i++) {
            int r = dyOff + i * n;
            for (int j = 0; j < n; j++) db[dbOff + j] += dy[r + j];
        }
    }

    /** out[oo + j] = x[xo + j] + z · y[yo + j] for j < n (multiply, then add: the same bits with or without vectors). */
    public static void addScaled(float[] x, int xo, float z, float[] y, int yo, float[] out, int oo, int n) {
        if (VECTOR) {
            VectorGemm.addScaled(x, xo, z, y, yo, out, oo, n);
            return;
        }
        for (int j = 0; j < n; j++) out[oo + j] = x[xo + j] + z * y[yo + j];
    }

    /** y[yo + j] += z · x[xo + j] for j < n: {@link #addScaled} into y itself. */
    public static void axpy(float z, float[] x, int xo, float[] y, int yo, int n) {
        addScaled(y, yo, z, x, xo, y, yo, n);
    }

    /** Columns per unit of the parallel bias gradients: one 64-byte line of each row. */
    private static final int BIAS_COLS = 16;

    /** {@link #biasGrad} with the columns split over the pool: each column still summed in row order, so the same bits. */
    public static void biasGrad(ThreadPool pool, float[] dy, int dyOff, int m, int n, float[] db, int dbOff) {
        if (m <= 0) return;
        int units = (n + BIAS_COLS - 1) / BIAS_COLS;
        pool.parallelFor(units, (lo, hi) -> columnSums(dy, dyOff, n, m, db, dbOff, lo * BIAS_COLS, Math.min(n, hi * BIAS_COLS)));
    }

    /**
     * Every group's bias gradient db_x[N] += column sums of rows [offset[x], offset[x] + rows[x]) of
     * dY[.. x N], db_x at dbOff + x·N; (group, block of columns) units over the pool, the same bits as
     * {@link #biasGrad} per group.
     */
    public static void groupedBiasGrad(ThreadPool pool, float[] dy, int dyOff, int[] offset, int[] rows, int groups, int n,
                                       float[] db, int dbOff) {
        int per = (n + BIAS_COLS - 1) / BIAS_COLS;
        pool.parallelFor(groups * per, (lo, hi) -> {
            for (int u = lo; u < hi; u++) {
                int x = u / per, j0 = u % per * BIAS_COLS;
                if (rows[x] > 0) columnSums(dy, dyOff + offset[x] * n, n, rows[x], db, dbOff + x * n, j0, Math.min(n, j0 + BIAS_COLS));
            }
        });
    }

    /** db[j] += Σ_i dy[dyOff + i·ld + j] for j in [j0, j1), rows in order. */
    private static void columnSums(float[] dy, int dyOff, int ld, int m, float[] db, int dbOff, int j0, int j1) {
        int j = j0;
        if (VECTOR) {
            int w = (j1 - j0) / VectorGemm.L * VectorGemm.L;
            if (w > 0) VectorGemm.columnSums(dy, dyOff + j0, ld, m, w, db, dbOff + j0);
            j += w;
        }
        for (; j < j1; j++) {
            float s = db[dbOff + j];
            for (int i = 0, o = dyOff + j; i < m; i++, o += ld) s += dy[o];
            db[dbOff + j] = s;
        }
    }

    /** y = LayerNorm(x) * g + b over rows of width d; saves mean and 1/std per row. */
    public static void layerNorm(ThreadPool pool, float[] x, int xOff, float[] g, int gOff, float[] bta, int bOff,
                                 float[] y, int yOff, float[] mean, float[] rstd, int statOff, int rows, int d) {
        if (VECTOR) {
            pool.parallelFor(rows, (lo, hi) -> {
                for (int t = lo; t < hi; t++)
                    VectorGemm.layerNormRow(x, xOff + t * d, g, gOff, bta, bOff, y, yOff + t * d, d, mean, rstd, statOff + t, LN_EPS);
            });
            return;
        }
        pool.parallelFor(rows, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                int r = xOff + t * d;
                float s = 0;
                for (int j = 0; j < d; j++) s += x[r + j];
                float mu = s / d;
                float v = 0;
                for (int j = 0; j < d; j++) {
                    float z = x[r + j] - mu;
                    v += z * z;
                }
                float rs = (float) (1.0 / Math.sqrt(v / d + LN_EPS));
                mean[statOff + t] = mu;
                rstd[statOff + t] = rs;
                int o = yOff + t * d;
                for (int j = 0; j < d; j++) y[o + j] = (x[r + j] - mu) * rs * g[gOff + j] + bta[bOff + j];
            }
        });
    }

    /** Rows per block of the one-pass LayerNorm backward: each block's dg/db partial sums are added in block order. */
    public static final int LN_BLOCK = 64;

    /** Floats of the partial-sum buffer {@link #layerNormBackwardOnePass} needs for {@code rows} rows of width d. */
    public static int layerNormPartials(int rows, int d) {
        return (rows + LN_BLOCK - 1) / LN_BLOCK * 2 * d;
    }

    /**
     * LayerNorm backward as {@link #layerNormBackward}, in one pass over the rows instead of two:
     * each block of {@link #LN_BLOCK} rows writes dx and its own partial sums of dg and db into
     * {@code partial} (at least {@link #layerNormPartials} floats), which are then added into dg and
     * db in block order, so the result does not depend on the thread count.
     */
    public static void layerNormBackwardOnePass(ThreadPool pool, float[] x, int xOff, float[] g, int gOff,
                                                float[] mean, float[] rstd, int statOff, float[] dy, int dyOff,
                                                float[] dx, int dxOff, float[] dg, int dgOff, float[] db, int dbOff,
                                                int rows, int d, boolean accDx, float[] partial) {
        int blocks = (rows + LN_BLOCK - 1) / LN_BLOCK;
        pool.parallelFor(blocks, (lo, hi) -> {
            for (int blk = lo; blk < hi; blk++) {
                int p = blk * 2 * d;
                java.util.Arrays.fill(partial, p, p + 2 * d, 0f);
                layerNormBackwardRows(x, xOff, g, gOff, mean, rstd, statOff, dy, dyOff, dx, dxOff, d, accDx,
                        blk * LN_BLOCK, Math.min(rows, (blk + 1) * LN_BLOCK), partial, p);
            }
        });
        addPartials(partial, blocks, d, dg, dgOff, db, dbOff);
    }

    /**
     * Rows [t0, t1) of LayerNorm's backward: dx (+)= as {@link #layerNormBackward}, and
     * part[p + j] += dy·x̂, part[p + d + j] += dy over the rows, in row order.
     */
    static void layerNormBackwardRows(float[] x, int xOff, float[] g, int gOff, float[] mean, float[] rstd, int statOff,
                                      float[] dy, int dyOff, float[] dx, int dxOff, int d, boolean accDx, int t0, int t1,
                                      float[] part, int p) {
        for (int t = t0; t < t1; t++) {
            int r = xOff + t * d, o = dyOff + t * d, q = dxOff + t * d;
            float mu = mean[statOff + t], rs = rstd[statOff + t];
            layerNormBackRow(x, r, g, gOff, mu, rs, dy, o, dx, q, d, accDx);
            if (VECTOR) {
                VectorGemm.lnParamPartials(x, r, mu, rs, dy, o, part, p, d);
                continue;
            }
            for (int j = 0; j < d; j++) {
                part[p + j] += dy[o + j] * ((x[r + j] - mu) * rs);
                part[p + d + j] += dy[o + j];
            }
        }
    }

    /** One row of LayerNorm's input gradient: dx (+)= rs · (dy·g - mean(dy·g) - x̂ · mean(dy·g·x̂)). */
    private static void layerNormBackRow(float[] x, int r, float[] g, int gOff, float mu, float rs, float[] dy, int o,
                                         float[] dx, int q, int d, boolean accDx) {
        if (VECTOR) {
            VectorGemm.layerNormBackRow(x, r, g, gOff, mu, rs, dy, o, dx, q, d, accDx);
            return;
        }
        float sdy = 0, sdyx = 0;
        for (int j = 0; j < d; j++) {
            float dxh = dy[o + j] * g[gOff + j];
            sdy += dxh;
            sdyx += dxh * (x[r + j] - mu) * rs;
        }
        float m1 = sdy / d, m2 = sdyx / d;
        for (int j = 0; j < d; j++) {
            float xh = (x[r + j] - mu) * rs;
            float v = rs * (dy[o + j] * g[gOff + j] - m1 - xh * m2);
            dx[q + j] = accDx ? dx[q + j] + v : v;
        }
    }

    /** dg[j] += Σ_blocks part[b·2d + j], db[j] += Σ_blocks part[b·2d + d + j], the blocks in order. */
    static void addPartials(float[] part, int blocks, int d, float[] dg, int dgOff, float[] db, int dbOff) {
        for (int b = 0; b < blocks; b++) {
            int p = b * 2 * d;
            for (int j = 0; j < d; j++) dg[dgOff + j] += part[p + j];
            for (int j = 0; j < d; j++) db[dbOff + j] += part[p + d + j];
        }
    }

    /**
     * LayerNorm backward: dx (+)= ..., dg += sum dy * xhat, db += sum dy. dx is accumulated when
     * {@code accDx} (a residual branch adds into the stream's gradient).
     */
    public static void layerNormBackward(ThreadPool pool, float[] x, int xOff, float[] g, int gOff,
                                         float[] mean, float[] rstd, int statOff, float[] dy, int dyOff,
                                         float[] dx, int dxOff, float[] dg, int dgOff, float[] db, int dbOff,
                                         int rows, int d, boolean accDx) {
        pool.parallelFor(rows, (lo, hi) -> {
            for (int t = lo; t < hi; t++)
                layerNormBackRow(x, xOff + t * d, g, gOff, mean[statOff + t], rstd[statOff + t], dy, dyOff + t * d, dx, dxOff + t * d, d, accDx);
        });
        // parameter gradients: split by columns so each sum runs in a fixed order
        pool.parallelFor(d, (lo, hi) -> {
            for (int t = 0; t < rows; t++) {
                int r = xOff + t * d, o = dyOff + t * d;
                float mu = mean[statOff + t], rs = rstd[statOff + t];
                for (int j = lo; j < hi; j++) {
                    dg[dgOff + j] += dy[o + j] * (x[r + j] - mu) * rs;
                    db[dbOff + j] += dy[o + j];
                }
            }
        });
    }

    /**
     * T5's norm (RMS norm, the LayerNorm family without mean or bias): y = x / sqrt(mean(x²) + eps) · g
     * over rows of width d, in fp32; saves 1/rms per row in {@code rstd}.
     */
    public static void rmsNorm(ThreadPool pool, float[] x, int xOff, float[] g, int gOff, float[] y, int yOff,
                               float[] rstd, int statOff, int rows, int d, float eps) {
        pool.parallelFor(rows, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                if (VECTOR) {
                    VectorGemm.rmsNormRow(x, xOff + t * d, g, gOff, y, yOff + t * d, d, rstd, statOff + t, eps);
                    continue;
                }
                int r = xOff + t * d;
                float v = 0;
                for (int j = 0; j < d; j++) v += x[r + j] * x[r + j];
                float rs = (float) (1.0 / Math.sqrt(v / d + eps));
                rstd[statOff + t] = rs;
                int o = yOff + t * d;
                for (int j = 0; j < d; j++) y[o + j] = x[r + j] * rs * g[gOff + j];
            }
        });
    }

    /**
     * RMS norm backward: dx (+)= rs · (dy·g - x̂ · mean(dy·g·x̂)) with x̂ = x · rs, dg += Σ_rows dy · x̂.
     * dx is accumulated when {@code accDx} (a residual branch adds into the stream's gradient).
     */
    public static void rmsNormBackward(ThreadPool pool, float[] x, int xOff, float[] g, int gOff, float[] rstd, int statOff,
                                       float[] dy, int dyOff, float[] dx, int dxOff, float[] dg, int dgOff,
                                       int rows, int d, boolean accDx) {
        pool.parallelFor(rows, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                float rs = rstd[statOff + t];
                if (VECTOR) {
                    VectorGemm.rmsNormBackRow(x, xOff + t * d, g, gOff, rs, dy, dyOff + t * d, dx, dxOff + t * d, d, accDx);
                    continue;
                }
                int r = xOff + t * d, o = dyOff + t * d, q = dxOff + t * d;
                float sdyx = 0;
                for (int j = 0; j < d; j++) sdyx += dy[o + j] * g[gOff + j] * x[r + j] * rs;
                float m2 = sdyx / d;
                for (int j = 0; j < d; j++) {
                    float v = rs * (dy[o + j] * g[gOff + j] - x[r + j] * rs * m2);
                    dx[q + j] = accDx ? dx[q + j] + v : v;
                }
            }
        });
        if (dg == null) return;
        // the weight's gradient: split by columns so each sum runs over the rows in a fixed order
        pool.parallelFor(d, (lo, hi) -> {
            for (int t = 0; t < rows; t++) {
                int r = xOff + t * d, o = dyOff + t * d;
                float rs = rstd[statOff + t];
                for (int j = lo; j < hi; j++) dg[dgOff + j] += dy[o + j] * x[r + j] * rs;
            }
        });
    }

    /** The FFN activations with a backward: ReLU, GELU (erf), GELU (tanh approximation, HF's gelu_new), SiLU. */
    public enum Activation { RELU, GELU, GELU_TANH, SILU }

    private static final double SQRT_2_OVER_PI = Math.sqrt(2.0 / Math.PI), INV_SQRT2 = 1.0 / Math.sqrt(2.0),
            INV_SQRT_2PI = 1.0 / Math.sqrt(2.0 * Math.PI);

    /** out[i] = act(pre[i]) for i in [off, off + len); out may be pre (in place). Parallel over elements. */
    public static void activate(ThreadPool pool, Activation a, float[] pre, float[] out, int off, int len) {
        int chunks = Math.max(1, Math.min(64, len / 4096));
        pool.parallelFor(chunks, (c0, c1) -> {
            int lo = off + (int) ((long) len * c0 / chunks), hi = off + (int) ((long) len * c1 / chunks);
            switch (a) {
                case RELU -> {
                    for (int i = lo; i < hi; i++) out[i] = pre[i] > 0f ? pre[i] : 0f;
                }
                case GELU -> {
                    for (int i = lo; i < hi; i++) {
                        double x = pre[i];
                        out[i] = (float) (0.5 * x * (1 + erf(x * INV_SQRT2)));
                    }
                }
                case GELU_TANH -> {
                    for (int i = lo; i < hi; i++) {
                        double x = pre[i];
                        out[i] = (float) (0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))));
                    }
                }
                case SILU -> {
                    for (int i = lo; i < hi; i++) {
                        double x = pre[i];
                        out[i] = (float) (x / (1 + Math.exp(-x)));
                    }
                }
            }
        });
    }

    /**
     * dh[i] *= act'(pre[i]) for i in [off, off + len), given the activation's input {@code pre}
     * (for ReLU its output works as well: both are positive exactly where the slope is 1).
     */
    public static void activationBackward(ThreadPool pool, Activation a, float[] pre, float[] dh, int off, int len) {
        int chunks = Math.max(1, Math.min(64, len / 4096));
        pool.parallelFor(chunks, (c0, c1) -> {
            int lo = off + (int) ((long) len * c0 / chunks), hi = off + (int) ((long) len * c1 / chunks);
            switch (a) {
                case RELU -> {
                    for (int i = lo; i < hi; i++) if (pre[i] <= 0f) dh[i] = 0f;
                }
                case GELU -> {
                    for (int i = lo; i < hi; i++) {
                        double x = pre[i];
                        double dg = 0.5 * (1 + erf(x * INV_SQRT2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
                        dh[i] = (float) (dh[i] * dg);
                    }
                }
                case GELU_TANH -> {
                    for (int i = lo; i < hi; i++) {
                        double x = pre[i];
                        double t = Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
                        double dg = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
                        dh[i] = (float) (dh[i] * dg);
                    }
                }
                case SILU -> {
                    for (int i = lo; i < hi; i++) {
                        double x = pre[i], sg = 1 / (1 + Math.exp(-x));
                        dh[i] = (float) (dh[i] * sg * (1 + x * (1 - sg)));
                    }
                }
            }
        });
    }

    /**
     * The error function, |relative error of erfc| < 1.2e-7 everywhere (the Chebyshev fit of
     * Numerical Recipes' erfcc), enough for fp32 GELU.
     */
    static double erf(double x) {
        double z = Math.abs(x), t = 1 / (1 + 0.5 * z);
        double r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
                + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
                + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? 1 - r : r - 1;
    }

    /**
     * Causal multi-head attention for {@code nSeq} sequences of {@code s} tokens: q, k, v, out are
     * [tokens x d] with head h in columns [h*hd, (h+1)*hd); att [nSeq x heads x s x s] keeps the
     * softmax weights for the backward pass.
     */
    public static void attention(ThreadPool pool, float[] q, float[] k, float[] v, float[] att, int attOff,
                                 float[] out, int nSeq, int s, int heads, int d) {
        attention(pool, q, k, v, att, attOff, out, nSeq, s, heads, d, 0f, 0L);
    }

    /**
     * Dropout factor of attention weight (bh, i, j): 0 when dropped, else 1 / (1 - rate); the mask is
     * {@link Rng#uniform} of {@code key}, so backward redraws it instead of storing it.
     */
    static float keep(long key, long index, float rate) {
        return Rng.uniform(key, index) < rate ? 0f : 1f / (1f - rate);
    }

    /**
     * Causal attention as above with dropout on the attention weights (rate {@code drop}, mask from
     * {@code key}); {@code att} keeps the weights before dropout.
     */
    public static void attention(ThreadPool pool, float[] q, float[] k, float[] v, float[] att, int attOff,
                                 float[] out, int nSeq, int s, int heads, int d, float drop, long key) {
        int hd = d / heads;
        float scale = (float) (1.0 / Math.sqrt(hd));
        if (VECTOR) {
            pool.parallelFor(nSeq * heads, (lo, hi) -> {
                float[] tmp = scratch(hd * s + s * s); // Kᵀ of one head, then the dropped-out weights
                int pd = hd * s;
                for (int bh = lo; bh < hi; bh++) {
                    int base = (bh / heads) * s * d + (bh % heads) * hd, ab = attOff + bh * s * s;
                    for (int j = 0; j < s; j++)
                        for (int c = 0; c < hd; c++) tmp[c * s + j] = k[base + j * d + c];
                    // scores = Q Kᵀ over all s x s pairs (the masked half is cheaper to compute than to skip)
                    VectorGemm.rows(q, base, d, 1, tmp, 0, s, null, 0, att, ab, s, 0, s, hd, s, false);
                    for (int i = 0; i < s; i++) causalSoftmaxRow(att, ab + i * s, i, s, scale);
                    if (drop > 0f) {
                        dropWeights(att, ab, tmp, pd, bh, s, key, drop);
                        VectorGemm.rows(tmp, pd, s, 1, v, base, d, null, 0, out, base, d, 0, s, s, hd, false);
                    } else {
                        VectorGemm.rows(att, ab, s, 1, v, base, d, null, 0, out, base, d, 0, s, s, hd, false);
                    }
                }
            });
            return;
        }
        pool.parallelFor(nSeq * heads, (lo, hi) -> {
            for (int bh = lo; bh < hi; bh++) {
                int b = bh / heads, h = bh % heads;
                int base = b * s * d + h * hd;
                int ab = attOff + bh * s * s;
                for (int i = 0; i < s; i++) {
                    int qi = base + i * d, ar = ab + i * s;
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j <= i; j++) {
                        int kj = base + j * d;
                        float dot = dot(q, qi, k, kj, hd) * scale;
                        att[ar + j] = dot;
                        if (dot > max) max = dot;
                    }
                    float sum = 0;
                    for (int j = 0; j <= i; j++) {
                        float e = (float) Math.exp(att[ar + j] - max);
                        att[ar + j] = e;
                        sum += e;
                    }
                    float inv = 1f / sum;
                    for (int j = 0; j <= i; j++) att[ar + j] *= inv;
                    for (int j = i + 1; j < s; j++) att[ar + j] = 0f;
                    int oi = qi;
                    for (int c = 0; c < hd; c++) out[oi + c] = 0f;
                    long mi = ((long) bh * s + i) * s;
                    for (int j = 0; j <= i; j++) {
                        float p = att[ar + j];
                        if (drop > 0f) p *= keep(key, mi + j, drop);
                        axpy(p, v, base + j * d, out, oi, hd);
                    }
                }
            }
        });
    }

    /** Attention backward: writes dq, dk, dv (not accumulated); {@code scratch} holds s floats per (b,h). */
    public static void attentionBackward(ThreadPool pool, float[] q, float[] k, float[] v, float[] att, int attOff,
                                         float[] dout, float[] dq, float[] dk, float[] dv, float[] scratch,
                                         int nSeq, int s, int heads, int d) {
        attentionBackward(pool, q, k, v, att, attOff, dout, dq, dk, dv, scratch, nSeq, s, heads, d, 0f, 0L);
    }

    /** Attention backward with the dropout of {@link #attention} (same rate and key). */
    public static void attentionBackward(ThreadPool pool, float[] q, float[] k, float[] v, float[] att, int attOff,
                                         float[] dout, float[] dq, float[] dk, float[] dv, float[] scratch,
                                         int nSeq, int s, int heads, int d, float drop, long key) {
        int hd = d / heads;
        float scale = (float) (1.0 / Math.sqrt(hd));
        if (VECTOR) {
            pool.parallelFor(nSeq * heads, (lo, hi) -> {
                float[] ds = scratch(2 * s * s); // dS, then the dropped-out weights
                int pd = s * s;
                for (int bh = lo; bh < hi; bh++) {
                    int base = (bh / heads) * s * d + (bh % heads) * hd, ab = attOff + bh * s * s;
                    // dP = dO Vᵀ (times the dropout mask); dS = P ⊙ (dP - rowsum(P ⊙ dP)) · scale, zero above the diagonal as P is
                    VectorGemm.rowsNT(dout, base, d, v, base, d, ds, 0, s, 0, s, hd, s, false);
                    if (drop > 0f) {
                        for (int i = 0; i < s; i++) {
                            long mi = ((long) bh * s + i) * s;
                            for (int j = 0; j <= i; j++) ds[i * s + j] *= keep(key, mi + j, drop);
                        }
                    }
                    for (int i = 0; i < s; i++) {
                        int r = i * s, ar = ab + i * s;
                        float dot = 0;
                        for (int j = 0; j <= i; j++) dot += att[ar + j] * ds[r + j];
                        for (int j = 0; j < s; j++) ds[r + j] = att[ar + j] * (ds[r + j] - dot) * scale;
                    }
                    VectorGemm.rows(ds, 0, s, 1, k, base, d, null, 0, dq, base, d, 0, s, s, hd, false);   // dQ = dS K
                    VectorGemm.rows(ds, 0, 1, s, q, base, d, null, 0, dk, base, d, 0, s, s, hd, false);   // dK = dSᵀ Q
                    if (drop > 0f) { // dV = (P ⊙ mask)ᵀ dO
                        dropWeights(att, ab, ds, pd, bh, s, key, drop);
                        VectorGemm.rows(ds, pd, 1, s, dout, base, d, null, 0, dv, base, d, 0, s, s, hd, false);
                    } else { // dV = Pᵀ dO
                        VectorGemm.rows(att, ab, 1, s, dout, base, d, null, 0, dv, base, d, 0, s, s, hd, false);
                    }
                }
            });
            return;
        }
        pool.parallelFor(nSeq * heads, (lo, hi) -> {
            for (int bh = lo; bh < hi; bh++) {
                int b = bh / heads, h = bh % heads;
                int base = b * s * d + h * hd;
                int ab = attOff + bh * s * s;
                int sc = bh * s;
                for (int i = 0; i < s; i++) {
                    int r = base + i * d;
                    for (int c = 0; c < hd; c++) {
                        dq[r + c] = 0f;
                        dk[r + c] = 0f;
                        dv[r + c] = 0f;
                    }
                }
                for (int i = 0; i < s; i++) {
                    int oi = base + i * d, ar = ab + i * s;
                    float dot = 0;
                    long mi = ((long) bh * s + i) * s;
                    for (int j = 0; j <= i; j++) {
                        int vj = base + j * d;
                        float p = att[ar + j];
                        float da = dot(dout, oi, v, vj, hd);
                        if (drop > 0f) { // out uses p * keep: dv gets p * keep, d p = keep * d(p * keep)
                            float kp = keep(key, mi + j, drop);
                            axpy(p * kp, dout, oi, dv, vj, hd);
                            da *= kp;
                        } else {
                            axpy(p, dout, oi, dv, vj, hd);
                        }
                        scratch[sc + j] = da;
                        dot += p * da;
                    }
                    for (int j = 0; j <= i; j++) {
                        float ds = att[ar + j] * (scratch[sc + j] - dot) * scale;
                        int kj = base + j * d;
                        axpy(ds, k, kj, dq, oi, hd);
                        axpy(ds, q, oi, dk, kj, hd);
                    }
                }
            }
        });
    }

    /**
     * The machine's single-precision FMA peak in GFLOP/s on all of the pool's threads (NaN without
     * the Vector API): the physical limit bench compares with. Every thread runs register-only FMA
     * chains ({@link Gemm#fmaChains}) in bursts of about 0.6 ms for {@code seconds}, all threads busy
     * at once; each thread's best burst counts (bursts a time-shared core lost part of are the
     * others), and the peak is their sum. The first quarter (short calls) warms up the JIT.
     */
    public static double fmaPeakGflops(ThreadPool pool, double seconds) {
        if (!VECTOR) return Double.NaN;
        int threads = pool.threads(), iters = 64 * 1024 * 1024 / Gemm.FMA_CHAIN_FLOPS / 2 * 2; // about 0.6 ms a burst
        double[] best = new double[threads];
        float[] sink = new float[threads];
        long warm = (long) (seconds * 0.25e9), end = (long) (seconds * 1e9);
        pool.parallelFor(threads, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                // warm-up in short calls, so that the JIT compiles the chains rather than interpreting long bursts
                long start = System.nanoTime();
                for (long now = start; now - start < end; now = System.nanoTime()) {
                    boolean warming = now - start < warm;
                    int n = warming ? 64 : iters;
                    sink[t] += Gemm.fmaChains(n);
                    if (!warming) best[t] = Math.max(best[t], (double) Gemm.FMA_CHAIN_FLOPS * n / (System.nanoTime() - now));
                }
            }
        });
        double sum = 0;
        for (double b : best) sum += b;
        return sum;
    }

    /** {@link #fmaPeakGflops(ThreadPool, double)} over 3 seconds. */
    public static double fmaPeakGflops(ThreadPool pool) {
        return fmaPeakGflops(pool, 3.0);
    }

    /** dst[pd + i·s + j] = P[i, j] · keep(i, j): the attention weights of unit bh after dropout. */
    private static void dropWeights(float[] att, int ab, float[] dst, int pd, int bh, int s, long key, float drop) {
        for (int i = 0; i < s; i++) {
            long mi = ((long) bh * s + i) * s;
            for (int j = 0; j < s; j++) dst[pd + i * s + j] = j <= i ? att[ab + i * s + j] * keep(key, mi + j, drop) : 0f;
        }
    }

    /** Row i of scaled scores → causal softmax in place: positions j > i get weight 0. */
    private static void causalSoftmaxRow(float[] att, int r, int i, int s, float scale) {
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j <= i; j++) max = Math.max(max, att[r + j] * scale);
        float sum = 0;
        for (int j = 0; j <= i; j++) {
            float e = (float) Math.exp(att[r + j] * scale - max);
            att[r + j] = e;
            sum += e;
        }
        float inv = 1f / sum;
        for (int j = 0; j <= i; j++) att[r + j] *= inv;
        for (int j = i + 1; j < s; j++) att[r + j] = 0f;
    }

    private static final ThreadLocal<float[][]> SCRATCH = ThreadLocal.withInitial(() -> new float[1][0]);

    /** A per-thread scratch array of at least n floats, allocated on first use and when it must grow. */
    private static float[] scratch(int n) {
        float[][] holder = SCRATCH.get();
        if (holder[0].length < n) holder[0] = new float[n];
        return holder[0];
    }

    /** Σ x[i]² over [lo, hi), in double across blocks. */
    public static double sumSquares(float[] x, int lo, int hi) {
        if (VECTOR) return VectorGemm.sumSquares(x, lo, hi);
        double s = 0;
        for (int i = lo; i < hi; i++) s += (double) x[i] * x[i];
        return s;
    }

    /** Σ (x[xo + i] · w[wo + i])² over i < n, in float lanes within blocks of 1024, the blocks added in double. */
    public static double sumSquaresScaled(float[] x, int xo, float[] w, int wo, int n) {
        if (VECTOR) return VectorGemm.sumSquaresScaled(x, xo, w, wo, n);
        double s = 0;
        for (int i = 0; i < n; i++) {
            double v = (double) x[xo + i] * w[wo + i];
            s += v * v;
        }
        return s;
    }

    /** Σ x[xo + i] · y[yo + i], i < len. */
    static float dot(float[] x, int xo, float[] y, int yo, int len) {
        float s = 0;
        for (int i = 0; i < len; i++) s += x[xo + i] * y[yo + i];
        return s;
    }

    /** Row softmax of [rows x n] in place. */
    public static void softmaxRows(float[] x, int off, int rows, int n) {
        softmaxRows(x, off, rows, n, null, 0);
    }

    /** Row softmax in place; when {@code lse} is not null it also gets each row's logsumexp (z-loss). */
    public static void softmaxRows(float[] x, int off, int rows, int n, float[] lse, int lseOff) {
        for (int t = 0; t < rows; t++) {
            int r = off + t * n;
            float max = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < n; j++) max = Math.max(max, x[r + j]);
            float sum = 0;
            for (int j = 0; j < n; j++) {
                float e = (float) Math.exp(x[r + j] - max);
                x[r + j] = e;
                sum += e;
            }
            float inv = 1f / sum;
            for (int j = 0; j < n; j++) x[r + j] *= inv;
            if (lse != null) lse[lseOff + t] = max + (float) Math.log(sum);
        }
    }

    /**
     * Cross-entropy of logits [rows x n] against targets: per-token loss into {@code losses}, and
     * (when {@code dlogits} is not null) d(mean loss)/d logits.
     */
    public static void crossEntropy(ThreadPool pool, float[] logits, int[] targets, float[] losses, int[] correct,
                                    float[] dlogits, int rows, int n) {
        float invRows = 1f / rows;
        pool.parallelFor(rows, (lo, hi) -> {
            for (int t = lo; t < hi; t++) {
                int r = t * n;
                float max = Float.NEGATIVE_INFINITY;
                int arg = 0;
                for (int j = 0; j < n; j++) {
                    if (logits[r + j] > max) {
                        max = logits[r + j];
                        arg = j;
                    }
                }
                double sum = 0;
                if (dlogits != null) { // each exp once: kept in dlogits, then scaled
                    for (int j = 0; j < n; j++) {
                        double ex = Math.exp(logits[r + j] - max);
                        dlogits[r + j] = (float) ex;
                        sum += ex;
                    }
                } else {
                    for (int j = 0; j < n; j++) sum += Math.exp(logits[r + j] - max);
                }
                int y = targets[t];
                losses[t] = (float) (Math.log(sum) + max - logits[r + y]);
                correct[t] = arg == y ? 1 : 0;
                if (dlogits != null) {
                    float inv = (float) (1.0 / sum);
                    for (int j = 0; j < n; j++) dlogits[r + j] = dlogits[r + j] * inv * invRows;
                    dlogits[r + y] -= invRows;
                }
            }
        });
    }

    public static void relu(float[] x, int off, int len) {
        for (int i = off; i < off + len; i++) if (x[i] < 0f) x[i] = 0f;
    }

    /** dh *= (h > 0): ReLU backward given its output. */
    public static void reluBackward(float[] h, float[] dh, int off, int len) {
        reluBackward(h, dh, off, len, 1f);
    }

    /** dh = 0 where h <= 0, else dh · scale (scale = 1 leaves it), over [off, off + len). */
    public static void reluBackward(float[] h, float[] dh, int off, int len, float scale) {
        if (VECTOR) {
            VectorGemm.reluBackward(h, dh, off, len, scale);
            return;
        }
        for (int i = off; i < off + len; i++) {
            if (h[i] <= 0f) dh[i] = 0f;
            else if (scale != 1f) dh[i] *= scale;
        }
    }

    /** Adam with bias correction on [lo, hi) of the flat buffers; gradients scaled by gradScale first. */
    public static void adam(float[] p, float[] g, float[] m, float[] v, int lo, int hi, float lr, float gradScale,
                            float beta1, float beta2, float eps, int t) {
        adam(p, 0, g, 0, m, v, lo, hi, lr, gradScale, beta1, beta2, eps, t);
    }

    /**
     * Adam on elements [lo, hi) of one tensor that lies at {@code pOff} in p and {@code gOff} in g
     * (moments m, v indexed from 0): p[pOff + i] -= lr / bc1 · m_i / (sqrt(v_i) / sqrt(bc2) + eps).
     */
    public static void adam(float[] p, int pOff, float[] g, int gOff, float[] m, float[] v, int lo, int hi, float lr,
                            float gradScale, float beta1, float beta2, float eps, int t) {
        float bc1 = (float) (1 - Math.pow(beta1, t));
        float bc2 = (float) (1 - Math.pow(beta2, t));
        float stepSize = lr / bc1;
        float invSqrtBc2 = (float) (1.0 / Math.sqrt(bc2));
        float ob1 = 1 - beta1, ob2 = 1 - beta2;
        int i = lo;
        if (VECTOR) i = VectorGemm.adam(p, pOff, g, gOff, m, v, lo, hi, gradScale, beta1, beta2, ob1, ob2, stepSize, invSqrtBc2, eps);
        for (; i < hi; i++) {
            float gi = g[gOff + i] * gradScale;
            float mi = beta1 * m[i] + ob1 * gi;
            float vi = beta2 * v[i] + ob2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[pOff + i] -= stepSize * mi / ((float) Math.sqrt(vi) * invSqrtBc2 + eps);
        }
    }
}
