package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
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

    /** Router logsumexp of every layer after a forward pass. */
    static float[][] lse(SwitchModel m, Config c) {
        float[][] out = new float[c.layers()][];
        for (int l = 0; l < c.layers(); l++) out[l] = m.backend().routerLogSumExp(l).clone();
        return out;
    }

    @Test
    void jitterIsOffInEvaluationAndRepeatsWithinAStep() {
        // no dropping (capacity factor 50), so that training and evaluation differ only by the jitter
        Config plain = ModelGradCheckTest.tiny(3, false, 50, true, false), jit = plain.with("jitter", 0.5);
        int[] x = tokens(plain, 1), y = tokens(plain, 2);
        float[][] evalPlain, trainPlain;
        double evalLossPlain;
        try (SwitchModel m = model(plain)) {
            evalLossPlain = m.forward(x, y, plain.batchSize(), plain.seqLen(), new Rng(3)).loss;
            evalPlain = lse(m, plain);
            m.forward(x, y, plain.batchSize(), plain.seqLen());
            trainPlain = lse(m, plain);
        }
        assertArrayEquals(evalPlain, trainPlain, "without jitter training and evaluation route alike");
        try (SwitchModel m = model(jit)) {
            assertEquals(evalLossPlain, m.forward(x, y, jit.batchSize(), jit.seqLen(), new Rng(3)).loss, 0.0);
            assertArrayEquals(evalPlain, lse(m, jit), "evaluation: no jitter");
            m.forward(x, y, jit.batchSize(), jit.seqLen());
            float[][] a = lse(m, jit);
            assertFalse(java.util.Arrays.deepEquals(evalPlain, a), "training: jitter");
            m.forward(x, y, jit.batchSize(), jit.seqLen());
            assertArrayEquals(a, lse(m, jit), "the same step draws the same noise");
            m.setStep(5);
            m.forward(x, y, jit.batchSize(), jit.seqLen());
            assertFalse(java.util.Arrays.deepEquals(a, lse(m, jit)), "another step draws other noise");
        }
    }

    @Test
    void counterBasedUniformsAreUniformAndKeyed() {
        long k = Rng.streamKey(42, 7, 1, 1);
        double sum = 0;
        int n = 100_000;
        for (int i = 0; i < n; i++) {
            float u = Rng.uniform(k, i);
            assertTrue(u >= 0 && u < 1);
            sum += u;
        }
        assertEquals(0.5, sum / n, 0.005);
        assertEquals(Rng.uniform(k, 123), Rng.uniform(Rng.streamKey(42, 7, 1, 1), 123));
        assertTrue(k != Rng.streamKey(42, 8, 1, 1) && k != Rng.streamKey(42, 7, 2, 1) && k != Rng.streamKey(42, 7, 1, 2)
                && k != Rng.streamKey(43, 7, 1, 1));
    }

    /** Checks that slot and order agree and returns the kept tokens of expert x in slot order. */
    static int[] keptInSlotOrder(Routing r, int x) {
        int[] out = new int[r.kept[x]];
        for (int t = 0; t < r.tokens; t++) {
            if (r.expertOf[t] != x || r.slot[t] < 0) continue;
            out[r.slot[t]] = t;
            assertEquals(t, r.order[r.offset[x] + r.slot[t]]);
        }
        return out;
    }

    @Test
    void positionPolicyKeepsTheEarliestPositionsOfEverySequence() {
        // 2 sequences of 4 tokens; all but token 3 choose expert 0; capacity 3
        Routing r = new Routing(8, 2);
        Rng rng = new Rng(5);
        r.route(RoutingTest.probs(2, 0, 0, 0, 1, 0, 0, 0, 0), 8, 4, 3, true, Config.DropPolicy.POSITION, rng);
        assertArrayEquals(new int[] {0, 4, 1}, keptInSlotOrder(r, 0), "positions 0, 0, 1 of sequences 0, 1, 0");
        assertArrayEquals(new int[] {3}, keptInSlotOrder(r, 1));
        assertEquals(4, r.dropped);
        for (int t : new int[] {2, 5, 6, 7}) assertEquals(-1, r.slot[t]);
        assertEquals(5, rng.state(), "only the random policy draws");
    }

    @Test
    void probabilityPolicyKeepsTheMostProbableTokens() {
        float[] p = {0.6f, 0.4f, 0.9f, 0.1f, 0.7f, 0.3f, 0.9f, 0.1f, 0.55f, 0.45f, 0.2f, 0.8f};
        Routing r = new Routing(6, 2);
        r.route(p, 6, 6, 2, true, Config.DropPolicy.PROBABILITY, new Rng(5));
        assertArrayEquals(new int[] {1, 3}, keptInSlotOrder(r, 0), "0.9 and 0.9 (tie: earlier token first)");
        assertArrayEquals(new int[] {5}, keptInSlotOrder(r, 1));
        for (int t : new int[] {0, 2, 4}) assertEquals(-1, r.slot[t]);
        assertArrayEquals(new int[] {5, 1}, r.counts, "counts before dropping");
        // capacity 3 keeps the next most probable (0.7, token 2) too
        r.route(p, 6, 6, 3, true, Config.DropPolicy.PROBABILITY, new Rng(5));
        assertArrayEquals(new int[] {1, 3, 2}, keptInSlotOrder(r, 0));
    }

    @Test
    void policiesAgreeWhenNothingOverflows() {
        float[] p = RoutingTest.probs(3, 0, 1, 2, 0, 1, 2);
        for (Config.DropPolicy policy : Config.DropPolicy.values()) {
            Routing r = new Routing(6, 3);
            r.route(p, 6, 3, 2, true, policy, new Rng(1));
            assertEquals(0, r.dropped, policy.toString());
            assertArrayEquals(new int[] {0, 3}, keptInSlotOrder(r, 0), policy + ": slots in token order");
        }
    }

    @Test
    void capacityRulesForTrainingAndEvaluation() {
        Config c = Config.defaults();
        assertEquals(614, c.capacity(2048));
        assertEquals(614, c.evalCapacity(2048), "by default evaluation uses the training capacity");
        assertEquals(1, c.evalCapacity(5), "labml: floor(1.2 * 5 / 4) = 1 in a 5-token prompt");
        assertEquals(1024, c.with("evalCapacityFactor", 2.0).evalCapacity(2048));
        assertEquals(614, c.with("evalCapacityFactor", 2.0).capacity(2048), "training keeps its factor");
        assertEquals(5, c.with("evalDropTokens", false).evalCapacity(5));
        assertEquals(614, c.with("evalDropTokens", false).capacity(2048));
        Config abs = c.with("expertCapacity", 64);
        assertEquals(64, abs.capacity(2048));
        assertEquals(64, abs.evalCapacity(2048), "evaluation follows training unless it has its own factor");
        assertEquals(5, abs.capacity(5), "capped at the batch");
        assertEquals(512, abs.with("evalCapacityFactor", 1.0).evalCapacity(2048));
        Config dropless = c.with("dropTokens", false);
        assertEquals(2048, dropless.capacity(2048));
        assertEquals(2048, dropless.evalCapacity(2048));
    }

    @Test
    void generationCanRunWithoutDropping() {
        // 5 tokens, 4 experts: capacity floor(1.2 * 5 / 4) = 1 drops at least one token by pigeonhole
        Config c = new Config(8, 2, 2, 12, 4, false, 1.2, true, true, 0.01, false, 1, 5,
                1.0, 10, 0.9, 0.999, 1e-8, 1.0, 3);
        int[] prompt = {1, 2, 3, 4, 5};
        for (Object[] v : new Object[][] {{"evalDropTokens", true, true}, {"evalDropTokens", false, false},
                {"evalCapacityFactor", 4.0, false}, {"expertCapacity", 5, false}}) {
            Config cv = c.with((String) v[0], v[1]);
            try (SwitchModel m = model(cv)) {
                SwitchModel.Stats s = m.forward(prompt, null, 1, 5, new Rng(1));
                assertEquals(v[2], s.dropped > 0, v[0] + "=" + v[1]);
                if (!cv.evalDropTokens()) assertTrue(m.forward(prompt, null, 1, 5).dropped > 0, "training still drops");
            }
        }
    }

    static java.util.List<Integer> switchLayers(Config c) {
        java.util.List<Integer> out = new java.util.ArrayList<>();
        for (int l = 0; l < c.layers(); l++) if (c.switchLayer(l)) out.add(l);
        return out;
    }

    @Test
    void sparseStepChoosesTheSwitchBlocksLikeHuggingFace() {
        Config c = Config.defaults(); // 6 layers
        assertEquals(java.util.List.of(0, 1, 2, 3, 4, 5), switchLayers(c));
        assertEquals(java.util.List.of(1, 3, 5), switchLayers(c.with("sparseStep", 2)));
        assertEquals(java.util.List.of(1, 4), switchLayers(c.with("sparseStep", 3)));
        assertEquals(java.util.List.of(), switchLayers(c.with("sparseStep", 0)));
        assertFalse(c.with("sparseStep", 0).switchBlocks());
        assertEquals(java.util.List.of(), switchLayers(c.with("dense", true)));

        Config two = ModelGradCheckTest.tiny(3, false, 0.8, true, false).with("sparseStep", 2);
        java.util.Set<String> names = new java.util.HashSet<>();
        for (ParamLayout.Tensor t : new ParamLayout(two, VOCAB).tensors()) names.add(t.name());
        assertTrue(names.contains("layers.0.experts.0.ff1.weight"));
        assertFalse(names.contains("layers.0.experts.1.ff1.weight"), "a dense block has one FFN");
        assertFalse(names.contains("layers.0.router.weight"), "and no router");
        assertTrue(names.contains("layers.1.router.weight") && names.contains("layers.1.experts.2.ff2.bias"));
    }

    /** Losses of a few training steps on random tokens. */
    static double[] losses(Config c, int steps) {
        double[] out = new double[steps];
        try (SwitchModel m = model(c)) {
            for (int i = 0; i < steps; i++)
                out[i] = m.trainStep(tokens(c, 10 + i), tokens(c, 20 + i), c.batchSize(), c.seqLen()).loss;
        }
        return out;
    }

    @Test
    void sparseStepEnds() {
        Config c = ModelGradCheckTest.tiny(3, false, 0.8, true, false);
        assertArrayEquals(losses(c.with("dense", true), 3), losses(c.with("sparseStep", 0), 3), "sparse step 0 is the dense model");
        assertArrayEquals(losses(c, 3), losses(c.with("sparseStep", 1), 3), "sparse step 1 is the Switch model");
        Config half = c.with("sparseStep", 2);
        try (SwitchModel m = model(half)) {
            SwitchModel.Stats s = m.forward(tokens(c, 1), tokens(c, 2), c.batchSize(), c.seqLen());
            assertEquals(1, s.counts[0].length, "block 0 is dense");
            assertEquals(3, s.counts[1].length, "block 1 routes");
            assertEquals(0, m.routing(0).dropped);
            assertTrue(m.routing(1).dropped > 0);
        }
    }

    @Test
    void theSwitchInitializationIsATruncatedNormalWithFanInScale() {
        Config c = Config.defaults().with("init", Config.Init.SWITCH);
        ParamLayout layout = new ParamLayout(c, 65);
        float[] w = layout.initialize(1);
        int seen = 0;
        for (ParamLayout.Tensor t : layout.tensors()) {
            double sum = 0, sq = 0, max = 0;
            for (int i = t.offset(); i < t.offset() + t.size(); i++) {
                sum += w[i];
                sq += (double) w[i] * w[i];
                max = Math.max(max, Math.abs(w[i]));
            }
            double mean = sum / t.size(), std = Math.sqrt(sq / t.size() - mean * mean);
            String n = t.name();
            if (n.endsWith(".weight") && t.shape().length == 2 && !n.startsWith("tok_emb")) {
                double sigma = Math.sqrt(0.1 / t.shape()[0]); // [in, out]: fan-in is the first dimension
                assertTrue(max <= 2 * sigma * (1 + 1e-6), n + ": nothing beyond 2 sigma");
                // a normal truncated at 2 sigma has standard deviation 0.8796 sigma
                if (t.size() >= 4096) assertEquals(0.8796 * sigma, std, 0.03 * sigma, n);
                seen++;
            } else if (n.endsWith(".bias") && !n.contains("ln")) {
                assertEquals(0, max, n + ": biases start at 0");
            }
        }
        assertTrue(seen > 6 * 10);
        assertEquals(Config.Init.TORCH, Config.defaults().init(), "PyTorch's scheme stays the default");
        // the scale s enters as sqrt(s)
        float[] w4 = new ParamLayout(c.with("initScale", 0.4), 65).initialize(1);
        int i = layout.tensors().stream().filter(t -> t.name().equals("layers.0.attn.q.weight")).findFirst().orElseThrow().offset();
        assertEquals(2 * w[i], w4[i], 1e-6);
    }

    @Test
    void dropoutIsOffInEvaluation() {
        Config plain = ModelGradCheckTest.tiny(3, false, 50, true, false);
        Config drop = plain.with("dropout", 0.3).with("expertDropout", 0.4);
        int[] x = tokens(plain, 1), y = tokens(plain, 2);
        double evalPlain, trainPlain;
        try (SwitchModel m = model(plain)) {
            evalPlain = m.forward(x, y, plain.batchSize(), plain.seqLen(), new Rng(3)).loss;
            trainPlain = m.forward(x, y, plain.batchSize(), plain.seqLen()).loss;
        }
        assertEquals(evalPlain, trainPlain, 0.0);
        try (SwitchModel m = model(drop)) {
            assertEquals(evalPlain, m.forward(x, y, drop.batchSize(), drop.seqLen(), new Rng(3)).loss, 0.0, "evaluation: no dropout");
            double a = m.forward(x, y, drop.batchSize(), drop.seqLen()).loss;
            assertTrue(a != trainPlain, "training: dropout");
            assertEquals(a, m.forward(x, y, drop.batchSize(), drop.seqLen()).loss, 0.0, "the same step, the same masks");
        }
    }

    static double[] losses(Config c, int steps, int threads) {
        double[] out = new double[steps];
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, VOCAB, new ParamLayout(c, VOCAB).initialize(7), threads), 1)) {
            for (int i = 0; i < steps; i++)
                out[i] = m.trainStep(tokens(c, 10 + i), tokens(c, 20 + i), c.batchSize(), c.seqLen()).loss;
        }
        return out;
    }

    @Test
    void trainingWithNoiseIsDeterministicWhateverTheThreadCount() {
        Config c = ModelGradCheckTest.tiny(3, false, 0.8, true, false).with("dropout", 0.2).with("expertDropout", 0.3)
                .with("jitter", 0.1);
        double[] a = losses(c, 4, 2);
        assertArrayEquals(a, losses(c, 4, 2));
        assertArrayEquals(a, losses(c, 4, 1));
        assertFalse(java.util.Arrays.equals(a, losses(c.with("dropout", 0.0).with("expertDropout", 0.0).with("jitter", 0.0), 4, 2)));
    }

    /** Four tokens, three experts, two choices each; expert 1 gets 4 assignments, one a first choice. */
    static final float[] TOP2 = {
            0.5f, 0.3f, 0.2f,   // t0: 0 then 1
            0.1f, 0.6f, 0.3f,   // t1: 1 then 2
            0.4f, 0.4f, 0.2f,   // t2: tie, the lower expert first: 0 then 1
            0.15f, 0.35f, 0.5f, // t3: 2 then 1
    };

    @Test
    void topTwoChoosesRenormalizesAndCountsAssignments() {
        Routing r = new Routing(4, 3, 2);
        r.route(TOP2, 4, 4, 8, true, Config.DropPolicy.RANDOM, new Rng(1));
        assertArrayEquals(new int[] {0, 1, 1, 2, 0, 1, 2, 1}, java.util.Arrays.copyOf(r.expertOf, 8));
        float[] g = {0.5f / 0.8f, 0.3f / 0.8f, 0.6f / 0.9f, 0.3f / 0.9f, 0.5f, 0.5f, 0.5f / 0.85f, 0.35f / 0.85f};
        for (int a = 0; a < 8; a++) assertEquals(g[a], r.prob[a], 1e-6, "gate of assignment " + a);
        assertArrayEquals(new int[] {2, 4, 2}, r.counts, "every assignment counts");
        assertEquals(0, r.dropped);
        // f = counts / (k T) = (1/4, 1/2, 1/4); P = (1.15, 1.65, 1.2) / 4
        assertEquals(3 * (0.25 * 1.15 / 4 + 0.5 * 1.65 / 4 + 0.25 * 1.2 / 4), r.loadBalancingLoss(), 1e-6);
        assertEquals(1228, Config.defaults().with("topK", 2).capacity(2048), "floor(1.2 * 2 * 2048 / 4)");
    }

    @Test
    void topTwoDropsSecondChoicesFirstThenByPolicy() {
        // capacity 3: expert 1 keeps t1's first choice, then two of the second choices of t0, t2, t3
        Routing r = new Routing(4, 3, 2);
        r.route(TOP2, 4, 4, 3, true, Config.DropPolicy.PROBABILITY, new Rng(1));
        assertEquals(1, r.dropped);
        assertEquals(0, r.slot[2], "t1's first choice has the first slot");
        assertEquals(-1, r.slot[1], "t0's second choice (0.3) is the least probable");
        assertTrue(r.slot[5] > 0 && r.slot[7] > 0);
        r.route(TOP2, 4, 4, 3, true, Config.DropPolicy.POSITION, new Rng(1));
        assertEquals(1, r.dropped);
        assertEquals(0, r.slot[2]);
        assertEquals(-1, r.slot[7], "t3's second choice is the latest");
        for (int seed = 0; seed < 10; seed++) {
            r.route(TOP2, 4, 4, 3, true, Config.DropPolicy.RANDOM, new Rng(seed));
            assertEquals(0, r.slot[2], "first choices before second choices whatever the draw");
            assertEquals(1, r.dropped);
        }
        int[] grouped = java.util.Arrays.copyOf(r.order, r.offset[3]);
        for (int i = 0; i < grouped.length; i++) {
            int a = grouped[i];
            assertEquals(i, r.offset[r.expertOf[a]] + r.slot[a], "order lists assignments by row");
        }
    }

    @Test
    void routerEntropy() {
        assertEquals(Math.log(4), Routing.entropy(new float[] {0.25f, 0.25f, 0.25f, 0.25f}, 1, 4), 1e-6);
        assertEquals(0, Routing.entropy(new float[] {1f, 0f, 0f, 0f}, 1, 4), 1e-9);
        // mean over tokens: (ln 2 + 0) / 2
        assertEquals(Math.log(2) / 2, Routing.entropy(new float[] {0.5f, 0.5f, 0f, 1f}, 2, 2), 1e-6);
    }
}
