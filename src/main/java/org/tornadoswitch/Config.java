package org.tornadoswitch;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * Every setting of a model and its training run, validated in one place. Defaults are the labml
 * Switch Transformer experiment on Tiny Shakespeare.
 *
 * @param experts number of experts per Switch block; 1 (or {@code dense}) gives the dense baseline
 * @param capacityFactor training capacity = floor(capacityFactor * tokens / experts)
 * @param dropTokens false: dropless (MegaBlocks' idea), no capacity, every token processed by its expert
 * @param dropTokens drop tokens routed to a full expert (they pass through on the residual)
 * @param scaleProb scale expert outputs by the route probability (else by p / stop_gradient(p))
 * @param zLossCoef router z-loss coefficient (ST-MoE): coef * sum over Switch layers of the mean over
 *     tokens of logsumexp(router logits)^2
 * @param jitter router input jitter (HF router_jitter_noise): in training the router sees its input
 *     times U(1 - jitter, 1 + jitter) per element; evaluation and generation see it unchanged
 * @param dropPolicy which of an over-full expert's tokens keep their slot
 * @param droppedOutput what a dropped token's FFN branch gives: its normalized input (labml) or zero (HF)
 * @param evalCapacityFactor capacity factor of evaluation and generation; 0 = the training capacity
 * @param evalDropTokens false: evaluation and generation drop nothing (labml drops even in a 5-token prompt)
 * @param expertCapacity absolute training capacity per expert (HF expert_capacity), capped at the
 *     tokens of the batch; 0 = from the capacity factor
 * @param sparseStep which blocks are Switch blocks, as HF's encoder_sparse_step: 1 = all, 0 = none
 *     (dense), N > 1 = block i (from 0) when i % N == 1; the others have one plain FFN
 * @param init parameter initialization: PyTorch's defaults (labml) or the paper's truncated normal
 * @param initScale the paper's s: linear weights ~ N(0, s / fan_in) truncated at 2 sigma
 * @param dropout training dropout on attention weights, on both residual branches and on the hidden
 *     layer of dense blocks' FFNs
 * @param expertDropout training dropout on the hidden layer inside the experts (the paper fine-tunes
 *     with 0.4 there and 0.1 elsewhere)
 * @param topK experts per token: 1 is Switch routing; k > 1 (the MoE baseline, k = 2) weights the k
 *     outputs by their probabilities renormalized over the k, and capacity counts all assignments
 *
 * <p>Fields after {@code seed} came later; their defaults keep the labml behaviour, and a checkpoint
 * written before they existed loads with those defaults ({@link #fromJson}).
 */
public record Config(
        int dModel, int heads, int layers, int dFf, int experts, boolean dense,
        double capacityFactor, boolean dropTokens, boolean scaleProb, double lbCoef,
        boolean posEmbedding, int batchSize, int seqLen,
        double lr, int warmup, double beta1, double beta2, double eps, double clip,
        long seed,
        double zLossCoef, double jitter, DropPolicy dropPolicy, DroppedOutput droppedOutput,
        double evalCapacityFactor, boolean evalDropTokens, int expertCapacity, int sparseStep,
        Init init, double initScale, double dropout, double expertDropout, int topK) {

    private static final ObjectMapper JSON = new ObjectMapper();

    public static Config defaults() {
        return new Config(128, 4, 6, 256, 4, false, 1.2, true, true, 0.01, false, 32, 64,
                1.0, 2000, 0.9, 0.999, 1e-8, 1.0, 42);
    }

    /** The original settings; every later field takes its default. */
    public Config(int dModel, int heads, int layers, int dFf, int experts, boolean dense,
                  double capacityFactor, boolean dropTokens, boolean scaleProb, double lbCoef,
                  boolean posEmbedding, int batchSize, int seqLen,
                  double lr, int warmup, double beta1, double beta2, double eps, double clip, long seed) {
        this(dModel, heads, layers, dFf, experts, dense, capacityFactor, dropTokens, scaleProb, lbCoef, posEmbedding,
                batchSize, seqLen, lr, warmup, beta1, beta2, eps, clip, seed,
                0.0, 0.0, DropPolicy.RANDOM, DroppedOutput.INPUT, 0.0, true, 0, 1, Init.TORCH, 0.1, 0.0, 0.0, 1);
    }

    /** A config from its JSON form; fields the JSON lacks (older checkpoints) take their defaults. */
    public static Config fromJson(JsonNode stored) {
        ObjectNode merged = JSON.valueToTree(defaults());
        if (stored != null && stored.isObject()) merged.setAll((ObjectNode) stored.deepCopy());
        try {
            return JSON.treeToValue(merged, Config.class);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("bad config: " + e.getOriginalMessage(), e);
        }
    }

    /** This config with one field (by its Java name, e.g. "zLossCoef") replaced; not validated. */
    public Config with(String field, Object value) {
        ObjectNode n = JSON.valueToTree(this);
        if (!n.has(field)) throw new IllegalArgumentException("no config field " + field);
        n.set(field, JSON.valueToTree(value));
        return fromJson(n);
    }

    /** Which tokens of an over-full expert keep their slot. */
    public enum DropPolicy {
        /** a seeded random permutation of the expert's tokens (labml) */
        RANDOM,
        /** the earliest positions in their sequence first, then the earlier sequence (HF: earliest tokens) */
        POSITION,
        /** the highest router probability first, ties by token order */
        PROBABILITY;

        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** The FFN branch of a dropped token. */
    public enum DroppedOutput {
        /** its normalized input, scaled like an expert's output (labml) */
        INPUT,
        /** nothing: the token goes on by the residual alone (HF since its issue 37017) */
        ZERO;

        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** How parameters start. */
    public enum Init {
        /** PyTorch's defaults (labml): U(+-1/sqrt(fan_in)) linear layers, N(0, 1) embeddings */
        TORCH,
        /** the paper's: linear weights from N(0, s / fan_in) resampled beyond 2 sigma, biases 0 */
        SWITCH;

        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** Experts per block actually used: the dense baseline is one expert and no router. */
    public int numExperts() {
        return dense ? 1 : experts;
    }

    /** Whether block {@code layer} is a Switch block (router and experts) rather than one plain FFN. */
    public boolean switchLayer(int layer) {
        if (numExperts() <= 1 || sparseStep == 0) return false;
        return sparseStep == 1 || layer % sparseStep == 1;
    }

    /** Experts of block {@code layer}: 1 in a dense block. */
    public int expertsIn(int layer) {
        return switchLayer(layer) ? numExperts() : 1;
    }

    /** Number of Switch blocks. */
    public int switchLayerCount() {
        int n = 0;
        for (int l = 0; l < layers; l++) if (switchLayer(l)) n++;
        return n;
    }

    /** Whether any block routes; without, the model is the dense baseline. */
    public boolean switchBlocks() {
        return switchLayerCount() > 0;
    }

    public int headDim() {
        return dModel / heads;
    }

    public int tokensPerBatch() {
        return batchSize * seqLen;
    }

    /** Per-expert capacity of a training pass over {@code tokens} tokens. */
    public int capacity(int tokens) {
        if (!switchBlocks() || !dropTokens) return tokens;
        if (expertCapacity > 0) return Math.min(expertCapacity, tokens);
        return factorCapacity(capacityFactor, tokens);
    }

    /** Per-expert capacity of an evaluation or generation pass over {@code tokens} tokens. */
    public int evalCapacity(int tokens) {
        if (!switchBlocks() || !dropTokens || !evalDropTokens) return tokens;
        if (evalCapacityFactor > 0) return factorCapacity(evalCapacityFactor, tokens);
        return capacity(tokens);
    }

    /** floor(factor * k * tokens / experts): capacity counts assignments, k per token. */
    private int factorCapacity(double factor, int tokens) {
        return Math.max(1, (int) Math.floor(factor * topK * tokens / numExperts()));
    }

    /** Throws {@link ConfigException} naming the first field out of range. */
    public Config validate() {
        range("d-model", dModel, 1, 1 << 14);
        range("heads", heads, 1, 1024);
        if (dModel % heads != 0)
            throw new ConfigException("d-model", "d-model (" + dModel + ") must be divisible by heads (" + heads + ")");
        range("layers", layers, 1, 256);
        range("d-ff", dFf, 1, 1 << 16);
        range("experts", experts, 1, 4096);
        if (!(capacityFactor > 0 && capacityFactor <= 1e6))
            throw new ConfigException("capacity-factor", "capacity-factor must be > 0, got " + capacityFactor);
        if (!(lbCoef >= 0 && lbCoef <= 1e6))
            throw new ConfigException("lb-coef", "lb-coef must be >= 0, got " + lbCoef);
        range("batch-size", batchSize, 1, 1 << 16);
        range("seq-len", seqLen, 1, 1 << 16);
        if (!(lr > 0 && lr <= 1e3)) throw new ConfigException("lr", "lr must be in (0, 1000], got " + lr);
        range("warmup", warmup, 1, Integer.MAX_VALUE);
        if (!(beta1 >= 0 && beta1 < 1)) throw new ConfigException("beta1", "beta1 must be in [0, 1), got " + beta1);
        if (!(beta2 >= 0 && beta2 < 1)) throw new ConfigException("beta2", "beta2 must be in [0, 1), got " + beta2);
        if (!(eps > 0 && eps < 1)) throw new ConfigException("eps", "eps must be in (0, 1), got " + eps);
        if (!(clip > 0)) throw new ConfigException("clip", "clip must be > 0, got " + clip);
        if (!(zLossCoef >= 0 && zLossCoef <= 1e6))
            throw new ConfigException("z-loss-coef", "z-loss-coef must be in [0, 1e6], got " + zLossCoef);
        if (!(jitter >= 0 && jitter < 1)) throw new ConfigException("jitter", "jitter must be in [0, 1), got " + jitter);
        if (dropPolicy == null) throw new ConfigException("drop-policy", "drop-policy must be random, position or probability");
        if (droppedOutput == null) throw new ConfigException("dropped-output", "dropped-output must be input or zero");
        if (!(evalCapacityFactor >= 0 && evalCapacityFactor <= 1e6))
            throw new ConfigException("eval-capacity-factor", "eval-capacity-factor must be in [0, 1e6] (0 = the training capacity), got " + evalCapacityFactor);
        range("expert-capacity", expertCapacity, 0, 1 << 24);
        range("sparse-step", sparseStep, 0, 4096);
        if (init == null) throw new ConfigException("init", "init must be torch or switch");
        if (!(initScale > 0 && initScale <= 1e3))
            throw new ConfigException("init-scale", "init-scale must be in (0, 1000], got " + initScale);
        if (!(dropout >= 0 && dropout < 1)) throw new ConfigException("dropout", "dropout must be in [0, 1), got " + dropout);
        if (!(expertDropout >= 0 && expertDropout < 1))
            throw new ConfigException("expert-dropout", "expert-dropout must be in [0, 1), got " + expertDropout);
        if (topK < 1 || topK > numExperts())
            throw new ConfigException("top-k", "top-k must be in [1, experts = " + numExperts() + "], got " + topK);
        if (topK > 1 && !scaleProb)
            throw new ConfigException("top-k", "top-k > 1 weights the experts by their probabilities: it needs --scale-prob");
        return this;
    }

    private static void range(String field, long value, long min, long max) {
        if (value < min || value > max)
            throw new ConfigException(field, field + " must be in [" + min + ", " + max + "], got " + value);
    }

    /** Thrown for a setting out of range; the message names the field and the allowed range. */
    public static final class ConfigException extends IllegalArgumentException {
        private final String field;

        public ConfigException(String field, String message) {
            super(message);
            this.field = field;
        }

        public String field() {
            return field;
        }
    }
}
