package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.math.TornadoMath;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * Row and column reductions as work-group reductions: LayerNorm forward and backward, its parameter
 * gradients, the router (logits, softmax, log-sum-exp, top-k choice, entropy), the router statistics
 * for the load-balancing and z-losses, cross-entropy, and the router gate's dot products.
 *
 * <p>A row kernel's work-group holds {@link KernelForm#rowsPerGroup} rows (local y) of
 * {@link KernelForm#lanes} lanes each (local x; 32 on a GPU, 1 on a CPU device, where one work item
 * walks the row). A lane sums the columns lane, lane + lanes, ...; the lanes' partial sums are then
 * added in a tree in local memory, in an order fixed by the lane count, so results do not depend on
 * scheduling. Rows past the end take part in the barriers and do nothing else. Local arrays are used
 * in the kernel bodies only (see {@link AttentionKernels}), and no value is merged from loops in both
 * branches of an if (TornadoVM 5.2 generates the merge wrongly).
 */
public final class RowKernels {
    private RowKernels() {}

    /** Largest lanes and rows per work-group the local arrays are sized for. */
    public static final int LANES = 32, ROWS = 16;

    /** y = (x - mean) / sqrt(var + 1e-5) * gamma + beta per row of d; keeps mean and 1/std. Grid: {@link KernelForm#rowGrid}. */
    public static void layerNorm(KernelContext kc, FloatArray x, FloatArray w, int gOff, int bOff, FloatArray y, FloatArray mean,
                                 FloatArray rstd, int rows, int d) {
        float[] red = kc.allocateFloatLocalArray(ROWS * LANES);
        int lane = kc.localIdx;
        int lanes = kc.localGroupSizeX;
        int ry = kc.localIdy;
        int t = kc.globalIdy;
        int tr = Math.min(t, rows - 1);
        float s = 0f;
        for (int c = lane; c < d; c += lanes) s += x.get(tr * d + c);
        red[ry * LANES + lane] = s;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) red[ry * LANES + lane] = red[ry * LANES + lane] + red[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        float mu = red[ry * LANES] / d;
        kc.localBarrier();
        float v = 0f;
        for (int c = lane; c < d; c += lanes) {
            float z = x.get(tr * d + c) - mu;
            v += z * z;
        }
        red[ry * LANES + lane] = v;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) red[ry * LANES + lane] = red[ry * LANES + lane] + red[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        float rs = 1.0f / TornadoMath.sqrt(red[ry * LANES] / d + 1e-5f);
        if (t < rows) {
            if (lane == 0) {
                mean.set(t, mu);
                rstd.set(t, rs);
            }
            for (int c = lane; c < d; c += lanes) y.set(t * d + c, (x.get(t * d + c) - mu) * rs * w.get(gOff + c) + w.get(bOff + c));
        }
    }

    /** LayerNorm's input gradient per row, added to dx when accumulate != 0. Grid: {@link KernelForm#rowGrid}. */
    public static void layerNormBackward(KernelContext kc, FloatArray x, FloatArray w, int gOff, FloatArray mean, FloatArray rstd,
                                         FloatArray dy, FloatArray dx, int rows, int d, int accumulate) {
        float[] r1 = kc.allocateFloatLocalArray(ROWS * LANES);
        float[] r2 = kc.allocateFloatLocalArray(ROWS * LANES);
        int lane = kc.localIdx;
        int lanes = kc.localGroupSizeX;
        int ry = kc.localIdy;
        int t = kc.globalIdy;
        int tr = Math.min(t, rows - 1);
        float mu = mean.get(tr);
        float rs = rstd.get(tr);
        float sdy = 0f;
        float sdyx = 0f;
        for (int c = lane; c < d; c += lanes) {
            float dxh = dy.get(tr * d + c) * w.get(gOff + c);
            sdy += dxh;
            sdyx += dxh * (x.get(tr * d + c) - mu) * rs;
        }
        r1[ry * LANES + lane] = sdy;
        r2[ry * LANES + lane] = sdyx;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) {
                r1[ry * LANES + lane] = r1[ry * LANES + lane] + r1[ry * LANES + lane + stride];
                r2[ry * LANES + lane] = r2[ry * LANES + lane] + r2[ry * LANES + lane + stride];
            }
            kc.localBarrier();
        }
        float m1 = r1[ry * LANES] / d;
        float m2 = r2[ry * LANES] / d;
        if (t < rows) {
            for (int c = lane; c < d; c += lanes) {
                float xh = (x.get(t * d + c) - mu) * rs;
                float v = rs * (dy.get(t * d + c) * w.get(gOff + c) - m1 - xh * m2);
                if (accumulate != 0) v += dx.get(t * d + c);
                dx.set(t * d + c, v);
            }
        }
    }

    /**
     * LayerNorm's gamma and beta gradients: column c sums dy * xhat and dy over the rows, the rows
     * split over the work-group's second dimension and added in a tree. Grid:
     * {@link KernelForm#columnGrid}.
     */
    public static void layerNormParams(KernelContext kc, FloatArray x, FloatArray mean, FloatArray rstd, FloatArray dy, FloatArray g,
                                       int gOff, int bOff, int rows, int d) {
        float[] r1 = kc.allocateFloatLocalArray(ROWS * LANES);
        float[] r2 = kc.allocateFloatLocalArray(ROWS * LANES);
        int cx = kc.localIdx;
        int ly = kc.localIdy;
        int lys = kc.localGroupSizeY;
        int c = kc.globalIdx;
        int cc = Math.min(c, d - 1);
        float sg = 0f;
        float sb = 0f;
        for (int t = ly; t < rows; t += lys) {
            float dyv = dy.get(t * d + cc);
            sg += dyv * (x.get(t * d + cc) - mean.get(t)) * rstd.get(t);
            sb += dyv;
        }
        r1[ly * LANES + cx] = sg;
        r2[ly * LANES + cx] = sb;
        kc.localBarrier();
        for (int stride = lys / 2; stride > 0; stride /= 2) {
            if (ly < stride) {
                r1[ly * LANES + cx] = r1[ly * LANES + cx] + r1[(ly + stride) * LANES + cx];
                r2[ly * LANES + cx] = r2[ly * LANES + cx] + r2[(ly + stride) * LANES + cx];
            }
            kc.localBarrier();
        }
        if (c < d) {
            if (ly == 0) {
                g.set(gOff + c, g.get(gOff + c) + r1[cx]);
                g.set(bOff + c, g.get(bOff + c) + r2[cx]);
            }
        }
    }

    /**
     * The router of a token row: optional jitter (routerIn = x * U(1 - eps, 1 + eps) when jitter !=
     * 0, the JVM's mask index t d + c), logits = routerIn W + b, softmax into probs [rows x e],
     * logsumexp into lse, entropy -sum p log p into ent, and the top-k choice: choice[t (2k) + 2j]
     * = expert of the j-th choice (as a float), choice[t (2k) + 2j + 1] = its probability; ties go
     * to the lower expert, as on the host. Grid: {@link KernelForm#rowGrid}.
     */
    public static void router(KernelContext kc, FloatArray x, FloatArray w, int wOff, FloatArray routerIn, FloatArray probs,
                              FloatArray lse, FloatArray ent, FloatArray choice, IntArray keys, FloatArray rates, int rows, int d,
                              int e, int k, int noise) {
        float[] rv = kc.allocateFloatLocalArray(ROWS * LANES);
        int[] ri = kc.allocateIntLocalArray(ROWS * LANES);
        int lane = kc.localIdx;
        int lanes = kc.localGroupSizeX;
        int ry = kc.localIdy;
        int t = kc.globalIdy;
        int tr = Math.min(t, rows - 1);
        int bOff = wOff + d * e;
        boolean jitter = (noise & 0x100000) != 0;
        int keyAt = (noise >> 4) & 0xFFFF;
        float eps = rates.get(noise & 0xF);
        if (jitter) {
            if (t < rows) {
                int kh = keys.get(keyAt);
                int kl = keys.get(keyAt + 1);
                for (int c = lane; c < d; c += lanes)
                    routerIn.set(t * d + c, x.get(t * d + c) * SwitchKernels.jitterFactor(kh, kl, (long) t * d + c, eps));
            }
        }
        kc.localBarrier(); // make the jittered row visible to the other lanes (global memory of this work-group)
        kc.globalBarrier();
        // logits: lane-strided over experts; the row is read in full by each lane
        float lmax = -3.0e38f;
        for (int ex = lane; ex < e; ex += lanes) {
            float s = w.get(bOff + ex);
            for (int c = 0; c < d; c++) {
                float xv = jitter ? routerIn.get(tr * d + c) : x.get(tr * d + c);
                s += xv * w.get(wOff + c * e + ex);
            }
            if (t < rows) probs.set(t * e + ex, s);
            lmax = TornadoMath.max(lmax, s);
        }
        rv[ry * LANES + lane] = lmax;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) rv[ry * LANES + lane] = TornadoMath.max(rv[ry * LANES + lane], rv[ry * LANES + lane + stride]);
            kc.localBarrier();
        }
        float max = rv[ry * LANES];
        kc.localBarrier();
        float sum = 0f;
        for (int ex = lane; ex < e; ex += lanes) {
            if (t < rows) sum += TornadoMath.exp(probs.get(t * e + ex) - max);
        }
        rv[ry * LANES + lane] = sum;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) rv[ry * LANES + lane] = rv[ry * LANES + lane] + rv[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        float total = rv[ry * LANES];
        kc.localBarrier();
        float h = 0f;
        for (int ex = lane; ex < e; ex += lanes) {
            if (t < rows) {
                float p = TornadoMath.exp(probs.get(t * e + ex) - max) / total;
                probs.set(t * e + ex, p);
                if (p > 0f) h -= p * TornadoMath.log(p);
            }
        }
        rv[ry * LANES + lane] = h;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) rv[ry * LANES + lane] = rv[ry * LANES + lane] + rv[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        if (t < rows) {
            if (lane == 0) {
                ent.set(t, rv[ry * LANES]);
                lse.set(t, max + TornadoMath.log(total));
            }
        }
        kc.localBarrier();
        kc.globalBarrier();
        // top-k: k rounds of argmax over the experts not chosen yet
        for (int j = 0; j < k; j++) {
            float bp = -1f;
            int be = e;
            for (int ex = lane; ex < e; ex += lanes) {
                int taken = 0;
                for (int q = 0; q < j; q++) {
                    if ((int) choice.get(tr * 2 * k + 2 * q) == ex) taken = 1;
                }
                float p = probs.get(tr * e + ex);
                if (taken == 0) {
                    if (p > bp) {
                        bp = p;
                        be = ex;
                    }
                }
            }
            rv[ry * LANES + lane] = bp;
            ri[ry * LANES + lane] = be;
            kc.localBarrier();
            for (int stride = lanes / 2; stride > 0; stride /= 2) {
                if (lane < stride) {
                    float ov = rv[ry * LANES + lane + stride];
                    int oi = ri[ry * LANES + lane + stride];
                    float mv = rv[ry * LANES + lane];
                    int mi = ri[ry * LANES + lane];
                    if (ov > mv || (ov == mv && oi < mi)) {
                        rv[ry * LANES + lane] = ov;
                        ri[ry * LANES + lane] = oi;
                    }
                }
                kc.localBarrier();
            }
            if (t < rows) {
                if (lane == 0) {
                    choice.set(t * 2 * k + 2 * j, (float) ri[ry * LANES]);
                    choice.set(t * 2 * k + 2 * j + 1, rv[ry * LANES]);
                }
            }
            kc.localBarrier();
            kc.globalBarrier();
        }
    }

    /**
     * Router statistics over the rows: stats[x] = sum of probs[., x] (the load-balancing loss's P_i
     * numerators), stats[e] = sum of ent, stats[e + 1] = sum of lse^2 (the z-loss), each summed by one
     * column of the work-group in a fixed order. Grid: {@link KernelForm#columnGrid}(e + 2).
     */
    public static void routerStats(KernelContext kc, FloatArray probs, FloatArray ent, FloatArray lse, FloatArray stats, int rows, int e) {
        float[] red = kc.allocateFloatLocalArray(ROWS * LANES);
        int cx = kc.localIdx;
        int ly = kc.localIdy;
        int lys = kc.localGroupSizeY;
        int c = kc.globalIdx;
        float s = 0f;
        for (int t = ly; t < rows; t += lys) {
            float v = 0f;
            if (c < e) v = probs.get(t * e + c);
            if (c == e) v = ent.get(t);
            if (c == e + 1) {
                float l = lse.get(t);
                v = l * l;
            }
            s += v;
        }
        red[ly * LANES + cx] = s;
        kc.localBarrier();
        for (int stride = lys / 2; stride > 0; stride /= 2) {
            if (ly < stride) red[ly * LANES + cx] = red[ly * LANES + cx] + red[(ly + stride) * LANES + cx];
            kc.localBarrier();
        }
        if (c < e + 2) {
            if (ly == 0) stats.set(c, red[cx]);
        }
    }

    /**
     * Cross-entropy per row: loss[t] = logsumexp - logit[target]; correct[t] = 1 when the argmax
     * (first maximum) is the target; dlogits = (softmax - onehot) * invRows. Grid: {@link KernelForm#rowGrid}.
     */
    public static void crossEntropy(KernelContext kc, FloatArray logits, IntArray targets, FloatArray loss, FloatArray correct,
                                    FloatArray dlogits, int rows, int n, float invRows) {
        float[] rv = kc.allocateFloatLocalArray(ROWS * LANES);
        int[] ri = kc.allocateIntLocalArray(ROWS * LANES);
        int lane = kc.localIdx;
        int lanes = kc.localGroupSizeX;
        int ry = kc.localIdy;
        int t = kc.globalIdy;
        int tr = Math.min(t, rows - 1);
        float mv = -3.0e38f;
        int mi = n;
        for (int j = lane; j < n; j += lanes) {
            float l = logits.get(tr * n + j);
            if (l > mv) {
                mv = l;
                mi = j;
            }
        }
        rv[ry * LANES + lane] = mv;
        ri[ry * LANES + lane] = mi;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) {
                float ov = rv[ry * LANES + lane + stride];
                int oi = ri[ry * LANES + lane + stride];
                float cv = rv[ry * LANES + lane];
                int ci = ri[ry * LANES + lane];
                if (ov > cv || (ov == cv && oi < ci)) {
                    rv[ry * LANES + lane] = ov;
                    ri[ry * LANES + lane] = oi;
                }
            }
            kc.localBarrier();
        }
        float max = rv[ry * LANES];
        int arg = ri[ry * LANES];
        kc.localBarrier();
        float sum = 0f;
        for (int j = lane; j < n; j += lanes) sum += TornadoMath.exp(logits.get(tr * n + j) - max);
        rv[ry * LANES + lane] = sum;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) rv[ry * LANES + lane] = rv[ry * LANES + lane] + rv[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        float total = rv[ry * LANES];
        if (t < rows) {
            int y = targets.get(t);
            if (lane == 0) {
                loss.set(t, TornadoMath.log(total) + max - logits.get(t * n + y));
                correct.set(t, arg == y ? 1f : 0f);
            }
            float inv = 1f / total;
            for (int j = lane; j < n; j += lanes) {
                float p = TornadoMath.exp(logits.get(t * n + j) - max) * inv;
                dlogits.set(t * n + j, (j == y ? p - 1f : p) * invRows);
            }
        }
    }

    /**
     * The router gate's dot products per assignment a = t k + j (rows = tokens x k): gate[a] = dB_t .
     * (the expert output of a's slot, or t's normalized input for a dropped a, or 0 when zeroDropped
     * != 0). Grid: {@link KernelForm#rowGrid}(tokens x k).
     */
    public static void gateDots(KernelContext kc, FloatArray db, FloatArray ye, FloatArray ln, IntArray tokRow, FloatArray gate,
                                int rows, int d, int k, int zeroDropped) {
        float[] red = kc.allocateFloatLocalArray(ROWS * LANES);
        int lane = kc.localIdx;
        int lanes = kc.localGroupSizeX;
        int ry = kc.localIdy;
        int a = kc.globalIdy;
        int ar = Math.min(a, rows - 1);
        int t = ar / k;
        int r = tokRow.get(ar);
        int rr = Math.max(r, 0);
        // both sums in one loop: TornadoVM 5.2 mis-merges a value computed by loops in both branches of an if
        float sy = 0f;
        float sl = 0f;
        for (int c = lane; c < d; c += lanes) {
            float g = db.get(t * d + c);
            sy += g * ye.get(rr * d + c);
            sl += g * ln.get(t * d + c);
        }
        float s = r >= 0 ? sy : zeroDropped == 0 ? sl : 0f;
        red[ry * LANES + lane] = s;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) red[ry * LANES + lane] = red[ry * LANES + lane] + red[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        if (a < rows) {
            if (lane == 0) gate.set(a, red[ry * LANES]);
        }
    }

    /**
     * Sum of squares of g in chunks: partial[c] = sum of g[i]^2 over chunk c of {@code chunk}
     * elements (the last one shorter), lanes of a row of the grid reducing one chunk. The host adds
     * the partials in order. Grid: {@link KernelForm#rowGrid}(chunks).
     */
    public static void sumSquares(KernelContext kc, FloatArray g, FloatArray partial, int n, int chunk, int chunks) {
        float[] red = kc.allocateFloatLocalArray(ROWS * LANES);
        int lane = kc.localIdx;
        int lanes = kc.localGroupSizeX;
        int ry = kc.localIdy;
        int c = kc.globalIdy;
        int lo = Math.min(c, chunks - 1) * chunk;
        int hi = Math.min(n, lo + chunk);
        float s = 0f;
        for (int i = lo + lane; i < hi; i += lanes) {
            float v = g.get(i);
            s += v * v;
        }
        red[ry * LANES + lane] = s;
        kc.localBarrier();
        for (int stride = lanes / 2; stride > 0; stride /= 2) {
            if (lane < stride) red[ry * LANES + lane] = red[ry * LANES + lane] + red[ry * LANES + lane + stride];
            kc.localBarrier();
        }
        if (c < chunks) {
            if (lane == 0) partial.set(c, red[ry * LANES]);
        }
    }
}
