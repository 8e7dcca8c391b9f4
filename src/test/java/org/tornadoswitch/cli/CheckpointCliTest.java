package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.TestData;
import org.tornadoswitch.train.Checkpoint;

/** Checkpoints, exact resume, interruption and bad checkpoints, through the CLI. */
class CheckpointCliTest {
    static final ObjectMapper JSON = new ObjectMapper();
    static final String[] TINY = {"--d-model", "16", "--heads", "2", "--layers", "2", "--d-ff", "16", "--experts", "3",
            "--batch-size", "4", "--seq-len", "16", "--warmup", "5", "--eval-every", "0", "--final-eval-batches", "2",
            "--sample-length", "0", "--quiet", "--data", TestData.tinyShakespeare().toString()};

    static String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of("train"));
        a.addAll(List.of(TINY));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    static List<Double> losses(Path metrics) throws IOException {
        List<Double> out = new ArrayList<>();
        for (String l : Files.readAllLines(metrics)) out.add(JSON.readTree(l).get("loss").asDouble());
        return out;
    }

    @Test
    void resumedRunGivesTheSameLossesBitForBit(@TempDir Path dir) throws Exception {
        Path full = dir.resolve("full"), part = dir.resolve("part");
        assertEquals(0, CliTest.run(args("--steps", "8", "--out", full.toString())).code());
        assertEquals(0, CliTest.run(args("--steps", "4", "--out", part.toString())).code());
        CliTest.Result r = CliTest.run("train", "--resume", part.toString(), "--steps", "8", "--eval-every", "0",
                "--final-eval-batches", "2", "--sample-length", "0", "--quiet", "--data", TestData.tinyShakespeare().toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("resuming"), r.out());
        List<Double> a = losses(full.resolve("metrics.jsonl")), b = losses(part.resolve("metrics.jsonl"));
        assertEquals(8, b.size());
        assertEquals(a, b, "an interrupted and resumed run must repeat the uninterrupted one exactly");
        assertEquals(8, Checkpoint.load(part, false).step());
    }

    @Test
    void keepsTheLastKCheckpoints(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        assertEquals(0, CliTest.run(args("--steps", "5", "--save-every", "1", "--keep", "2", "--out", run.toString())).code());
        List<Path> cps = Checkpoint.checkpoints(run);
        assertEquals(2, cps.size());
        assertEquals("step-00000005", cps.get(0).getFileName().toString());
        assertEquals("step-00000004", cps.get(1).getFileName().toString());
    }

    @Test
    void badCheckpointsAreRefusedWithOneLine(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        assertEquals(0, CliTest.run(args("--steps", "2", "--out", run.toString())).code());
        Path cp = Checkpoint.checkpoints(run).get(0);
        String data = TestData.tinyShakespeare().toString();

        byte[] model = Files.readAllBytes(cp.resolve("model.safetensors"));
        byte[] flipped = model.clone();
        flipped[flipped.length - 3] ^= 0x40;
        Files.write(cp.resolve("model.safetensors"), flipped);
        CliTest.Result r = CliTest.run("eval", "--checkpoint", run.toString(), "--data", data);
        assertEquals(2, r.code());
        assertTrue(r.err().contains("corrupt"), r.err());

        Files.write(cp.resolve("model.safetensors"), java.util.Arrays.copyOf(model, 100));
        r = CliTest.run("generate", "--checkpoint", run.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("corrupt") || r.err().contains("truncated"), r.err());
        Files.write(cp.resolve("model.safetensors"), model);

        ObjectNode st = (ObjectNode) JSON.readTree(cp.resolve("state.json").toFile());
        ObjectNode newer = st.deepCopy();
        newer.put("format", 99);
        Files.write(cp.resolve("state.json"), JSON.writeValueAsBytes(newer));
        r = CliTest.run("eval", "--checkpoint", run.toString(), "--data", data);
        assertEquals(2, r.code());
        assertTrue(r.err().contains("newer"), r.err());

        ObjectNode other = st.deepCopy();
        ((ObjectNode) other.get("config")).put("dFf", 32);
        other.remove("model_sha256");
        Files.write(cp.resolve("state.json"), JSON.writeValueAsBytes(other));
        r = CliTest.run("eval", "--checkpoint", run.toString(), "--data", data);
        assertEquals(2, r.code());
        assertTrue(r.err().contains("another config"), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
    }

    @Test
    void aFullDiskLeavesThePreviousCheckpoint(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        assertEquals(0, CliTest.run(args("--steps", "2", "--out", run.toString())).code());
        Checkpoint.State good = Checkpoint.load(run, true);
        Checkpoint.State next = new Checkpoint.State(good.config(), good.tokenizer(), 3, good.dataRng(), good.dropRng(),
                good.params(), good.adamM(), good.adamV());
        Checkpoint.FileWriter diskFull = (file, bytes) -> {
            Files.write(file, java.util.Arrays.copyOf(bytes, bytes.length / 2));
            throw new IOException("No space left on device");
        };
        assertThrows(IOException.class, () -> Checkpoint.save(run, next, 3, diskFull));
        assertEquals(2, Checkpoint.load(run, true).step(), "the previous checkpoint is still the newest");
        try (var files = Files.list(run.resolve("checkpoints"))) {
            assertFalse(files.anyMatch(p -> p.getFileName().toString().endsWith(".tmp")), "no partial checkpoint is left");
        }
    }

    @Test
    void unwritableOutputIsRefusedBeforeAnyWork(@TempDir Path dir) throws Exception {
        Path file = Files.writeString(dir.resolve("a-file"), "x");
        CliTest.Result r = CliTest.run(args("--steps", "1", "--out", file.resolve("run").toString()));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("not writable"), r.err());
    }

    @Test
    void ctrlCSavesACheckpointAndExits130(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), "org.tornadoswitch.Main"));
        cmd.addAll(List.of(args("--steps", "100000", "--save-every", "0", "--out", run.toString())));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("log").toFile()).start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (!Files.exists(run.resolve("metrics.jsonl")) || Files.readAllLines(run.resolve("metrics.jsonl")).size() < 3) {
                assertTrue(p.isAlive() && System.nanoTime() < deadline, "training did not start: " + Files.readString(dir.resolve("log")));
                Thread.sleep(20);
            }
            new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor();
            assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the run did not stop after SIGINT");
            assertEquals(130, p.exitValue(), Files.readString(dir.resolve("log")));
        } finally {
            p.destroyForcibly();
        }
        assertTrue(Files.readString(dir.resolve("log")).contains("--resume"), "says how to continue");
        Checkpoint.State s = Checkpoint.load(run, true);
        assertTrue(s.step() >= 3, "saved at step " + s.step());
        assertEquals(s.step(), Files.readAllLines(run.resolve("metrics.jsonl")).size(), "checkpoint at the last finished step");
    }

    @Test
    void killedMidCheckpointTheNewestCompleteOneLoads(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), "org.tornadoswitch.Main"));
        cmd.addAll(List.of(args("--steps", "100000", "--save-every", "1", "--keep", "2", "--out", run.toString())));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("log").toFile()).start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (Checkpoint.checkpoints(run).size() < 2 || Checkpoint.checkpoints(run).get(0).getFileName().toString().compareTo("step-00000005") < 0) {
                assertTrue(p.isAlive(), "training process died: " + Files.readString(dir.resolve("log")));
                assertTrue(System.nanoTime() < deadline, "no checkpoints written in time");
                Thread.sleep(20);
            }
            Thread.sleep(37); // land somewhere inside the next save
        } finally {
            p.destroyForcibly(); // SIGKILL
            p.waitFor(30, TimeUnit.SECONDS);
        }
        Checkpoint.State s = Checkpoint.load(run, true);
        assertTrue(s.step() >= 5, "step " + s.step());
        assertTrue(s.adamM() != null);
    }
}
