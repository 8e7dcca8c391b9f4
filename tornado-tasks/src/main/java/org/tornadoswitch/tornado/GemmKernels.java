package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The model's matrix products as {@link KernelContext} kernels: every linear layer forward
 * ({@link #linearPanel}), its input gradient ({@link #inputGradPanel}) and its weight and bias
 * gradient ({@link #weightGradPanel}), each over a group of independent products in one launch
 * (the experts of a layer, or the Q, K and V projections), with the epilogue fused (bias, ReLU,
 * hidden dropout, residual dropout and add, ReLU mask of the backward) and the gather of expert rows
 * by slot fused into the operand loads.
 *
 * <p>Each kernel comes in two forms with the same arguments and results; {@link KernelForm} picks one
 * by the device kind:
 * <ul>
 * <li><b>tiled</b> (GPUs): 16 x 16 work items per work-group, each accumulating a 4 x 4 register block
 * (rows and columns strided by 16) of a 64 x 64 output tile; both operands are staged in local memory
 * in K-tiles of 16.</li>
 * <li><b>panel</b> (CPU OpenCL devices such as PoCL): one work item per work-group computes a 64 x 16
 * tile as 8 row blocks of an 8 x 16 register block, reading the B operand from a K x 16 panel staged
 * in local memory. TornadoVM addresses global memory through integer arithmetic, which hides the
 * stride from the CPU compiler's vectorizer; a local array is indexed directly, so the 16 columns of a
 * panel row vectorize. The GPU's tile form runs 3-4x slower than this on PoCL (barriers split the
 * kernel into work-item loops whose accumulators live in memory).</li>
 * </ul>
 *
 * <p>Private arrays are initialized explicitly: TornadoVM does not zero them as Java does.
 *
 * <p>Shapes are scalar arguments, which TornadoVM specializes as constants, so each task's kernel is
 * compiled for its own layer: the mode bits below fold away. Row counts are per group; a group's rows
 * beyond its expert's kept count (when {@link #VALID_ROWS} is set, from the routing's grouped offsets)
 * are neither computed nor written, and the backward kernels never read them either.
 */
public final class GemmKernels {
    private GemmKernels() {}

    // ---------------------------------------------------------------- mode bits of {@code flags}

    /** Bits 0-11: number of groups G. */
    public static final int GROUP_MASK = 0xFFF;
    /**
     * Groups share the input (Q, K, V): W and b of group g at wOff + g (K N + N), output plane g at g
     * rows N. Otherwise groups are row blocks (experts): A and output rows g rows + r, W_g at wOff + g K N
     * and all biases after all weights, b_g at wOff + G K N + g N.
     */
    public static final int SHARED_INPUT = 1 << 12;
    /** Epilogue of the forward (bits 13-14): none, ReLU, or residual (y = res + keep(r N + c) s). */
    public static final int EPI_RELU = 1 << 13, EPI_RESIDUAL = 2 << 13;
    /** A rows are gathered: row r of group g is token rowMap[g rows + r] / topK, or zeros when negative. */
    public static final int GATHER = 1 << 15;
    /** Only the first offsets[g + 1] - offsets[g] rows of group g are real. */
    public static final int VALID_ROWS = 1 << 16;
    /** Bits 17-20: topK, the assignments per token (gather's divisor). */
    public static final int TOPK_SHIFT = 17;
    /** Forward: dropout on the ReLU output, mask index (offsets[g] + r) N + c (the JVM's grouped row). */
    public static final int HIDDEN_DROPOUT = 1 << 21;
    /** Input gradient: add to the output instead of overwriting it. */
    public static final int ACCUMULATE = 1 << 22;
    /** Input gradient: times (h > 0) / (1 - rate), the backward of ReLU and hidden dropout. */
    public static final int RELU_MASK = 1 << 23;

    /** Flags for G groups with the given bits. */
    public static int flags(int groups, int bits) {
        if (groups < 1 || groups > GROUP_MASK) throw new IllegalArgumentException("groups " + groups);
        return groups | bits;
    }

    public static int topK(int k) {
        return k << TOPK_SHIFT;
    }

    // ---------------------------------------------------------------- panel form (CPU devices)

    /** Panel form: rows of a register block, its columns, row blocks per work-group, panel depth. */
    public static final int PR = 8, PC = 16, PRB = 8, PK = 512;
    /** Rows of output a panel work-group computes. */
    public static final int PANEL_ROWS = PR * PRB;

    // ---------------------------------------------------------------- tiled form (GPUs)

    /** Tiled form: work items per side, register block per side, tile side, K-tile depth. */
    public static final int TW = 16, TR = 4, TS = TW * TR, TK = 16;

    // ---------------------------------------------------------------- shared pieces

    private static int groups(int flags) {
        return flags & GROUP_MASK;
    }

    private static boolean on(int flags, int bit) {
        return (flags & bit) != 0;
    }

    /** Real rows of group g: all rows, or its expert's kept count. */
    private static int limit(IntArray offsets, int g, int rows, int flags) {
        int lim = rows;
        if (on(flags, VALID_ROWS)) lim = Math.min(rows, offsets.get(g + 1) - offsets.get(g));
        return lim;
    }

    private static int weightBase(int wOff, int g, int n, int k, int flags) {
        return on(flags, SHARED_INPUT) ? wOff + g * (k * n + n) : wOff + g * k * n;
    }

    private static int biasBase(int wOff, int g, int n, int k, int flags) {
        return on(flags, SHARED_INPUT) ? wOff + g * (k * n + n) + k * n : wOff + groups(flags) * k * n + g * n;
    }

    /**
     * Start of A row r of group g in x (the forward and the weight gradient's input): the gathered
     * token's row, the group's own row, or the shared input's row; -1 for an empty slot.
     */
    private static int inputRow(IntArray rowMap, int g, int r, int rows, int k, int flags) {
        int base;
        if (on(flags, GATHER)) {
            int a = rowMap.get(g * rows + r);
            int kk = (flags >> TOPK_SHIFT) & 0xF;
            base = a < 0 ? -1 : (a / kk) * k;
        } else if (on(flags, SHARED_INPUT)) {
            base = r * k;
        } else {
            base = (g * rows + r) * k;
        }
        return base;
    }

    /** The forward epilogue of output (r, c) of group g, given the finished sum s (bias included). */
    private static float forwardEpilogue(float s, FloatArray res, IntArray offsets, IntArray keys, FloatArray rates, int g, int r,
                                         int c, int n, int flags, int noise, int yIdx) {
        float v = s;
        int keyAt = noise >> 4;
        float rate = rates.get(noise & 0xF);
        if (on(flags, EPI_RELU)) {
            if (v < 0f) v = 0f;
            if (on(flags, HIDDEN_DROPOUT)) {
                if (rate > 0f) v = v * SwitchKernels.keep(keys.get(keyAt), keys.get(keyAt + 1), (long) (offsets.get(g) + r) * n + c, rate);
            }
        }
        if (on(flags, EPI_RESIDUAL)) {
            float kp = 1f;
            if (rate > 0f) kp = SwitchKernels.keep(keys.get(keyAt), keys.get(keyAt + 1), (long) r * n + c, rate);
            v = res.get(yIdx) + kp * v;
        }
        return v;
    }

    /** The input gradient's epilogue: ReLU/dropout mask. */
    private static float inputGradEpilogue(float s, FloatArray h, FloatArray rates, int rateAt, int idx, int flags) {
        float v = s;
        if (on(flags, RELU_MASK)) {
            float inv = 1f / (1f - rates.get(rateAt));
            v = h.get(idx) <= 0f ? 0f : v * inv;
        }
        return v;
    }

    // ================================================================ forward: y = epilogue(A W + b)

    /**
     * y_g = epilogue(A_g W_g + b_g) for the G groups of {@code flags}: A_g [rows x k] (rows of x, or
     * gathered), W_g [k x n], y_g [rows x n] at y rows g rows (or plane g). Grid: x = ceil(n / 16),
     * y = ceil(rows / 64), z = G work-groups of one work item.
     */
    public static void linearPanel(KernelContext kc, FloatArray x, IntArray rowMap, IntArray offsets, FloatArray w, FloatArray y,
                                   FloatArray res, IntArray keys, FloatArray rates, int rows, int n, int k, int wOff, int flags,
                                   int noise) {
        float[] bs = kc.allocateFloatLocalArray(PK * PC);
        int g = kc.groupIdz;
        int c0 = kc.groupIdx * PC;
        int tile0 = kc.groupIdy * PANEL_ROWS;
        int lim = limit(offsets, g, rows, flags);
        int wBase = weightBase(wOff, g, n, k, flags);
        int bBase = biasBase(wOff, g, n, k, flags);
        int yRow0 = g * rows;
        float[] acc = new float[PR * PC];
        int[] aRow = new int[PR];
        float[] aMask = new float[PR];
        if (tile0 < lim) {
            for (int k0 = 0; k0 < k; k0 += PK) {
                int kn = Math.min(PK, k - k0);
                for (int kk = kc.localIdx; kk < kn; kk += kc.localGroupSizeX) {
                    int src = wBase + (k0 + kk) * n;
                    for (int j = 0; j < PC; j++) bs[kk * PC + j] = w.get(src + Math.min(c0 + j, n - 1));
                }
                kc.localBarrier();
                for (int rb = kc.localIdy; rb < PRB; rb += kc.localGroupSizeY) {
                    int r0 = tile0 + rb * PR;
                    if (r0 < lim) {
                        for (int i = 0; i < PR; i++) {
                            int base = inputRow(rowMap, g, Math.min(r0 + i, lim - 1), rows, k, flags);
                            aMask[i] = base < 0 ? 0f : 1f;
                            aRow[i] = Math.max(base, 0) + k0;
                        }
                        for (int i = 0; i < PR; i++) {
                            int yr = (yRow0 + Math.min(r0 + i, lim - 1)) * n;
                            for (int j = 0; j < PC; j++) {
                                int cc = Math.min(c0 + j, n - 1);
                                acc[i * PC + j] = k0 == 0 ? w.get(bBase + cc) : y.get(yr + cc);
                            }
                        }
                        for (int kk = 0; kk < kn; kk++) {
                            for (int i = 0; i < PR; i++) {
                                float av = x.get(aRow[i] + kk) * aMask[i];
                                for (int j = 0; j < PC; j++) acc[i * PC + j] += av * bs[kk * PC + j];
                            }
                        }
                        boolean last = k0 + kn >= k;
                        int rn = Math.min(PR, lim - r0);
                        int cn = Math.min(PC, n - c0);
                        for (int i = 0; i < rn; i++) {
                            int r = r0 + i;
                            for (int j = 0; j < cn; j++) {
                                int c = c0 + j;
                                int yIdx = (yRow0 + r) * n + c;
                                float v = acc[i * PC + j];
                                if (last) v = forwardEpilogue(v, res, offsets, keys, rates, g, r, c, n, flags, noise, yIdx);
                                y.set(yIdx, v);
                            }
                        }
                    }
                }
                kc.localBarrier();
            }
        }
    }

    /** Tiled (GPU) form of {@link #linearPanel}; grid x = ceil(n / 64) * 16, y = ceil(rows / 64) * 16, z = G. */
    public static void linearTiled(KernelContext kc, FloatArray x, IntArray rowMap, IntArray offsets, FloatArray w, FloatArray y,
                                   FloatArray res, IntArray keys, FloatArray rates, int rows, int n, int k, int wOff, int flags,
                                   int noise) {
        float[] as = kc.allocateFloatLocalArray(TK * TS);
        float[] bs = kc.allocateFloatLocalArray(TK * TS);
        int g = kc.groupIdz;
        int tx = kc.localIdx;
        int ty = kc.localIdy;
        int tid = ty * TW + tx;
        int col0 = kc.groupIdx * TS;
        int row0 = kc.groupIdy * TS;
        int lim = limit(offsets, g, rows, flags);
        int wBase = weightBase(wOff, g, n, k, flags);
        int bBase = biasBase(wOff, g, n, k, flags);
        int yRow0 = g * rows;
        float[] acc = new float[TR * TR];
        if (row0 < lim) {
            for (int j = 0; j < TR; j++) {
                float b = w.get(bBase + Math.min(col0 + tx + TW * j, n - 1));
                for (int i = 0; i < TR; i++) acc[i * TR + j] = b;
            }
            for (int k0 = 0; k0 < k; k0 += TK) {
                for (int e = tid; e < TK * TS; e += TW * TW) {
                    int rr = e / TK;
                    int kk = e % TK;
                    int r = Math.min(row0 + rr, lim - 1);
                    int base = inputRow(rowMap, g, r, rows, k, flags);
                    float v = 0f;
                    if (base >= 0) {
                        if (k0 + kk < k) v = x.get(base + k0 + kk);
                    }
                    as[kk * TS + rr] = v;
                    int kb = e / TS;
                    int cb = e % TS;
                    float wv = 0f;
                    if (k0 + kb < k) wv = w.get(wBase + (k0 + kb) * n + Math.min(col0 + cb, n - 1));
                    bs[kb * TS + cb] = wv;
                }
                kc.localBarrier();
                for (int kk = 0; kk < TK; kk++) {
                    for (int i = 0; i < TR; i++) {
                        float av = as[kk * TS + ty + TW * i];
                        for (int j = 0; j < TR; j++) acc[i * TR + j] += av * bs[kk * TS + tx + TW * j];
                    }
                }
                kc.localBarrier();
            }
            for (int i = 0; i < TR; i++) {
                int r = row0 + ty + TW * i;
                if (r < lim) {
                    for (int j = 0; j < TR; j++) {
                        int c = col0 + tx + TW * j;
                        if (c < n) {
                            int yIdx = (yRow0 + r) * n + c;
                            y.set(yIdx, forwardEpilogue(acc[i * TR + j], res, offsets, keys, rates, g, r, c, n, flags, noise, yIdx));
                        }
                    }
                }
            }
        }
    }

    // ================================================================ input gradient: dx = dy W^T

    /**
     * dx (+)= dy W^T with W [n x k] (a layer of n inputs and k outputs): dx_g [rows x n] from dy_g
     * [rows x k] per group; with {@link #SHARED_INPUT} the G products are summed into one dx (dy plane
     * g times W_g^T: the input gradient of Q, K and V together). Grid as {@link #linearPanel}, z = G
     * (1 when summed).
     */
    public static void inputGradPanel(KernelContext kc, FloatArray dy, FloatArray w, FloatArray dx, FloatArray h, IntArray offsets,
                                      FloatArray rates, int rows, int n, int k, int wOff, int flags, int rateAt) {
        float[] bs = kc.allocateFloatLocalArray(PK * PC);
        boolean summed = on(flags, SHARED_INPUT);
        int g0 = kc.groupIdz;
        int c0 = kc.groupIdx * PC;
        int tile0 = kc.groupIdy * PANEL_ROWS;
        int lim = limit(offsets, g0, rows, flags);
        int passes = summed ? groups(flags) : 1;
        int xRow0 = summed ? 0 : g0 * rows;
        float[] acc = new float[PR * PC];
        if (tile0 < lim) {
            for (int p = 0; p < passes; p++) {
                int g = summed ? p : g0;
                int wBase = weightBase(wOff, g, k, n, flags);
                int dyRow0 = g * rows;
                for (int k0 = 0; k0 < k; k0 += PK) {
                    int kn = Math.min(PK, k - k0);
                    for (int kk = kc.localIdx; kk < kn; kk += kc.localGroupSizeX) {
                        for (int j = 0; j < PC; j++) bs[kk * PC + j] = w.get(wBase + Math.min(c0 + j, n - 1) * k + k0 + kk);
                    }
                    kc.localBarrier();
                    boolean first = p == 0 && k0 == 0;
                    boolean last = p == passes - 1 && k0 + kn >= k;
                    for (int rb = kc.localIdy; rb < PRB; rb += kc.localGroupSizeY) {
                        int r0 = tile0 + rb * PR;
                        if (r0 < lim) {
                            for (int i = 0; i < PR; i++) {
                                int xr = (xRow0 + Math.min(r0 + i, lim - 1)) * n;
                                for (int j = 0; j < PC; j++) {
                                    float init = 0f;
                                    if (!first || on(flags, ACCUMULATE)) init = dx.get(xr + Math.min(c0 + j, n - 1));
                                    acc[i * PC + j] = init;
                                }
                            }
                            for (int kk = 0; kk < kn; kk++) {
                                for (int i = 0; i < PR; i++) {
                                    float av = dy.get((dyRow0 + Math.min(r0 + i, lim - 1)) * k + k0 + kk);
                                    for (int j = 0; j < PC; j++) acc[i * PC + j] += av * bs[kk * PC + j];
                                }
                            }
                            int rn = Math.min(PR, lim - r0);
                            int cn = Math.min(PC, n - c0);
                            for (int i = 0; i < rn; i++) {
                                int r = r0 + i;
                                for (int j = 0; j < cn; j++) {
                                    int idx = (xRow0 + r) * n + c0 + j;
                                    float v = acc[i * PC + j];
                                    if (last) v = inputGradEpilogue(v, h, rates, rateAt, idx, flags);
                                    dx.set(idx, v);
                                }
                            }
                        }
                    }
                    kc.localBarrier();
                }
            }
        }
    }

    /** Tiled (GPU) form of {@link #inputGradPanel}. */
    public static void inputGradTiled(KernelContext kc, FloatArray dy, FloatArray w, FloatArray dx, FloatArray h, IntArray offsets,
                                      FloatArray rates, int rows, int n, int k, int wOff, int flags, int rateAt) {
        float[] as = kc.allocateFloatLocalArray(TK * TS);
        float[] bs = kc.allocateFloatLocalArray(TK * TS);
        boolean summed = on(flags, SHARED_INPUT);
        int g0 = kc.groupIdz;
        int tx = kc.localIdx;
        int ty = kc.localIdy;
        int tid = ty * TW + tx;
        int col0 = kc.groupIdx * TS;
        int row0 = kc.groupIdy * TS;
        int lim = limit(offsets, g0, rows, flags);
        int passes = summed ? groups(flags) : 1;
        int xRow0 = summed ? 0 : g0 * rows;
        float[] acc = new float[TR * TR];
        if (row0 < lim) {
            for (int i = 0; i < TR; i++) {
                for (int j = 0; j < TR; j++) {
                    float init = 0f;
                    if (on(flags, ACCUMULATE))
                        init = dx.get((xRow0 + Math.min(row0 + ty + TW * i, lim - 1)) * n + Math.min(col0 + tx + TW * j, n - 1));
                    acc[i * TR + j] = init;
                }
            }
            for (int p = 0; p < passes; p++) {
                int g = summed ? p : g0;
                int wBase = weightBase(wOff, g, k, n, flags);
                int dyRow0 = g * rows;
                for (int k0 = 0; k0 < k; k0 += TK) {
                    for (int e = tid; e < TK * TS; e += TW * TW) {
                        int rr = e / TK;
                        int kk = e % TK;
                        float v = 0f;
                        if (k0 + kk < k) v = dy.get((dyRow0 + Math.min(row0 + rr, lim - 1)) * k + k0 + kk);
                        as[kk * TS + rr] = v;
                        // B(kk, c) = W[c, kk]: consecutive work items read consecutive kk of one W row
                        float wv = 0f;
                        if (k0 + kk < k) wv = w.get(wBase + Math.min(col0 + rr, n - 1) * k + k0 + kk);
                        bs[kk * TS + rr] = wv;
                    }
                    kc.localBarrier();
                    for (int kk = 0; kk < TK; kk++) {
                        for (int i = 0; i < TR; i++) {
                            float av = as[kk * TS + ty + TW * i];
                            for (int j = 0; j < TR; j++) acc[i * TR + j] += av * bs[kk * TS + tx + TW * j];
                        }
                    }
                    kc.localBarrier();
                }
            }
            for (int i = 0; i < TR; i++) {
                int r = row0 + ty + TW * i;
                if (r < lim) {
                    for (int j = 0; j < TR; j++) {
                        int c = col0 + tx + TW * j;
                        if (c < n) {
                            int idx = (xRow0 + r) * n + c;
                            dx.set(idx, inputGradEpilogue(acc[i * TR + j], h, rates, rateAt, idx, flags));
                        }
                    }
                }
            }
        }
    }

    // ================================================================ weight gradient: dW += A^T dy

    /**
     * dW_g += A_g^T dy_g and db_g += column sums of dy_g over the group's real rows: A_g [rows x k]
     * (x rows, gathered, or shared), dy_g [rows x n] (group rows, or plane g when shared). The output
     * has k + 1 rows, the last being the bias. Grid: x = ceil(n / 16), y = ceil((k + 1) / 64), z = G.
     */
    public static void weightGradPanel(KernelContext kc, FloatArray x, IntArray rowMap, IntArray offsets, FloatArray dy, FloatArray gr,
                                       int rows, int n, int k, int wOff, int flags) {
        float[] bs = kc.allocateFloatLocalArray(PK * PC);
        int g = kc.groupIdz;
        int c0 = kc.groupIdx * PC;
        int tile0 = kc.groupIdy * PANEL_ROWS;
        int lim = limit(offsets, g, rows, flags);
        int wBase = weightBase(wOff, g, n, k, flags);
        int bBase = biasBase(wOff, g, n, k, flags);
        int dyRow0 = g * rows;
        int cn = Math.min(PC, n - c0);
        float[] acc = new float[PR * PC];
        float[] bacc = new float[PC];
        for (int k0 = 0; k0 < lim; k0 += PK) {
            int kn = Math.min(PK, lim - k0);
            for (int kk = kc.localIdx; kk < kn; kk += kc.localGroupSizeX) {
                int src = (dyRow0 + k0 + kk) * n;
                for (int j = 0; j < PC; j++) bs[kk * PC + j] = dy.get(src + Math.min(c0 + j, n - 1));
            }
            kc.localBarrier();
            for (int rb = kc.localIdy; rb < PRB; rb += kc.localGroupSizeY) {
                int i0 = tile0 + rb * PR;
                int rn = Math.min(PR, k - i0); // weight rows of this block; the bias row k is summed apart
                if (rn > 0) {
                    for (int i = 0; i < PR; i++) {
                        int dst = wBase + Math.min(i0 + i, k - 1) * n;
                        for (int j = 0; j < PC; j++) acc[i * PC + j] = gr.get(dst + Math.min(c0 + j, n - 1));
                    }
                    for (int kk = 0; kk < kn; kk++) {
                        int base = inputRow(rowMap, g, k0 + kk, rows, k, flags);
                        float m = base < 0 ? 0f : 1f;
                        int b0 = Math.max(base, 0);
                        for (int i = 0; i < PR; i++) {
                            float av = x.get(b0 + Math.min(i0 + i, k - 1)) * m;
                            for (int j = 0; j < PC; j++) acc[i * PC + j] += av * bs[kk * PC + j];
                        }
                    }
                    for (int i = 0; i < rn; i++) {
                        int dst = wBase + (i0 + i) * n + c0;
                        for (int j = 0; j < cn; j++) gr.set(dst + j, acc[i * PC + j]);
                    }
                }
                if (i0 <= k) {
                    if (k < i0 + PR) { // this block holds the bias row: db += column sums of dy
                        for (int j = 0; j < PC; j++) bacc[j] = gr.get(bBase + Math.min(c0 + j, n - 1));
                        for (int kk = 0; kk < kn; kk++) {
                            for (int j = 0; j < PC; j++) bacc[j] += bs[kk * PC + j];
                        }
                        for (int j = 0; j < cn; j++) gr.set(bBase + c0 + j, bacc[j]);
                    }
                }
            }
            kc.localBarrier();
        }
    }

    /** Tiled (GPU) form of {@link #weightGradPanel}: output tile of 64 (k + 1) rows x 64 columns, the rows of dy in K-tiles. */
    public static void weightGradTiled(KernelContext kc, FloatArray x, IntArray rowMap, IntArray offsets, FloatArray dy, FloatArray gr,
                                       int rows, int n, int k, int wOff, int flags) {
        float[] as = kc.allocateFloatLocalArray(TK * TS);
        float[] bs = kc.allocateFloatLocalArray(TK * TS);
        int g = kc.groupIdz;
        int tx = kc.localIdx;
        int ty = kc.localIdy;
        int tid = ty * TW + tx;
        int col0 = kc.groupIdx * TS;
        int row0 = kc.groupIdy * TS;
        int lim = limit(offsets, g, rows, flags);
        int wBase = weightBase(wOff, g, n, k, flags);
        int bBase = biasBase(wOff, g, n, k, flags);
        int dyRow0 = g * rows;
        float[] acc = new float[TR * TR];
        for (int i = 0; i < TR * TR; i++) acc[i] = 0f; // TornadoVM does not zero private arrays
        for (int k0 = 0; k0 < lim; k0 += TK) {
            for (int e = tid; e < TK * TS; e += TW * TW) {
                // A(i, r) = x[row r, column i]: consecutive work items read consecutive i of one row
                int kk = e / TS;
                int ii = e % TS;
                int i = row0 + ii;
                float v = 0f;
                if (k0 + kk < lim) {
                    int base = inputRow(rowMap, g, k0 + kk, rows, k, flags);
                    if (i < k) {
                        if (base >= 0) v = x.get(base + i);
                    } else if (i == k) {
                        v = 1f;
                    }
                }
                as[kk * TS + ii] = v;
                float dv = 0f;
                if (k0 + kk < lim) dv = dy.get((dyRow0 + k0 + kk) * n + Math.min(col0 + ii, n - 1));
                bs[kk * TS + ii] = dv;
            }
            kc.localBarrier();
            for (int kk = 0; kk < TK; kk++) {
                for (int i = 0; i < TR; i++) {
                    float av = as[kk * TS + ty + TW * i];
                    for (int j = 0; j < TR; j++) acc[i * TR + j] += av * bs[kk * TS + tx + TW * j];
                }
            }
            kc.localBarrier();
        }
        for (int i = 0; i < TR; i++) {
            int ii = row0 + ty + TW * i;
            if (ii <= k) {
                int dst = ii < k ? wBase + ii * n : bBase;
                for (int j = 0; j < TR; j++) {
                    int c = col0 + tx + TW * j;
                    if (c < n) gr.set(dst + c, gr.get(dst + c) + acc[i * TR + j]);
                }
            }
        }
    }
}
