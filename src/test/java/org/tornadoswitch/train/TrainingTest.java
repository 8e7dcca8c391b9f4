package org.tornadoswitch.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.Config;
import org.tornadoswitch.TestData;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.data.Corpus;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/** Training on Tiny Shakespeare: it learns, it is deterministic, checkpoints round-trip. */
class TrainingTest {
    static final String TEXT = Corpus.read(TestData.tinyShakespeare());
    static final CharTokenizer TOK = CharTokenizer.fromText(TEXT);
    static final int[] IDS = TOK.encode(TEXT);

    static double[] train(Config c, int steps, int threads, float[][] paramsOut) {
        Batcher b = new Batcher(IDS, c.batchSize(), c.seqLen());
        Rng rng = new Rng(c.seed());
        double[] losses = new double[steps];
        float[] init = new ParamLayout(c, TOK.size()).initialize(c.seed());
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, TOK.size(), init, threads), c.seed())) {
            for (int i = 0; i < steps; i++) {
                b.nextTrain(rng);
                losses[i] = m.trainStep(b.inputs(), b.targets(), c.batchSize(), c.seqLen()).loss;
            }
            if (paramsOut != null) paramsOut[0] = m.backend().params();
        }
        return losses;
    }

    @Test
    void tinyShakespeareHas65Symbols() {
        assertEquals(1_115_394, TEXT.length());
        assertEquals(65, TOK.size());
        assertEquals("First", TOK.decode(TOK.encode("First"), 0, 5));
    }

    @Test
    void switchModelLearns() {
        Config c = TestData.small(4, false);
        double[] l = train(c, 120, 2, null);
        assertEquals(Math.log(65), l[0], 0.6, "initial loss near uniform");
        double last = (l[117] + l[118] + l[119]) / 3;
        assertTrue(last < 2.9, "loss after 120 steps should fall well below uniform (4.17), was " + last);
    }

    @Test
    void sameSeedSameLossesWhateverTheThreadCount() {
        Config c = TestData.small(3, false);
        float[][] p1 = new float[1][], p2 = new float[1][];
        double[] a = train(c, 5, 2, p1);
        double[] b = train(c, 5, 2, null);
        double[] one = train(c, 5, 1, p2);
        assertArrayEquals(a, b, 0.0);
        assertArrayEquals(a, one, 0.0);
        assertArrayEquals(p1[0], p2[0], 0f);
    }

    /**
     * The same forward pass gives the same bits on every call, while the JIT compiles the kernels
     * between calls (a lane sum whose order differs between interpreted and compiled code broke this).
     */
    @Test
    void repeatedEvaluationIsBitIdentical() {
        Config c = TestData.small(2, false);
        Batcher b = new Batcher(IDS, c.batchSize(), c.seqLen());
        float[] init = new ParamLayout(c, TOK.size()).initialize(c.seed());
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, TOK.size(), init, 2), 1)) {
            double first = Evaluator.evaluate(m, b, 2, 9).loss();
            for (int i = 0; i < 40; i++) assertEquals(first, Evaluator.evaluate(m, b, 2, 9).loss(), 0.0, "evaluation " + i);
        }
    }

    /** The JVM backend, except that from step {@code badFrom} on the loss it reports is NaN. */
    static final class NanAfter implements java.lang.reflect.InvocationHandler {
        final org.tornadoswitch.backend.Backend inner;
        final int badFrom;
        int heads;

        NanAfter(org.tornadoswitch.backend.Backend inner, int badFrom) {
            this.inner = inner;
            this.badFrom = badFrom;
        }

        @Override
        public Object invoke(Object proxy, java.lang.reflect.Method m, Object[] a) throws Throwable {
            Object r = m.invoke(inner, a);
            if (m.getName().equals("forwardHead") && a[0] != null && ++heads >= badFrom) ((double[]) a[0])[0] = Double.NaN;
            return r;
        }
    }

    @Test
    void aNanLossStopsTheRunNamingTheStepAndSavesNothingAfterIt() throws Exception {
        Config c = TestData.small(2, false);
        Batcher b = new Batcher(IDS, c.batchSize(), c.seqLen());
        float[] init = new ParamLayout(c, TOK.size()).initialize(c.seed());
        var be = (org.tornadoswitch.backend.Backend) java.lang.reflect.Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {org.tornadoswitch.backend.Backend.class}, new NanAfter(new JvmBackend(c, TOK.size(), init, 1), 4));
        java.util.List<Integer> saved = new java.util.ArrayList<>();
        try (SwitchModel m = new SwitchModel(c, be, 1)) {
            Trainer t = new Trainer(m, TOK, b, new Rng(1), new Trainer.Options(10, 0, 1, 1, 1, null, null, "a", 0, true),
                    saved::add, new java.io.PrintWriter(java.io.Writer.nullWriter()));
            var e = assertThrows(Trainer.DivergedException.class, t::run);
            assertTrue(e.getMessage().contains("at step 4"), e.getMessage());
        }
        assertEquals(java.util.List.of(1, 2, 3), saved, "checkpoints only of the good steps");
    }

    @Test
    void checkpointRoundTripGivesTheSameEvaluation(@TempDir Path dir) throws Exception {
        Config c = TestData.small(2, false);
        Batcher b = new Batcher(IDS, c.batchSize(), c.seqLen());
        float[] init = new ParamLayout(c, TOK.size()).initialize(c.seed());
        double before;
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, TOK.size(), init, 2), 1)) {
            Rng rng = new Rng(1);
            for (int i = 0; i < 3; i++) {
                b.nextTrain(rng);
                m.trainStep(b.inputs(), b.targets(), c.batchSize(), c.seqLen());
            }
            before = Evaluator.evaluate(m, b, 4, 9).loss();
            float[][] mv = m.backend().adamMoments();
            Checkpoint.save(dir, new Checkpoint.State(c, TOK, m.step(), rng.state(), m.dropRng().state(),
                    m.backend().params(), mv[0], mv[1]), 2, Checkpoint.DURABLE);
        }
        Checkpoint.State s = Checkpoint.load(dir, true);
        assertEquals(c, s.config());
        assertEquals(3, s.step());
        assertArrayEquals(TOK.symbols(), s.tokenizer().symbols());
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, TOK.size(), s.params(), 2), 1)) {
            assertEquals(before, Evaluator.evaluate(m, b, 4, 9).loss(), 0.0);
            String text = Sampler.generate(m, TOK, "ROMEO:", 20, 0.8, 3);
            assertEquals(26, text.length());
            assertTrue(text.startsWith("ROMEO:"));
        }
        // a truncated weights file is refused with a message, not a stack trace
        Path model = Checkpoint.checkpoints(dir).get(0).resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(model);
        Files.write(model, java.util.Arrays.copyOf(bytes, bytes.length / 2));
        var e = assertThrows(Checkpoint.CheckpointException.class, () -> Checkpoint.load(dir, false));
        assertTrue(e.getMessage().contains("corrupt") || e.getMessage().contains("truncated"), e.getMessage());
    }
}
