package org.tornadoswitch.hf;

import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * TEMPORARY: a plain-loop implementation of the shared attention's contract
 * (/work/notes/ATTENTION_API.md, class {@code org.tornadoswitch.jvm.Attention} of branch perf-attn),
 * with the same records and signatures, so the T5 model is written against that API before it is
 * merged. Deleted when {@code org.tornadoswitch.jvm.Attention} lands on main (the T5 code then
 * imports that class instead; nothing else changes).
 */
final class AttentionStandIn {
    private AttentionStandIn() {}

    record Shape(int nSeq, int sq, int skv, int heads, int hd,
                 int qSeqStride, int qRowStride, int kvSeqStride, int kvRowStride) {
        static Shape dense(int nSeq, int s, int heads, int hd) {
            int w = heads * hd;
            return new Shape(nSeq, s, s, heads, hd, s * w, w, s * w, w);
        }

        static Shape cross(int nSeq, int sq, int skv, int heads, int hd) {
            int w = heads * hd;
            return new Shape(nSeq, sq, skv, heads, hd, sq * w, w, skv * w, w);
        }
    }

    record Options(boolean causal, int qPos0, int[] kvLen, float scale,
                   float[] bias, int biasOff, float dropRate, long dropKey) {
        static Options causal(float scale) {
            return new Options(true, 0, null, scale, null, 0, 0f, 0L);
        }

        static Options full(float scale) {
            return new Options(false, 0, null, scale, null, 0, 0f, 0L);
        }

        Options withDropout(float rate, long key) {
            return new Options(causal, qPos0, kvLen, scale, bias, biasOff, rate, key);
        }

        Options withBias(float[] b, int off) {
            return new Options(causal, qPos0, kvLen, scale, b, off, dropRate, dropKey);
        }

        Options withKvLen(int[] len) {
            return new Options(causal, qPos0, len, scale, bias, biasOff, dropRate, dropKey);
        }

        Options withQPos0(int p) {
            return new Options(causal, p, kvLen, scale, bias, biasOff, dropRate, dropKey);
        }

        /** Keys [0, visible) are seen by query i of sequence b. */
        int visible(int b, int i, int skv) {
            int n = skv;
            if (causal) n = Math.min(n, i + qPos0 + 1);
            if (kvLen != null) n = Math.min(n, kvLen[b]);
            return Math.max(n, 0);
        }
    }

    private static float keep(long key, long idx, float rate) {
        return Rng.uniform(key, idx) < rate ? 0f : 1f / (1f - rate);
    }

    private static final ThreadLocal<float[][]> SCRATCH = ThreadLocal.withInitial(() -> new float[1][0]);

    private static float[] scratch(int n) {
        float[][] h = SCRATCH.get();
        if (h[0].length < n) h[0] = new float[n];
        return h[0];
    }

    private static float score(Shape s, Options o, float[] q, int qi, float[] k, int kj, int h, int i, int j) {
        float dot = 0;
        for (int c = 0; c < s.hd(); c++) dot += q[qi + c] * k[kj + c];
        float sc = o.scale() * dot;
        if (o.bias() != null) sc += o.bias()[o.biasOff() + (h * s.sq() + i) * s.skv() + j];
        return sc;
    }

    static void forward(ThreadPool pool, Shape s, Options o,
                        float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                        float[] out, int outOff, float[] lse, int lseOff) {
        int hd = s.hd();
        pool.parallelFor(s.nSeq() * s.heads(), (lo, hi) -> {
            float[] p = scratch(s.skv());
            for (int bh = lo; bh < hi; bh++) {
                int b = bh / s.heads(), h = bh % s.heads();
                for (int i = 0; i < s.sq(); i++) {
                    int qi = qOff + b * s.qSeqStride() + i * s.qRowStride() + h * hd;
                    int oi = outOff + b * s.qSeqStride() + i * s.qRowStride() + h * hd;
                    int n = o.visible(b, i, s.skv());
                    for (int c = 0; c < hd; c++) out[oi + c] = 0f;
                    if (n == 0) {
                        lse[lseOff + bh * s.sq() + i] = Float.NEGATIVE_INFINITY;
                        continue;
                    }
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j < n; j++) {
                        p[j] = score(s, o, q, qi, k, kOff + b * s.kvSeqStride() + j * s.kvRowStride() + h * hd, h, i, j);
                        max = Math.max(max, p[j]);
                    }
                    float sum = 0;
                    for (int j = 0; j < n; j++) {
                        p[j] = (float) Math.exp(p[j] - max);
                        sum += p[j];
                    }
                    float inv = 1f / sum;
                    long base = (((long) b * s.heads() + h) * s.sq() + i) * s.skv();
                    for (int j = 0; j < n; j++) {
                        float w = p[j] * inv;
                        if (o.dropRate() > 0f) w *= keep(o.dropKey(), base + j, o.dropRate());
                        int vj = vOff + b * s.kvSeqStride() + j * s.kvRowStride() + h * hd;
                        for (int c = 0; c < hd; c++) out[oi + c] += w * v[vj + c];
                    }
                    lse[lseOff + bh * s.sq() + i] = max + (float) Math.log(sum);
                }
            }
        });
    }

    static void backward(ThreadPool pool, Shape s, Options o,
                         float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
                         float[] out, int outOff, float[] dout, int doutOff, float[] lse, int lseOff,
                         float[] dq, int dqOff, float[] dk, int dkOff, float[] dv, int dvOff,
                         float[] dBias, int dBiasOff) {
        int hd = s.hd();
        // one task per head: the sequences of a head run in order, so dBias sums in a fixed order
        pool.parallelFor(s.heads(), (lo, hi) -> {
            for (int h = lo; h < hi; h++) {
                for (int b = 0; b < s.nSeq(); b++) {
                    for (int i = 0; i < s.sq(); i++) {
                        int qi = dqOff + b * s.qSeqStride() + i * s.qRowStride() + h * hd;
                        for (int c = 0; c < hd; c++) dq[qi + c] = 0f;
                    }
                    for (int j = 0; j < s.skv(); j++) {
                        int kj = b * s.kvSeqStride() + j * s.kvRowStride() + h * hd;
                        for (int c = 0; c < hd; c++) {
                            dk[dkOff + kj + c] = 0f;
                            dv[dvOff + kj + c] = 0f;
                        }
                    }
                    int bh = b * s.heads() + h;
                    for (int i = 0; i < s.sq(); i++) {
                        int n = o.visible(b, i, s.skv());
                        if (n == 0) continue;
                        int qRow = b * s.qSeqStride() + i * s.qRowStride() + h * hd;
                        float l = lse[lseOff + bh * s.sq() + i];
                        float dd = 0; // D_i = dO_i . O_i
                        for (int c = 0; c < hd; c++) dd += dout[doutOff + qRow + c] * out[outOff + qRow + c];
                        long base = ((long) bh * s.sq() + i) * s.skv();
                        for (int j = 0; j < n; j++) {
                            int kRow = b * s.kvSeqStride() + j * s.kvRowStride() + h * hd;
                            float p = (float) Math.exp(score(s, o, q, qOff + qRow, k, kOff + kRow, h, i, j) - l);
                            float m = o.dropRate() > 0f ? keep(o.dropKey(), base + j, o.dropRate()) : 1f;
                            float dp = 0;
                            for (int c = 0; c < hd; c++) {
                                dv[dvOff + kRow + c] += p * m * dout[doutOff + qRow + c];
                                dp += dout[doutOff + qRow + c] * v[vOff + kRow + c];
                            }
                            float ds = p * (m * dp - dd);
                            if (dBias != null) dBias[dBiasOff + (h * s.sq() + i) * s.skv() + j] += ds;
                            float dss = ds * o.scale();
                            for (int c = 0; c < hd; c++) {
                                dq[dqOff + qRow + c] += dss * k[kOff + kRow + c];
                                dk[dkOff + kRow + c] += dss * q[qOff + qRow + c];
                            }
                        }
                    }
                }
            }
        });
    }
}
