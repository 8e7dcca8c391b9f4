package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.tornadoswitch.Config;
import org.tornadoswitch.backend.Backend;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/**
 * Whole training steps on the TornadoVM device (PoCL in CI) against the JVM backend: losses,
 * router probabilities, every gradient tensor and the weights after Adam steps. Run with
 * -Dtornado.recover.bailout=False so that a kernel that fails to compile fails the test.
 */
class TornadoBackendTest {
    static final int VOCAB = 11;
    /** Relative tolerance for fp32 sums taken in another order on another device. */
    static final double REL = 2e-3;

    static Config config(int experts, boolean dense, double cf, boolean scaleProb, boolean pos) {
        return new Config(16, 2, 2, 24, experts, dense, cf, true, scaleProb, 0.1, pos, 4, 8,
                1.0, 3, 0.9, 0.999, 1e-8, 1.0, 5).validate();
    }

    static void assertClose(float[] expected, float[] actual, int off, int n, String what) {
        double maxAbs = 0;
        for (int i = off; i < off + n; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
        double tol = REL * Math.max(maxAbs, 1e-3);
        for (int i = off; i < off + n; i++)
            assertEquals(expected[i], actual[i], tol, what + "[" + (i - off) + "] (max |x| " + maxAbs + ")");
    }

    @ParameterizedTest(name = "experts={0} dense={1} cf={2} scaleProb={3} pos={4}")
    @CsvSource({"3,false,0.8,true,false", "4,false,1.2,false,true", "1,true,1.0,true,false"})
    void trainingStepsMatchTheJvmBackend(int experts, boolean dense, double cf, boolean scaleProb, boolean pos) {
        Config c = config(experts, dense, cf, scaleProb, pos);
        compareTrainingSteps(c, cf < 1 && !dense);
    }

    /**
     * The routing options of issue 4 on the device: dropout masks and jitter are drawn from the same
     * keys as on the JVM, so the same steps give the same losses, routes and gradients.
     */
    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
            "zLossCoef=0.01 jitter=0.1 dropout=0.2 expertDropout=0.3 droppedOutput=ZERO capacityFactor=0.8",
            "topK=2 zLossCoef=0.01 dropout=0.1 capacityFactor=0.8 dropPolicy=PROBABILITY",
            "sparseStep=2 topK=2 droppedOutput=ZERO jitter=0.1 dropout=0.2 expertDropout=0.3 capacityFactor=0.7 dropPolicy=POSITION"})
    void routingOptionsMatchTheJvmBackend(String options) {
        Config c = config(4, false, 1.0, true, false);
        for (String kv : options.split(" ")) {
            String[] f = kv.split("=");
            Object value = switch (f[0]) {
                case "topK", "sparseStep" -> Integer.parseInt(f[1]);
                case "droppedOutput" -> Config.DroppedOutput.valueOf(f[1]);
                case "dropPolicy" -> Config.DropPolicy.valueOf(f[1]);
                default -> Double.parseDouble(f[1]);
            };
            c = c.with(f[0], value);
        }
        compareTrainingSteps(c.validate(), true);
    }

    static void compareTrainingSteps(Config c, boolean expectDrops) {
        boolean dense = !c.switchBlocks();
        ParamLayout layout = new ParamLayout(c, VOCAB);
        float[] init = layout.initialize(17);
        Rng data = new Rng(3);
        int n = c.tokensPerBatch();
        try (SwitchModel jvm = new SwitchModel(c, new JvmBackend(c, VOCAB, init, 2), 9);
             SwitchModel tor = new SwitchModel(c, new TornadoBackend(c, VOCAB, init, System.getProperty("tornado.test.device")), 9)) {
            for (int step = 1; step <= 3; step++) {
                jvm.setStep(step - 1); // the noise of each step differs
                tor.setStep(step - 1);
                int[] x = new int[n], y = new int[n];
                for (int i = 0; i < n; i++) {
                    x[i] = data.nextInt(VOCAB);
                    y[i] = data.nextInt(VOCAB);
                }
                SwitchModel.Stats sj = jvm.forward(x, y, c.batchSize(), c.seqLen());
                double lj = sj.loss, lbj = sj.lbLoss;
                int dropped = sj.dropped;
                SwitchModel.Stats st = tor.forward(x, y, c.batchSize(), c.seqLen());
                assertEquals(lj, st.loss, REL * lj, "loss at step " + step);
                assertEquals(lbj, st.lbLoss, REL * Math.max(1, lbj), "LB loss at step " + step);
                assertEquals(dropped, st.dropped, "same routing, same drops at step " + step);
                if (expectDrops) assertTrue(dropped > 0, "this configuration should drop tokens");
                if (!dense) assertEquals(sj.zLoss, st.zLoss, REL * sj.zLoss, "z-loss at step " + step);
                assertEquals(sj.objective, st.objective, REL * sj.objective, "objective at step " + step);
                for (int l = 0; l < c.layers(); l++)
                    for (int a = 0; a < n * jvm.routing(l).k; a++) {
                        assertEquals(jvm.routing(l).expertOf[a], tor.routing(l).expertOf[a], "expert of assignment " + a + " layer " + l);
                        assertEquals(jvm.routing(l).slot[a], tor.routing(l).slot[a], "slot of assignment " + a + " layer " + l);
                    }

                jvm.backward();
                tor.backward();
                float[] gj = jvm.backend().grads(), gt = tor.backend().grads();
                for (ParamLayout.Tensor t : layout.tensors())
                    assertClose(gj, gt, t.offset(), t.size(), "grad " + t.name() + " step " + step);
                assertEquals(jvm.backend().gradSquaredNorm(), tor.backend().gradSquaredNorm(),
                        1e-2 * jvm.backend().gradSquaredNorm(), "gradient norm");

                stepBoth(jvm, tor, step);
                float[] wj = jvm.backend().params(), wt = tor.backend().params();
                for (ParamLayout.Tensor t : layout.tensors()) {
                    // The key bias has a zero gradient in exact arithmetic (it shifts all scores of a
                    // query equally); Adam turns each backend's rounding noise there into an update
                    // of +-lr, so only its gradient, not its value after a step, can be compared.
                    if (t.name().endsWith("attn.k.bias")) continue;
                    assertClose(wj, wt, t.offset(), t.size(), "weight " + t.name() + " after step " + step);
                }
            }
        }
    }

    /** Same clipping and Adam step on both (trainStep's second half). */
    static void stepBoth(SwitchModel a, SwitchModel b, int t) {
        for (SwitchModel m : new SwitchModel[] {a, b}) {
            Backend be = m.backend();
            double norm = Math.sqrt(be.gradSquaredNorm());
            float scale = norm > m.config().clip() ? (float) (m.config().clip() / (norm + 1e-6)) : 1f;
            be.adamStep((float) SwitchModel.noam(m.config(), t), scale, t);
        }
    }

    @ParameterizedTest(name = "nSeq={0} seqLen={1}")
    @CsvSource({"4,8", "1,5", "3,8"})
    void smallerBatchesAreEvaluatedLikeTheJvmBackend(int nSeq, int seqLen) {
        Config c = config(3, false, 1.2, true, true);
        float[] init = new ParamLayout(c, VOCAB).initialize(23);
        Rng data = new Rng(4);
        int n = nSeq * seqLen;
        int[] x = new int[n], y = new int[n];
        for (int i = 0; i < n; i++) {
            x[i] = data.nextInt(VOCAB);
            y[i] = data.nextInt(VOCAB);
        }
        try (SwitchModel jvm = new SwitchModel(c, new JvmBackend(c, VOCAB, init, 2), 1);
             SwitchModel tor = new SwitchModel(c, new TornadoBackend(c, VOCAB, init, System.getProperty("tornado.test.device")), 1)) {
            double lj = jvm.forward(x, y, nSeq, seqLen, new Rng(8)).loss;
            float[] rowJ = new float[VOCAB], rowT = new float[VOCAB];
            jvm.backend().logits(n - 1, rowJ);
            double lt = tor.forward(x, y, nSeq, seqLen, new Rng(8)).loss;
            tor.backend().logits(n - 1, rowT);
            assertEquals(lj, lt, REL * lj);
            assertClose(rowJ, rowT, 0, VOCAB, "logits of the last token");
        }
    }
}
