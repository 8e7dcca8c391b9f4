package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.List;

/** The tiny HF models of scripts/hf_fixtures.py and their expected numbers. */
final class T5Fixtures {
    static final Path ROOT = Path.of("src", "test", "resources", "hf");
    static final List<String> MODELS = List.of("tiny-relu", "tiny-gelu-untied", "tiny-deep");

    private T5Fixtures() {}

    static Path dir(String model) {
        return ROOT.resolve("models").resolve(model);
    }

    static JsonNode expected(String model) {
        try {
            return new ObjectMapper().readTree(dir(model).resolve("expected.json").toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static T5Weights weights(String model) {
        T5Config c = T5Config.load(dir(model));
        T5Weights w = new T5Weights(c);
        try (TestSafetensors src = new TestSafetensors(dir(model).resolve("model.safetensors"))) {
            w.load(src);
        }
        return w;
    }

    static T5Model model(String model, int threads) {
        return new T5Model(new T5JvmBackend(weights(model), threads));
    }

    static int[] ints(JsonNode a) {
        int[] out = new int[a.size()];
        for (int i = 0; i < out.length; i++) out[i] = a.get(i).asInt();
        return out;
    }

    static float[][] matrix(JsonNode a) {
        float[][] out = new float[a.size()][];
        for (int i = 0; i < out.length; i++) {
            JsonNode r = a.get(i);
            out[i] = new float[r.size()];
            for (int j = 0; j < out[i].length; j++) out[i][j] = (float) r.get(j).asDouble();
        }
        return out;
    }

    /** max |a - b| / max |b| over all entries. */
    static double relMaxDiff(float[][] a, float[][] b) {
        double diff = 0, max = 0;
        for (int i = 0; i < b.length; i++)
            for (int j = 0; j < b[i].length; j++) {
                diff = Math.max(diff, Math.abs(a[i][j] - b[i][j]));
                max = Math.max(max, Math.abs(b[i][j]));
            }
        return diff / max;
    }
}
