package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;

/**
 * Finite-difference checks of whole tiny models with the routing options of issue 4 switched on:
 * the analytic gradient of the objective (cross-entropy + LB loss + z-loss) against central
 * differences, skipping perturbations that change a routing decision.
 */
class RoutingOptionsGradCheckTest {
    static final int VOCAB = ModelGradCheckTest.VOCAB;

    /** ModelGradCheckTest's tiny model: 2 layers, 3 experts, capacity factor 0.8 (drops tokens). */
    static Config tiny() {
        return ModelGradCheckTest.tiny(3, false, 0.8, true, false);
    }

    /** Checks every router element and up to 4 elements of every other tensor; returns the analytic gradient. */
    static float[] check(Config c) {
        return ModelGradCheckTest.checkGradients(c.validate(), t -> t.name().contains("router") ? t.size() : Math.min(t.size(), 4),
                5, false);
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
        // the router's input gradient is scaled by the noise too: every element of LayerNorm 2 (which feeds the router) checked
        ModelGradCheckTest.checkGradients(c.validate(), t -> t.name().contains("ln2") ? t.size() : 0, 5, false);
    }

    @Test
    void manyExpertsTakeTheRouterGemms() {
        // above JvmBackend.FUSED_ROUTER_MAX_EXPERTS the router's backward is GEMMs instead of the per-token pass
        Config c = ModelGradCheckTest.tiny(12, false, 1.5, true, false).with("jitter", 0.3).validate();
        ModelGradCheckTest.checkGradients(c, t -> t.name().contains("router") || t.name().contains("ln2") ? t.size() : Math.min(t.size(), 4),
                5, false);
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
