package org.tornadoswitch.backend;

import org.tornadoswitch.model.Routing;

/**
 * A backend owns the parameters, gradients, Adam state and activations, and runs the numeric stages
 * of one training step. The host ({@link org.tornadoswitch.model.SwitchModel}) calls the stages in
 * order and makes the routing decisions between them, so per step only the batch's token ids, the
 * router probabilities, the routing arrays and a few scalars cross between host and backend.
 *
 * <pre>
 * setBatch ─► for each layer: forwardToRouter ─► (host routes) ─► forwardFfn
 *          ─► forwardHead ─► backwardHead ─► for each layer, last first: backwardFfn ─► backwardAttention
 *          ─► backwardEmbedding ─► gradSquaredNorm ─► (host clips, schedules) ─► adamStep
 * </pre>
 */
public interface Backend extends AutoCloseable {
    /** A short description for logs: backend, device, threads. */
    String describe();

    /** Seconds spent compiling kernels at start-up (0 where nothing is compiled). */
    default double compileSeconds() {
        return 0;
    }

    /**
     * The stages a backend may time, for {@code bench}: indices of {@link #stageNanos()}. attn_core is
     * the attention op itself (scores, softmax, weighted sum); attn_proj the rest of the attention
     * sub-layer (embedding at layer 0, LayerNorm, Q/K/V and output projections, residual).
     */
    String[] STAGES = {"attn_proj", "attn_core", "router", "experts", "head", "bwd_head", "bwd_experts", "bwd_router",
            "bwd_attn_core", "bwd_attn_proj", "bwd_embedding", "grad_norm", "optimizer"};

    /** Nanoseconds each host worker thread has been idle since the backend was made (see ThreadPool.idleNanos), or null. */
    default long[] threadIdleNanos() {
        return null;
    }

    /** Nanoseconds spent in each of {@link #STAGES} since the backend was made, or null where not measured. */
    default long[] stageNanos() {
        return null;
    }
    /**
     * Says whether the next forward pass trains (jitter, dropout) or evaluates, and which training
     * step it is: the noise of a step is drawn from (seed, step), so a resumed run draws it again.
     */
    default void beginPass(boolean training, int step) {}

    /** Loads token ids for {@code nSeq} sequences of {@code seqLen}; targets may be null (no loss). */
    void setBatch(int[] inputs, int[] targets, int nSeq, int seqLen);

    /**
     * Embedding (for layer 0), LayerNorm, causal self-attention, residual, LayerNorm, router. Returns
     * the router probabilities [tokens x experts] (valid until the next call) or null in dense blocks.
     */
    float[] forwardToRouter(int layer);

    /**
     * logsumexp of the router logits per token of {@code layer}'s last forward pass (valid until the
     * next call), for the z-loss; null where the backend does not compute it or the block is dense.
     */
    default float[] routerLogSumExp(int layer) {
        return null;
    }

    /** Experts on the tokens the routing keeps, dropped tokens passed through, scaling, residual. */
    void forwardFfn(int layer, Routing routing);

    /**
     * Final LayerNorm, head and cross-entropy. Writes {sum of per-token losses, correct argmax
     * predictions} into {@code out}; with no targets only the logits are computed.
     */
    void forwardHead(double[] out);

    /** The logits of token {@code t} of the last forward pass. */
    void logits(int t, float[] out);

    void zeroGrads();

    /** Backward of the mean cross-entropy through the head and the final LayerNorm. */
    void backwardHead();

    /**
     * Backward through the FFN half of {@code layer}: experts, passthrough, scaling, router softmax
     * and LayerNorm 2. {@code probGrad[e]} is an extra gradient (the load-balancing loss's) added to
     * every token's router probability of expert e. The z-loss gradient (config {@code zLossCoef})
     * is the backend's to add: coef * 2 * lse_t / T * p_t,i on the router logits.
     */
    void backwardFfn(int layer, Routing routing, float[] probGrad);

    /** Backward through the attention half of {@code layer}: output projection, attention, Q/K/V, LayerNorm 1. */
    void backwardAttention(int layer);

    void backwardEmbedding();

    /** Sum of squares of all gradients. */
    double gradSquaredNorm();

    /** One Adam step, gradients multiplied by {@code gradScale} first (clipping); t counts from 1. */
    void adamStep(float lr, float gradScale, int t);

    /** Copies of the parameters and the Adam moments, for checkpoints and tests. */
    float[] params();

    float[] grads();

    float[][] adamMoments();

    void setParams(float[] params);

    void setAdamMoments(float[] m, float[] v);

    @Override
    void close();
}
