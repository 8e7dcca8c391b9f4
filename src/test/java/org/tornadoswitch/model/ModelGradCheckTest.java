package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
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

    /** Total loss (CE + coef * LB) with the same dropping decisions every call. */
    static double loss(SwitchModel m, int[] x, int[] y, Config c) {
        m.dropRng().setState(12345);
        SwitchModel.Stats s = m.forward(x, y, c.batchSize(), c.seqLen());
        return s.loss + c.lbCoef() * s.lbLoss;
    }

    static int[][] routes(SwitchModel m, Config c) {
        int[][] r = new int[c.layers()][];
        for (int l = 0; l < c.layers(); l++) {
            Routing ro = m.routing(l);
            int[] a = new int[2 * ro.tokens];
            for (int t = 0; t < ro.tokens; t++) {
                a[2 * t] = ro.expertOf[t];
                a[2 * t + 1] = ro.slot[t];
            }
            r[l] = a;
        }
        return r;
    }

    @ParameterizedTest(name = "experts={0} dense={1} cf={2} scaleProb={3} pos={4}")
    @CsvSource({"3,false,0.8,true,false", "3,false,1.0,true,true", "3,false,0.8,false,false", "1,true,1.0,true,false",
            "4,false,50,true,false"})
    void analyticGradientsMatchFiniteDifferences(int experts, boolean dense, double cf, boolean scaleProb, boolean pos) {
        Config c = tiny(experts, dense, cf, scaleProb, pos);
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
            loss(m, x, y, c);
            int dropped = 0;
            for (int l = 0; l < c.layers(); l++) dropped += m.routing(l).dropped;
            if (cf < 1 && !dense) assertTrue(dropped > 0, "the low capacity factor should drop tokens");
            m.backward();
            float[] grad = m.backend().grads();
            int[][] base = routes(m, c);
            int checked = 0, skipped = 0;
            double eps = 3e-3;
            for (ParamLayout.Tensor t : layout.tensors()) {
                // With p / stop_gradient(p) the router's gradient is by design not the derivative of the
                // loss value, so only tensors downstream of every router can be checked by differences.
                if (!scaleProb && !(t.name().startsWith("layers." + (c.layers() - 1) + ".experts.")
                        || t.name().startsWith("head") || t.name().startsWith("ln_f"))) continue;
                int tensorChecked = 0;
                for (int k = 0; k < Math.min(t.size(), 6); k++) {
                    int i = t.offset() + (int) ((long) k * 7919 % t.size());
                    float[] wp = w.clone();
                    wp[i] += (float) eps;
                    m.backend().setParams(wp);
                    double lp = loss(m, x, y, c);
                    boolean flipP = !Arrays.deepEquals(base, routes(m, c));
                    wp[i] = w[i] - (float) eps;
                    m.backend().setParams(wp);
                    double lm = loss(m, x, y, c);
                    boolean flipM = !Arrays.deepEquals(base, routes(m, c));
                    if (flipP || flipM) {
                        skipped++;
                        continue; // a routing decision changed: the loss is not differentiable across it
                    }
                    double num = (lp - lm) / (2 * eps);
                    double an = grad[i];
                    assertEquals(num, an, 2e-3 + 2e-2 * Math.max(Math.abs(num), Math.abs(an)),
                            t.name() + "[" + (i - t.offset()) + "]");
                    checked++;
                    tensorChecked++;
                }
                assertTrue(tensorChecked > 0, "no element of " + t.name() + " could be checked");
            }
            assertTrue(skipped <= checked / 10, "too many routing flips: " + skipped + " of " + (checked + skipped));
        }
    }
}
