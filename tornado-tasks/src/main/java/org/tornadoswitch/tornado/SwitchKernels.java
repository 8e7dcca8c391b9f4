package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.annotations.Parallel;
import uk.ac.manchester.tornado.api.math.TornadoMath;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The Switch Transformer's kernels for TornadoVM, forward and backward side by side. Each method is
 * JIT-compiled by TornadoVM to an OpenCL, PTX or SPIR-V kernel; {@code @Parallel} loops become the
 * kernel's grid. Parameters live in one flat buffer {@code w} addressed by offset (the layout of
 * {@link org.tornadoswitch.model.ParamLayout}); gradients in {@code g} with the same layout.
 *
 * <p>"Grouped" linear kernels run {@code groups} independent matrix products on consecutive row
 * blocks: one group is an ordinary layer, E groups of {@code capacity} rows are the experts of a
 * Switch block, each with its own weights at {@code wOff + e * in * out}. All experts of a layer thus
 * run in one launch.
 *
 * <p>Only float arithmetic, 64-bit integer arithmetic and TornadoMath are used, nothing OpenCL-only,
 * so the same code compiles for PTX.
 *
 * <p>Noise (dropout masks, router jitter) is {@link org.tornadoswitch.util.Rng#uniform} of a
 * per-step key and the element's index, computed here bit for bit as on the JVM, so both backends
 * draw the same masks and nothing is stored for the backward pass. Keys live in an IntArray as
 * (high, low) pairs, {@code keyAt} the pair's index; rates in a FloatArray, 0 outside training.
 */
public final class SwitchKernels {
    private SwitchKernels() {}

    // ------------------------------------------------------------------ noise

    /**
     * Rng.uniform(key, index) on the device: SplitMix64's finalizer of key + index * golden gamma,
     * top 24 bits. Unsigned shifts are written as arithmetic shifts and masks, which every backend
     * compiles alike.
     */
    public static float uniform(int keyHi, int keyLo, long index) {
        long z = (((long) keyHi) << 32 | (keyLo & 0xFFFFFFFFL)) + index * 0x9E3779B97F4A7C15L;
        z = (z ^ ((z >> 30) & 0x3FFFFFFFFL)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ ((z >> 27) & 0x1FFFFFFFFFL)) * 0x94D049BB133111EBL;
        z = z ^ ((z >> 31) & 0x1FFFFFFFFL);
        int top = (int) ((z >> 40) & 0xFFFFFFL);
        return top * 0x1.0p-24f;
    }

    /** Dropout factor: 0 when element index is dropped, else 1 / (1 - rate); 1 when rate is 0. */
    public static float keep(int keyHi, int keyLo, long index, float rate) {
        return uniform(keyHi, keyLo, index) < rate ? 0f : 1f / (1f - rate);
    }

    /** Jitter factor U(1 - eps, 1 + eps) of element index; exactly 1 when eps is 0. */
    public static float jitterFactor(int keyHi, int keyLo, long index, float eps) {
        return 1f - eps + 2f * eps * uniform(keyHi, keyLo, index);
    }

    /** out[i] = x[i] * uniform(key, i) for n elements: the noise itself, for tests. */
    public static void uniformFill(IntArray keys, int keyAt, FloatArray out, int n) {
        for (@Parallel int i = 0; i < n; i++) out.set(i, uniform(keys.get(keyAt), keys.get(keyAt + 1), i));
    }

    /** dst[i] = src[i] * keep(i): a dropout mask applied to a gradient (the backward of a masked branch). */
    public static void dropoutMask(FloatArray src, FloatArray dst, int n, IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int i = 0; i < n; i++) {
            float rate = rates.get(rateAt);
            dst.set(i, src.get(i) * keep(keys.get(keyAt), keys.get(keyAt + 1), i, rate));
        }
    }

    /** out[i] = x[i] * jitter factor(i): the router's input in a training pass. */
    public static void jitter(FloatArray x, FloatArray out, int n, IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int i = 0; i < n; i++) {
            float eps = rates.get(rateAt);
            out.set(i, x.get(i) * jitterFactor(keys.get(keyAt), keys.get(keyAt + 1), i, eps));
        }
    }

    /** dx[i] += dIn[i] * jitter factor(i): the router input gradient back through the jitter. */
    public static void jitterBack(FloatArray dIn, FloatArray dx, int n, IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int i = 0; i < n; i++) {
            float eps = rates.get(rateAt);
            dx.set(i, dx.get(i) + dIn.get(i) * jitterFactor(keys.get(keyAt), keys.get(keyAt + 1), i, eps));
        }
    }

    /**
     * Dropout on the experts' hidden layer [slots, f], in place. The mask index of slot s (expert
     * s / cap, position s % cap) is its row in the JVM backend's grouped layout, offset[expert] + s %
     * cap, so both backends drop the same units; empty slots (slotAssignment -1) are left alone.
     */
    public static void hiddenDropout(FloatArray h, IntArray slotAssignment, IntArray offset, int slots, int cap, int f,
                                     IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int s = 0; s < slots; s++) {
            for (@Parallel int c = 0; c < f; c++) {
                int row = offset.get(s / cap) + s % cap;
                float rate = rates.get(rateAt);
                if (slotAssignment.get(s) >= 0 && rate > 0f) {
                    float kp = keep(keys.get(keyAt), keys.get(keyAt + 1), (long) row * f + c, rate);
                    h.set(s * f + c, h.get(s * f + c) * kp);
                }
            }
        }
    }

    // ------------------------------------------------------------------ forward

    /** x[t] = tokEmb[tok[t]] (+ posEmb[t % seq] when posOff >= 0). */
    public static void embed(IntArray tok, FloatArray w, FloatArray x, int tokOff, int posOff, int nTok, int d, int seq) {
        for (@Parallel int t = 0; t < nTok; t++) {
            for (@Parallel int j = 0; j < d; j++) {
                float v = w.get(tokOff + tok.get(t) * d + j);
                if (posOff >= 0) v += w.get(posOff + (t % seq) * d + j);
                x.set(t * d + j, v);
            }
        }
    }

    /** y = (x - mean) / sqrt(var + 1e-5) * gamma + beta per row; keeps mean and 1/std. */
    public static void layerNorm(FloatArray x, FloatArray w, int gOff, int bOff, FloatArray y, FloatArray mean,
                                 FloatArray rstd, int rows, int d) {
        for (@Parallel int t = 0; t < rows; t++) {
            float s = 0f;
            for (int j = 0; j < d; j++) s += x.get(t * d + j);
            float mu = s / d;
            float var = 0f;
            for (int j = 0; j < d; j++) {
                float z = x.get(t * d + j) - mu;
                var += z * z;
            }
            float rs = 1.0f / TornadoMath.sqrt(var / d + 1e-5f);
            mean.set(t, mu);
            rstd.set(t, rs);
            for (int j = 0; j < d; j++)
                y.set(t * d + j, (x.get(t * d + j) - mu) * rs * w.get(gOff + j) + w.get(bOff + j));
        }
    }

    /**
     * y[r, o] = b_e[o] + sum_i x[r, i] W_e[i, o] for row r of group e = r / rowsPerGroup; ReLU when
     * relu != 0.
     */
    public static void groupedLinear(FloatArray x, FloatArray w, int wOff, int bOff, FloatArray y, int groups,
                                     int rowsPerGroup, int in, int out, int relu) {
        for (@Parallel int r = 0; r < groups * rowsPerGroup; r++) {
            for (@Parallel int o = 0; o < out; o++) {
                int e = r / rowsPerGroup;
                int wb = wOff + e * in * out;
                float s = w.get(bOff + e * out + o);
                for (int i = 0; i < in; i++) s += x.get(r * in + i) * w.get(wb + i * out + o);
                if (relu != 0 && s < 0f) s = 0f;
                y.set(r * out + o, s);
            }
        }
    }

    /** y = res + keep * (x W + b): a projection, with residual dropout, added onto the residual stream. */
    public static void linearResidual(FloatArray x, FloatArray w, int wOff, int bOff, FloatArray res, FloatArray y,
                                      int rows, int in, int out, IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int r = 0; r < rows; r++) {
            for (@Parallel int o = 0; o < out; o++) {
                float s = w.get(bOff + o);
                for (int i = 0; i < in; i++) s += x.get(r * in + i) * w.get(wOff + i * out + o);
                float rate = rates.get(rateAt);
                if (rate > 0f) s = s * keep(keys.get(keyAt), keys.get(keyAt + 1), r * out + o, rate);
                y.set(r * out + o, res.get(r * out + o) + s);
            }
        }
    }

    /**
     * Causal attention, one (sequence, head, query) row per work item: scores for keys j <= i, a
     * softmax kept in att [nSeq, heads, s, s], and the weighted sum of values.
     */
    public static void attention(FloatArray q, FloatArray k, FloatArray v, FloatArray att, FloatArray out,
                                 int nSeq, int s, int heads, int d, IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int row = 0; row < nSeq * heads * s; row++) {
            int i = row % s;
            int bh = row / s;
            int h = bh % heads;
            int b = bh / heads;
            int hd = d / heads;
            float scale = 1.0f / TornadoMath.sqrt((float) hd);
            int base = b * s * d + h * hd;
            int ar = row * s;
            float max = -3.0e38f;
            for (int j = 0; j <= i; j++) {
                float dot = 0f;
                for (int c = 0; c < hd; c++) dot += q.get(base + i * d + c) * k.get(base + j * d + c);
                dot = dot * scale;
                att.set(ar + j, dot);
                if (dot > max) max = dot;
            }
            float sum = 0f;
            for (int j = 0; j <= i; j++) {
                float e = TornadoMath.exp(att.get(ar + j) - max);
                att.set(ar + j, e);
                sum += e;
            }
            for (int j = 0; j < s; j++) att.set(ar + j, j <= i ? att.get(ar + j) / sum : 0f);
            // att keeps the weights before dropout; out uses them times the mask of (row, j)
            float rate = rates.get(rateAt);
            int kh = keys.get(keyAt);
            int kl = keys.get(keyAt + 1);
            for (int c = 0; c < hd; c++) {
                float acc = 0f;
                for (int j = 0; j <= i; j++) {
                    float p = att.get(ar + j);
                    if (rate > 0f) p = p * keep(kh, kl, (long) ar + j, rate);
                    acc += p * v.get(base + j * d + c);
                }
                out.set(base + i * d + c, acc);
            }
        }
    }

    /** Row softmax in place (the router); lse gets each row's logsumexp (the z-loss). */
    public static void softmaxRows(FloatArray x, FloatArray lse, int rows, int n) {
        for (@Parallel int t = 0; t < rows; t++) {
            float max = -3.0e38f;
            for (int j = 0; j < n; j++) max = TornadoMath.max(max, x.get(t * n + j));
            float sum = 0f;
            for (int j = 0; j < n; j++) {
                float e = TornadoMath.exp(x.get(t * n + j) - max);
                x.set(t * n + j, e);
                sum += e;
            }
            for (int j = 0; j < n; j++) x.set(t * n + j, x.get(t * n + j) / sum);
            lse.set(t, max + TornadoMath.log(sum));
        }
    }

    /**
     * Expert input buffers [E * capacity, d]: slot s holds the token of assignment slotAssignment[s]
     * (token a / k), or zeros when empty (-1).
     */
    public static void expertGather(FloatArray src, IntArray slotAssignment, FloatArray xe, int slots, int d, int k) {
        for (@Parallel int s = 0; s < slots; s++) {
            for (@Parallel int j = 0; j < d; j++) {
                int a = slotAssignment.get(s);
                xe.set(s * d + j, a >= 0 ? src.get((a / k) * d + j) : 0f);
            }
        }
    }

    /**
     * out[t] = mid[t] + keep * sum over t's k assignments a of scale[a] * (the expert output of a's
     * slot, or, when a was dropped, t's normalized input (the passthrough) or nothing when
     * zeroDropped != 0). Assignment a = t * k + j; tokRow[a] is its slot row or -1.
     */
    public static void expertCombine(FloatArray mid, FloatArray ye, FloatArray ln, IntArray tokRow, FloatArray tokScale,
                                     FloatArray out, int nTok, int d, int k, int zeroDropped,
                                     IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int t = 0; t < nTok; t++) {
            for (@Parallel int j = 0; j < d; j++) {
                float acc = 0f;
                for (int a = t * k; a < t * k + k; a++) {
                    int r = tokRow.get(a);
                    if (r >= 0) acc += tokScale.get(a) * ye.get(r * d + j);
                    else if (zeroDropped == 0) acc += tokScale.get(a) * ln.get(t * d + j);
                }
                float rate = rates.get(rateAt);
                if (rate > 0f) acc = acc * keep(keys.get(keyAt), keys.get(keyAt + 1), t * d + j, rate);
                out.set(t * d + j, mid.get(t * d + j) + acc);
            }
        }
    }

    /**
     * Cross-entropy per row: loss[t] = logsumexp - logit[target]; correct[t] = 1 when the argmax is
     * the target; dlogits = (softmax - onehot) * invRows, the gradient of the mean loss.
     */
    public static void crossEntropy(FloatArray logits, IntArray targets, FloatArray loss, FloatArray correct,
                                    FloatArray dlogits, int rows, int n, float invRows) {
        for (@Parallel int t = 0; t < rows; t++) {
            float max = -3.0e38f;
            int arg = 0;
            for (int j = 0; j < n; j++) {
                float l = logits.get(t * n + j);
                if (l > max) {
                    max = l;
                    arg = j;
                }
            }
            float sum = 0f;
            for (int j = 0; j < n; j++) sum += TornadoMath.exp(logits.get(t * n + j) - max);
            int y = targets.get(t);
            loss.set(t, TornadoMath.log(sum) + max - logits.get(t * n + y));
            correct.set(t, arg == y ? 1f : 0f);
            for (int j = 0; j < n; j++) {
                float p = TornadoMath.exp(logits.get(t * n + j) - max) / sum;
                dlogits.set(t * n + j, (j == y ? p - 1f : p) * invRows);
            }
        }
    }

    /** Copies row {@code row.get(0)} of [rows, n] into out (the logits a sampler needs). */
    public static void copyRow(FloatArray src, IntArray row, FloatArray out, int n) {
        for (@Parallel int j = 0; j < n; j++) out.set(j, src.get(row.get(0) * n + j));
    }

    // ------------------------------------------------------------------ backward

    /**
     * Reads and rewrites element 0 of 14 buffers: makes the first graph allocate and upload buffers
     * that no other of its tasks uses (fewer tasks than one per buffer: each task is one compile).
     */
    public static void touch(FloatArray a0, FloatArray a1, FloatArray a2, FloatArray a3, FloatArray a4, FloatArray a5, FloatArray a6, FloatArray a7, FloatArray a8, FloatArray a9, FloatArray a10, FloatArray a11, FloatArray a12, FloatArray a13) {
        for (@Parallel int i = 0; i < 1; i++) {
            a0.set(i, a0.get(i));
            a1.set(i, a1.get(i));
            a2.set(i, a2.get(i));
            a3.set(i, a3.get(i));
            a4.set(i, a4.get(i));
            a5.set(i, a5.get(i));
            a6.set(i, a6.get(i));
            a7.set(i, a7.get(i));
            a8.set(i, a8.get(i));
            a9.set(i, a9.get(i));
            a10.set(i, a10.get(i));
            a11.set(i, a11.get(i));
            a12.set(i, a12.get(i));
            a13.set(i, a13.get(i));
        }
    }

    public static void touchInt(IntArray a0, IntArray a1, IntArray a2, IntArray a3, IntArray a4, IntArray a5, IntArray a6, IntArray a7, IntArray a8, IntArray a9, IntArray a10, IntArray a11, IntArray a12, IntArray a13) {
        for (@Parallel int i = 0; i < 1; i++) {
            a0.set(i, a0.get(i));
            a1.set(i, a1.get(i));
            a2.set(i, a2.get(i));
            a3.set(i, a3.get(i));
            a4.set(i, a4.get(i));
            a5.set(i, a5.get(i));
            a6.set(i, a6.get(i));
            a7.set(i, a7.get(i));
            a8.set(i, a8.get(i));
            a9.set(i, a9.get(i));
            a10.set(i, a10.get(i));
            a11.set(i, a11.get(i));
            a12.set(i, a12.get(i));
            a13.set(i, a13.get(i));
        }
    }

    /** touch for four buffers: TornadoVM moves only buffers that a task of the graph takes. */
    public static void touch4(FloatArray a, FloatArray b, FloatArray c, FloatArray d) {
        for (@Parallel int i = 0; i < 1; i++) {
            a.set(i, a.get(i));
            b.set(i, b.get(i));
            c.set(i, c.get(i));
            d.set(i, d.get(i));
        }
    }

    public static void fill(FloatArray a, int n, float value) {
        for (@Parallel int i = 0; i < n; i++) a.set(i, value);
    }

    /** dx[r, i] (+)= sum_o dy[r, o] W_e[i, o]: the input gradient of groupedLinear. */
    public static void groupedLinearBackInput(FloatArray dy, FloatArray w, int wOff, FloatArray dx, int groups,
                                              int rowsPerGroup, int in, int out, int accumulate) {
        for (@Parallel int r = 0; r < groups * rowsPerGroup; r++) {
            for (@Parallel int i = 0; i < in; i++) {
                int wb = wOff + (r / rowsPerGroup) * in * out;
                float s = 0f;
                for (int o = 0; o < out; o++) s += dy.get(r * out + o) * w.get(wb + i * out + o);
                if (accumulate != 0) s += dx.get(r * in + i);
                dx.set(r * in + i, s);
            }
        }
    }

    /** dW_e[i, o] += sum over the group's rows of x[r, i] dy[r, o]. */
    public static void groupedLinearBackWeight(FloatArray x, FloatArray dy, FloatArray g, int wOff, int groups,
                                               int rowsPerGroup, int in, int out) {
        for (@Parallel int gi = 0; gi < groups * in; gi++) {
            for (@Parallel int o = 0; o < out; o++) {
                int e = gi / in;
                int i = gi % in;
                float s = 0f;
                for (int rr = 0; rr < rowsPerGroup; rr++) {
                    int r = e * rowsPerGroup + rr;
                    s += x.get(r * in + i) * dy.get(r * out + o);
                }
                int idx = wOff + e * in * out + i * out + o;
                g.set(idx, g.get(idx) + s);
            }
        }
    }

    /** db_e[o] += sum over the group's rows of dy[r, o]. */
    public static void groupedLinearBackBias(FloatArray dy, FloatArray g, int bOff, int groups, int rowsPerGroup, int out) {
        for (@Parallel int go = 0; go < groups * out; go++) {
            int e = go / out;
            int o = go % out;
            float s = 0f;
            for (int rr = 0; rr < rowsPerGroup; rr++) s += dy.get((e * rowsPerGroup + rr) * out + o);
            g.set(bOff + go, g.get(bOff + go) + s);
        }
    }

    /**
     * dh = 0 where the ReLU output h (after dropout) is not positive, else dh / (1 - rate): the
     * backward of ReLU and of the hidden dropout (dropped units are 0 in h).
     */
    public static void reluBack(FloatArray h, FloatArray dh, int n, FloatArray rates, int rateAt) {
        for (@Parallel int i = 0; i < n; i++) {
            float inv = 1f / (1f - rates.get(rateAt));
            dh.set(i, h.get(i) <= 0f ? 0f : dh.get(i) * inv);
        }
    }

    /** LayerNorm's input gradient per row, added to dx when accumulate != 0. */
    public static void layerNormBackInput(FloatArray x, FloatArray w, int gOff, FloatArray mean, FloatArray rstd,
                                          FloatArray dy, FloatArray dx, int rows, int d, int accumulate) {
        for (@Parallel int t = 0; t < rows; t++) {
            float mu = mean.get(t);
            float rs = rstd.get(t);
            float sdy = 0f;
            float sdyx = 0f;
            for (int j = 0; j < d; j++) {
                float dxh = dy.get(t * d + j) * w.get(gOff + j);
                sdy += dxh;
                sdyx += dxh * (x.get(t * d + j) - mu) * rs;
            }
            float m1 = sdy / d;
            float m2 = sdyx / d;
            for (int j = 0; j < d; j++) {
                float xh = (x.get(t * d + j) - mu) * rs;
                float v = rs * (dy.get(t * d + j) * w.get(gOff + j) - m1 - xh * m2);
                if (accumulate != 0) v += dx.get(t * d + j);
                dx.set(t * d + j, v);
            }
        }
    }

    /** LayerNorm's gamma and beta gradients, one column per work item. */
    public static void layerNormBackParams(FloatArray x, FloatArray mean, FloatArray rstd, FloatArray dy, FloatArray g,
                                           int gOff, int bOff, int rows, int d) {
        for (@Parallel int j = 0; j < d; j++) {
            float sg = 0f;
            float sb = 0f;
            for (int t = 0; t < rows; t++) {
                float dyv = dy.get(t * d + j);
                sg += dyv * (x.get(t * d + j) - mean.get(t)) * rstd.get(t);
                sb += dyv;
            }
            g.set(gOff + j, g.get(gOff + j) + sg);
            g.set(bOff + j, g.get(bOff + j) + sb);
        }
    }

    /** dS[row, j] = att * (dA - sum att * dA) * scale with dA = dout_i . v_j, per (sequence, head, query). */
    public static void attentionBackScores(FloatArray att, FloatArray dout, FloatArray v, FloatArray ds,
                                           int nSeq, int s, int heads, int d, IntArray keys, int keyAt,
                                           FloatArray rates, int rateAt) {
        for (@Parallel int row = 0; row < nSeq * heads * s; row++) {
            int i = row % s;
            int bh = row / s;
            int h = bh % heads;
            int b = bh / heads;
            int hd = d / heads;
            float scale = 1.0f / TornadoMath.sqrt((float) hd);
            int base = b * s * d + h * hd;
            int ar = row * s;
            float rate = rates.get(rateAt);
            int kh = keys.get(keyAt);
            int kl = keys.get(keyAt + 1);
            float dot = 0f;
            for (int j = 0; j <= i; j++) {
                float da = 0f;
                for (int c = 0; c < hd; c++) da += dout.get(base + i * d + c) * v.get(base + j * d + c);
                if (rate > 0f) da = da * keep(kh, kl, (long) ar + j, rate); // d p = keep * d (p * keep)
                ds.set(ar + j, da);
                dot += att.get(ar + j) * da;
            }
            for (int j = 0; j < s; j++)
                ds.set(ar + j, j <= i ? att.get(ar + j) * (ds.get(ar + j) - dot) * scale : 0f);
        }
    }

    /** dq[t, col] = sum_{j <= i} dS[b, h, i, j] k[b, j, col]. */
    public static void attentionBackQuery(FloatArray ds, FloatArray k, FloatArray dq, int nSeq, int s, int heads, int d) {
        for (@Parallel int t = 0; t < nSeq * s; t++) {
            for (@Parallel int col = 0; col < d; col++) {
                int b = t / s;
                int i = t % s;
                int h = col / (d / heads);
                int ar = ((b * heads + h) * s + i) * s;
                float acc = 0f;
                for (int j = 0; j <= i; j++) acc += ds.get(ar + j) * k.get((b * s + j) * d + col);
                dq.set(t * d + col, acc);
            }
        }
    }

    /**
     * dk[b, j, col] = sum_{i >= j} dS[b,h,i,j] q[b,i,col]; dv[b, j, col] = sum_{i >= j} att[b,h,i,j]
     * keep[b,h,i,j] dout[b,i,col].
     */
    public static void attentionBackKeyValue(FloatArray ds, FloatArray att, FloatArray q, FloatArray dout, FloatArray dk,
                                             FloatArray dv, int nSeq, int s, int heads, int d, IntArray keys, int keyAt,
                                             FloatArray rates, int rateAt) {
        for (@Parallel int t = 0; t < nSeq * s; t++) {
            for (@Parallel int col = 0; col < d; col++) {
                int b = t / s;
                int j = t % s;
                int h = col / (d / heads);
                int bh = (b * heads + h) * s;
                float rate = rates.get(rateAt);
                int kh = keys.get(keyAt);
                int kl = keys.get(keyAt + 1);
                float ak = 0f;
                float av = 0f;
                for (int i = j; i < s; i++) {
                    int a = (bh + i) * s + j;
                    ak += ds.get(a) * q.get((b * s + i) * d + col);
                    float p = att.get(a);
                    if (rate > 0f) p = p * keep(kh, kl, a, rate);
                    av += p * dout.get((b * s + i) * d + col);
                }
                dk.set(t * d + col, ak);
                dv.set(t * d + col, av);
            }
        }
    }

    /**
     * Expert output gradients per slot: dYe[s] = scale[a] * dB[a / k] for the slot's assignment a,
     * else 0; dB is the gradient of the FFN branch (after the residual dropout's mask).
     */
    public static void expertBackOutput(FloatArray db, IntArray slotAssignment, FloatArray tokScale, FloatArray dye, int slots,
                                        int d, int k) {
        for (@Parallel int s = 0; s < slots; s++) {
            for (@Parallel int j = 0; j < d; j++) {
                int a = slotAssignment.get(s);
                dye.set(s * d + j, a >= 0 ? tokScale.get(a) * db.get((a / k) * d + j) : 0f);
            }
        }
    }

    /**
     * dLn[t] = sum over t's k assignments of dXe[the slot row], or scale * dB[t] for a dropped one
     * (the passthrough; nothing when zeroDropped != 0).
     */
    public static void expertBackScatter(FloatArray dxe, FloatArray db, IntArray tokRow, FloatArray tokScale, FloatArray dln,
                                         int nTok, int d, int k, int zeroDropped) {
        for (@Parallel int t = 0; t < nTok; t++) {
            for (@Parallel int j = 0; j < d; j++) {
                float acc = 0f;
                for (int a = t * k; a < t * k + k; a++) {
                    int r = tokRow.get(a);
                    if (r >= 0) acc += dxe.get(r * d + j);
                    else if (zeroDropped == 0) acc += tokScale.get(a) * db.get(t * d + j);
                }
                dln.set(t * d + j, acc);
            }
        }
    }

    /**
     * Router gradient per token, into dLogits [T, E]. dot_a = dB . (assignment a's output before
     * scaling: its expert output, the passthrough, or 0 for a dropped one when zeroDropped != 0) is
     * kept in gate [T k]. For k = 1 the route probability gets dot, divided by p when the scale is
     * p / stop_gradient(p); for k > 1 the weights are g_a = p_a / S over the token's k choices, so
     * p_a gets (dot_a - sum_b g_b dot_b) / S. Every probability also gets the load-balancing
     * gradient lbGrad[e]; then back through the softmax, plus the z-loss term zScale * lse_t * p.
     */
    public static void routerBack(FloatArray db, FloatArray ye, FloatArray ln, IntArray tokRow, IntArray expertOf,
                                  FloatArray tokScale, FloatArray probs, FloatArray lbGrad,
                                  FloatArray lse, FloatArray gate, FloatArray dLogits, int nTok, int d, int experts,
                                  int k, int scaleProb, int zeroDropped, float zScale) {
        for (@Parallel int t = 0; t < nTok; t++) {
            float gdg = 0f;
            float psum = 0f;
            for (int a = t * k; a < t * k + k; a++) {
                int r = tokRow.get(a);
                float dot = 0f;
                if (r >= 0 || zeroDropped == 0) {
                    for (int j = 0; j < d; j++) {
                        float o = r >= 0 ? ye.get(r * d + j) : ln.get(t * d + j);
                        dot += db.get(t * d + j) * o;
                    }
                }
                gate.set(a, dot);
                gdg += tokScale.get(a) * dot;
                psum += probs.get(t * experts + expertOf.get(a));
            }
            float sum = 0f;
            for (int e = 0; e < experts; e++) {
                float g = lbGrad.get(e);
                for (int a = t * k; a < t * k + k; a++) {
                    if (expertOf.get(a) == e) {
                        if (k == 1) g += scaleProb != 0 ? gate.get(a) : gate.get(a) / probs.get(t * experts + e);
                        else g += (gate.get(a) - gdg) / psum;
                    }
                }
                sum += probs.get(t * experts + e) * g;
            }
            float zg = zScale * lse.get(t);
            for (int e = 0; e < experts; e++) {
                float g = lbGrad.get(e);
                for (int a = t * k; a < t * k + k; a++) {
                    if (expertOf.get(a) == e) {
                        if (k == 1) g += scaleProb != 0 ? gate.get(a) : gate.get(a) / probs.get(t * experts + e);
                        else g += (gate.get(a) - gdg) / psum;
                    }
                }
                float p = probs.get(t * experts + e);
                dLogits.set(t * experts + e, p * (g - sum) + zg * p);
            }
        }
    }

    /** dTokEmb[v] += sum of dX over the tokens equal to v (one work item per (v, column): no races). */
    public static void embedBack(IntArray tok, FloatArray dx, FloatArray g, int tokOff, int nTok, int d, int vocab) {
        for (@Parallel int v = 0; v < vocab; v++) {
            for (@Parallel int j = 0; j < d; j++) {
                float s = 0f;
                for (int t = 0; t < nTok; t++) if (tok.get(t) == v) s += dx.get(t * d + j);
                g.set(tokOff + v * d + j, g.get(tokOff + v * d + j) + s);
            }
        }
    }

    /** dPosEmb[p] += sum of dX over the tokens at position p. */
    public static void posEmbedBack(FloatArray dx, FloatArray g, int posOff, int nTok, int d, int seq) {
        for (@Parallel int p = 0; p < seq; p++) {
            for (@Parallel int j = 0; j < d; j++) {
                float s = 0f;
                for (int t = p; t < nTok; t += seq) s += dx.get(t * d + j);
                g.set(posOff + p * d + j, g.get(posOff + p * d + j) + s);
            }
        }
    }

    /** partial[c] = sum of g^2 over chunk c; the host adds the partials. */
    public static void sumSquares(FloatArray g, FloatArray partial, int n, int chunk, int chunks) {
        for (@Parallel int c = 0; c < chunks; c++) {
            float s = 0f;
            int end = TornadoMath.min(n, (c + 1) * chunk);
            for (int i = c * chunk; i < end; i++) s += g.get(i) * g.get(i);
            partial.set(c, s);
        }
    }

    /**
     * Adam with bias correction; hp = {lr, gradScale, beta1, beta2, eps, 1 - beta1^t, 1 - beta2^t},
     * sent every step.
     */
    public static void adam(FloatArray w, FloatArray g, FloatArray m, FloatArray v, FloatArray hp, int n) {
        for (@Parallel int i = 0; i < n; i++) {
            float lr = hp.get(0);
            float b1 = hp.get(2);
            float b2 = hp.get(3);
            float gi = g.get(i) * hp.get(1);
            float mi = b1 * m.get(i) + (1f - b1) * gi;
            float vi = b2 * v.get(i) + (1f - b2) * gi * gi;
            m.set(i, mi);
            v.set(i, vi);
            float denom = TornadoMath.sqrt(vi) / TornadoMath.sqrt(hp.get(6)) + hp.get(4);
            w.set(i, w.get(i) - (lr / hp.get(5)) * mi / denom);
        }
    }
}
