package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.Config;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/**
 * The kernel cache on the TornadoVM device (PoCL in CI): training steps whose kernels were built from
 * the cache (prebuilt tasks) give the same bits as the steps of a start that compiled them (JIT), and a
 * configuration with other shapes finds only the tasks whose arguments are unchanged, compiles the rest,
 * and still gives the JIT run's bits.
 */
class KernelCacheTest {
    @TempDir
    Path dir;

    /** Losses of each step, then gradients and weights after the last (bit patterns). */
    record Run(List<Double> losses, float[] grads, float[] params, int prebuilt, int jit, int recorded, String status) {}

    static Config config(double cf) {
        // dropout and jitter on: the noise kernels and their per-step keys come from the cache too
        return TornadoBackendTest.config(3, false, cf, true, true).with("jitter", 0.1).with("zLossCoef", 0.01).validate();
    }

    static Run train(Config c, KernelCache.Options cache) {
        int vocab = TornadoBackendTest.VOCAB;
        float[] init = new ParamLayout(c, vocab).initialize(17);
        Rng data = new Rng(3);
        int n = c.tokensPerBatch();
        TornadoBackend be = new TornadoBackend(c, vocab, init, System.getProperty("tornado.test.device"), cache);
        List<Double> losses = new ArrayList<>();
        try (SwitchModel m = new SwitchModel(c, be, 9)) {
            for (int step = 1; step <= 2; step++) {
                m.setStep(step - 1);
                int[] x = new int[n], y = new int[n];
                for (int i = 0; i < n; i++) {
                    x[i] = data.nextInt(vocab);
                    y[i] = data.nextInt(vocab);
                }
                SwitchModel.Stats s = m.forward(x, y, c.batchSize(), c.seqLen());
                losses.add(s.loss);
                losses.add(s.objective);
                m.backward();
                losses.add(m.backend().gradSquaredNorm());
                double norm = Math.sqrt(m.backend().gradSquaredNorm());
                float scale = norm > c.clip() ? (float) (c.clip() / (norm + 1e-6)) : 1f;
                m.backend().adamStep((float) SwitchModel.noam(c, step), scale, step);
            }
            int[] counts = be.kernelCacheCounts();
            return new Run(losses, m.backend().grads(), m.backend().params(), counts[0], counts[1], counts[2], be.kernelCacheStatus());
        }
    }

    static void assertSameBits(Run expected, Run actual, String what) {
        assertEquals(expected.losses(), actual.losses(), what + ": losses, objectives, gradient norms");
        assertArrayEquals(expected.grads(), actual.grads(), what + ": gradients"); // float equality as Float.equals: bit patterns
        assertArrayEquals(expected.params(), actual.params(), what + ": weights after the steps");
    }

    @Test
    void stepsWithKernelsFromTheCacheAreBitIdenticalToTheJitSteps() throws Exception {
        Config c = config(0.8);
        KernelCache.Options cache = new KernelCache.Options(true, dir);

        Run jit = train(c, cache);
        assertEquals(0, jit.prebuilt(), jit.status());
        assertTrue(jit.jit() > 0, jit.status());
        assertEquals(jit.jit(), jit.recorded(), "every task is recorded: " + jit.status());
        try (var files = Files.list(dir)) {
            assertEquals(1, files.count(), "one key directory");
        }

        Run hit = train(c, cache);
        assertEquals(jit.jit(), hit.prebuilt(), "every task from the cache: " + hit.status());
        assertEquals(0, hit.jit(), hit.status());
        assertSameBits(jit, hit, "cache hit against JIT");

        Run off = train(c, KernelCache.Options.off());
        assertEquals(0, off.prebuilt(), off.status());
        assertSameBits(off, hit, "cache hit against a start without the cache");
    }

    @Test
    void aConfigurationWithOtherShapesFallsBackToJitForTheChangedTasks() {
        KernelCache.Options cache = new KernelCache.Options(true, dir);
        Run first = train(config(0.8), cache);
        assertEquals(0, first.prebuilt(), first.status());

        // another capacity factor: other expert capacities, so the expert tasks' sizes and scalars differ
        Config other = config(1.3);
        Run partial = train(other, cache);
        assertTrue(partial.prebuilt() > 0, "the unchanged tasks come from the cache: " + partial.status());
        assertTrue(partial.jit() > 0, "the changed tasks are compiled: " + partial.status());
        assertEquals(partial.jit(), partial.recorded(), partial.status());

        Run off = train(other, KernelCache.Options.off());
        assertSameBits(off, partial, "partial hit against a start without the cache");

        // and now all of the other configuration's tasks are in the cache
        Run hit = train(other, cache);
        assertEquals(0, hit.jit(), hit.status());
        assertSameBits(off, hit, "second start of the other configuration");
    }
}
