package org.tornadoswitch.hf;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * T5's tokenizer: SentencePiece unigram ids with T5's {@code <extra_id_N>} sentinels, as
 * transformers' T5Tokenizer gives them.
 *
 * <p>{@link #load} prefers {@code tokenizer.json} when the directory has one: that is the file
 * transformers itself tokenizes with (its T5Tokenizer is backed by the tokenizers library and
 * reads tokenizer.json first), and it is read here by that same library (ai.djl.huggingface
 * tokenizers, its native library shipped in the jar, loaded offline), so the ids are HF's by
 * construction. Without tokenizer.json (or where the native library cannot load on this platform, or
 * with {@code -Dtornadoswitch.tokenizers.native=false}), {@code spiece.model} is read by this package's own SentencePiece encoder, which gives
 * SentencePiece's ids, with the sentinels and pad/eos/unk recognised in the text as single tokens
 * the way HF does.
 */
public interface T5Tokenizer extends AutoCloseable {
    String TOKENIZER_JSON = "tokenizer.json";
    String SPIECE_MODEL = "spiece.model";

    /** The tokenizer of a model directory; tokenizer.json wins over spiece.model (see the class comment). */
    static T5Tokenizer load(Path dir) {
        if (!Files.isDirectory(dir)) throw new HfFormatException("tokenizer directory " + dir + " does not exist");
        Path json = dir.resolve(TOKENIZER_JSON), spiece = dir.resolve(SPIECE_MODEL);
        if (Files.isRegularFile(json)) {
            try {
                return HfJsonTokenizer.load(json);
            } catch (HfJsonTokenizer.NativeUnavailable e) {
                if (!Files.isRegularFile(spiece))
                    throw new HfFormatException("cannot read " + json + ": " + e.getMessage() + ", and there is no " + SPIECE_MODEL);
                return SpT5Tokenizer.load(dir);
            }
        }
        if (Files.isRegularFile(spiece)) return SpT5Tokenizer.load(dir);
        throw new HfFormatException(dir + " has no tokenizer (neither " + TOKENIZER_JSON + " nor " + SPIECE_MODEL + ")");
    }

    /** SentencePiece ids of text, no EOS appended (as HF's tokenizer(text, add_special_tokens=False)). */
    int[] encode(String text);

    /** Text of ids, skipping pad/eos/unk and the sentinels as HF's decode(ids, skip_special_tokens=True). */
    String decode(int[] ids);

    int padId();

    int eosId();

    int unkId();

    /** Number of ids the tokenizer knows (SentencePiece pieces plus the sentinels), as len(tokenizer) in HF. */
    int vocabSize();

    /** The id of {@code <extra_id_n>}. */
    int sentinelId(int n);

    /** Which file and which engine tokenize, e.g. "tokenizer.json (Hugging Face tokenizers)". */
    String source();

    @Override
    default void close() {}
}
