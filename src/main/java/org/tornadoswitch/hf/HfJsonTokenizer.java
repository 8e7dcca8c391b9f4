package org.tornadoswitch.hf;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * tokenizer.json read by Hugging Face's own tokenizers library (Rust, through DJL's JNI binding):
 * the same normaliser, pre-tokenizer, model, added tokens and decoder as transformers uses. The
 * native library comes out of the jar into DJL's cache directory (~/.djl.ai, or DJL_CACHE_DIR); DJL
 * is put offline first (no downloads, no usage reporting) and on its CPU build.
 */
final class HfJsonTokenizer implements T5Tokenizer {
    /** The native library cannot be loaded on this machine (the caller may fall back to spiece.model). */
    static final class NativeUnavailable extends RuntimeException {
        NativeUnavailable(String message, Throwable cause) {
            super(message, cause);
        }
    }

    private final HuggingFaceTokenizer tok;
    private final Path file;
    private final int padId, eosId, unkId, vocabSize;
    private final Map<String, Integer> added;

    private HfJsonTokenizer(HuggingFaceTokenizer tok, Path file, int padId, int eosId, int unkId, int vocabSize,
                            Map<String, Integer> added) {
        this.tok = tok;
        this.file = file;
        this.padId = padId;
        this.eosId = eosId;
        this.unkId = unkId;
        this.vocabSize = vocabSize;
        this.added = added;
    }

    private static void setIfUnset(String key, String value) {
        if (System.getProperty(key) == null && System.getenv(key) == null) System.setProperty(key, value);
    }

    /** {@code -Dtornadoswitch.tokenizers.native=false}: never load the native library (spiece.model is used). */
    static final String NATIVE_PROPERTY = "tornadoswitch.tokenizers.native";

    /** Loads the native library once, offline; NativeUnavailable if it cannot. */
    private static synchronized void loadNative() {
        if ("false".equalsIgnoreCase(System.getProperty(NATIVE_PROPERTY)))
            throw new NativeUnavailable("the tokenizers native library is switched off (-D" + NATIVE_PROPERTY + "=false)", null);
        setIfUnset("ai.djl.offline", "true"); // no downloads of native builds
        setIfUnset("OPT_OUT_TRACKING", "true"); // DJL's usage report on cloud machines
        setIfUnset("RUST_FLAVOR", "cpu"); // no CUDA probing: the tokenizer runs on the CPU anyway
        try {
            ai.djl.huggingface.tokenizers.jni.LibUtils.checkStatus();
        } catch (RuntimeException | LinkageError e) {
            throw new NativeUnavailable("the tokenizers native library does not load here (" + Json.firstLine(e.getMessage()) + ")", e);
        }
    }

    static HfJsonTokenizer load(Path file) {
        JsonNode root = Json.read(file);
        JsonNode model = root.get("model");
        if (model == null || !model.isObject()) throw new HfFormatException(file + " has no model");
        Map<String, Integer> added = new HashMap<>();
        int size = 0;
        JsonNode vocab = model.get("vocab");
        if (vocab != null && vocab.isArray()) size = vocab.size(); // Unigram: [[piece, score], ...]
        else if (vocab != null && vocab.isObject()) for (JsonNode id : vocab) size = Math.max(size, id.asInt() + 1);
        JsonNode at = root.get("added_tokens");
        if (at != null && at.isArray())
            for (JsonNode t : at) {
                added.put(t.path("content").asText(), t.path("id").asInt());
                size = Math.max(size, t.path("id").asInt() + 1);
            }
        String pad = "<pad>", eos = "</s>", unk = "<unk>";
        Path cfg = file.resolveSibling("tokenizer_config.json");
        if (Files.isRegularFile(cfg)) {
            JsonNode c = Json.read(cfg);
            pad = c.path("pad_token").isTextual() ? c.get("pad_token").asText() : pad;
            eos = c.path("eos_token").isTextual() ? c.get("eos_token").asText() : eos;
            unk = c.path("unk_token").isTextual() ? c.get("unk_token").asText() : unk;
        }
        int unkId = added.getOrDefault(unk, model.path("unk_id").asInt(-1));
        loadNative();
        HuggingFaceTokenizer tok;
        try {
            Map<String, String> opts = new HashMap<>();
            opts.put("addSpecialTokens", "false");
            opts.put("truncation", "false");
            opts.put("padding", "false");
            tok = HuggingFaceTokenizer.newInstance(file, opts);
        } catch (IOException | RuntimeException e) {
            throw new HfFormatException(file + " is not a tokenizer.json the tokenizers library reads: " + Json.firstLine(e.getMessage()));
        }
        return new HfJsonTokenizer(tok, file, added.getOrDefault(pad, -1), added.getOrDefault(eos, -1), unkId, size, added);
    }

    @Override
    public int[] encode(String text) {
        long[] ids = tok.encode(text, false, false).getIds();
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) out[i] = Math.toIntExact(ids[i]);
        return out;
    }

    @Override
    public String decode(int[] ids) {
        long[] l = new long[ids.length];
        int n = 0;
        for (int id : ids) if (id >= 0 && id < vocabSize) l[n++] = id; // as HF: ids it has no token for are skipped
        return tok.decode(java.util.Arrays.copyOf(l, n), true);
    }

    @Override
    public int padId() {
        return padId;
    }

    @Override
    public int eosId() {
        return eosId;
    }

    @Override
    public int unkId() {
        return unkId;
    }

    @Override
    public int vocabSize() {
        return vocabSize;
    }

    @Override
    public int sentinelId(int n) {
        Integer id = added.get("<extra_id_" + n + ">");
        if (id == null) throw new IllegalArgumentException("no sentinel <extra_id_" + n + "> in " + file);
        return id;
    }

    @Override
    public String source() {
        return file + " (Hugging Face tokenizers " + tok.getVersion() + ")";
    }

    @Override
    public void close() {
        tok.close();
    }
}
