package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.Config;
import org.tornadoswitch.TestData;
import org.tornadoswitch.train.Checkpoint;

/** The routing options of issue 4 on the command line: help, bad values, backends, old checkpoints. */
class RoutingCliTest {
    /** Every flag of issue 4 and its default as `train --help` prints it. */
    static final String[][] FLAGS = {
            {"--z-loss-coef", "0.0"},
            {"--jitter", "0.0"},
            {"--drop-policy", "random"},
            {"--dropped-output", "input"},
            {"--expert-capacity", "0"},
            {"--eval-capacity-factor", "0.0"},
            {"--[no-]eval-drop-tokens", "true"},
            {"--sparse-step", "1"},
            {"--init", "torch"},
            {"--init-scale", "0.1"},
            {"--dropout", "0.0"},
            {"--expert-dropout", "0.0"},
            {"--top-k", "1"},
    };

    /** The help text of one option: from its flag to the next option's line. */
    static String helpOf(String help, String flag) {
        int i = help.indexOf(flag);
        assertTrue(i >= 0, flag + " missing from the help");
        int next = help.indexOf("\n  -", i);
        return help.substring(i, next < 0 ? help.length() : next);
    }

    @Test
    void helpListsEveryRoutingOptionWithItsDefault() {
        CliTest.Result r = CliTest.run("train", "--help");
        assertEquals(0, r.code());
        for (String[] f : FLAGS) {
            String h = helpOf(r.out(), f[0]).replaceAll("\\s+", " ");
            assertTrue(h.contains("default: " + f[1]), f[0] + ": " + h);
        }
    }

    @Test
    void badValuesExitTwoNamingTheFlag() {
        String[][] bad = {
                {"--z-loss-coef", "-1"},
                {"--jitter", "1"},
                {"--jitter", "-0.1"},
                {"--drop-policy", "sideways"},
                {"--dropped-output", "half"},
                {"--expert-capacity", "-1"},
                {"--eval-capacity-factor", "-0.5"},
                {"--sparse-step", "-1"},
                {"--init", "xavier"},
                {"--init-scale", "0"},
                {"--dropout", "1"},
                {"--expert-dropout", "-0.4"},
                {"--top-k", "5"},
                {"--top-k", "0"},
        };
        for (String[] a : bad) {
            CliTest.Result r = CliTest.run("train", a[0], a[1]);
            assertEquals(2, r.code(), String.join(" ", a) + ": " + r.err());
            assertEquals(1, r.err().strip().lines().count(), r.err());
            assertTrue(r.err().contains(a[0].substring(2)), a[0] + ": " + r.err());
        }
    }

    @Test
    void topTwoNeedsProbabilityScaling() {
        CliTest.Result r = CliTest.run("train", "--top-k", "2", "--no-scale-prob");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("top-k") && r.err().contains("scale-prob"), r.err());
    }

    /** The config fields a checkpoint written before issue 4 has. */
    static final Set<String> ORIGINAL = Set.of("dModel", "heads", "layers", "dFf", "experts", "dense", "capacityFactor",
            "dropTokens", "scaleProb", "lbCoef", "posEmbedding", "batchSize", "seqLen", "lr", "warmup", "beta1", "beta2",
            "eps", "clip", "seed");

    @Test
    void checkpointsWithoutTheNewFieldsLoadWithDefaults(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        CliTest.Result t = CliTest.run(CheckpointCliTest.args("--steps", "2", "--out", run.toString()));
        assertEquals(0, t.code(), t.err());
        Path state = Checkpoint.checkpoints(run).get(0).resolve("state.json");
        ObjectMapper json = new ObjectMapper();
        ObjectNode st = (ObjectNode) json.readTree(state.toFile());
        ObjectNode cfg = (ObjectNode) st.get("config");
        for (Iterator<String> it = cfg.fieldNames(); it.hasNext(); ) if (!ORIGINAL.contains(it.next())) it.remove();
        assertEquals(ORIGINAL.size(), cfg.size());
        Files.write(state, json.writeValueAsBytes(st));

        Config loaded = Checkpoint.load(run, true).config();
        Config d = Config.defaults();
        assertEquals(d.zLossCoef(), loaded.zLossCoef());
        assertEquals(d.jitter(), loaded.jitter());
        assertEquals(Config.DropPolicy.RANDOM, loaded.dropPolicy());
        assertEquals(Config.DroppedOutput.INPUT, loaded.droppedOutput());
        assertEquals(0.0, loaded.evalCapacityFactor());
        assertTrue(loaded.evalDropTokens());
        assertEquals(0, loaded.expertCapacity());
        assertEquals(1, loaded.sparseStep());
        assertEquals(Config.Init.TORCH, loaded.init());
        assertEquals(0.1, loaded.initScale());
        assertEquals(0.0, loaded.dropout());
        assertEquals(0.0, loaded.expertDropout());
        assertEquals(1, loaded.topK());
        CliTest.Result r = CliTest.run("train", "--resume", run.toString(), "--steps", "3", "--eval-every", "0",
                "--final-eval-batches", "1", "--sample-length", "0", "--quiet", "--data", TestData.tinyShakespeare().toString());
        assertEquals(0, r.code(), r.err());
    }

    /** Options whose noise is drawn per step: a resumed run must still repeat the uninterrupted one. */
    static final String[] NOISY = {"--jitter", "0.2", "--dropout", "0.1", "--expert-dropout", "0.3"};

    @Test
    void resumedRunsWithNoiseRepeatExactly(@TempDir Path dir) throws Exception {
        Path full = dir.resolve("full"), part = dir.resolve("part");
        java.util.List<String> a = new java.util.ArrayList<>(java.util.List.of(NOISY));
        a.addAll(java.util.List.of("--steps", "6", "--out", full.toString()));
        assertEquals(0, CliTest.run(CheckpointCliTest.args(a.toArray(new String[0]))).code());
        a = new java.util.ArrayList<>(java.util.List.of(NOISY));
        a.addAll(java.util.List.of("--steps", "3", "--out", part.toString()));
        assertEquals(0, CliTest.run(CheckpointCliTest.args(a.toArray(new String[0]))).code());
        CliTest.Result r = CliTest.run("train", "--resume", part.toString(), "--steps", "6", "--eval-every", "0",
                "--final-eval-batches", "1", "--sample-length", "0", "--quiet", "--data", TestData.tinyShakespeare().toString());
        assertEquals(0, r.code(), r.err());
        assertEquals(CheckpointCliTest.losses(full.resolve("metrics.jsonl")), CheckpointCliTest.losses(part.resolve("metrics.jsonl")));
        Config c = Checkpoint.load(part, false).config();
        assertEquals(0.2, c.jitter());
        assertEquals(0.3, c.expertDropout());
    }

    /** CheckpointCliTest's tiny training arguments on another data file. */
    static String[] small(String data, String... more) {
        java.util.List<String> a = new java.util.ArrayList<>(java.util.List.of("train"));
        a.addAll(java.util.List.of(CheckpointCliTest.TINY).subList(0, CheckpointCliTest.TINY.length - 2));
        a.addAll(java.util.List.of("--data", data));
        a.addAll(java.util.List.of(more));
        return a.toArray(new String[0]);
    }

    @Test
    void evaluationWithoutDropping(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        // the first 60,000 characters, so that each evaluation of the whole split is quick
        String data = Files.writeString(dir.resolve("small.txt"),
                Files.readString(TestData.tinyShakespeare()).substring(0, 60_000)).toString();
        assertEquals(0, CliTest.run(small(data, "--steps", "2", "--capacity-factor", "0.5",
                "--no-eval-drop-tokens", "--out", run.toString())).code());
        CliTest.Result e = CliTest.run("eval", "--checkpoint", run.toString(), "--data", data);
        assertEquals(0, e.code(), e.err());
        assertTrue(e.out().contains("dropped 0.00%"), e.out());
        double trainDropped = new ObjectMapper().readTree(Files.readAllLines(run.resolve("metrics.jsonl")).get(1)).get("dropped").asDouble();
        assertTrue(trainDropped > 0.3, "training with capacity factor 0.5 drops: " + trainDropped);
        // a checkpoint trained with labml's rule, evaluated and sampled with overrides
        Path labml = dir.resolve("labml");
        assertEquals(0, CliTest.run(small(data, "--steps", "2", "--capacity-factor", "0.5", "--out", labml.toString())).code());
        CliTest.Result dropping = CliTest.run("eval", "--checkpoint", labml.toString(), "--data", data);
        assertTrue(!dropping.out().contains("dropped 0.00%"), dropping.out());
        CliTest.Result none = CliTest.run("eval", "--checkpoint", labml.toString(), "--data", data, "--no-eval-drop-tokens");
        assertTrue(none.out().contains("dropped 0.00%"), none.out());
        CliTest.Result wide = CliTest.run("eval", "--checkpoint", labml.toString(), "--data", data, "--eval-capacity-factor", "3");
        assertTrue(wide.out().contains("dropped 0.00%"), "factor 3 with 3 experts keeps every token: " + wide.out());
        CliTest.Result g = CliTest.run("generate", "--checkpoint", labml.toString(), "--prompt", "KING", "--length", "5",
                "--no-eval-drop-tokens");
        assertEquals(0, g.code(), g.err());
        CliTest.Result bad = CliTest.run("generate", "--checkpoint", labml.toString(), "--eval-capacity-factor", "-1");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("eval-capacity-factor"), bad.err());
    }

    @Test
    void metricsPerBlockAndExpertAndTheLoadHeatMap(@TempDir Path dir) throws Exception {
        Path run = dir.resolve("run");
        CliTest.Result t = CliTest.run(CheckpointCliTest.args("--steps", "4", "--sparse-step", "2",
                "--capacity-factor", "0.8", "--z-loss-coef", "0.001", "--out", run.toString()));
        assertEquals(0, t.code(), t.err());
        var lines = Files.readAllLines(run.resolve("metrics.jsonl"));
        var rec = new ObjectMapper().readTree(lines.get(3));
        var layers = rec.get("expert_load");
        assertEquals(2, layers.size());
        assertEquals(1, layers.get(0).get("counts").size(), "block 0 is dense");
        assertTrue(!layers.get(0).has("entropy") && !layers.get(0).has("z_loss"));
        var sw = layers.get(1);
        double load = 0, droppedShare = 0;
        int routed = 0;
        for (int e = 0; e < 3; e++) {
            load += sw.get("load").get(e).asDouble();
            routed += sw.get("counts").get(e).asInt();
            droppedShare += sw.get("dropped").get(e).asDouble() * sw.get("counts").get(e).asInt();
        }
        assertEquals(1.0, load, 1e-9, "loads are shares of the block's assignments");
        assertEquals(4 * 16, routed);
        assertEquals(droppedShare / routed, sw.get("dropped_total").asDouble(), 1e-9);
        assertTrue(sw.get("dropped_total").asDouble() > 0, "capacity factor 0.8 drops");
        double h = sw.get("entropy").asDouble();
        assertTrue(h > 0 && h <= Math.log(3) + 1e-9, "entropy " + h);
        assertEquals(rec.get("z_loss").asDouble(), sw.get("z_loss").asDouble(), 1e-12, "one Switch block: its z-loss is the total");
        // the dropped fraction over all blocks counts the dense ones' tokens too
        assertEquals(sw.get("dropped_total").asDouble() / 2, rec.get("dropped").asDouble(), 1e-9);

        Path png = dir.resolve("load.png");
        CliTest.Result c = CliTest.run("chart", "expert-load", run.resolve("metrics.jsonl").toString(), "--out", png.toString());
        assertEquals(0, c.code(), c.err());
        java.awt.image.BufferedImage img = javax.imageio.ImageIO.read(png.toFile());
        assertTrue(img.getWidth() >= 700 && img.getHeight() >= 400);
        CliTest.Result bad = CliTest.run("chart", "expert-load", run.resolve("metrics.jsonl").toString(), "--out", png.toString(), "--bins", "0");
        assertEquals(2, bad.code());
    }
}
