package org.tornadoswitch.hf;

import java.util.Arrays;
import org.tornadoswitch.hf.T5Config.Stack;
import org.tornadoswitch.model.Routing;
import org.tornadoswitch.util.Rng;

/**
 * The host side of the SwitchTransformers model, written once for every {@link T5Backend}: it runs
 * the stages in order, makes the routing decisions (top-1, {@code expert_capacity} per expert per
 * sequence, earliest positions kept: {@link Routing#routePerGroup}), adds up the losses as
 * transformers does, drives the backward pass and generation (greedy, HF's beam search, sampling)
 * on the backend's key/value cache.
 *
 * <p>Losses (HF's {@code SwitchTransformersForConditionalGeneration.forward} with
 * {@code output_router_logits=True}): cross-entropy over the labels that are not -100; per stack
 * the z-loss {@code mean over (sequence, token, sparse layer) of logsumexp(router logits)²} and the
 * load-balancing loss over the stack's router logits concatenated along the sequence,
 * {@code E² · mean_{b,e}(f_{b,e} · P_{b,e})} with f the fraction of sequence b's tokens (all
 * sparse layers together) whose argmax is e and P their mean probability of e. As in HF both are 0
 * for a stack whose sparse step is 1 (every block sparse). {@link AuxLossMode#PER_LAYER} computes
 * the load-balancing loss per layer and sums it (HF issue 29503), for any sparse step.
 */
public final class T5Model implements AutoCloseable {
    /** How the load-balancing loss treats the layers of a stack. */
    public enum AuxLossMode { HF, PER_LAYER }

    /** The losses of a pass; {@code total = ce + z_coef (encZ + decZ) + aux_coef (encAux + decAux)}. */
    public record Losses(double total, double ce, double encoderZLoss, double decoderZLoss, double encoderAuxLoss,
                         double decoderAuxLoss, int tokens, int dropped, int routed) {}

    /**
     * A batch: {@code nSeq} encoder sequences of {@code encLen} ids (right-padded with the pad id,
     * {@code encLengths} real tokens each), and decoder inputs / labels of {@code decLen} each
     * (labels -100 are ignored; the decoder inputs are the labels shifted right, see {@link #shiftRight}).
     */
    public record Batch(int nSeq, int encLen, int[] encIds, int[] encLengths, int decLen, int[] decIds, int[] labels) {}

    private final T5Config c;
    private final T5Backend be;
    private final int experts;
    private AuxLossMode auxMode = AuxLossMode.HF;
    private Routing[][] routing = new Routing[2][];
    private int routingCap;
    // per pass: counts [stack][layer][seq * E + e] of argmax tokens and sums of probabilities
    private int[][][] counts;
    private double[][][] probSums;
    private final double[] zSum = new double[2];
    private int nSeq, encLen, decLen;
    private boolean hasLabels;
    private int ceTokens;
    private float[][][] probGrad;
    private final double[] headOut = new double[2];
    private int lastDropped, lastRouted;

    public T5Model(T5Backend backend) {
        this.be = backend;
        this.c = backend.config();
        this.experts = c.numExperts();
        counts = new int[2][][];
        probSums = new double[2][][];
        probGrad = new float[2][][];
        for (Stack s : Stack.values()) {
            int L = c.layers(s);
            counts[s.ordinal()] = new int[L][];
            probSums[s.ordinal()] = new double[L][];
            probGrad[s.ordinal()] = new float[L][];
        }
    }

    public T5Config config() {
        return c;
    }

    public T5Backend backend() {
        return be;
    }

    /** The routing of a block in the last pass (for tests and statistics). */
    public Routing routing(Stack s, int layer) {
        return routing[s.ordinal()][layer];
    }

    /**
     * A fingerprint of every routing decision of the last pass (each token's expert and slot), to
     * tell whether two passes routed alike.
     */
    public long routeFingerprint() {
        long h = 1;
        for (Stack s : Stack.values()) {
            int t = nSeq * (s == Stack.ENCODER ? encLen : decLen);
            for (int l = 0; l < c.layers(s); l++) {
                Routing r = routing[s.ordinal()][l];
                if (r.experts == 1) continue;
                for (int i = 0; i < t; i++) h = h * 31 + (r.expertOf[i] * 1000003L + r.slot[i]);
            }
        }
        return h;
    }

    public void setAuxLossMode(AuxLossMode mode) {
        this.auxMode = mode;
    }

    public AuxLossMode auxLossMode() {
        return auxMode;
    }

    /** HF's _shift_right: [start, labels[0..n-2]] with -100 replaced by the pad id, per sequence of len. */
    public static int[] shiftRight(int[] labels, int nSeq, int len, int start, int pad) {
        int[] out = new int[nSeq * len];
        for (int b = 0; b < nSeq; b++) {
            out[b * len] = start;
            for (int i = 1; i < len; i++) {
                int v = labels[b * len + i - 1];
                out[b * len + i] = v == -100 ? pad : v;
            }
        }
        return out;
    }

    private void ensureRouting(int tokens) {
        if (tokens <= routingCap) return;
        routingCap = Math.max(tokens, 2 * routingCap);
        for (Stack s : Stack.values()) {
            Routing[] rs = new Routing[c.layers(s)];
            for (int l = 0; l < rs.length; l++) rs[l] = new Routing(routingCap, c.isSparse(s, l) ? experts : 1);
            routing[s.ordinal()] = rs;
        }
    }

    private void check(int[] ids, String what) {
        for (int id : ids)
            if (id < 0 || id >= c.vocabSize())
                throw new IllegalArgumentException(what + " id " + id + " is outside the vocabulary [0, " + c.vocabSize() + ")");
    }

    /** The blocks of one stack on the backend's current input of {@code nSeq x len} tokens. */
    private void runStack(Stack s, int nSeq, int len) {
        int t = nSeq * len, si = s.ordinal();
        ensureRouting(t);
        zSum[si] = 0;
        for (int l = 0; l < c.layers(s); l++) {
            float[] probs = be.forwardAttention(s, l);
            Routing r = routing[si][l];
            if (probs == null) {
                r.dense(t);
            } else {
                r.routePerGroup(probs, t, len, c.expertCapacity());
                lastDropped += r.dropped;
                lastRouted += t;
                int[] cn = counts[si][l] = grow(counts[si][l], nSeq * experts);
                double[] ps = probSums[si][l] = grow(probSums[si][l], nSeq * experts);
                Arrays.fill(cn, 0, nSeq * experts, 0);
                Arrays.fill(ps, 0, nSeq * experts, 0);
                for (int i = 0; i < t; i++) {
                    int b = i / len;
                    cn[b * experts + r.expertOf[i]]++;
                    for (int e = 0; e < experts; e++) ps[b * experts + e] += probs[i * experts + e];
                }
                float[] lse = be.routerLogSumExp(s, l);
                double z = 0;
                for (int i = 0; i < t; i++) z += (double) lse[i] * lse[i];
                zSum[si] += z;
            }
            be.forwardFfn(s, l, r);
        }
    }

    private static int[] grow(int[] a, int n) {
        return a != null && a.length >= n ? a : new int[n];
    }

    private static double[] grow(double[] a, int n) {
        return a != null && a.length >= n ? a : new double[n];
    }

    private static float[] grow(float[] a, int n) {
        return a != null && a.length >= n ? a : new float[n];
    }

    /** Encoder forward of a batch (evaluation mode unless {@code training}). */
    public void encode(int nSeq, int len, int[] ids, int[] lengths, boolean training, int step) {
        check(Arrays.copyOf(ids, nSeq * len), "input");
        be.beginPass(training, step);
        this.nSeq = nSeq;
        this.encLen = len;
        lastDropped = lastRouted = 0;
        be.setEncoderInput(ids, lengths, nSeq, len);
        runStack(Stack.ENCODER, nSeq, len);
        be.finishEncoder();
    }

    /** The full forward pass of a batch; with labels also the losses (returned), else null. */
    public Losses forward(Batch b, boolean training, int step) {
        encode(b.nSeq(), b.encLen(), b.encIds(), b.encLengths(), training, step);
        check(b.decIds(), "decoder input");
        decLen = b.decLen();
        be.setDecoderInput(b.decIds(), b.nSeq(), b.decLen());
        runStack(Stack.DECODER, b.nSeq(), b.decLen());
        hasLabels = b.labels() != null;
        be.forwardHead(b.labels(), headOut);
        if (!hasLabels) return null;
        ceTokens = (int) headOut[1];
        if (ceTokens == 0) throw new IllegalArgumentException("every label is -100: no token to compute the loss on");
        double ce = headOut[0] / ceTokens;
        double[] z = new double[2], aux = new double[2];
        for (Stack s : Stack.values()) routerLosses(s, z, aux);
        double total = ce + c.routerZLossCoef() * (z[0] + z[1]) + c.routerAuxLossCoef() * (aux[0] + aux[1]);
        return new Losses(total, ce, z[0], z[1], aux[0], aux[1], ceTokens, lastDropped, lastRouted);
    }

    /** Whether the router losses of a stack are computed (and trained) in the current mode. */
    private boolean routerLossesOn(Stack s) {
        return c.sparseLayers(s) > 0 && (auxMode == AuxLossMode.PER_LAYER || c.hfRouterLosses(s));
    }

    /** The z-loss and load-balancing loss of a stack (0 where HF computes none), and their probability gradients. */
    private void routerLosses(Stack s, double[] z, double[] aux) {
        int si = s.ordinal(), len = s == Stack.ENCODER ? encLen : decLen, L = c.layers(s), nl = c.sparseLayers(s);
        for (int l = 0; l < L; l++) if (probGrad[si][l] != null) Arrays.fill(probGrad[si][l], 0f);
        if (!routerLossesOn(s)) return;
        z[si] = zSum[si] / ((double) nSeq * len * nl);
        double coef = c.routerAuxLossCoef();
        if (auxMode == AuxLossMode.HF) {
            // one group per sequence over all sparse layers: N = len * layers tokens
            double n = (double) len * nl, sum = 0;
            int[] cn = new int[nSeq * experts];
            double[] ps = new double[nSeq * experts];
            for (int l = 0; l < L; l++) {
                if (!c.isSparse(s, l)) continue;
                for (int i = 0; i < nSeq * experts; i++) {
                    cn[i] += counts[si][l][i];
                    ps[i] += probSums[si][l][i];
                }
            }
            for (int i = 0; i < nSeq * experts; i++) sum += (cn[i] / n) * (ps[i] / n);
            aux[si] = (double) experts * experts * sum / (nSeq * experts);
            for (int l = 0; l < L; l++) {
                if (!c.isSparse(s, l)) continue;
                float[] pg = probGrad[si][l] = grow(probGrad[si][l], nSeq * experts);
                for (int i = 0; i < nSeq * experts; i++) pg[i] = (float) (coef * experts * (cn[i] / n) / (nSeq * n));
            }
        } else {
            double n = len, total = 0;
            for (int l = 0; l < L; l++) {
                if (!c.isSparse(s, l)) continue;
                int[] cn = counts[si][l];
                double[] ps = probSums[si][l];
                double sum = 0;
                float[] pg = probGrad[si][l] = grow(probGrad[si][l], nSeq * experts);
                for (int i = 0; i < nSeq * experts; i++) {
                    sum += (cn[i] / n) * (ps[i] / n);
                    pg[i] = (float) (coef * experts * (cn[i] / n) / (nSeq * n));
                }
                total += (double) experts * experts * sum / (nSeq * experts);
            }
            aux[si] = total;
        }
    }

    /** Gradients of the last {@link #forward}'s total loss (with labels) in the backend's gradient store. */
    public void backward() {
        if (!hasLabels) throw new IllegalStateException("backward needs a forward pass with labels");
        be.zeroGrads();
        be.backwardHead((float) (1.0 / ceTokens));
        for (Stack s : new Stack[] {Stack.DECODER, Stack.ENCODER}) {
            if (s == Stack.ENCODER) {
                be.backwardDecoderInput();
                be.backwardEncoderOutput();
            }
            int si = s.ordinal(), len = s == Stack.ENCODER ? encLen : decLen;
            boolean on = routerLossesOn(s);
            float zScale = on ? (float) (c.routerZLossCoef() * 2.0 / ((double) nSeq * len * c.sparseLayers(s))) : 0f;
            for (int l = c.layers(s) - 1; l >= 0; l--) {
                be.backwardFfn(s, l, routing[si][l], on ? probGrad[si][l] : null, zScale);
                be.backwardAttention(s, l);
            }
        }
        be.backwardEncoderInput();
    }

    /** Logits [decoder position][vocab] of one sequence, evaluation mode (as HF's model(...).logits). */
    public float[][] logits(int[] input, int[] decoderInput) {
        forward(new Batch(1, input.length, input, null, decoderInput.length, decoderInput, null), false, 0);
        float[] lg = be.logits();
        float[][] out = new float[decoderInput.length][];
        for (int i = 0; i < out.length; i++) out[i] = Arrays.copyOfRange(lg, i * c.vocabSize(), (i + 1) * c.vocabSize());
        return out;
    }

    /** HF's training objective of one pair (labels shifted right into the decoder), evaluation mode. */
    public Losses loss(int[] input, int[] labels) {
        int[] dec = shiftRight(labels, 1, labels.length, c.decoderStartTokenId(), c.padTokenId());
        return forward(new Batch(1, input.length, input, null, labels.length, dec, labels), false, 0);
    }

    // ---- generation ----

    /** Decoder blocks on the backend's decode-step tokens (one per row: each its own sequence for capacity). */
    private float[] decodeOnce(int rows, int[] ids, int pos) {
        be.decodeStep(ids, pos);
        ensureRouting(rows);
        Routing[] rs = routing[Stack.DECODER.ordinal()];
        for (int l = 0; l < c.layers(Stack.DECODER); l++) {
            float[] probs = be.forwardAttention(Stack.DECODER, l);
            if (probs == null) rs[l].dense(rows);
            else rs[l].routePerGroup(probs, rows, 1, c.expertCapacity());
            be.forwardFfn(Stack.DECODER, l, rs[l]);
        }
        be.forwardHead(null, null);
        return be.logits();
    }

    /** Called after each generated token (progress display); may be null. */
    public interface TokenListener {
        void token(int index, int id);
    }

    /**
     * Greedy decoding as HF's generate(num_beams=1, do_sample=False): ids start with the decoder
     * start token; stops after an EOS (kept) or {@code maxNew} new tokens.
     */
    public int[] generateGreedy(int[] input, int maxNew, TokenListener listener) {
        return generateSampled(input, maxNew, 0, 0, 0, 0, listener);
    }

    /**
     * Sampling with temperature (> 0) and top-k (0 = off) from a seeded generator (HF's
     * do_sample=True draws from torch's generator instead, so the same seed gives other tokens);
     * temperature 0 is greedy. Before {@code minNew} new tokens EOS is not chosen (HF's
     * min_new_tokens: its logit is -inf).
     */
    public int[] generateSampled(int[] input, int maxNew, double temperature, int topK, long seed, int minNew,
                                 TokenListener listener) {
        encode(1, input.length, input, null, false, 0);
        be.beginDecoding(1, maxNew + 1);
        int[] out = new int[maxNew + 1];
        out[0] = c.decoderStartTokenId();
        int n = 1, vocab = c.vocabSize();
        int[] cur = new int[1];
        Rng rng = new Rng(seed);
        float[] work = temperature > 0 ? new float[vocab] : null;
        for (int p = 0; p < maxNew; p++) {
            cur[0] = out[n - 1];
            float[] lg = decodeOnce(1, cur, p);
            if (p < minNew) suppressEos(lg, 0);
            int next = temperature > 0 ? sample(lg, vocab, temperature, topK, rng, work) : argmax(lg, 0, vocab);
            out[n++] = next;
            if (listener != null) listener.token(p, next);
            if (c.isEos(next)) break;
        }
        return Arrays.copyOf(out, n);
    }

    private void suppressEos(float[] lg, int off) {
        for (int e : c.eosTokenIds()) lg[off + e] = Float.NEGATIVE_INFINITY;
    }

    static int argmax(float[] x, int off, int n) {
        int best = 0;
        float bv = x[off];
        for (int j = 1; j < n; j++) if (x[off + j] > bv) {
            bv = x[off + j];
            best = j;
        }
        return best;
    }

    /** HF's warpers in order: temperature, then top-k; then one draw from the softmax. */
    private static int sample(float[] lg, int vocab, double temperature, int topK, Rng rng, float[] work) {
        for (int j = 0; j < vocab; j++) work[j] = (float) (lg[j] / temperature);
        if (topK > 0 && topK < vocab) {
            float[] sorted = Arrays.copyOf(work, vocab);
            Arrays.sort(sorted);
            float kth = sorted[vocab - topK];
            for (int j = 0; j < vocab; j++) if (work[j] < kth) work[j] = Float.NEGATIVE_INFINITY;
        }
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < vocab; j++) max = Math.max(max, work[j]);
        double sum = 0;
        for (int j = 0; j < vocab; j++) sum += Math.exp(work[j] - max);
        double u = rng.nextDouble() * sum, acc = 0;
        for (int j = 0; j < vocab; j++) {
            acc += Math.exp(work[j] - max);
            if (acc > u && work[j] != Float.NEGATIVE_INFINITY) return j;
        }
        return argmax(work, 0, vocab);
    }

    /**
     * Beam search as HF's generate(num_beams=B, length_penalty=1, early_stopping=False) of
     * transformers v5: every step keeps the top 2B continuations of all beams by summed log
     * probability (fp32), moves those of the top B that end in EOS (or reach the length limit) to
     * the finished set scored by sum / generated length, continues with the best B unfinished, and
     * stops when no running beam can beat the worst finished one. Returns the best finished
     * sequence, decoder start token first.
     */
    public int[] generateBeam(int[] input, int maxNew, int beams, int minNew, TokenListener listener) {
        if (beams < 1) throw new IllegalArgumentException("--num-beams must be >= 1, got " + beams);
        if (beams == 1) return generateSampled(input, maxNew, 0, 0, 0, minNew, listener);
        encode(1, input.length, input, null, false, 0);
        int maxLength = maxNew + 1, promptLen = 1, vocab = c.vocabSize(), k = 2 * beams;
        be.beginDecoding(beams, maxLength);
        int[][] running = new int[beams][maxLength], finished = new int[beams][maxLength];
        int[] finLen = new int[beams];
        float[] runScore = new float[beams], finScore = new float[beams];
        boolean[] finDone = new boolean[beams];
        for (int bI = 0; bI < beams; bI++) {
            running[bI][0] = c.decoderStartTokenId();
            runScore[bI] = bI == 0 ? 0f : -1e9f;
            finScore[bI] = -1e9f;
        }
        boolean unsatisfied = true;
        int curLen = 1;
        int[] ids = new int[beams], src = new int[beams];
        float[] logp = new float[beams * vocab];
        int[] candIdx = new int[k];
        float[] candScore = new float[k];
        int[][] candSeq = new int[k][];
        boolean[] hits = new boolean[k];
        while (true) {
            for (int bI = 0; bI < beams; bI++) ids[bI] = running[bI][curLen - 1];
            float[] lg = decodeOnce(beams, ids, curLen - 1);
            for (int bI = 0; bI < beams; bI++) {
                logSoftmax(lg, bI * vocab, vocab, logp, runScore[bI]);
                if (curLen - promptLen < minNew) suppressEos(logp, bI * vocab); // HF: processors after log_softmax
            }
            topK(logp, beams * vocab, k, candIdx, candScore);
            boolean allHit = true;
            for (int j = 0; j < k; j++) {
                int beam = candIdx[j] / vocab, tok = candIdx[j] % vocab;
                candSeq[j] = Arrays.copyOf(running[beam], maxLength);
                candSeq[j][curLen] = tok;
                hits[j] = c.isEos(tok) || curLen + 1 >= maxLength;
                allHit &= hits[j];
            }
            // running beams of the next step: the best B that did not stop
            float[] runCand = new float[k];
            for (int j = 0; j < k; j++) runCand[j] = candScore[j] + (hits[j] ? -1e9f : 0f);
            int[] nextRun = topIndices(runCand, beams);
            int[][] newRunning = new int[beams][];
            for (int bI = 0; bI < beams; bI++) {
                int j = nextRun[bI];
                newRunning[bI] = candSeq[j];
                runScore[bI] = runCand[j];
                src[bI] = candIdx[j] / vocab;
            }
            // finished: merge the old finished with this step's top-B candidates that stopped
            float lenPen = (float) (curLen + 1 - promptLen);
            float[] merged = new float[beams + k];
            boolean[] mergedDone = new boolean[beams + k];
            for (int bI = 0; bI < beams; bI++) {
                merged[bI] = finScore[bI];
                mergedDone[bI] = finDone[bI];
            }
            for (int j = 0; j < k; j++) {
                boolean just = hits[j] && j < beams;
                float sc = candScore[j] / lenPen;
                if (!unsatisfied) sc += -1e9f;
                if (!just) sc += -1e9f;
                merged[beams + j] = sc;
                mergedDone[beams + j] = just;
            }
            int[] top = topIndices(merged, beams);
            int[][] newFin = new int[beams][];
            int[] newFinLen = new int[beams];
            float[] newFinScore = new float[beams];
            boolean[] newFinDone = new boolean[beams];
            for (int bI = 0; bI < beams; bI++) {
                int m = top[bI];
                if (m < beams) {
                    newFin[bI] = finished[m];
                    newFinLen[bI] = finLen[m];
                } else {
                    newFin[bI] = candSeq[m - beams];
                    newFinLen[bI] = curLen + 1;
                }
                newFinScore[bI] = merged[m];
                newFinDone[bI] = mergedDone[m];
            }
            finished = newFin;
            finLen = newFinLen;
            finScore = newFinScore;
            finDone = newFinDone;
            running = newRunning;
            be.reorderCache(src, curLen);
            curLen++;
            if (listener != null) listener.token(curLen - 2, running[0][curLen - 1]);
            // early stop: can the best running beam still beat the worst finished one?
            float best = runScore[0] / (float) (curLen - promptLen);
            float minFin = Float.POSITIVE_INFINITY;
            for (float fsc : finScore) minFin = Math.min(minFin, fsc);
            boolean any = false;
            for (int bI = 0; bI < beams; bI++) any |= best > (finDone[bI] ? minFin : -1e9f);
            unsatisfied &= any;
            if (!unsatisfied || allHit) break;
        }
        return Arrays.copyOf(finished[0], finLen[0]);
    }

    /** out[off + j] = x[off + j] - logsumexp(row) + add, in fp32 (torch's log_softmax, then the running score). */
    private static void logSoftmax(float[] x, int off, int n, float[] out, float add) {
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) max = Math.max(max, x[off + j]);
        double sum = 0;
        for (int j = 0; j < n; j++) sum += Math.exp(x[off + j] - max);
        float lse = (float) Math.log(sum);
        for (int j = 0; j < n; j++) out[off + j] = (x[off + j] - max - lse) + add;
    }

    /** The k largest of x[0, n) in descending order (ties: lower index first). */
    private static void topK(float[] x, int n, int k, int[] idx, float[] val) {
        Arrays.fill(idx, 0, k, -1);
        Arrays.fill(val, 0, k, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < n; i++) {
            float v = x[i];
            if (idx[k - 1] >= 0 && !(v > val[k - 1])) continue;
            int p = k - 1;
            while (p > 0 && (idx[p - 1] < 0 || v > val[p - 1])) {
                idx[p] = idx[p - 1];
                val[p] = val[p - 1];
                p--;
            }
            idx[p] = i;
            val[p] = v;
        }
    }

    private static int[] topIndices(float[] x, int k) {
        int[] idx = new int[k];
        float[] val = new float[k];
        topK(x, x.length, k, idx, val);
        return idx;
    }

    @Override
    public void close() {
        be.close();
    }
}
