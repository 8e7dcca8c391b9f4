package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.tornadoswitch.Config;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.Routing;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/** What a Switch block's output is, token by token, read from the JVM backend's activations. */
class JvmRoutingTest {
    static final int VOCAB = 7;

    static Config tiny() {
        return new Config(8, 2, 2, 12, 3, false, 0.5, true, true, 0.5, false, 3, 5,
                1.0, 10, 0.9, 0.999, 1e-8, 1.0, 3).validate();
    }

    static int[] tokens(int n, long seed) {
        Rng r = new Rng(seed);
        int[] x = new int[n];
        for (int i = 0; i < n; i++) x[i] = r.nextInt(VOCAB);
        return x;
    }

    @ParameterizedTest
    @EnumSource(Config.DroppedOutput.class)
    void blockOutputOfKeptAndDroppedTokens(Config.DroppedOutput mode) {
        Config c = tiny().with("droppedOutput", mode);
        int n = c.tokensPerBatch(), d = c.dModel();
        JvmBackend b = new JvmBackend(c, VOCAB, new ParamLayout(c, VOCAB).initialize(7), 2);
        try (SwitchModel m = new SwitchModel(c, b, 1)) {
            m.forward(tokens(n, 1), tokens(n, 2), c.batchSize(), c.seqLen());
            int dropped = 0;
            for (int l = 0; l < c.layers(); l++) {
                Routing r = m.routing(l);
                float[] mid = b.peek("mid", l), ln2 = b.peek("ln2", l), out = b.peek("out", l), ye = b.peek("expertOut", l);
                for (int t = 0; t < n; t++) {
                    float p = r.prob[t];
                    int s = r.slot[t], row = s < 0 ? -1 : r.offset[r.expertOf[t]] + s;
                    if (s < 0) dropped++;
                    for (int j = 0; j < d; j++) {
                        float branch = s >= 0 ? p * ye[row * d + j] : mode == Config.DroppedOutput.ZERO ? 0f : p * ln2[t * d + j];
                        assertEquals(mid[t * d + j] + branch, out[t * d + j], 1e-6, "layer " + l + " token " + t);
                    }
                }
            }
            assertTrue(dropped > 0, "capacity factor 0.5 drops tokens");
        }
    }

    @ParameterizedTest
    @EnumSource(Config.DroppedOutput.class)
    void topTwoBlockOutputIsTheGateWeightedSum(Config.DroppedOutput mode) {
        Config c = tiny().with("droppedOutput", mode).with("topK", 2);
        int n = c.tokensPerBatch(), d = c.dModel();
        JvmBackend b = new JvmBackend(c, VOCAB, new ParamLayout(c, VOCAB).initialize(7), 2);
        try (SwitchModel m = new SwitchModel(c, b, 1)) {
            m.forward(tokens(n, 1), tokens(n, 2), c.batchSize(), c.seqLen());
            int dropped = 0, kept = 0;
            for (int l = 0; l < c.layers(); l++) {
                Routing r = m.routing(l);
                float[] mid = b.peek("mid", l), ln2 = b.peek("ln2", l), out = b.peek("out", l), ye = b.peek("expertOut", l);
                for (int t = 0; t < n; t++) {
                    assertEquals(1f, r.prob[2 * t] + r.prob[2 * t + 1], 1e-6, "weights renormalized");
                    assertTrue(r.expertOf[2 * t] != r.expertOf[2 * t + 1]);
                    for (int j = 0; j < d; j++) {
                        double branch = 0;
                        for (int a = 2 * t; a < 2 * t + 2; a++) {
                            int s = r.slot[a];
                            if (s >= 0) branch += r.prob[a] * ye[(r.offset[r.expertOf[a]] + s) * d + j];
                            else if (mode == Config.DroppedOutput.INPUT) branch += r.prob[a] * ln2[t * d + j];
                            if (j == 0 && s < 0) dropped++;
                            if (j == 0 && s >= 0 && a % 2 == 1) kept++;
                        }
                        assertEquals(mid[t * d + j] + branch, out[t * d + j], 1e-5, "layer " + l + " token " + t);
                    }
                }
            }
            assertTrue(dropped > 0 && kept > 0, "some assignments dropped, some second choices kept");
        }
    }
}
