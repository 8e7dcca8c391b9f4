package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.function.ToIntFunction;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.tornadoswitch.Config;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.util.Rng;

/**
 * Finite-difference check of every parameter tensor of a tiny whole model: attention, LayerNorms,
 * router, experts, dropping, the load-balancing loss and the head.
 */
class ModelGradCheckTest {
    static final int VOCAB = 7;

    static Config tiny(int experts, boolean dense, double cf, boolean scaleProb, boolean pos) {
        return new Config(8, 2, 2, 12, experts, dense, cf, true, scaleProb, 0.5, pos, 3, 5,
                1.0, 10, 0.9, 0.999, 1e-8, 1.0, 3).validate();
    }

    /** The objective (CE + coef * LB + z-loss coef * z-loss) with the same dropping decisions every call. */
    static double objective(SwitchModel m, int[] x, int[] y, Config c) {
        m.dropRng().setState(12345);
        return m.forward(x, y, c.batchSize(), c.seqLen()).objective;
    }

    /** Every assignment's expert and slot, per layer: a perturbation that changes one crosses a routing decision. */
    static int[][] routes(SwitchModel m, Config c) {
        int[][] r = new int[c.layers()][];
        for (int l = 0; l < c.layers(); l++) {
            Routing ro = m.routing(l);
            int n = ro.k * ro.tokens;
            int[] a = new int[2 * n];
            for (int i = 0; i < n; i++) {
                a[2 * i] = ro.expertOf[i];
                a[2 * i + 1] = ro.slot[i];
            }
            r[l] = a;
        }
        return r;
    }

    /**
     * Central differences of the objective of a tiny model against its analytic gradient.
     * {@code elements} says how many elements of a tensor to check (0: none; its size: all; fewer:
     * spread over it). Perturbations that change a routing decision are skipped, but at most one in
     * {@code flipRatio}. Returns the analytic gradient.
     */
    static float[] checkGradients(Config c, ToIntFunction<ParamLayout.Tensor> elements, int flipRatio, boolean expectDrops) {
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
            int dropped = 0;
            for (int l = 0; l < c.layers(); l++) dropped += m.routing(l).dropped;
            if (expectDrops) assertTrue(dropped > 0, "the low capacity factor should drop tokens");
            m.backward();
            float[] grad = m.backend().grads();
            int[][] base = routes(m, c);
            int checked = 0, skipped = 0;
            double eps = 3e-3;
            for (ParamLayout.Tensor t : layout.tensors()) {
                int count = elements.applyAsInt(t);
                if (count == 0) continue;
                int tensorChecked = 0;
                for (int k = 0; k < count; k++) {
                    int i = t.offset() + (count == t.size() ? k : (int) ((long) k * 7919 % t.size()));
                    float[] wp = w.clone();
                    wp[i] += (float) eps;
                    m.backend().setParams(wp);
                    double lp = objective(m, x, y, c);
                    boolean flip = !Arrays.deepEquals(base, routes(m, c));
                    wp[i] = w[i] - (float) eps;
                    m.backend().setParams(wp);
                    double lm = objective(m, x, y, c);
                    flip |= !Arrays.deepEquals(base, routes(m, c));
                    if (flip) {
                        skipped++;
                        continue; // a routing decision changed: the loss is not differentiable across it
                    }
                    double num = (lp - lm) / (2 * eps), an = grad[i];
                    assertEquals(num, an, 2e-3 + 2e-2 * Math.max(Math.abs(num), Math.abs(an)),
                            t.name() + "[" + (i - t.offset()) + "]");
                    checked++;
                    tensorChecked++;
                }
                assertTrue(tensorChecked > 0, "no element of " + t.name() + " could be checked");
            }
            assertTrue(skipped <= checked / flipRatio, "too many routing flips: " + skipped + " of " + (checked + skipped));
            return grad;
        }
    }

    @ParameterizedTest(name = "experts={0} dense={1} cf={2} scaleProb={3} pos={4}")
    @CsvSource({"3,false,0.8,true,false", "3,false,1.0,true,true", "3,false,0.8,false,false", "1,true,1.0,true,false",
            "4,false,50,true,false"})
    void analyticGradientsMatchFiniteDifferences(int experts, boolean dense, double cf, boolean scaleProb, boolean pos) {
        Config c = tiny(experts, dense, cf, scaleProb, pos);
        // With p / stop_gradient(p) the router's gradient is by design not the derivative of the loss
        // value, so only tensors downstream of every router can be checked by differences.
        checkGradients(c, t -> scaleProb || t.name().startsWith("layers." + (c.layers() - 1) + ".experts.")
                || t.name().startsWith("head") || t.name().startsWith("ln_f") ? Math.min(t.size(), 6) : 0,
                10, cf < 1 && !dense);
    }
}
