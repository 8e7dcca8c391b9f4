package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code t5 tokenize}: HF's ids as JSON; bad directories exit 2 with one line. */
class T5TokenizeCliTest {
    static final String DIR = "src/test/resources/hf/tokenizer";

    @Test
    void printsHfIds() throws Exception {
        JsonNode cases = new ObjectMapper().readTree(Path.of("src/test/resources/hf/tokenizer_cases.json").toFile()).get("cases");
        int checked = 0;
        for (JsonNode c : cases) {
            String text = c.get("text").asText();
            if (!(text.contains("<extra_id_") || text.startsWith("Café") || text.startsWith("ROMEO:") || text.isEmpty())) continue;
            CliTest.Result r = CliTest.run("t5", "tokenize", "--model", DIR, "--text", text);
            assertEquals(0, r.code(), r.err());
            assertEquals("{\"ids\":" + c.get("hf").toString() + "}", r.out().strip(), text);
            checked++;
        }
        assertTrue(checked >= 8, "checked " + checked);
    }

    @Test
    void badInputExitsTwoWithOneLine(@TempDir Path tmp) throws Exception {
        Files.write(tmp.resolve("spiece.model"), new byte[] {9, 9, 9});
        for (String[] args : new String[][] {
                {"t5", "tokenize", "--model", tmp.resolve("none").toString(), "--text", "x"},
                {"t5", "tokenize", "--model", tmp.toString(), "--text", "x"},
                {"t5", "tokenize", "--model", DIR},
                {"t5"}}) {
            CliTest.Result r = CliTest.run(args);
            assertEquals(2, r.code(), String.join(" ", args) + ": " + r.err());
            assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
            assertTrue(r.err().startsWith("error:"), r.err());
            assertEquals("", r.out());
        }
        assertTrue(CliTest.run("t5", "tokenize", "--help").out().contains("--text"));
    }
}
