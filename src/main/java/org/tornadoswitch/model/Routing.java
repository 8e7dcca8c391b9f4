package org.tornadoswitch.model;

import org.tornadoswitch.Config.DropPolicy;
import org.tornadoswitch.util.Rng;

/**
 * The host's routing decision for one Switch layer and one batch: top-1 expert per token, which
 * tokens each expert takes (at most {@code capacity}), and which are dropped. Buffers are sized once
 * for the largest batch and reused every step.
 *
 * <p>Two layouts of the kept tokens are offered so that each backend can pick its own: grouped
 * ({@link #order} from {@link #offset}[e], at most {@code tokens} rows in all) and capacity-sized
 * ({@link #slot}: row {@code e * capacity + slot[t]}).
 */
public final class Routing {
    public final int maxTokens, experts;
    public int tokens, capacity, dropped;
    /** [T] argmax expert. */
    public final int[] expertOf;
    /** [T] the route probability of the chosen expert. */
    public final float[] prob;
    /** [T] position in its expert's buffer, or -1 when dropped. */
    public final int[] slot;
    /** [E] tokens routed to each expert, counted before dropping (f_i numerator). */
    public final int[] counts;
    /** [E] tokens each expert processes. */
    public final int[] kept;
    /** [E + 1] prefix sums of {@link #kept}. */
    public final int[] offset;
    /** [T] kept tokens grouped by expert, then the dropped tokens from {@code offset[E]}. */
    public final int[] order;
    /** [E] sum over tokens of the router probability of each expert (P_i numerator). */
    public final double[] probSum;
    private final int[] scratch;
    private final long[] keys;

    public Routing(int maxTokens, int experts) {
        this.maxTokens = maxTokens;
        this.experts = experts;
        expertOf = new int[maxTokens];
        prob = new float[maxTokens];
        slot = new int[maxTokens];
        counts = new int[experts];
        kept = new int[experts];
        offset = new int[experts + 1];
        order = new int[maxTokens];
        probSum = new double[experts];
        scratch = new int[maxTokens];
        keys = new long[maxTokens];
    }

    /** Every token to expert 0 with probability 1: the dense block. */
    public void dense(int tokens) {
        this.tokens = tokens;
        this.capacity = tokens;
        this.dropped = 0;
        for (int t = 0; t < tokens; t++) {
            expertOf[t] = 0;
            prob[t] = 1f;
            slot[t] = t;
            order[t] = t;
        }
        counts[0] = kept[0] = tokens;
        offset[0] = 0;
        offset[1] = tokens;
        probSum[0] = tokens;
    }

    /** Top-1 routing with labml's random drop policy; see the full form. */
    public void route(float[] probs, int tokens, int capacity, boolean drop, Rng rng) {
        route(probs, tokens, tokens, capacity, drop, DropPolicy.RANDOM, rng);
    }

    /**
     * Top-1 routing from router probabilities {@code probs[t * E + e]} of {@code tokens} tokens in
     * sequences of {@code seqLen}. When {@code drop} is set and an expert receives more than
     * {@code capacity} tokens, the policy orders its tokens and the first {@code capacity} keep their
     * slot (slot = rank in that order); the rest are dropped. Only the random policy draws from
     * {@code rng}, and only for over-full experts.
     */
    public void route(float[] probs, int tokens, int seqLen, int capacity, boolean drop, DropPolicy policy, Rng rng) {
        if (tokens > maxTokens) throw new IllegalArgumentException("tokens " + tokens + " > " + maxTokens);
        int e = experts;
        this.tokens = tokens;
        this.capacity = drop ? capacity : tokens;
        java.util.Arrays.fill(counts, 0);
        java.util.Arrays.fill(probSum, 0);
        for (int t = 0; t < tokens; t++) {
            int best = 0;
            float bp = probs[t * e];
            probSum[0] += bp;
            for (int x = 1; x < e; x++) {
                float p = probs[t * e + x];
                probSum[x] += p;
                if (p > bp) {
                    bp = p;
                    best = x;
                }
            }
            expertOf[t] = best;
            prob[t] = bp;
            counts[best]++;
        }
        // tokens of each expert in ascending order (counting sort) into scratch
        int[] start = offset;
        start[0] = 0;
        for (int x = 0; x < e; x++) start[x + 1] = start[x] + counts[x];
        int[] fill = kept;
        for (int x = 0; x < e; x++) fill[x] = start[x];
        for (int t = 0; t < tokens; t++) scratch[fill[expertOf[t]]++] = t;
        // keep at most capacity per expert; overflow chosen by a random permutation
        int nKept = 0;
        for (int x = 0; x < e; x++) {
            int lo = start[x], n = counts[x];
            if (n > this.capacity) {
                switch (policy) {
                    case RANDOM -> {
                        for (int i = n - 1; i > 0; i--) { // Fisher-Yates over this expert's tokens
                            int j = rng.nextInt(i + 1);
                            int tmp = scratch[lo + i];
                            scratch[lo + i] = scratch[lo + j];
                            scratch[lo + j] = tmp;
                        }
                    }
                    case POSITION -> { // (position in its sequence, token): t = sequence * seqLen + position
                        for (int i = lo; i < lo + n; i++) keys[i] = (long) (scratch[i] % seqLen) << 32 | scratch[i];
                        sortBy(lo, n);
                    }
                    case PROBABILITY -> { // descending probability: p >= 0, so its bits order like p
                        for (int i = lo; i < lo + n; i++) {
                            int t = scratch[i];
                            keys[i] = (long) (0x7FFFFFFF - Float.floatToRawIntBits(probs[t * e + x])) << 32 | t;
                        }
                        sortBy(lo, n);
                    }
                }
            }
            nKept += Math.min(n, this.capacity);
        }
        int k = 0, d = nKept;
        for (int x = 0; x < e; x++) {
            int lo = start[x], n = counts[x], keep = Math.min(n, this.capacity);
            kept[x] = keep;
            for (int i = 0; i < n; i++) {
                int t = scratch[lo + i];
                if (i < keep) {
                    slot[t] = i;
                    order[k++] = t;
                } else {
                    slot[t] = -1;
                    order[d++] = t;
                }
            }
        }
        offset[0] = 0;
        for (int x = 0; x < e; x++) offset[x + 1] = offset[x] + kept[x];
        dropped = tokens - nKept;
    }

    /** Sorts keys[lo, lo + n) ascending (heapsort: no allocation) and writes their low ints to scratch. */
    private void sortBy(int lo, int n) {
        for (int i = n / 2 - 1; i >= 0; i--) siftDown(lo, i, n);
        for (int end = n - 1; end > 0; end--) {
            long tmp = keys[lo];
            keys[lo] = keys[lo + end];
            keys[lo + end] = tmp;
            siftDown(lo, 0, end);
        }
        for (int i = lo; i < lo + n; i++) scratch[i] = (int) keys[i];
    }

    private void siftDown(int lo, int i, int n) {
        long v = keys[lo + i];
        while (true) {
            int c = 2 * i + 1;
            if (c >= n) break;
            if (c + 1 < n && keys[lo + c + 1] > keys[lo + c]) c++;
            if (keys[lo + c] <= v) break;
            keys[lo + i] = keys[lo + c];
            i = c;
        }
        keys[lo + i] = v;
    }

    /**
     * Router z-loss of this layer (ST-MoE): mean over tokens of logsumexp(router logits)^2, from the
     * backend's per-token logsumexp; NaN when the backend gives none.
     */
    public static double zLoss(float[] lse, int tokens) {
        if (lse == null) return Double.NaN;
        double s = 0;
        for (int t = 0; t < tokens; t++) s += (double) lse[t] * lse[t];
        return s / tokens;
    }

    /** Switch load-balancing loss of this layer: E * sum_i f_i * P_i. */
    public double loadBalancingLoss() {
        double s = 0;
        for (int x = 0; x < experts; x++) s += ((double) counts[x] / tokens) * (probSum[x] / tokens);
        return experts * s;
    }

    /**
     * d(coef * LB loss)/d probs[t, i] = coef * E * f_i / T, the same for every token; written into
     * {@code out[i]}.
     */
    public void loadBalancingGrad(double coef, float[] out) {
        for (int x = 0; x < experts; x++) out[x] = (float) (coef * experts * ((double) counts[x] / tokens) / tokens);
    }
}
