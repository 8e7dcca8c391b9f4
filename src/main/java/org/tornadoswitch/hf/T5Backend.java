package org.tornadoswitch.hf;

import org.tornadoswitch.hf.T5Config.Stack;
import org.tornadoswitch.model.Routing;

/**
 * The numeric stages of the SwitchTransformers model, the seam between the host ({@link T5Model}:
 * routing decisions, losses, generation, optimizer schedule) and a backend that owns parameters,
 * gradients and activations. The JVM backend ({@link T5JvmBackend}) is the reference; a TornadoVM
 * backend would implement the same stages as task graphs. Per pass only token ids, the router
 * probabilities, the routing arrays and scalars cross the seam.
 *
 * <pre>
 * setEncoderInput ─► per encoder block: forwardAttention ─► (host routes, per sequence) ─► forwardFfn
 *   ─► finishEncoder ─► setDecoderInput (or beginDecoding + decodeStep) ─► per decoder block: the same
 *   ─► forwardHead
 * backward: zeroGrads ─► backwardHead ─► decoder blocks, last first: backwardFfn ─► backwardAttention
 *   ─► backwardDecoderInput ─► backwardEncoderOutput ─► encoder blocks ─► backwardEncoderInput
 * </pre>
 */
public interface T5Backend extends AutoCloseable {
    String describe();

    T5Config config();

    /**
     * Training passes' dropout rate and router jitter (the config's dropout_rate and
     * router_jitter_noise by default), and the seed their masks are drawn from.
     */
    void setTrainingNoise(double dropout, double jitter, long seed);

    /** Whether the next pass trains (dropout, router jitter) and the step its noise is drawn for. */
    void beginPass(boolean training, int step);

    /**
     * Encoder input: {@code nSeq} sequences of {@code seqLen} ids, right-padded; {@code lengths[b]}
     * real tokens in sequence b (keys past it are masked, as HF's attention_mask; null = all real).
     */
    void setEncoderInput(int[] ids, int[] lengths, int nSeq, int seqLen);

    /** Decoder input of whole sequences (teacher forcing), {@code nSeq} as the encoder's. */
    void setDecoderInput(int[] ids, int nSeq, int seqLen);

    /**
     * Self-attention (and, in the decoder, cross-attention) of a block with their residuals, then the
     * FFN's norm and, in a sparse block, the router. Returns the router probabilities
     * [tokens x experts] (valid until the next call) or null in a dense block.
     */
    float[] forwardAttention(Stack s, int layer);

    /** logsumexp of the router logits per token of the last forward of a sparse block. */
    float[] routerLogSumExp(Stack s, int layer);

    /** The FFN of a block: experts on the tokens the routing keeps (dense: one expert, all tokens), scaling, residual. */
    void forwardFfn(Stack s, int layer, Routing r);

    /** The encoder's final norm: its output is what the decoder's cross-attention reads. */
    void finishEncoder();

    /**
     * The decoder's final norm, the tied head's d_model^-0.5 scaling and the LM head. With labels
     * (one per decoder token; -100 = ignored) also the cross-entropy: {@code out = {sum of losses,
     * counted tokens}}.
     */
    void forwardHead(int[] labels, double[] out);

    /** Logits [decoder tokens x vocab] of the last {@link #forwardHead} (valid until the next pass). */
    float[] logits();

    // ---- backward (after a forward with labels) ----

    void zeroGrads();

    /** d(ce · ceScale)/d logits (ceScale = 1 / counted tokens for the mean) back to the decoder's last block. */
    void backwardHead(float ceScale);

    /**
     * Backward of {@link #forwardFfn} and the FFN norm. In a sparse block also the router's:
     * {@code probGrad[b * E + e]} is added to d loss / d p of every token of sequence b (the
     * load-balancing loss), and the z-loss adds {@code zScale * lse_t * p_t,e} to each router logit.
     */
    void backwardFfn(Stack s, int layer, Routing r, float[] probGrad, float zScale);

    /** Backward of {@link #forwardAttention}'s attention part(s) and their norms. */
    void backwardAttention(Stack s, int layer);

    /** Decoder embedding and the decoder's relative position bias table. */
    void backwardDecoderInput();

    /** The encoder's final norm, from the gradient the decoder's cross-attention left on its output. */
    void backwardEncoderOutput();

    /** Encoder embedding and the encoder's relative position bias table. */
    void backwardEncoderInput();

    T5Weights params();

    /** Sum of squares of the gradients of every tensor the forward reads (for global-norm clipping). */
    double gradSquaredNorm();

    /** One optimizer update of the parameters from the gradients times {@code gradScale}; {@code t} counts from 1. */
    void optimizerStep(T5Optimizer optimizer, float gradScale, int t, double lr);

    /** The gradients (allocated on first use). */
    T5Weights grads();

    // ---- incremental decoding with a key/value cache ----

    /**
     * Starts decoding {@code rowsPerSeq} rows (beams) for each encoder sequence of the last
     * {@link #finishEncoder}, up to {@code maxLen} decoder positions: computes the cross-attention
     * keys and values of every decoder block once.
     */
    void beginDecoding(int rowsPerSeq, int maxLen);

    /**
     * One decoder token per row at position {@code pos} (rows = encoder sequences x rowsPerSeq);
     * the decoder blocks then run on these tokens against the cache ({@link #forwardAttention} etc.).
     */
    void decodeStep(int[] ids, int pos);

    /** Row r of the cache becomes a copy of row {@code source[r]} (beam search), positions [0, len). */
    void reorderCache(int[] source, int len);

    @Override
    void close();
}
