package org.tornadoswitch.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;
import org.tornadoswitch.TestData;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.model.ParamLayout;

/**
 * The memory plan counts what the JVM backend really allocates, and refuses by the numbers it is
 * given (the command-line refusals are in cli.MemoryCliTest).
 */
class MemoryPlanTest {
    /** Elements of every array field (float[], int[], double[], and arrays of them) of an object. */
    static long arrayElements(Object o) throws IllegalAccessException {
        long n = 0;
        for (Field f : o.getClass().getDeclaredFields()) {
            if (Modifier.isStatic(f.getModifiers()) || !f.getType().isArray()) continue;
            f.setAccessible(true);
            Object a = f.get(o);
            if (a instanceof float[] x) n += x.length;
            else if (a instanceof int[] x) n += x.length;
            else if (a instanceof double[] x) n += x.length;
            else if (a instanceof float[][] x) for (float[] r : x) n += r.length;
        }
        return n;
    }

    @Test
    void planCountsWhatTheJvmBackendAllocates() throws Exception {
        Config[] configs = {Config.defaults(), TestData.small(4, false), TestData.small(1, true),
                Config.defaults().with("topK", 2).with("dropout", 0.1).with("jitter", 0.05).validate()};
        for (Config c : configs) {
            int vocab = 65;
            ParamLayout layout = new ParamLayout(c, vocab);
            MemoryPlan plan = MemoryPlan.of(c, vocab, true);
            assertEquals(layout.size(), plan.parameters());
            try (JvmBackend b = new JvmBackend(c, vocab, layout.initialize(1), 1)) {
                long actual = arrayElements(b), planned = 4L * layout.size() + plan.activationElements();
                // the plan leaves out only a few small arrays (per-chunk partial sums, top-k scratch)
                assertTrue(planned <= actual && actual - planned < 1000 + actual / 1000,
                        c + ": planned " + planned + " elements, allocated " + actual);
            }
        }
        assertEquals(2_001_497, MemoryPlan.of(Config.defaults(), 65, true).parameters(), "the default model (PyTorch counts the same)");
    }

    @Test
    void theHeapCheckUsesTheGivenNumbers() {
        MemoryPlan p = MemoryPlan.of(Config.defaults(), 65, true);
        long need = p.totalBytes();
        p.check(true, need, 0); // exactly enough
        var e = assertThrows(MemoryPlan.TooLargeException.class, () -> p.check(true, need - 1, 64L << 30));
        assertTrue(e.getMessage().contains("0.0 GiB of heap") || e.getMessage().contains("JVM has"), e.getMessage());
        p.check(false, 0, 0); // the TornadoVM backend keeps its buffers outside the heap
        assertEquals(20L * p.parameters() + 4 * p.activationElements(), need);
    }

}
