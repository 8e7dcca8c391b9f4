package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.util.Rng;

/** The semantics of the routing options of issue 4 on hand-made inputs and tiny models. */
class RoutingOptionsTest {
    static final int VOCAB = 7;

    static SwitchModel model(Config c) {
        c.validate();
        return new SwitchModel(c, new JvmBackend(c, VOCAB, new ParamLayout(c, VOCAB).initialize(7), 2), 1);
    }

    static int[] tokens(Config c, long seed) {
        Rng r = new Rng(seed);
        int[] x = new int[c.tokensPerBatch()];
        for (int i = 0; i < x.length; i++) x[i] = r.nextInt(VOCAB);
        return x;
    }

    @Test
    void zLossIsTheMeanSquaredLogSumExp() {
        // logits (0, ln 2, ln 3) give logsumexp ln 6; (5, 5) give 5 + ln 2
        float[] lse = {(float) Math.log(6), (float) (5 + Math.log(2))};
        assertEquals((Math.pow(Math.log(6), 2) + Math.pow(5 + Math.log(2), 2)) / 2, Routing.zLoss(lse, 2), 1e-5);
        assertTrue(Double.isNaN(Routing.zLoss(null, 2)), "no logsumexp from the backend: no value");
    }

    @Test
    void zLossEntersTheObjectiveWithItsCoefficient() {
        Config c = ModelGradCheckTest.tiny(3, false, 0.8, true, false).with("zLossCoef", 0.25);
        int[] x = tokens(c, 1), y = tokens(c, 2);
        try (SwitchModel m = model(c)) {
            SwitchModel.Stats s = m.forward(x, y, c.batchSize(), c.seqLen());
            double z = 0;
            for (int l = 0; l < c.layers(); l++) z += Routing.zLoss(m.backend().routerLogSumExp(l), c.tokensPerBatch());
            assertEquals(z, s.zLoss, 1e-9);
            assertTrue(s.zLoss > 0);
            assertEquals(s.loss + c.lbCoef() * s.lbLoss + 0.25 * s.zLoss, s.objective, 1e-9);
        }
    }
}
