package org.tornadoswitch.model;

/**
 * What the host needs from a Switch layer's router to make its routing decision, in compact form:
 * each token's k most probable experts with their probabilities (ties to the lower expert), the
 * per-expert sums of the router probabilities over the tokens (the P_i of the load-balancing
 * loss), and the sums behind the router entropy and z-loss metrics. A backend that computes the
 * router on a device sends only this back, k T + E + 2 numbers instead of all E T probabilities;
 * {@link #fromProbs} derives it on the host from the full probabilities.
 *
 * <p>Assignment a = t k + j is token t's j-th choice. Buffers are sized once for the largest batch.
 */
public final class RouterChoice {
    public final int maxTokens, experts, k;
    /** [k T] the expert of each assignment. */
    public final int[] expert;
    /** [k T] the router probability of that expert (not renormalized). */
    public final float[] prob;
    /** [E] sum over tokens of each expert's router probability. */
    public final double[] probSum;
    /** Sum over tokens of the router entropy -sum_e p log p, in nats. */
    public double entropySum;
    /** Sum over tokens of logsumexp(router logits)^2, or NaN when the backend gives no logsumexp. */
    public double lseSquaredSum;

    public RouterChoice(int maxTokens, int experts, int k) {
        if (k < 1 || k > experts) throw new IllegalArgumentException("k = " + k + " with " + experts + " experts");
        this.maxTokens = maxTokens;
        this.experts = experts;
        this.k = k;
        expert = new int[maxTokens * k];
        prob = new float[maxTokens * k];
        probSum = new double[experts];
    }

    /**
     * From the full router probabilities {@code probs[t * E + e]} of {@code tokens} tokens and, where
     * the backend has them, the logsumexp of the logits per token (null: no z-loss).
     */
    public void fromProbs(float[] probs, float[] lse, int tokens) {
        if (tokens > maxTokens) throw new IllegalArgumentException("tokens " + tokens + " > " + maxTokens);
        int e = experts;
        java.util.Arrays.fill(probSum, 0);
        for (int t = 0; t < tokens; t++) {
            for (int x = 0; x < e; x++) probSum[x] += probs[t * e + x];
            for (int j = 0; j < k; j++) { // j-th most probable; ties go to the lower expert
                int best = -1;
                float bp = -1f;
                for (int x = 0; x < e; x++) {
                    float p = probs[t * e + x];
                    if ((best < 0 || p > bp) && !chosen(t, j, x)) {
                        bp = p;
                        best = x;
                    }
                }
                expert[t * k + j] = best;
                prob[t * k + j] = bp;
            }
        }
        double h = 0;
        for (int i = 0; i < tokens * e; i++) {
            float p = probs[i];
            if (p > 0f) h -= p * Math.log(p);
        }
        entropySum = h;
        if (lse == null) {
            lseSquaredSum = Double.NaN;
        } else {
            double s = 0;
            for (int t = 0; t < tokens; t++) s += (double) lse[t] * lse[t];
            lseSquaredSum = s;
        }
    }

    /** Whether token t's choices before the j-th include expert x. */
    private boolean chosen(int t, int j, int x) {
        for (int i = 0; i < j; i++) if (expert[t * k + i] == x) return true;
        return false;
    }

    /** Mean router entropy over the tokens, in nats. */
    public double entropy(int tokens) {
        return entropySum / tokens;
    }

    /** This layer's z-loss: mean over tokens of logsumexp^2 (NaN without logsumexp). */
    public double zLoss(int tokens) {
        return lseSquaredSum / tokens;
    }
}
