package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.math.TornadoMath;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * Causal multi-head attention in the flash form, forward and backward, as {@link KernelContext}
 * kernels. Q, K and V are the three planes of one buffer {@code qkv} [3][T][d] (T = nSeq s tokens,
 * head h in columns h hd .. h hd + hd); the gradients go to the same planes of {@code dqkv}.
 *
 * <ul>
 * <li>{@link #forward}: a work-group per (sequence, head, block of {@link #QB} queries) walks the
 * visible keys in tiles of {@link #KT} staged in local memory, keeping each query's running maximum,
 * sum and weighted values (the online softmax); it writes the output and each query's log-sum-exp.
 * No [s x s] matrix is kept.</li>
 * <li>{@link #backwardKeyValue}: a work-group per (sequence, head, block of {@link #KB} keys) walks
 * the queries that see them in tiles of {@link #QT}, recomputing the weights from the saved
 * log-sum-exp; each key row's dK and dV accumulate over the tiles.</li>
 * <li>{@link #backwardQuery}: a work-group per (sequence, head, block of {@link #QB} queries) walks
 * their keys in tiles of {@link #QT} and accumulates dQ.</li>
 * </ul>
 * The softmax gradient uses D_i = dO_i . O_i, computed when a query row is staged, so no pass over a
 * row's keys is needed for it. Within a work-group the rows (queries, or keys) are spread over its
 * work items (32 on a GPU; one work item walks them all on a CPU device).
 *
 * <p>Each row's scores against a tile are accumulated as an outer product: the tile is staged
 * transposed ([column][key]), so a row's scores for all keys of the tile are independent sums along
 * contiguous local memory, which a CPU compiler vectorizes and a GPU reads without bank conflicts.
 * The causal mask zeroes weights past the diagonal instead of shortening the loops.
 *
 * <p>Dropout (rate in {@code rates}, 0 outside training) multiplies weight (b, h, i, j) after the
 * softmax by {@link SwitchKernels#keep} of index ((b heads + h) s + i) s + j, the index the JVM
 * backend uses, so both drop the same weights. Head width at most {@link #HD}.
 *
 * <p>Local arrays are used in the kernel bodies only, never handed to a helper method: TornadoVM
 * inlines helpers but loses the local address space of an array argument. Private arrays are
 * initialized explicitly (TornadoVM does not zero them). Masks inside unrolled loops are selects, not
 * if-statements: with the shapes specialized as constants an unrolled if can become constant after
 * TornadoVM's last simplification, which its code generator rejects (LogicConstantNode).
 */
public final class AttentionKernels {
    private AttentionKernels() {}

    /** Largest head width; queries per forward/dQ block; keys per forward tile; keys per dK/dV block; tile of the backward. */
    public static final int HD = 64, QB = 32, KT = 32, KB = 16, QT = 16;

    private static int blocks(int s, int b) {
        return (s + b - 1) / b;
    }

    /** Work-groups of the forward and the dQ kernel. */
    public static int queryBlocks(int nSeq, int heads, int s) {
        return nSeq * heads * blocks(s, QB);
    }

    /** Work-groups of the dK/dV kernel. */
    public static int keyBlocks(int nSeq, int heads, int s) {
        return nSeq * heads * blocks(s, KB);
    }

    /**
     * out = softmax(scale Q K^T, causal) V per (sequence, head), with dropout on the weights; lse[(b
     * heads + h) s + i] = log-sum-exp of row i's scores. Grid: x = work items per group, y =
     * {@link #queryBlocks}.
     */
    public static void forward(KernelContext kc, FloatArray qkv, FloatArray out, FloatArray lse, IntArray keys, FloatArray rates,
                               int nSeq, int s, int heads, int d, int noise) {
        float[] qs = kc.allocateFloatLocalArray(QB * HD);
        float[] acc = kc.allocateFloatLocalArray(QB * HD);
        float[] kt = kc.allocateFloatLocalArray(HD * KT);
        float[] vs = kc.allocateFloatLocalArray(KT * HD);
        float[] mx = kc.allocateFloatLocalArray(QB);
        float[] sm = kc.allocateFloatLocalArray(QB);
        float[] sc = new float[KT];
        float[] ar = new float[HD];
        int hd = d / heads;
        int nb = blocks(s, QB);
        int blk = kc.groupIdy;
        int qb = blk % nb;
        int bh = blk / nb;
        int h = bh % heads;
        int b = bh / heads;
        int lid = kc.localIdx;
        int items = kc.localGroupSizeX;
        int i0 = qb * QB;
        int rows = Math.min(QB, s - i0);
        int plane = nSeq * s * d;
        int col = h * hd;
        float scale = 1.0f / TornadoMath.sqrt((float) hd);
        float rate = rates.get(noise & 0xF);
        int kh = keys.get(noise >> 4);
        int kl = keys.get((noise >> 4) + 1);
        for (int r = lid; r < rows; r += items) {
            int src = (b * s + i0 + r) * d + col;
            for (int c = 0; c < hd; c++) {
                qs[r * HD + c] = qkv.get(src + c) * scale;
                acc[r * HD + c] = 0f;
            }
            mx[r] = -3.0e38f;
            sm[r] = 0f;
        }
        kc.localBarrier();
        int keysSeen = i0 + rows; // causal: the block's last query sees keys 0 .. i0 + rows - 1
        for (int j0 = 0; j0 < keysSeen; j0 += KT) {
            int kn = Math.min(KT, keysSeen - j0);
            for (int j = lid; j < KT; j += items) {
                int jj = Math.min(j, kn - 1);
                int src = (b * s + j0 + jj) * d + col;
                for (int c = 0; c < hd; c++) {
                    kt[c * KT + j] = qkv.get(plane + src + c);
                    vs[j * HD + c] = qkv.get(2 * plane + src + c);
                }
            }
            kc.localBarrier();
            for (int r = lid; r < rows; r += items) {
                int i = i0 + r;
                int jn = Math.min(kn, i - j0 + 1); // keys of this tile that query i sees
                if (jn > 0) {
                    for (int j = 0; j < KT; j++) sc[j] = 0f;
                    for (int c = 0; c < hd; c++) {
                        float qv = qs[r * HD + c];
                        for (int j = 0; j < KT; j++) sc[j] += qv * kt[c * KT + j];
                    }
                    float tmax = -3.0e38f;
                    for (int j = 0; j < KT; j++) tmax = TornadoMath.max(tmax, j < jn ? sc[j] : -3.0e38f);
                    float mOld = mx[r];
                    float mNew = TornadoMath.max(mOld, tmax);
                    float corr = TornadoMath.exp(mOld - mNew);
                    float sum = sm[r] * corr;
                    for (int c = 0; c < hd; c++) ar[c] = acc[r * HD + c] * corr;
                    long rowIdx = ((long) bh * s + i) * s + j0;
                    for (int j = 0; j < jn; j++) {
                        float p = TornadoMath.exp(sc[j] - mNew);
                        sum += p;
                        if (rate > 0f) p = p * SwitchKernels.keep(kh, kl, rowIdx + j, rate);
                        for (int c = 0; c < hd; c++) ar[c] += p * vs[j * HD + c];
                    }
                    for (int c = 0; c < hd; c++) acc[r * HD + c] = ar[c];
                    mx[r] = mNew;
                    sm[r] = sum;
                }
            }
            kc.localBarrier();
        }
        for (int r = lid; r < rows; r += items) {
            int dst = (b * s + i0 + r) * d + col;
            float inv = 1f / sm[r];
            for (int c = 0; c < hd; c++) out.set(dst + c, acc[r * HD + c] * inv);
            lse.set(bh * s + i0 + r, mx[r] + TornadoMath.log(sm[r]));
        }
    }

    /**
     * dK and dV of a block of {@link #KB} keys of (b, h): over the queries i >= j that see key j,
     * p = exp(scale q_i . k_j - lse_i), dV_j += keep p dO_i, dS = p (keep dO_i . v_j - D_i), dK_j +=
     * scale dS q_i. Writes planes 1 and 2 of dqkv. Grid: x = work items, y = {@link #keyBlocks}.
     */
    public static void backwardKeyValue(KernelContext kc, FloatArray qkv, FloatArray out, FloatArray dout, FloatArray lse,
                                        FloatArray dqkv, IntArray keys, FloatArray rates, int nSeq, int s, int heads, int d, int noise) {
        float[] ks = kc.allocateFloatLocalArray(KB * HD);
        float[] vs = kc.allocateFloatLocalArray(KB * HD);
        float[] dk = kc.allocateFloatLocalArray(KB * HD);
        float[] dv = kc.allocateFloatLocalArray(KB * HD);
        float[] qt = kc.allocateFloatLocalArray(HD * QT);
        float[] dot = kc.allocateFloatLocalArray(HD * QT);
        float[] qs = kc.allocateFloatLocalArray(QT * HD);
        float[] dos = kc.allocateFloatLocalArray(QT * HD);
        float[] dd = kc.allocateFloatLocalArray(QT);
        float[] ls = kc.allocateFloatLocalArray(QT);
        float[] st = new float[QT];
        float[] dp = new float[QT];
        float[] pd = new float[QT];
        float[] ds = new float[QT];
        float[] rk = new float[HD];
        float[] rv = new float[HD];
        int hd = d / heads;
        int nb = blocks(s, KB);
        int blk = kc.groupIdy;
        int kb = blk % nb;
        int bh = blk / nb;
        int h = bh % heads;
        int b = bh / heads;
        int lid = kc.localIdx;
        int items = kc.localGroupSizeX;
        int j0 = kb * KB;
        int kn = Math.min(KB, s - j0);
        int plane = nSeq * s * d;
        int col = h * hd;
        float scale = 1.0f / TornadoMath.sqrt((float) hd);
        float rate = rates.get(noise & 0xF);
        int kh = keys.get(noise >> 4);
        int kl = keys.get((noise >> 4) + 1);
        for (int j = lid; j < kn; j += items) {
            int src = (b * s + j0 + j) * d + col;
            for (int c = 0; c < hd; c++) {
                ks[j * HD + c] = qkv.get(plane + src + c);
                vs[j * HD + c] = qkv.get(2 * plane + src + c);
                dk[j * HD + c] = 0f;
                dv[j * HD + c] = 0f;
            }
        }
        kc.localBarrier();
        for (int i0 = j0; i0 < s; i0 += QT) { // queries before j0 see none of these keys
            int qn = Math.min(QT, s - i0);
            for (int r = lid; r < QT; r += items) {
                int rr = Math.min(r, qn - 1);
                int row = (b * s + i0 + rr) * d + col;
                float dsum = 0f;
                for (int c = 0; c < hd; c++) {
                    float g = dout.get(row + c);
                    float qv = qkv.get(row + c) * scale;
                    qt[c * QT + r] = qv;
                    qs[r * HD + c] = qv;
                    dot[c * QT + r] = g;
                    dos[r * HD + c] = g;
                    dsum += g * out.get(row + c);
                }
                dd[r] = dsum;
                ls[r] = lse.get(bh * s + i0 + rr);
            }
            kc.localBarrier();
            for (int jr = lid; jr < kn; jr += items) {
                int j = j0 + jr;
                for (int r = 0; r < QT; r++) {
                    st[r] = 0f;
                    dp[r] = 0f;
                }
                for (int c = 0; c < hd; c++) {
                    float kv = ks[jr * HD + c];
                    float vv = vs[jr * HD + c];
                    for (int r = 0; r < QT; r++) {
                        st[r] += kv * qt[c * QT + r];
                        dp[r] += vv * dot[c * QT + r];
                    }
                }
                for (int r = 0; r < QT; r++) {
                    int i = i0 + r;
                    int vis = (i >= j ? 1 : 0) & (r < qn ? 1 : 0);
                    float p = TornadoMath.exp(vis != 0 ? st[r] - ls[r] : -1.0e30f);
                    float kp = 1f;
                    if (rate > 0f) kp = SwitchKernels.keep(kh, kl, ((long) bh * s + i) * s + j, rate);
                    ds[r] = p * (kp * dp[r] - dd[r]);
                    pd[r] = p * kp;
                }
                for (int c = 0; c < hd; c++) {
                    rk[c] = dk[jr * HD + c];
                    rv[c] = dv[jr * HD + c];
                }
                // a runtime bound keeps these loops rolled: fully unrolled, they are too long for the CPU compiler to vectorize
                for (int r = 0; r < qn; r++) {
                    float a = ds[r];
                    float pv = pd[r];
                    for (int c = 0; c < hd; c++) {
                        rk[c] += a * qs[r * HD + c]; // qs holds scale q: dK = scale dS q
                        rv[c] += pv * dos[r * HD + c];
                    }
                }
                for (int c = 0; c < hd; c++) {
                    dk[jr * HD + c] = rk[c];
                    dv[jr * HD + c] = rv[c];
                }
            }
            kc.localBarrier();
        }
        for (int j = lid; j < kn; j += items) {
            int dst = (b * s + j0 + j) * d + col;
            for (int c = 0; c < hd; c++) {
                dqkv.set(plane + dst + c, dk[j * HD + c]);
                dqkv.set(2 * plane + dst + c, dv[j * HD + c]);
            }
        }
    }

    /**
     * dQ of a block of {@link #QB} queries of (b, h): over keys j <= i, dQ_i += scale dS_ij k_j with
     * dS as in {@link #backwardKeyValue}. Writes plane 0 of dqkv. Grid: x = work items, y =
     * {@link #queryBlocks}.
     */
    public static void backwardQuery(KernelContext kc, FloatArray qkv, FloatArray out, FloatArray dout, FloatArray lse,
                                     FloatArray dqkv, IntArray keys, FloatArray rates, int nSeq, int s, int heads, int d, int noise) {
        float[] qs = kc.allocateFloatLocalArray(QB * HD);
        float[] dos = kc.allocateFloatLocalArray(QB * HD);
        float[] dq = kc.allocateFloatLocalArray(QB * HD);
        float[] kt = kc.allocateFloatLocalArray(HD * QT);
        float[] vt = kc.allocateFloatLocalArray(HD * QT);
        float[] ks = kc.allocateFloatLocalArray(QT * HD);
        float[] dd = kc.allocateFloatLocalArray(QB);
        float[] ls = kc.allocateFloatLocalArray(QB);
        float[] sc = new float[QT];
        float[] dp = new float[QT];
        float[] ds = new float[QT];
        float[] rq = new float[HD];
        int hd = d / heads;
        int nb = blocks(s, QB);
        int blk = kc.groupIdy;
        int qb = blk % nb;
        int bh = blk / nb;
        int h = bh % heads;
        int b = bh / heads;
        int lid = kc.localIdx;
        int items = kc.localGroupSizeX;
        int i0 = qb * QB;
        int rows = Math.min(QB, s - i0);
        int plane = nSeq * s * d;
        int col = h * hd;
        float scale = 1.0f / TornadoMath.sqrt((float) hd);
        float rate = rates.get(noise & 0xF);
        int kh = keys.get(noise >> 4);
        int kl = keys.get((noise >> 4) + 1);
        for (int r = lid; r < rows; r += items) {
            int row = (b * s + i0 + r) * d + col;
            float dsum = 0f;
            for (int c = 0; c < hd; c++) {
                float g = dout.get(row + c);
                qs[r * HD + c] = qkv.get(row + c) * scale;
                dos[r * HD + c] = g;
                dsum += g * out.get(row + c);
                dq[r * HD + c] = 0f;
            }
            dd[r] = dsum;
            ls[r] = lse.get(bh * s + i0 + r);
        }
        kc.localBarrier();
        int keysSeen = i0 + rows;
        for (int j0 = 0; j0 < keysSeen; j0 += QT) {
            int kn = Math.min(QT, keysSeen - j0);
            for (int j = lid; j < QT; j += items) {
                int jj = Math.min(j, kn - 1);
                int src = (b * s + j0 + jj) * d + col;
                for (int c = 0; c < hd; c++) {
                    float kv = qkv.get(plane + src + c);
                    kt[c * QT + j] = kv;
                    ks[j * HD + c] = kv;
                    vt[c * QT + j] = qkv.get(2 * plane + src + c);
                }
            }
            kc.localBarrier();
            for (int r = lid; r < rows; r += items) {
                int i = i0 + r;
                if (i >= j0) {
                    for (int j = 0; j < QT; j++) {
                        sc[j] = 0f;
                        dp[j] = 0f;
                    }
                    for (int c = 0; c < hd; c++) {
                        float qv = qs[r * HD + c];
                        float gv = dos[r * HD + c];
                        for (int j = 0; j < QT; j++) {
                            sc[j] += qv * kt[c * QT + j];
                            dp[j] += gv * vt[c * QT + j];
                        }
                    }
                    for (int j = 0; j < QT; j++) {
                        // masks as selects, not branches (see the class comment)
                        int vis = (j0 + j <= i ? 1 : 0) & (j < kn ? 1 : 0);
                        float p = TornadoMath.exp(vis != 0 ? sc[j] - ls[r] : -1.0e30f);
                        float kp = 1f;
                        if (rate > 0f) kp = SwitchKernels.keep(kh, kl, ((long) bh * s + i) * s + j0 + j, rate);
                        ds[j] = p * (kp * dp[j] - dd[r]) * scale;
                    }
                    for (int c = 0; c < hd; c++) rq[c] = dq[r * HD + c];
                    for (int j = 0; j < kn; j++) {
                        float a = ds[j];
                        for (int c = 0; c < hd; c++) rq[c] += a * ks[j * HD + c];
                    }
                    for (int c = 0; c < hd; c++) dq[r * HD + c] = rq[c];
                }
            }
            kc.localBarrier();
        }
        for (int r = lid; r < rows; r += items) {
            int dst = (b * s + i0 + r) * d + col;
            for (int c = 0; c < hd; c++) dqkv.set(dst + c, dq[r * HD + c]);
        }
    }
}
