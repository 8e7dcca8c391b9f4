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
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The SentencePiece encoder against sentencepiece's own ids (scripts/hf_tokenizer_fixtures.py). */
class SentencePieceModelTest {
    static final Path HF = Path.of("src/test/resources/hf");

    static int[] ints(JsonNode a) {
        int[] out = new int[a.size()];
        for (int i = 0; i < out.length; i++) out[i] = a.get(i).asInt();
        return out;
    }

    static void sameIdsAsSentencePiece(Path model, Path cases) throws IOException {
        SentencePieceModel sp = SentencePieceModel.load(model);
        JsonNode all = new ObjectMapper().readTree(cases.toFile()).get("cases");
        List<String> wrong = new ArrayList<>();
        int ids = 0;
        for (JsonNode c : all) {
            String text = c.get("text").asText();
            int[] want = ints(c.get("sp")), got = sp.encode(text);
            ids += want.length;
            if (!java.util.Arrays.equals(want, got))
                wrong.add(new ObjectMapper().writeValueAsString(text) + " want " + java.util.Arrays.toString(want) + " got "
                        + java.util.Arrays.toString(got));
        }
        assertTrue(all.size() > 50);
        assertTrue(wrong.isEmpty(), wrong.size() + " of " + all.size() + " texts (" + ids + " ids) differ:\n" + String.join("\n", wrong));
    }

    @Test
    void t5StyleModelGivesSentencePiecesIds() throws IOException {
        sameIdsAsSentencePiece(HF.resolve("tokenizer/spiece.model"), HF.resolve("tokenizer_cases.json"));
    }

    @Test
    void byteFallbackUserDefinedAndIdentityNormalisation() throws IOException {
        Path m = HF.resolve("tokenizer_bytefallback/spiece.model");
        sameIdsAsSentencePiece(m, HF.resolve("tokenizer_bytefallback_cases.json"));
        SentencePieceModel sp = SentencePieceModel.load(m);
        assertTrue(sp.byteFallback());
        assertEquals(SentencePieceModel.USER_DEFINED, sp.type(sp.id("ROMEO:")));
        assertEquals(SentencePieceModel.BYTE, sp.type(sp.id("<0xF0>")));
    }

    @Test
    void normalisationAsT5s() {
        SentencePieceModel sp = SentencePieceModel.load(HF.resolve("tokenizer/spiece.model"));
        assertEquals("nmt_nfkc", sp.normalizerName());
        assertEquals("\u2581fine\u2581ABC\u25811", sp.normalize("  \uFB01ne   \uFF21\uFF22\uFF23\t\uFF11 \n"));
        assertEquals("\u2581\u00e9", sp.normalize("e\u0301"));
        assertEquals("", sp.normalize(" \t\n "));
        assertEquals("", sp.normalize(""));
    }

    @Test
    void corruptOrUnsupportedModelsAreRefused(@TempDir Path dir) throws IOException {
        byte[] good = Files.readAllBytes(HF.resolve("tokenizer/spiece.model"));
        Path f = dir.resolve("spiece.model");
        Files.write(f, java.util.Arrays.copyOf(good, good.length / 2));
        HfFormatException e = assertThrows(HfFormatException.class, () -> SentencePieceModel.load(f));
        assertTrue(e.getMessage().contains("spiece.model") && e.getMessage().contains("not a SentencePiece model"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"));
        Files.writeString(f, "{\"this is\": \"json\"}");
        e = assertThrows(HfFormatException.class, () -> SentencePieceModel.load(f));
        assertTrue(e.getMessage().contains("spiece.model"), e.getMessage());
        Files.write(f, new byte[0]);
        e = assertThrows(HfFormatException.class, () -> SentencePieceModel.load(f));
        assertTrue(e.getMessage().contains("no pieces"), e.getMessage());
        e = assertThrows(HfFormatException.class, () -> SentencePieceModel.load(dir.resolve("none.model")));
        assertTrue(e.getMessage().contains("missing"), e.getMessage());
    }
}
