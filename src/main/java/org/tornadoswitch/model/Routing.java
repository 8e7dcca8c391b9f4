package org.tornadoswitch.model;

import org.tornadoswitch.Config.DropPolicy;
import org.tornadoswitch.util.Rng;

/**
 * The host's routing decision for one Switch layer and one batch: the top-k experts of each token,
 * which assignments each expert takes (at most {@code capacity}), and which are dropped. Buffers are
 * sized once for the largest batch and reused every step.
 *
 * <p>Assignment {@code a = t * k + j} is token t's j-th choice (j = 0 the most probable); with k = 1
 * assignments are tokens. Two layouts of the kept assignments are offered so that each backend can
 * pick its own: grouped ({@link #order} from {@link #offset}[e], at most {@code k * tokens} rows in
 * all) and capacity-sized ({@link #slot}: row {@code e * capacity + slot[a]}).
 */
public final class Routing {
    public final int maxTokens, experts, k;
    /** Tokens of the pass, capacity per expert, dropped assignments. */
    public int tokens, capacity, dropped;
    /** [k T] the expert of each assignment. */
    public final int[] expertOf;
    /**
     * [k T] the weight of each assignment's output: the route probability for k = 1, else the
     * probability renormalized over the token's k choices.
     */
    public final float[] prob;
    /** [k T] position in its expert's buffer, or -1 when dropped. */
    public final int[] slot;
    /** [E] assignments routed to each expert, counted before dropping (f_i numerator). */
    public final int[] counts;
    /** [E] assignments each expert processes. */
    public final int[] kept;
    /** [E + 1] prefix sums of {@link #kept}. */
    public final int[] offset;
    /** [k T] kept assignments grouped by expert, then the dropped ones from {@code offset[E]}. */
    public final int[] order;
    /** [E] sum over tokens of the router probability of each expert (P_i numerator). */
    public final double[] probSum;
    private final int[] scratch, rankCount, expertFill;
    private final long[] keys;
    /** [k T] the router probability of each assignment's expert, before renormalization (the probability policy's key). */
    private final float[] rawProb;
    /** The choice this routing derives itself when given full probabilities. */
    private final RouterChoice own;

    public Routing(int maxTokens, int experts) {
        this(maxTokens, experts, 1);
    }

    public Routing(int maxTokens, int experts, int k) {
        if (k < 1 || k > experts) throw new IllegalArgumentException("k = " + k + " with " + experts + " experts");
        this.maxTokens = maxTokens;
        this.experts = experts;
        this.k = k;
        int n = maxTokens * k;
        expertOf = new int[n];
        prob = new float[n];
        slot = new int[n];
        counts = new int[experts];
        kept = new int[experts];
        offset = new int[experts + 1];
        order = new int[n];
        probSum = new double[experts];
        scratch = new int[n];
        keys = new long[n];
        rankCount = new int[experts * k];
        expertFill = new int[experts];
        rawProb = new float[n];
        own = new RouterChoice(maxTokens, experts, k);
    }

    /** Every token to expert 0 with probability 1: the dense block. */
    public void dense(int tokens) {
        if (k != 1) throw new IllegalStateException("a dense block routes with k = 1");
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
     * Top-k routing from router probabilities {@code probs[t * E + e]} of {@code tokens} tokens in
     * sequences of {@code seqLen}: picks each token's k choices ({@link RouterChoice#fromProbs}),
     * then routes them as {@link #route(RouterChoice, int, int, int, boolean, DropPolicy, Rng)}.
     */
    public void route(float[] probs, int tokens, int seqLen, int capacity, boolean drop, DropPolicy policy, Rng rng) {
        own.fromProbs(probs, null, tokens);
        route(own, tokens, seqLen, capacity, drop, policy, rng);
    }

    /**
     * Top-k routing from each token's k choices (expert and router probability, most probable
     * first) and the per-expert probability sums. Capacity counts assignments. When {@code drop} is
     * set and an expert receives more than {@code capacity} assignments, first choices come before
     * second choices (GShard), and within the choice that crosses the capacity the policy orders them;
     * the first {@code capacity} keep their slot, the rest are dropped. Only the random policy draws
     * from {@code rng}, and only for over-full experts.
     */
    public void route(RouterChoice c, int tokens, int seqLen, int capacity, boolean drop, DropPolicy policy, Rng rng) {
        if (tokens > maxTokens) throw new IllegalArgumentException("tokens " + tokens + " > " + maxTokens);
        if (c.k != k || c.experts != experts) throw new IllegalArgumentException("router choice of k = " + c.k + ", " + c.experts + " experts for routing of k = " + k + ", " + experts);
        int e = experts;
        this.tokens = tokens;
        this.capacity = drop ? capacity : tokens;
        java.util.Arrays.fill(counts, 0);
        java.util.Arrays.fill(rankCount, 0);
        System.arraycopy(c.probSum, 0, probSum, 0, e);
        for (int t = 0; t < tokens; t++) {
            float sum = 0;
            for (int j = 0; j < k; j++) {
                int a = t * k + j, x = c.expert[a];
                expertOf[a] = x;
                rawProb[a] = c.prob[a];
                prob[a] = c.prob[a];
                sum += c.prob[a];
                counts[x]++;
                rankCount[x * k + j]++;
            }
            if (k > 1) for (int j = 0; j < k; j++) prob[t * k + j] /= sum;
        }
        // each expert's assignments, first choices first, each choice in token order (counting sort)
        int[] start = offset;
        start[0] = 0;
        for (int x = 0; x < e; x++) start[x + 1] = start[x] + counts[x];
        int[] fill = kept;
        for (int x = 0; x < e; x++) fill[x] = start[x];
        for (int j = 0; j < k; j++)
            for (int t = 0; t < tokens; t++) {
                int a = t * k + j;
                scratch[fill[expertOf[a]]++] = a;
            }
        int nKept = 0;
        for (int x = 0; x < e; x++) {
            int n = counts[x];
            if (n > this.capacity) {
                // only the choice whose block crosses the capacity needs ordering
                int b0 = 0;
                for (int j = 0; j < k; j++) {
                    int b1 = b0 + rankCount[x * k + j];
                    if (b0 < this.capacity && b1 > this.capacity) order(start[x] + b0, b1 - b0, seqLen, policy, rng);
                    b0 = b1;
                }
            }
            nKept += Math.min(n, this.capacity);
        }
        int kk = 0, d = nKept;
        for (int x = 0; x < e; x++) {
            int lo = start[x], n = counts[x], keep = Math.min(n, this.capacity);
            kept[x] = keep;
            for (int i = 0; i < n; i++) {
                int a = scratch[lo + i];
                if (i < keep) {
                    slot[a] = i;
                    order[kk++] = a;
                } else {
                    slot[a] = -1;
                    order[d++] = a;
                }
            }
        }
        offset[0] = 0;
        for (int x = 0; x < e; x++) offset[x + 1] = offset[x] + kept[x];
        dropped = k * tokens - nKept;
    }

    /** Puts n assignments of one expert at scratch[lo, lo + n) in the policy's order of priority. */
    private void order(int lo, int n, int seqLen, DropPolicy policy, Rng rng) {
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
                for (int i = lo; i < lo + n; i++) keys[i] = (long) ((scratch[i] / k) % seqLen) << 32 | scratch[i];
                sortBy(lo, n);
            }
            case PROBABILITY -> { // descending probability: p >= 0, so its bits order like p
                for (int i = lo; i < lo + n; i++) {
                    int a = scratch[i];
                    keys[i] = (long) (0x7FFFFFFF - Float.floatToRawIntBits(rawProb[a])) << 32 | a;
                }
                sortBy(lo, n);
            }
        }
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

    /** Mean over tokens of the router distribution's entropy, -sum_e p log p, in nats. */
    public static double entropy(float[] probs, int tokens, int experts) {
        double h = 0;
        for (int i = 0; i < tokens * experts; i++) {
            float p = probs[i];
            if (p > 0f) h -= p * Math.log(p);
        }
        return h / tokens;
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

    /**
     * Switch load-balancing loss of this layer: E * sum_i f_i * P_i, f_i the fraction of the
     * assignments routed to expert i (all k choices, so that uniform routing still gives 1).
     */
    public double loadBalancingLoss() {
        double s = 0;
        long n = (long) k * tokens;
        for (int x = 0; x < experts; x++) s += ((double) counts[x] / n) * (probSum[x] / tokens);
        return experts * s;
    }

    /**
     * d(coef * LB loss)/d probs[t, i] = coef * E * f_i / T, the same for every token; written into
     * {@code out[i]}.
     */
    public void loadBalancingGrad(double coef, float[] out) {
        long n = (long) k * tokens;
        for (int x = 0; x < experts; x++) out[x] = (float) (coef * experts * ((double) counts[x] / n) / tokens);
    }

    /** Each token's most probable expert (ties to the lower index), its probability, counts and probability sums. */
    private void top1(float[] probs, int tokens) {
        own.fromProbs(probs, null, tokens);
        System.arraycopy(own.probSum, 0, probSum, 0, experts);
        for (int t = 0; t < tokens; t++) {
            int x = own.expert[t];
            expertOf[t] = x;
            rawProb[t] = prob[t] = own.prob[t];
            counts[x]++;
        }
    }

    /**
     * Top-1 routing with Hugging Face SwitchTransformers' rule: the capacity counts per group of
     * {@code groupLen} consecutive tokens (one sequence of the batch), each expert keeps the
     * earliest {@code capacityPerGroup} tokens of a group routed to it (HF's cumulative sum over the
     * sequence) and the rest are dropped. The grouped layout is as in {@link #route}: an expert's
     * kept tokens of all groups together, in token order.
     */
    public void routePerGroup(float[] probs, int tokens, int groupLen, int capacityPerGroup) {
        if (k != 1) throw new IllegalStateException("per-group capacity routes with k = 1");
        if (tokens > maxTokens) throw new IllegalArgumentException("tokens " + tokens + " > " + maxTokens);
        if (groupLen < 1 || tokens % groupLen != 0)
            throw new IllegalArgumentException("tokens " + tokens + " are not whole groups of " + groupLen);
        int e = experts;
        this.tokens = tokens;
        this.capacity = capacityPerGroup;
        java.util.Arrays.fill(counts, 0);
        java.util.Arrays.fill(probSum, 0);
        top1(probs, tokens);
        java.util.Arrays.fill(kept, 0);
        int[] inGroup = rankCount; // E counters per group (rankCount has E * k = E entries)
        for (int t = 0; t < tokens; t++) {
            if (t % groupLen == 0) java.util.Arrays.fill(inGroup, 0, e, 0);
            int x = expertOf[t];
            if (inGroup[x]++ < capacityPerGroup) {
                slot[t] = kept[x]++;
            } else {
                slot[t] = -1;
            }
        }
        offset[0] = 0;
        for (int x = 0; x < e; x++) offset[x + 1] = offset[x] + kept[x];
        int[] fill = expertFill;
        System.arraycopy(offset, 0, fill, 0, e);
        int d = offset[e];
        for (int t = 0; t < tokens; t++) {
            if (slot[t] >= 0) order[fill[expertOf[t]]++] = t;
            else order[d++] = t;
        }
        dropped = tokens - offset[e];
    }
}
