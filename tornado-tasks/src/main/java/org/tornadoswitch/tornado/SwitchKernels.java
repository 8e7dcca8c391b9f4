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


    /** dx[i] += dIn[i] * jitter factor(i): the router input gradient back through the jitter. */
    public static void jitterBack(FloatArray dIn, FloatArray dx, int n, IntArray keys, int keyAt, FloatArray rates, int rateAt) {
        for (@Parallel int i = 0; i < n; i++) {
            float eps = rates.get(rateAt);
            dx.set(i, dx.get(i) + dIn.get(i) * jitterFactor(keys.get(keyAt), keys.get(keyAt + 1), i, eps));
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

    /**
     * Router gradient per token, into dLogits [T, E], from the gate dot products gate[a] (dB . the
     * output of assignment a before scaling; {@link RowKernels#gateDots}). For k = 1 the route
     * probability gets gate, divided by p when the scale is p / stop_gradient(p); for k > 1 the
     * weights are g_a = p_a / S over the token's k choices, so p_a gets (gate_a - sum_b g_b gate_b) / S.
     * Every probability also gets the load-balancing gradient lbGrad[e]; then back through the
     * softmax, plus the z-loss term zScale * lse_t * p.
     */
    public static void routerBack(FloatArray gate, IntArray expertOf, FloatArray tokScale, FloatArray probs, FloatArray lbGrad,
                                  int lbOff, FloatArray lse, FloatArray dLogits, int nTok, int experts, int k, int scaleProb, float zScale) {
        for (@Parallel int t = 0; t < nTok; t++) {
            float gdg = 0f;
            float psum = 0f;
            for (int a = t * k; a < t * k + k; a++) {
                gdg += tokScale.get(a) * gate.get(a);
                psum += probs.get(t * experts + expertOf.get(a));
            }
            float sum = 0f;
            for (int e = 0; e < experts; e++) {
                float g = lbGrad.get(lbOff + e);
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
                float g = lbGrad.get(lbOff + e);
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

    /**
     * dTokEmb[v] += sum of dX over the tokens equal to v: the host lists the batch's positions grouped
     * by token id (order, stable within an id) with each id's start in vStart [vocab + 1], so each
     * (v, column) sums only its own tokens, in position order.
     */
    public static void embedBack(IntArray order, IntArray vStart, FloatArray dx, FloatArray g, int tokOff, int d, int vocab) {
        for (@Parallel int v = 0; v < vocab; v++) {
            for (@Parallel int j = 0; j < d; j++) {
                float s = 0f;
                for (int p = vStart.get(v); p < vStart.get(v + 1); p++) s += dx.get(order.get(p) * d + j);
                g.set(tokOff + v * d + j, g.get(tokOff + v * d + j) + s);
            }
        }
    }
}
