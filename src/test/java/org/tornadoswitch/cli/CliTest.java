package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.Main;
import org.tornadoswitch.TestData;
import picocli.CommandLine;

/** Bad usage exits 2 with one line naming the problem; training runs end to end from the CLI. */
class CliTest {
    record Result(int code, String out, String err) {}

    static Result run(String... args) {
        CommandLine cl = Main.commandLine();
        StringWriter out = new StringWriter(), err = new StringWriter();
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        int code = cl.execute(args);
        return new Result(code, out.toString(), err.toString());
    }

    @Test
    void helpListsTheTrainFlags() {
        Result r = run("train", "--help");
        assertEquals(0, r.code());
        for (String flag : new String[] {"--steps", "--data", "--seed", "--experts", "--dense", "--eval-every",
                "--metrics", "--out", "--backend", "--capacity-factor", "--lb-coef"})
            assertTrue(r.out().contains(flag), flag);
    }

    @Test
    void badUsageExitsTwoWithOneLine() {
        for (String[] args : new String[][] {
                {"train", "--no-such-flag"},
                {"train", "--steps", "abc"},
                {"train", "--heads", "3"},
                {"train", "--capacity-factor", "0"},
                {"train", "--experts", "0"},
                {"train", "--batch-size", "0"},
                {"train", "--backend", "cuda"},
                {"train", "--data", "/no/such/file.txt"},
                {"nonsense"}}) {
            Result r = run(args);
            assertEquals(2, r.code(), String.join(" ", args) + ": " + r.err());
            assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
            assertTrue(r.err().startsWith("error:"), r.err());
        }
        assertTrue(run("train", "--heads", "3").err().contains("d-model"));
        assertTrue(run("train", "--capacity-factor", "0").err().contains("capacity-factor"));
    }

    @Test
    void badDataFilesAreRefused(@TempDir Path dir) throws Exception {
        Path empty = Files.createFile(dir.resolve("empty.txt"));
        Path binary = Files.write(dir.resolve("bin.dat"), new byte[] {1, 0, 2, 3});
        Path latin1 = Files.write(dir.resolve("latin1.txt"), new byte[] {'a', (byte) 0xE9, 'b'});
        assertTrue(run("train", "--data", empty.toString()).err().contains("empty"));
        assertTrue(run("train", "--data", binary.toString()).err().contains("binary"));
        assertTrue(run("train", "--data", latin1.toString()).err().contains("UTF-8"));
        Path tiny = Files.writeString(dir.resolve("tiny.txt"), "hello world, this is short");
        Result r = run("train", "--data", tiny.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("seq-len"), r.err());
    }

    @Test
    void trainThenEvalThenGenerate(@TempDir Path dir) throws Exception {
        String data = TestData.tinyShakespeare().toString();
        Path out = dir.resolve("run");
        Result t = run("train", "--data", data, "--steps", "20", "--eval-every", "10", "--eval-batches", "2",
                "--d-model", "32", "--heads", "2", "--layers", "1", "--d-ff", "32", "--batch-size", "8",
                "--seq-len", "32", "--warmup", "10", "--out", out.toString(), "--quiet", "--sample-length", "10");
        assertEquals(0, t.code(), t.err());
        assertTrue(t.out().contains("valid loss"), t.out());
        assertTrue(t.out().contains("tokens/s"), t.out());
        var lines = Files.readAllLines(out.resolve("metrics.jsonl"));
        assertEquals(20, lines.size());
        var json = new com.fasterxml.jackson.databind.ObjectMapper();
        var last = json.readTree(lines.get(19));
        for (String f : new String[] {"step", "loss", "lb_loss", "valid_loss", "accuracy", "dropped", "expert_load", "lr", "tokens_per_s"})
            assertTrue(last.has(f), f);
        assertEquals(4, last.get("expert_load").get(0).get("counts").size());
        assertTrue(json.readTree(lines.get(10)).has("step") && !json.readTree(lines.get(10)).has("valid_loss"));

        Result e = run("eval", "--checkpoint", out.toString(), "--data", data);
        assertEquals(0, e.code(), e.err());
        assertTrue(e.out().contains("valid loss"));
        Result g = run("generate", "--checkpoint", out.toString(), "--prompt", "KING", "--length", "30");
        assertEquals(0, g.code(), g.err());
        assertTrue(g.out().startsWith("KING"));
        Result bad = run("generate", "--checkpoint", out.toString(), "--prompt", "\u00e9t\u00e9");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("vocabulary"), bad.err());
        Result missing = run("eval", "--checkpoint", dir.resolve("nothing").toString(), "--data", data);
        assertEquals(2, missing.code());
    }
}
