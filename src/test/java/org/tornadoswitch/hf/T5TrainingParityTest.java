package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;

/**
 * Gradients through the whole model against torch's autograd: the parameters after optimizer steps
 * on the fixtures' padded batch (eval mode: no dropout or jitter) match transformers' / torch's.
 */
class T5TrainingParityTest {
    static final java.util.List<String> MODELS = T5Fixtures.MODELS;

    /** Runs {@code steps} steps of forward + backward + optimizer on the fixture batch; returns the max error over tensors. */
    static double stepAndCompare(String name, Supplier<T5Optimizer> opt, int steps, String expectedFile) {
        JsonNode b = T5Fixtures.expected(name).get("batch");
        try (T5Model m = T5Fixtures.model(name, 2)) {
            T5Optimizer o = opt.get();
            for (int t = 1; t <= steps; t++) {
                m.forward(T5ParityTest.batch(m.config(), b), false, t);
                m.backward();
                m.backend().optimizerStep(o, 1f, t, o.lr() == null ? 0 : o.lr());
            }
            double worst = 0;
            String worstName = "";
            try (TestSafetensors want = new TestSafetensors(T5Fixtures.dir(name).resolve(expectedFile))) {
                T5Weights w = m.backend().params();
                for (T5Weights.Tensor t : w.tensors()) {
                    float[] exp = want.readFloats(t.name());
                    double diff = 0, max = 1e-3;
                    for (int i = 0; i < exp.length; i++) {
                        diff = Math.max(diff, Math.abs(t.data()[t.off() + i] - exp[i]));
                        max = Math.max(max, Math.abs(exp[i]));
                    }
                    double rel = diff / Math.max(1, max);
                    if (rel > worst) {
                        worst = rel;
                        worstName = t.name();
                    }
                }
            }
            System.out.printf("%s %s x%d: worst parameter error %.2e (%s)%n", name, o.describe(), steps, worst, worstName);
            return worst;
        }
    }

    @ParameterizedTest
    @FieldSource("MODELS")
    void oneSgdStepMatchesTorch(String name) {
        double lr = T5Fixtures.expected(name).get("batch").get("sgd_lr").asDouble();
        double err = stepAndCompare(name, () -> T5Optimizer.sgd(lr), 1, "sgd.safetensors");
        assertTrue(err <= 1e-5, name + ": SGD step differs by " + err);
    }

    @Test
    void adafactorAndAdamStepsMatchTransformers() {
        JsonNode b = T5Fixtures.expected("tiny-relu").get("batch");
        int steps = b.get("steps").asInt();
        assertTrue(stepAndCompare("tiny-relu", () -> T5Optimizer.adafactor(null), steps, "adafactor.safetensors") <= 1e-5);
        double lr = b.get("adafactor_lr").asDouble();
        assertTrue(stepAndCompare("tiny-relu", () -> T5Optimizer.adafactor(lr), steps, "adafactor-lr.safetensors") <= 1e-5);
        double alr = b.get("adamw_lr").asDouble();
        assertTrue(stepAndCompare("tiny-relu", () -> T5Optimizer.adam(alr, 0.9, 0.999, 1e-8, 0), steps, "adamw.safetensors") <= 1e-5);
    }
}
