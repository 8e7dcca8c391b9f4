package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.TestData;
import org.tornadoswitch.backend.MemoryPlan;

/**
 * Models too large for one Java array or for the heap are refused before they are built, with one
 * line naming what they need and how to raise the heap, and exit code 2; the scripts take the heap
 * from JAVA_OPTS. (That models which fit still train is CliTest.trainThenEvalThenGenerate.)
 */
class MemoryCliTest {
    static CliTest.Result run(String... args) {
        return CliTest.run(args);
    }

    @Test
    void tooLargeModelsAreRefusedWithOneLine() {
        String data = TestData.tinyShakespeare().toString();
        // 64 layers of d = d_ff = 16384 with 4 experts: 206 billion parameters, more than one array holds
        CliTest.Result r = run("train", "--data", data, "--d-model", "16384", "--d-ff", "16384", "--layers", "64", "--steps", "1");
        assertEquals(2, r.code(), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().startsWith("error: the model is too large: 206,181,564,737 parameters"), r.err());
        for (String w : new String[] {"parameters", "gradients", "Adam state", "activations", "of heap"})
            assertTrue(r.err().contains(w), w + ": " + r.err());
        // 1.2 billion parameters fit one array but not this JVM's heap (the tests run with -Xmx4g)
        for (String cmd : new String[] {"train", "bench"}) {
            r = run(cmd, "--data", data, "--d-model", "2048", "--d-ff", "8192", "--layers", "8", "--steps", "1");
            assertEquals(2, r.code(), r.err());
            assertEquals(1, r.err().strip().lines().count(), r.err());
            assertTrue(r.err().startsWith("error: the model needs "), r.err());
            for (String w : new String[] {"parameters 4.", "gradients", "Adam state", "activations", "JVM has", MemoryPlan.HEAP_HINT})
                assertTrue(r.err().contains(w), w + ": " + r.err());
        }
    }

    /** scripts/run train on a 9.5M-parameter model (about 0.2 GiB planned) with the given JAVA_OPTS. */
    static Process scriptTrain(Path root, Path out, String javaOpts) throws Exception {
        ProcessBuilder pb = new ProcessBuilder("bash", root.resolve("scripts/run").toString(), "train", "--data",
                TestData.tinyShakespeare().toAbsolutePath().toString(), "--d-model", "256", "--d-ff", "1024", "--layers", "4",
                "--batch-size", "4", "--seq-len", "32", "--steps", "1", "--eval-batches", "1", "--final-eval-batches", "1",
                "--sample-length", "0", "--quiet", "--out", out.toString()).directory(root.toFile()).redirectErrorStream(true);
        pb.environment().put("TS_CLASSPATH", System.getProperty("java.class.path"));
        pb.environment().put("JAVA_OPTS", javaOpts);
        Process p = pb.start();
        assertTrue(p.waitFor(3, TimeUnit.MINUTES), "scripts/run did not finish");
        return p;
    }

    @Test
    void scriptsTakeTheHeapFromJavaOpts(@TempDir Path dir) throws Exception {
        Path root = Path.of("").toAbsolutePath();
        Assumptions.assumeTrue(Files.isRegularFile(root.resolve("scripts/run")));
        Process p = scriptTrain(root, dir.resolve("small-heap"), "-Xmx150m");
        String out = new String(p.getInputStream().readAllBytes()).strip();
        assertEquals(2, p.exitValue(), out);
        assertEquals(1, out.lines().count(), out);
        assertTrue(out.startsWith("error: the model needs 0.2 GiB") && out.contains("JVM has 0.1 GiB") && out.contains("JAVA_OPTS=-Xmx"), out);
        assertFalse(Files.exists(dir.resolve("small-heap")), "nothing written");
        // the same model trains when the heap is large enough
        p = scriptTrain(root, dir.resolve("enough"), "-Xmx600m");
        out = new String(p.getInputStream().readAllBytes()).strip();
        assertEquals(0, p.exitValue(), out);
        assertTrue(out.contains("valid loss"), out);
    }
}
