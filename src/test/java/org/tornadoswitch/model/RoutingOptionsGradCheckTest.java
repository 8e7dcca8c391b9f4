package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.util.Rng;

/**
 * Finite-difference checks of whole tiny models with the routing options of issue 4 switched on:
 * the analytic gradient of the objective (cross-entropy + LB loss + z-loss) against central
 * differences, skipping perturbations that change a routing decision.
 */
class RoutingOptionsGradCheckTest {
    static final int VOCAB = 7;

    /** ModelGradCheckTest's tiny model: 2 layers, 3 experts, capacity factor 0.8 (drops tokens). */
    static Config tiny() {
        return ModelGradCheckTest.tiny(3, false, 0.8, true, false);
    }

    static double objective(SwitchModel m, int[] x, int[] y, Config c) {
        m.dropRng().setState(12345);
        return m.forward(x, y, c.batchSize(), c.seqLen()).objective;
    }

    /** Checks every router element and up to 4 elements of every other tensor; returns the analytic gradient. */
    static float[] check(Config c) {
        c.validate();
        ParamLayout layout = new ParamLayout(c, VOCAB);
        float[] w = layout.initialize(7);
        Rng rng = new Rng(99);
        int n = c.tokensPerBatch();
        int[] x = new int[n], y = new int[n];
        for (int i = 0; i < n; i++) {
            x[i] = rng.nextInt(VOCAB);
            y[i] = rng.nextInt(VOCAB);
        }
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, VOCAB, w, 2), 1)) {
            objective(m, x, y, c);
            m.backward();
            float[] grad = m.backend().grads();
            int[][] base = ModelGradCheckTest.routes(m, c);
            int checked = 0, skipped = 0;
            double eps = 3e-3;
            for (ParamLayout.Tensor t : layout.tensors()) {
                int tensorChecked = 0;
                // every element of the routers, whose gradients the options change most
                int count = t.name().contains("router") ? t.size() : Math.min(t.size(), 4);
                for (int k = 0; k < count; k++) {
                    int i = t.offset() + (count == t.size() ? k : (int) ((long) k * 7919 % t.size()));
                    float[] wp = w.clone();
                    wp[i] += (float) eps;
                    m.backend().setParams(wp);
                    double lp = objective(m, x, y, c);
                    boolean flip = !Arrays.deepEquals(base, ModelGradCheckTest.routes(m, c));
                    wp[i] = w[i] - (float) eps;
                    m.backend().setParams(wp);
                    double lm = objective(m, x, y, c);
                    flip |= !Arrays.deepEquals(base, ModelGradCheckTest.routes(m, c));
                    if (flip) {
                        skipped++;
                        continue;
                    }
                    double num = (lp - lm) / (2 * eps), an = grad[i];
                    assertEquals(num, an, 2e-3 + 2e-2 * Math.max(Math.abs(num), Math.abs(an)),
                            t.name() + "[" + (i - t.offset()) + "]");
                    checked++;
                    tensorChecked++;
                }
                assertTrue(tensorChecked > 0, "no element of " + t.name() + " could be checked");
            }
            assertTrue(skipped <= checked / 5, "too many routing flips: " + skipped + " of " + (checked + skipped));
            m.backend().setParams(w);
            return grad;
        }
    }

    /** Largest |a - b| over the router weights of every layer. */
    static double routerDiff(Config c, float[] a, float[] b) {
        double d = 0;
        for (ParamLayout.Tensor t : new ParamLayout(c, VOCAB).tensors())
            if (t.name().contains("router"))
                for (int i = t.offset(); i < t.offset() + t.size(); i++) d = Math.max(d, Math.abs(a[i] - b[i]));
        return d;
    }

    @Test
    void zLoss() {
        Config c = tiny().with("zLossCoef", 0.5);
        float[] with = check(c), without = check(tiny());
        assertTrue(routerDiff(c, with, without) > 1e-4, "the z-loss must reach the router");
    }

    @Test
    void jitter() {
        Config c = tiny().with("jitter", 0.3);
        float[] with = check(c), without = check(tiny());
        assertTrue(routerDiff(c, with, without) > 1e-4, "jitter must change the router's gradient");
    }

    @Test
    void droppedTokensGiveZero() {
        check(tiny().with("droppedOutput", Config.DroppedOutput.ZERO));
    }

    @Test
    void probabilityDropPolicy() {
        check(tiny().with("dropPolicy", Config.DropPolicy.PROBABILITY));
    }

    @Test
    void sparseStepWithADenseAndASwitchBlock() {
        check(tiny().with("sparseStep", 2)); // block 0 dense, block 1 Switch
    }

    @Test
    void dropoutAndExpertDropoutWithFixedMasks() {
        // the masks depend on (seed, step, layer, element) only, so every evaluation of the loss sees the same
        check(tiny().with("dropout", 0.3).with("expertDropout", 0.4));
    }

    @Test
    void dropoutInADenseBlock() {
        check(tiny().with("sparseStep", 2).with("dropout", 0.3));
    }

    @Test
    void topTwoWithRenormalizedWeights() {
        check(tiny().with("topK", 2));
    }

    @Test
    void topTwoWithZeroForDroppedAssignments() {
        check(tiny().with("topK", 2).with("droppedOutput", Config.DroppedOutput.ZERO));
    }
}
