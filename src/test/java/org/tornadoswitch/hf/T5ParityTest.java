package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;

/** The Java model against transformers on the fixture models: logits, generations, losses. */
class T5ParityTest {
    static final java.util.List<String> MODELS = T5Fixtures.MODELS;

    @ParameterizedTest
    @FieldSource("MODELS")
    void logitsMatchTransformers(String name) {
        JsonNode exp = T5Fixtures.expected(name);
        try (T5Model m = T5Fixtures.model(name, 2)) {
            for (JsonNode cs : exp.get("cases")) {
                float[][] lg = m.logits(T5Fixtures.ints(cs.get("input_ids")), T5Fixtures.ints(cs.get("decoder_input_ids")));
                double rel = T5Fixtures.relMaxDiff(lg, T5Fixtures.matrix(cs.get("logits")));
                System.out.printf("%s logits (%d in, %d out): max |diff| / max |logit| = %.2e%n", name,
                        cs.get("input_ids").size(), cs.get("decoder_input_ids").size(), rel);
                assertTrue(rel <= 1e-4, name + ": logits differ by " + rel);
            }
        }
    }

    @ParameterizedTest
    @FieldSource("MODELS")
    void greedyAndBeamIdsMatchTransformers(String name) {
        JsonNode exp = T5Fixtures.expected(name);
        int checked = 0;
        try (T5Model m = T5Fixtures.model(name, 2)) {
            for (JsonNode cs : exp.get("cases")) {
                int[] in = T5Fixtures.ints(cs.get("input_ids"));
                if (cs.has("greedy")) {
                    assertArrayEquals(T5Fixtures.ints(cs.get("greedy")), m.generateGreedy(in, 8, null), name + " greedy");
                    checked++;
                }
                assertArrayEquals(T5Fixtures.ints(cs.get("beam3")), m.generateBeam(in, 8, 3, 0, null), name + " beam search");
            }
        }
        assertTrue(checked >= 2, "too few greedy cases with a clear margin");
    }

    static double worstLoss;

    static void assertLosses(String what, JsonNode exp, T5Model.Losses l) {
        double[][] pairs = {
                {exp.get("total").asDouble(), l.total()}, {exp.get("ce").asDouble(), l.ce()},
                {exp.get("encoder_z_loss").asDouble(), l.encoderZLoss()}, {exp.get("decoder_z_loss").asDouble(), l.decoderZLoss()},
                {exp.get("encoder_aux_loss").asDouble(), l.encoderAuxLoss()},
                {exp.get("decoder_aux_loss").asDouble(), l.decoderAuxLoss()}};
        String[] names = {"total", "ce", "encoder_z_loss", "decoder_z_loss", "encoder_aux_loss", "decoder_aux_loss"};
        for (int i = 0; i < pairs.length; i++) {
            double want = pairs[i][0], got = pairs[i][1];
            if (want != 0) worstLoss = Math.max(worstLoss, Math.abs(got - want) / Math.abs(want));
            assertEquals(want, got, 1e-5 * Math.max(Math.abs(want), 1e-3), what + " " + names[i]);
        }
    }

    @ParameterizedTest
    @FieldSource("MODELS")
    void lossesMatchTransformers(String name) {
        JsonNode exp = T5Fixtures.expected(name);
        try (T5Model m = T5Fixtures.model(name, 2)) {
            for (JsonNode cs : exp.get("cases")) {
                T5Model.Losses l = m.loss(T5Fixtures.ints(cs.get("input_ids")), T5Fixtures.ints(cs.get("labels")));
                assertLosses(name, cs.get("losses"), l);
            }
            T5Model.Losses l = m.forward(batch(m.config(), exp.get("batch")), false, 0);
            System.out.printf("%s batch: %s%n", name, l);
            assertLosses(name + " padded batch", exp.get("batch").get("losses"), l);
            double rel = T5Fixtures.relMaxDiff(batchLogits(m, exp.get("batch")), flat(exp.get("batch").get("logits")));
            assertTrue(rel <= 1e-4, name + ": padded batch logits differ by " + rel);
            System.out.printf("%s: worst relative loss error so far %.2e, padded batch logits %.2e%n", name, worstLoss, rel);
        }
    }

    /** The fixture's padded batch: attention mask -> lengths, labels -> decoder inputs shifted right. */
    static T5Model.Batch batch(T5Config c, JsonNode b) {
        float[][] ids = T5Fixtures.matrix(b.get("input_ids")), mask = T5Fixtures.matrix(b.get("attention_mask")),
                labels = T5Fixtures.matrix(b.get("labels"));
        int n = ids.length, s = ids[0].length, t = labels[0].length;
        int[] enc = new int[n * s], len = new int[n], lab = new int[n * t];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < s; j++) {
                enc[i * s + j] = (int) ids[i][j];
                len[i] += (int) mask[i][j];
            }
            for (int j = 0; j < t; j++) lab[i * t + j] = (int) labels[i][j];
        }
        int[] dec = T5Model.shiftRight(lab, n, t, c.decoderStartTokenId(), c.padTokenId());
        return new T5Model.Batch(n, s, enc, len, t, dec, lab);
    }

    static float[][] batchLogits(T5Model m, JsonNode b) {
        float[] lg = m.backend().logits();
        int rows = b.get("labels").size() * b.get("labels").get(0).size(), v = m.config().vocabSize();
        float[][] out = new float[rows][];
        for (int i = 0; i < rows; i++) out[i] = java.util.Arrays.copyOfRange(lg, i * v, (i + 1) * v);
        return out;
    }

    static float[][] flat(JsonNode logits) {
        java.util.List<float[]> rows = new java.util.ArrayList<>();
        for (JsonNode seq : logits) for (float[] r : T5Fixtures.matrix(seq)) rows.add(r);
        return rows.toArray(new float[0][]);
    }

    @org.junit.jupiter.api.Test
    void relativePositionBucketsMatchTorch() throws Exception {
        JsonNode all = new com.fasterxml.jackson.databind.ObjectMapper().readTree(T5Fixtures.ROOT.resolve("buckets.json").toFile());
        int n = 0;
        for (JsonNode t : all) {
            int nb = t.get("num_buckets").asInt(), md = t.get("max_distance").asInt(), first = t.get("first").asInt();
            boolean bidir = t.get("bidirectional").asBoolean();
            int[] want = T5Fixtures.ints(t.get("buckets"));
            for (int i = 0; i < want.length; i++, n++)
                assertEquals(want[i], T5JvmBackend.bucket(first + i, bidir, nb, md),
                        "bucket of " + (first + i) + " (" + nb + " buckets, max distance " + md + ", bidirectional " + bidir + ")");
        }
        assertTrue(n > 10000);
    }

    @org.junit.jupiter.api.Test
    void textPromptThroughTheTokenizerGeneratesAsTransformers() {
        JsonNode t = T5Fixtures.expected("tiny-relu").get("text");
        try (T5Tokenizer tok = T5Tokenizer.load(T5Fixtures.dir("tiny-relu")); T5Model m = T5Fixtures.model("tiny-relu", 2)) {
            int[] enc = tok.encode(t.get("prompt").asText());
            int[] in = java.util.Arrays.copyOf(enc, enc.length + 1);
            in[enc.length] = tok.eosId(); // HF's tokenizer(text) appends </s>
            assertArrayEquals(T5Fixtures.ints(t.get("input_ids")), in);
            int[] out = m.generateGreedy(in, 8, null);
            assertArrayEquals(T5Fixtures.ints(t.get("greedy")), out);
            assertEquals(t.get("decoded").asText(), tok.decode(out));
        }
    }
}
