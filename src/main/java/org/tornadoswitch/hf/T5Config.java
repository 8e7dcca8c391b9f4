package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Set;
import java.util.TreeSet;
import org.tornadoswitch.Config.ConfigException;

/**
 * A Hugging Face SwitchTransformers {@code config.json}: every field that changes what the model
 * computes, with the defaults and derived values of transformers' {@code SwitchTransformersConfig}
 * (v5). A value this implementation does not support, or one out of range, is refused with one line
 * naming the field ({@link ConfigException}).
 *
 * <p>Fields read and what they do here: sizes ({@code vocab_size, d_model, d_kv, d_ff, num_heads,
 * num_layers, num_decoder_layers}); the sparse blocks ({@code num_sparse_encoder_layers,
 * num_sparse_decoder_layers}, from which the sparse steps follow as in HF, see {@link #isSparse});
 * the router ({@code num_experts, expert_capacity, router_bias, router_jitter_noise,
 * router_dtype} (float32 only), {@code router_z_loss_coef, router_aux_loss_coef}); the relative
 * position buckets ({@code relative_attention_num_buckets, relative_attention_max_distance});
 * {@code dropout_rate, layer_norm_epsilon}; the FFN activation ({@code dense_act_fn}; gated
 * activations, {@code is_gated_act} or {@code feed_forward_proj = "gated-*"}, are refused: HF's
 * Switch FFN has no gate); {@code tie_word_embeddings}; the special ids ({@code pad_token_id,
 * eos_token_id} (an int or a list), {@code decoder_start_token_id}, which falls back to the pad id
 * as in T5). {@code router_ignore_padding_tokens} is read but, as in HF v5, changes nothing.
 * {@code encoder_sparse_step}/{@code decoder_sparse_step} in the file are ignored, as HF recomputes
 * them.
 *
 * @param raw the file as read, written back on save with every field it had
 */
public record T5Config(
        String modelType, int vocabSize, int dModel, int dKv, int dFf, int numHeads,
        int numLayers, int numDecoderLayers, int numSparseEncoderLayers, int numSparseDecoderLayers,
        int numExperts, int expertCapacity, boolean routerBias, double routerJitterNoise, String routerDtype,
        boolean routerIgnorePaddingTokens, int relativeAttentionNumBuckets, int relativeAttentionMaxDistance,
        double dropoutRate, double layerNormEpsilon, double routerZLossCoef, double routerAuxLossCoef,
        Activation activation, boolean tieWordEmbeddings, int decoderStartTokenId, int padTokenId, int[] eosTokenIds,
        ObjectNode raw) {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** The FFN activations supported (HF's ACT2FN names), each with a backward in {@code Ops}. */
    public enum Activation {
        RELU("relu"), GELU("gelu"), GELU_NEW("gelu_new"), GELU_TANH("gelu_pytorch_tanh"), SILU("silu");
        public final String hfName;

        Activation(String hfName) {
            this.hfName = hfName;
        }

        static Activation of(String name) {
            if (name.equals("swish")) return SILU;
            for (Activation a : values()) if (a.hfName.equals(name)) return a;
            return null;
        }
    }

    /** Which of the two stacks. */
    public enum Stack { ENCODER, DECODER }

    /** Reads DIR/config.json. */
    public static T5Config load(Path dir) {
        Path file = Files.isDirectory(dir) ? dir.resolve("config.json") : dir;
        String text;
        try {
            text = Files.readString(file);
        } catch (NoSuchFileException e) {
            throw new ConfigException("config.json", "no config.json in " + dir);
        } catch (IOException e) {
            throw new ConfigException("config.json", "cannot read " + file + ": " + e.getMessage());
        }
        return parse(text);
    }

    /** Parses and validates the text of a config.json. */
    public static T5Config parse(String json) {
        JsonNode node;
        try {
            node = JSON.readTree(json);
        } catch (IOException e) {
            throw new ConfigException("config.json", "config.json is not valid JSON: " + firstLine(e.getMessage()));
        }
        if (node == null || !node.isObject()) throw new ConfigException("config.json", "config.json must hold a JSON object");
        return fromJson((ObjectNode) node);
    }

    public static T5Config fromJson(ObjectNode o) {
        String modelType = str(o, "model_type", null);
        if (modelType == null) throw new ConfigException("model_type", "config.json has no model_type (expected \"switch_transformers\")");
        if (!modelType.equals("switch_transformers"))
            throw new ConfigException("model_type", "model_type \"" + modelType + "\" is not supported (only \"switch_transformers\")");
        if (o.has("is_encoder_decoder") && !bool(o, "is_encoder_decoder", true))
            throw new ConfigException("is_encoder_decoder", "is_encoder_decoder false is not supported (the encoder-decoder model only)");
        int numLayers = integer(o, "num_layers", 12);
        Integer dec = o.hasNonNull("num_decoder_layers") ? integer(o, "num_decoder_layers", 12) : null;
        String act = str(o, "dense_act_fn", "relu");
        Activation activation = Activation.of(act);
        if (activation == null)
            throw new ConfigException("dense_act_fn", "dense_act_fn \"" + act + "\" is not supported (relu, gelu, gelu_new, gelu_pytorch_tanh, silu)");
        if (bool(o, "is_gated_act", false))
            throw new ConfigException("is_gated_act", "is_gated_act true is not supported: SwitchTransformers' FFN has no gate (wi_0/wi_1)");
        String ffp = str(o, "feed_forward_proj", null);
        if (ffp != null && ffp.startsWith("gated"))
            throw new ConfigException("feed_forward_proj", "feed_forward_proj \"" + ffp + "\" is not supported: SwitchTransformers' FFN has no gate");
        int pad = integer(o, "pad_token_id", 0);
        int[] eos = eosIds(o);
        int start = o.hasNonNull("decoder_start_token_id") ? integer(o, "decoder_start_token_id", pad) : pad;
        T5Config c = new T5Config(modelType,
                integer(o, "vocab_size", 32128), integer(o, "d_model", 768), integer(o, "d_kv", 64), integer(o, "d_ff", 2048),
                integer(o, "num_heads", 12), numLayers, dec == null ? numLayers : dec,
                integer(o, "num_sparse_encoder_layers", 3), integer(o, "num_sparse_decoder_layers", 3),
                integer(o, "num_experts", 8), integer(o, "expert_capacity", 64), bool(o, "router_bias", false),
                number(o, "router_jitter_noise", 0.01), str(o, "router_dtype", "float32"),
                bool(o, "router_ignore_padding_tokens", false),
                integer(o, "relative_attention_num_buckets", 32), integer(o, "relative_attention_max_distance", 128),
                number(o, "dropout_rate", 0.1), number(o, "layer_norm_epsilon", 1e-6),
                number(o, "router_z_loss_coef", 0.001), number(o, "router_aux_loss_coef", 0.001),
                activation, bool(o, "tie_word_embeddings", true), start, pad, eos, o.deepCopy());
        return c.validate();
    }

    private T5Config validate() {
        range("vocab_size", vocabSize, 1, 1 << 24);
        range("d_model", dModel, 1, 1 << 16);
        range("d_kv", dKv, 1, 1 << 14);
        range("d_ff", dFf, 1, 1 << 18);
        range("num_heads", numHeads, 1, 1 << 12);
        range("num_layers", numLayers, 1, 1 << 10);
        range("num_decoder_layers", numDecoderLayers, 1, 1 << 10);
        range("num_sparse_encoder_layers", numSparseEncoderLayers, 0, 1 << 10);
        range("num_sparse_decoder_layers", numSparseDecoderLayers, 0, 1 << 10);
        range("num_experts", numExperts, 1, 1 << 16);
        range("expert_capacity", expertCapacity, 1, Integer.MAX_VALUE);
        if (!(routerJitterNoise >= 0 && routerJitterNoise < 1))
            throw new ConfigException("router_jitter_noise", "router_jitter_noise must be in [0, 1), got " + routerJitterNoise);
        if (!routerDtype.equals("float32"))
            throw new ConfigException("router_dtype", "router_dtype \"" + routerDtype + "\" is not supported (only float32: the whole model runs in fp32)");
        range("relative_attention_num_buckets", relativeAttentionNumBuckets, 4, 1 << 16);
        if (relativeAttentionMaxDistance <= relativeAttentionNumBuckets / 2 || relativeAttentionMaxDistance > (1 << 24))
            throw new ConfigException("relative_attention_max_distance", "relative_attention_max_distance must be in ("
                    + relativeAttentionNumBuckets / 2 + ", " + (1 << 24) + "] (more than half the buckets), got " + relativeAttentionMaxDistance);
        if (!(dropoutRate >= 0 && dropoutRate < 1))
            throw new ConfigException("dropout_rate", "dropout_rate must be in [0, 1), got " + dropoutRate);
        if (!(layerNormEpsilon >= 0 && layerNormEpsilon < 1))
            throw new ConfigException("layer_norm_epsilon", "layer_norm_epsilon must be in [0, 1), got " + layerNormEpsilon);
        if (!(routerZLossCoef >= 0 && routerZLossCoef <= 1e6))
            throw new ConfigException("router_z_loss_coef", "router_z_loss_coef must be in [0, 1e6], got " + routerZLossCoef);
        if (!(routerAuxLossCoef >= 0 && routerAuxLossCoef <= 1e6))
            throw new ConfigException("router_aux_loss_coef", "router_aux_loss_coef must be in [0, 1e6], got " + routerAuxLossCoef);
        range("pad_token_id", padTokenId, 0, vocabSize - 1);
        range("decoder_start_token_id", decoderStartTokenId, 0, vocabSize - 1);
        for (int e : eosTokenIds) range("eos_token_id", e, 0, vocabSize - 1);
        long inner = (long) numHeads * dKv;
        if (inner > (1 << 20)) throw new ConfigException("num_heads", "num_heads * d_kv must be at most " + (1 << 20) + ", got " + inner);
        for (Stack s : Stack.values())
            if (sparseLayers(s) > 0 && (long) numExperts * dFf * dModel > Integer.MAX_VALUE - 8)
                throw new ConfigException("num_experts", "num_experts * d_ff * d_model = " + (long) numExperts * dFf * dModel
                        + " is more than one Java array holds (one array per layer's experts)");
        if ((long) vocabSize * dModel > Integer.MAX_VALUE - 8)
            throw new ConfigException("vocab_size", "vocab_size * d_model is more than one Java array holds");
        return this;
    }

    // ---- derived values, as HF computes them ----

    /** Layers of a stack. */
    public int layers(Stack s) {
        return s == Stack.ENCODER ? numLayers : numDecoderLayers;
    }

    /**
     * HF's sparse step: {@code layers / num_sparse} (integer division), or {@code layers} when
     * num_sparse is 0 (HF's "HACK": block 1 is still sparse when there are at least 2 blocks).
     */
    public int sparseStep(Stack s) {
        int n = s == Stack.ENCODER ? numSparseEncoderLayers : numSparseDecoderLayers;
        return n > 0 ? layers(s) / n : layers(s);
    }

    /** Whether block i of a stack has experts: {@code step > 0 && (i % step == 1 || step == 1)} (HF). */
    public boolean isSparse(Stack s, int i) {
        int step = sparseStep(s);
        return step > 0 && (i % step == 1 || step == 1);
    }

    /** The number of sparse blocks of a stack. */
    public int sparseLayers(Stack s) {
        int n = 0;
        for (int i = 0; i < layers(s); i++) if (isSparse(s, i)) n++;
        return n;
    }

    /**
     * Whether HF computes the router losses of a stack at all: only when its sparse step is above 1
     * (with step 1, every block sparse, HF reports z-loss and aux loss 0 and trains without them).
     */
    public boolean hfRouterLosses(Stack s) {
        return sparseStep(s) > 1;
    }

    /** num_heads * d_kv: the width of the attention's queries, keys and values. */
    public int innerDim() {
        return numHeads * dKv;
    }

    public int eosTokenId() {
        return eosTokenIds.length == 0 ? -1 : eosTokenIds[0];
    }

    public boolean isEos(int id) {
        for (int e : eosTokenIds) if (e == id) return true;
        return false;
    }

    /** Parameters of the model (the tied head counted once). */
    public long parameterCount() {
        long d = dModel, inner = innerDim(), n = (long) vocabSize * d;
        if (!tieWordEmbeddings) n += 3L * vocabSize * d; // lm_head and each stack's embed_tokens (v5 ties nothing)
        for (Stack s : Stack.values()) {
            n += (long) relativeAttentionNumBuckets * numHeads + d; // bias table, final norm
            for (int i = 0; i < layers(s); i++) {
                n += 4 * d * inner + d;
                if (s == Stack.DECODER) n += 4 * d * inner + d;
                n += d;
                long ffn = 2 * d * dFf;
                n += isSparse(s, i) ? numExperts * ffn + d * numExperts + (routerBias ? numExperts : 0) : ffn;
            }
        }
        return n;
    }

    /** The config as JSON to save beside a model: the original fields, unchanged. */
    public ObjectNode toJson() {
        return raw.deepCopy();
    }

    // ---- JSON helpers: one line naming the field on a wrong type ----

    private static int integer(ObjectNode o, String f, int def) {
        JsonNode n = o.get(f);
        if (n == null || n.isNull()) return def;
        if (n.isIntegralNumber() && n.canConvertToInt()) return n.intValue();
        if (n.isFloatingPointNumber() && n.doubleValue() == Math.rint(n.doubleValue()) && Math.abs(n.doubleValue()) < 1e9)
            return (int) n.doubleValue();
        throw new ConfigException(f, f + " must be an integer, got " + n);
    }

    private static double number(ObjectNode o, String f, double def) {
        JsonNode n = o.get(f);
        if (n == null || n.isNull()) return def;
        if (n.isNumber()) return n.doubleValue();
        throw new ConfigException(f, f + " must be a number, got " + n);
    }

    private static boolean bool(ObjectNode o, String f, boolean def) {
        JsonNode n = o.get(f);
        if (n == null || n.isNull()) return def;
        if (n.isBoolean()) return n.booleanValue();
        throw new ConfigException(f, f + " must be true or false, got " + n);
    }

    private static String str(ObjectNode o, String f, String def) {
        JsonNode n = o.get(f);
        if (n == null || n.isNull()) return def;
        if (n.isTextual()) return n.textValue();
        throw new ConfigException(f, f + " must be a string, got " + n);
    }

    private static int[] eosIds(ObjectNode o) {
        JsonNode n = o.get("eos_token_id");
        if (n == null) return new int[] {1};
        if (n.isNull()) return new int[0];
        if (n.isArray()) {
            int[] ids = new int[n.size()];
            Iterator<JsonNode> it = n.elements();
            for (int i = 0; it.hasNext(); i++) {
                JsonNode x = it.next();
                if (!x.isIntegralNumber() || !x.canConvertToInt())
                    throw new ConfigException("eos_token_id", "eos_token_id must be an integer or a list of integers, got " + n);
                ids[i] = x.intValue();
            }
            return ids;
        }
        return new int[] {integer(o, "eos_token_id", 1)};
    }

    private static void range(String field, long value, long min, long max) {
        if (value < min || value > max)
            throw new ConfigException(field, field + " must be in [" + min + ", " + max + "], got " + value);
    }

    private static String firstLine(String s) {
        if (s == null) return "";
        int i = s.indexOf('\n');
        return i < 0 ? s : s.substring(0, i);
    }

    /** The names of the fields this class reads (for documentation and tests). */
    public static Set<String> fieldsRead() {
        return new TreeSet<>(Set.of("model_type", "is_encoder_decoder", "vocab_size", "d_model", "d_kv", "d_ff", "num_heads",
                "num_layers", "num_decoder_layers", "num_sparse_encoder_layers", "num_sparse_decoder_layers", "num_experts",
                "expert_capacity", "router_bias", "router_jitter_noise", "router_dtype", "router_ignore_padding_tokens",
                "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon",
                "router_z_loss_coef", "router_aux_loss_coef", "dense_act_fn", "is_gated_act", "feed_forward_proj",
                "tie_word_embeddings", "decoder_start_token_id", "pad_token_id", "eos_token_id"));
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof T5Config c && c.raw.equals(raw);
    }

    @Override
    public int hashCode() {
        return raw.hashCode();
    }

    @Override
    public String toString() {
        return "T5Config" + raw;
    }
}
