package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * T5Tokenizer against transformers' T5Tokenizer ids and decodes (scripts/hf_tokenizer_fixtures.py),
 * through tokenizer.json (the tokenizers library) and through spiece.model (the Java SentencePiece).
 */
class T5TokenizerTest {
    static final Path HF = Path.of("src/test/resources/hf");
    static final Path DIR = HF.resolve("tokenizer");

    static JsonNode cases() throws IOException {
        return new ObjectMapper().readTree(HF.resolve("tokenizer_cases.json").toFile()).get("cases");
    }

    /** Only the spiece.model (and, if asked, tokenizer_config.json) of the fixture directory. */
    static Path spieceOnly(Path tmp, boolean withConfig) throws IOException {
        Files.copy(DIR.resolve("spiece.model"), tmp.resolve("spiece.model"));
        if (withConfig) Files.copy(DIR.resolve("tokenizer_config.json"), tmp.resolve("tokenizer_config.json"));
        return tmp;
    }

    /**
     * The one place where HF's T5 pipeline and SentencePiece differ on this corpus: U+0085 (NEL) is
     * whitespace to HF's WhitespaceSplit pre-tokenizer, while nmt_nfkc leaves it and SentencePiece
     * encodes it as an unknown character. The spiece.model path gives SentencePiece's ids there.
     */
    static boolean hfSplitsWhereSentencePieceDoesNot(String text) {
        return text.indexOf('\u0085') >= 0;
    }

    static void sameIdsAsHf(T5Tokenizer tok, boolean spiecePath) throws IOException {
        List<String> wrong = new ArrayList<>();
        int texts = 0, ids = 0, asSentencePiece = 0;
        for (JsonNode c : cases()) {
            String text = c.get("text").asText();
            int[] want = SentencePieceModelTest.ints(c.get("hf"));
            assertArrayEquals(want, SentencePieceModelTest.ints(c.get("hf_spiece")), "fixture: HF from tokenizer.json = HF from spiece.model");
            if (spiecePath && hfSplitsWhereSentencePieceDoesNot(text)) {
                want = SentencePieceModelTest.ints(c.get("sp"));
                asSentencePiece++;
            }
            int[] got = tok.encode(text);
            texts++;
            ids += want.length;
            if (!Arrays.equals(want, got))
                wrong.add(new ObjectMapper().writeValueAsString(text) + " want " + Arrays.toString(want) + " got " + Arrays.toString(got));
            String dec = tok.decode(SentencePieceModelTest.ints(c.get("hf")));
            if (!dec.equals(c.get("hf_decoded").asText()))
                wrong.add("decode of " + new ObjectMapper().writeValueAsString(text) + ": want "
                        + new ObjectMapper().writeValueAsString(c.get("hf_decoded").asText()) + " got " + new ObjectMapper().writeValueAsString(dec));
        }
        assertTrue(wrong.isEmpty(), wrong.size() + " mismatches over " + texts + " texts:\n" + String.join("\n", wrong));
        assertEquals(spiecePath ? 1 : 0, asSentencePiece);
        System.out.printf("T5Tokenizer %s: %d texts, %d ids, all identical to the fixture (and %d decodes)%n", tok.source(), texts, ids, texts);
    }

    static void t5Ids(T5Tokenizer tok) {
        assertEquals(0, tok.padId());
        assertEquals(1, tok.eosId());
        assertEquals(2, tok.unkId());
        assertEquals(1100, tok.vocabSize());
        assertEquals(1099, tok.sentinelId(0));
        assertEquals(1000, tok.sentinelId(99));
        assertThrows(IllegalArgumentException.class, () -> tok.sentinelId(100));
        assertArrayEquals(new int[] {tok.sentinelId(7)}, tok.encode("<extra_id_7>"));
        assertArrayEquals(new int[0], tok.encode(""));
        // ids past the vocabulary (a model's padded embedding) and specials are skipped, as HF does
        assertEquals(tok.decode(tok.encode("Hello world")), tok.decode(new int[] {0, 5000, tok.encode("Hello world")[0], 1099,
                tok.encode("Hello world")[1], tok.encode("Hello world")[2], tok.encode("Hello world")[3], 1, 0}));
    }

    @Test
    void tokenizerJsonGivesHfIds() throws IOException {
        try (T5Tokenizer tok = T5Tokenizer.load(DIR)) {
            assertTrue(tok.source().contains("tokenizer.json"), tok.source());
            t5Ids(tok);
            sameIdsAsHf(tok, false);
        }
    }

    @Test
    void spieceModelGivesHfIds(@TempDir Path tmp) throws IOException {
        try (T5Tokenizer tok = T5Tokenizer.load(spieceOnly(tmp, true))) {
            assertTrue(tok.source().contains("spiece.model"), tok.source());
            t5Ids(tok);
            sameIdsAsHf(tok, true);
        }
    }

    @Test
    void withoutTheNativeLibraryTheSpieceModelBesideTokenizerJsonIsUsed(@TempDir Path tmp) throws IOException {
        String key = HfJsonTokenizer.NATIVE_PROPERTY;
        System.setProperty(key, "false");
        try {
            try (T5Tokenizer tok = T5Tokenizer.load(DIR)) {
                assertTrue(tok.source().contains("spiece.model"), tok.source());
                t5Ids(tok);
            }
            Files.copy(DIR.resolve("tokenizer.json"), tmp.resolve("tokenizer.json"));
            HfFormatException e = assertThrows(HfFormatException.class, () -> T5Tokenizer.load(tmp));
            assertTrue(e.getMessage().contains("no spiece.model") && e.getMessage().contains(key), e.getMessage());
        } finally {
            System.clearProperty(key);
        }
    }

    @Test
    void spieceModelAloneTakesHfsDefaultHundredSentinels(@TempDir Path tmp) throws IOException {
        try (T5Tokenizer tok = T5Tokenizer.load(spieceOnly(tmp, false))) {
            t5Ids(tok);
        }
    }

    @Test
    void missingOrCorruptTokenizerFilesAreRefused(@TempDir Path tmp) throws IOException {
        HfFormatException e = assertThrows(HfFormatException.class, () -> T5Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("has no tokenizer"), e.getMessage());
        e = assertThrows(HfFormatException.class, () -> T5Tokenizer.load(tmp.resolve("nope")));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
        Files.writeString(tmp.resolve("tokenizer.json"), "{\"model\": ");
        e = assertThrows(HfFormatException.class, () -> T5Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("tokenizer.json") && e.getMessage().contains("not valid JSON"), e.getMessage());
        Files.writeString(tmp.resolve("tokenizer.json"), "{\"model\": {\"type\": \"NoSuchModel\"}}");
        e = assertThrows(HfFormatException.class, () -> T5Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("tokenizer.json"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"), e.getMessage());
        Files.delete(tmp.resolve("tokenizer.json"));
        Files.write(tmp.resolve("spiece.model"), new byte[] {1, 2, 3});
        e = assertThrows(HfFormatException.class, () -> T5Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("spiece.model"), e.getMessage());
    }
}
