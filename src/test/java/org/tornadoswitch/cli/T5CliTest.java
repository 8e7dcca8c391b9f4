package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The {@code t5} commands end to end on the fixture models: logits, losses and generations as
 * transformers gives them, one SGD step of {@code t5 finetune} equal to torch's, the saved directory
 * named and shaped as HF's own save, and bad input refused with one line.
 */
class T5CliTest {
    static final ObjectMapper JSON = new ObjectMapper();
    static final Path MODELS = Path.of("src/test/resources/hf/models");
    static final String RELU = MODELS.resolve("tiny-relu").toString();

    static JsonNode expected(String model) throws IOException {
        return JSON.readTree(MODELS.resolve(model).resolve("expected.json").toFile());
    }

    static String ids(JsonNode a) {
        StringBuilder b = new StringBuilder();
        for (JsonNode x : a) b.append(b.isEmpty() ? "" : ",").append(x.asInt());
        return b.toString();
    }

    static CliTest.Result ok(String... args) {
        CliTest.Result r = CliTest.run(args);
        assertEquals(0, r.code(), String.join(" ", args) + ": " + r.err());
        return r;
    }

    @Test
    void logitsLossAndGenerationsAsTransformers() throws Exception {
        for (String model : List.of("tiny-relu", "tiny-gelu-untied")) {
            String dir = MODELS.resolve(model).toString();
            JsonNode cs = expected(model).get("cases").get(0);
            JsonNode lg = JSON.readTree(ok("t5", "logits", "--model", dir, "--input-ids", ids(cs.get("input_ids")),
                    "--decoder-input-ids", ids(cs.get("decoder_input_ids")), "--threads", "2").out()).get("logits");
            double diff = 0, max = 0;
            for (int i = 0; i < lg.size(); i++)
                for (int j = 0; j < lg.get(i).size(); j++) {
                    diff = Math.max(diff, Math.abs(lg.get(i).get(j).asDouble() - cs.get("logits").get(i).get(j).asDouble()));
                    max = Math.max(max, Math.abs(cs.get("logits").get(i).get(j).asDouble()));
                }
            assertTrue(diff / max < 1e-4, model + " logits " + diff / max);
            assertEquals(cs.get("decoder_input_ids").size(), lg.size());
            JsonNode loss = JSON.readTree(ok("t5", "loss", "--model", dir, "--input-ids", ids(cs.get("input_ids")), "--labels",
                    ids(cs.get("labels"))).out());
            for (Iterator<Map.Entry<String, JsonNode>> it = cs.get("losses").fields(); it.hasNext(); ) {
                var e = it.next();
                double want = e.getValue().asDouble();
                assertEquals(want, loss.get(e.getKey()).asDouble(), 1e-5 * Math.max(1e-3, Math.abs(want)), model + " " + e.getKey());
            }
            JsonNode g = JSON.readTree(ok("t5", "generate", "--model", dir, "--input-ids", ids(cs.get("input_ids")), "--json",
                    "--max-new-tokens", "8", "--quiet").out());
            assertEquals(cs.get("greedy"), g.get("ids"));
            JsonNode b = JSON.readTree(ok("t5", "generate", "--model", dir, "--input-ids", ids(cs.get("input_ids")), "--json",
                    "--max-new-tokens", "8", "--num-beams", "3", "--quiet").out());
            assertEquals(cs.get("beam3"), b.get("ids"));
        }
        JsonNode text = expected("tiny-relu").get("text");
        CliTest.Result r = ok("t5", "generate", "--model", RELU, "--prompt", text.get("prompt").asText(), "--max-new-tokens", "8");
        assertEquals(text.get("decoded").asText(), r.out().strip());
        assertTrue(r.err().contains("tokens/s"), r.err());
        JsonNode j = JSON.readTree(ok("t5", "generate", "--model", RELU, "--prompt", text.get("prompt").asText(), "--max-new-tokens",
                "8", "--json", "--quiet").out());
        assertEquals(text.get("greedy"), j.get("ids"));
        // sampling: seeded, so the same seed gives the same ids; starts with the decoder start token
        String[] sample = {"t5", "generate", "--model", RELU, "--input-ids", "5,9,1", "--json", "--temperature", "0.8", "--seed", "7",
                "--max-new-tokens", "6", "--quiet"};
        JsonNode s1 = JSON.readTree(ok(sample).out()).get("ids"), s2 = JSON.readTree(ok(sample).out()).get("ids");
        assertEquals(s1, s2);
        assertEquals(0, s1.get(0).asInt());
    }

    /** The fixture's padded batch as id examples: one SGD step over all of it is torch's step. */
    static Path writeBatchJsonl(Path file, JsonNode batch) throws IOException {
        List<String> lines = new ArrayList<>();
        for (int b = 0; b < batch.get("input_ids").size(); b++) {
            List<Integer> in = new ArrayList<>(), lab = new ArrayList<>();
            for (int i = 0; i < batch.get("input_ids").get(b).size(); i++)
                if (batch.get("attention_mask").get(b).get(i).asInt() == 1) in.add(batch.get("input_ids").get(b).get(i).asInt());
            for (JsonNode x : batch.get("labels").get(b)) if (x.asInt() != -100) lab.add(x.asInt());
            ObjectNode o = JSON.createObjectNode();
            o.putPOJO("input_ids", in);
            o.putPOJO("labels", lab);
            lines.add(JSON.writeValueAsString(o));
        }
        Files.write(file, lines);
        return file;
    }

    /** name -> shape of a safetensors file's header. */
    static Map<String, List<Long>> header(Path file) throws IOException {
        byte[] all = Files.readAllBytes(file);
        int n = (int) ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        JsonNode h = JSON.readTree(new String(all, 8, n, StandardCharsets.UTF_8));
        Map<String, List<Long>> out = new java.util.TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = h.fields(); it.hasNext(); ) {
            var e = it.next();
            if (e.getKey().equals("__metadata__")) continue;
            List<Long> s = new ArrayList<>();
            for (JsonNode d : e.getValue().get("shape")) s.add(d.asLong());
            out.put(e.getKey(), s);
            assertEquals("F32", e.getValue().get("dtype").asText());
        }
        return out;
    }

    static float[] tensor(Path file, String name) throws IOException {
        byte[] all = Files.readAllBytes(file);
        ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        int n = (int) b.getLong(0);
        JsonNode off = JSON.readTree(new String(all, 8, n, StandardCharsets.UTF_8)).get(name).get("data_offsets");
        int lo = 8 + n + off.get(0).asInt(), hi = 8 + n + off.get(1).asInt();
        float[] out = new float[(hi - lo) / 4];
        for (int i = 0; i < out.length; i++) out[i] = b.getFloat(lo + 4 * i);
        return out;
    }

    @Test
    void finetuneOneSgdStepIsTorchsAndSavesWhatHfSaves(@TempDir Path tmp) throws Exception {
        for (String model : List.of("tiny-relu", "tiny-gelu-untied")) {
            Path src = MODELS.resolve(model);
            JsonNode batch = expected(model).get("batch");
            Path train = writeBatchJsonl(tmp.resolve(model + ".jsonl"), batch);
            Path out = tmp.resolve(model + "-out");
            // dropout and jitter off as in the reference (tiny-gelu-untied's config has both on)
            CliTest.Result r = ok("t5", "finetune", "--model", src.toString(), "--train", train.toString(), "--steps", "1",
                    "--optimizer", "sgd", "--lr", batch.get("sgd_lr").asText(), "--batch-size", "3", "--out", out.toString(),
                    "--dropout", "0", "--jitter", "0", "--quiet");
            assertTrue(r.out().contains("done: 1 steps"), r.out());
            // the saved file has HF's names and shapes, exactly those of transformers' save_pretrained
            assertEquals(header(src.resolve("model.safetensors")), header(out.resolve("model.safetensors")), model);
            Path want = src.resolve("sgd.safetensors");
            for (String name : header(want).keySet()) {
                float[] a = tensor(out.resolve("model.safetensors"), name), b = tensor(want, name);
                double diff = 0, max = 1;
                for (int i = 0; i < a.length; i++) {
                    diff = Math.max(diff, Math.abs(a[i] - b[i]));
                    max = Math.max(max, Math.abs(b[i]));
                }
                assertTrue(diff / max <= 1e-5, model + " " + name + " differs by " + diff);
            }
            JsonNode cfg = JSON.readTree(out.resolve("config.json").toFile()), orig = JSON.readTree(src.resolve("config.json").toFile());
            assertEquals(orig, cfg, "config.json is written back as it was (dropout overrides are not saved)");
            List<String> metrics = Files.readAllLines(out.resolve("metrics.jsonl"));
            assertEquals(1, metrics.size());
            assertEquals(batch.get("losses").get("total").asDouble(), JSON.readTree(metrics.get(0)).get("loss").asDouble(), 1e-5);
            if (model.equals("tiny-relu")) assertTrue(Files.exists(out.resolve("spiece.model")), "tokenizer copied");
        }
    }

    @Test
    void finetuneFromTextWithValidationAndCheckpoints(@TempDir Path tmp) throws Exception {
        Path train = tmp.resolve("train.jsonl"), valid = tmp.resolve("valid.jsonl");
        Files.writeString(train, """
                {"input": "translate English to German: The house is wonderful.", "target": "Das Haus ist wunderbar."}
                {"input": "translate English to German: I like tea.", "target": "Ich mag Tee."}

                {"input": "summarize: the cat sat on the mat and the dog sat on the log", "target": "animals sat"}
                """);
        Files.writeString(valid, "{\"input\": \"translate English to German: Thank you.\", \"target\": \"Danke.\"}\n");
        Path out = tmp.resolve("run");
        CliTest.Result r = ok("t5", "finetune", "--model", RELU, "--train", train.toString(), "--valid", valid.toString(),
                "--steps", "6", "--batch-size", "2", "--eval-every", "3", "--save-every", "2", "--keep", "2", "--out", out.toString(),
                "--lr", "1e-3");
        assertTrue(r.out().contains("valid loss"), r.out());
        List<String> lines = Files.readAllLines(out.resolve("metrics.jsonl"));
        assertEquals(6, lines.size());
        JsonNode last = JSON.readTree(lines.get(5));
        assertTrue(last.has("valid_loss") && last.has("valid_ce") && last.has("grad_norm") && last.has("encoder_aux_loss"), lines.get(5));
        assertTrue(JSON.readTree(lines.get(2)).has("valid_loss"));
        assertFalse(JSON.readTree(lines.get(1)).has("valid_loss"));
        try (var st = Files.list(out.resolve("checkpoints"))) {
            assertEquals(List.of("step-00000002", "step-00000004"), st.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertTrue(Files.exists(out.resolve("checkpoints/step-00000004/model.safetensors")));
        // the run's model generates through the CLI
        ok("t5", "generate", "--model", out.toString(), "--prompt", "translate English to German: I like tea.", "--quiet",
                "--max-new-tokens", "4");
    }

    @Test
    void badInputExitsTwoWithOneLineAndWritesNothing(@TempDir Path tmp) throws Exception {
        Path model = tmp.resolve("m");
        Files.createDirectories(model);
        for (String f : List.of("config.json", "model.safetensors")) Files.copy(MODELS.resolve("tiny-relu").resolve(f), model.resolve(f));
        Path train = tmp.resolve("t.jsonl");
        Files.writeString(train, "{\"input_ids\": [5, 6, 1], \"labels\": [7, 1]}\n");
        Path badLine = tmp.resolve("bad.jsonl");
        Files.writeString(badLine, "{\"input_ids\": [5, 6, 1], \"labels\": [7, 1]}\nnot json\n");
        Path badId = tmp.resolve("badid.jsonl");
        Files.writeString(badId, "{\"input_ids\": [5, 99999], \"labels\": [7, 1]}\n");
        Path out = tmp.resolve("out");
        String m = model.toString();
        record Case(String[] args, String mentions) {}
        List<Case> cases = List.of(
                new Case(new String[] {"t5", "logits", "--model", tmp.resolve("none").toString(), "--input-ids", "1", "--decoder-input-ids", "0"}, "does not exist"),
                new Case(new String[] {"t5", "logits", "--model", m, "--input-ids", "1,99999", "--decoder-input-ids", "0"}, "99999"),
                new Case(new String[] {"t5", "logits", "--model", m, "--input-ids", "1"}, "--decoder-input-ids"),
                new Case(new String[] {"t5", "generate", "--model", m, "--input-ids", "5", "--num-beams", "0"}, "--num-beams"),
                new Case(new String[] {"t5", "generate", "--model", m, "--prompt", "hello"}, "tokenizer"),
                new Case(new String[] {"t5", "loss", "--model", m, "--input-ids", "5", "--labels", "-100"}, "-100"),
                new Case(new String[] {"t5", "finetune", "--model", m, "--train", badLine.toString(), "--out", out.toString()}, "bad.jsonl:2"),
                new Case(new String[] {"t5", "finetune", "--model", m, "--train", badId.toString(), "--out", out.toString()}, "99999"),
                new Case(new String[] {"t5", "finetune", "--model", m, "--train", tmp.resolve("none.jsonl").toString(), "--out", out.toString()}, "none.jsonl"),
                new Case(new String[] {"t5", "finetune", "--model", m, "--train", train.toString(), "--out", out.toString(), "--optimizer", "lion"}, "--optimizer"),
                new Case(new String[] {"t5", "finetune", "--model", m, "--train", train.toString(), "--out", "/proc/nope"}, "not writable"));
        for (Case c : cases) {
            CliTest.Result r = CliTest.run(c.args());
            assertEquals(2, r.code(), String.join(" ", c.args()) + ": " + r.err());
            assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
            assertTrue(r.err().startsWith("error:") && r.err().contains(c.mentions()), c.mentions() + " in " + r.err());
            assertEquals("", r.out());
            assertFalse(Files.exists(out), "nothing written for " + String.join(" ", c.args()));
        }
        // config fields out of range or unsupported, each named
        String cfg = Files.readString(model.resolve("config.json"));
        for (String[] edit : new String[][] {
                {"\"d_model\": 16", "\"d_model\": 0", "d_model"},
                {"\"model_type\": \"switch_transformers\"", "\"model_type\": \"t5\"", "model_type"},
                {"\"dense_act_fn\": \"relu\"", "\"dense_act_fn\": \"gated-gelu\"", "dense_act_fn"},
                {"\"router_dtype\": \"float32\"", "\"router_dtype\": \"bfloat16\"", "router_dtype"},
                {"\"expert_capacity\": 2", "\"expert_capacity\": -1", "expert_capacity"},
                {"\"dropout_rate\": 0.0", "\"dropout_rate\": 1.5", "dropout_rate"},
                {"\"relative_attention_max_distance\": 16", "\"relative_attention_max_distance\": 2", "relative_attention_max_distance"},
                {"\"d_ff\": 24", "\"d_ff\": 25", "shape"}}) {
            assertTrue(cfg.contains(edit[0]), edit[0]);
            Files.writeString(model.resolve("config.json"), cfg.replace(edit[0], edit[1]));
            CliTest.Result r = CliTest.run("t5", "logits", "--model", m, "--input-ids", "5,1", "--decoder-input-ids", "0");
            assertEquals(2, r.code(), edit[1] + ": " + r.err());
            assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
            assertTrue(r.err().contains(edit[2]), edit[2] + " in " + r.err());
        }
        Files.writeString(model.resolve("config.json"), cfg);
        // a tensor missing from the file
        Files.write(model.resolve("model.safetensors"), Files.readAllBytes(MODELS.resolve("tiny-deep").resolve("model.safetensors")));
        CliTest.Result r = CliTest.run("t5", "logits", "--model", m, "--input-ids", "5,1", "--decoder-input-ids", "0");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("tensor") && r.err().strip().lines().count() == 1, r.err());
    }

    @Test
    void helpOnEverySubcommand() {
        for (String[] c : new String[][] {{"generate", "--max-new-tokens", "--num-beams", "--temperature", "--seed", "--input-ids", "--json"},
                {"logits", "--decoder-input-ids"}, {"loss", "--labels"},
                {"finetune", "--train", "--valid", "--steps", "--out", "--optimizer", "--lr", "--batch-size"}}) {
            CliTest.Result r = ok("t5", c[0], "--help");
            for (int i = 1; i < c.length; i++) assertTrue(r.out().contains(c[i]), c[0] + " " + c[i]);
        }
    }
}
