package org.tornadoswitch.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/**
 * The JVM backend's step loop allocates (almost) nothing once the JIT has compiled it: less than
 * 1 MB per 100 training steps on all threads, and no GC. The model has the default's widths (d_model
 * 128, d_ff 256, 4 heads, 4 experts) with a smaller batch, and dropout on, so that every fused GEMM
 * epilogue and kernel path of a real step runs. A kernel the JIT leaves in a lower tier (one called
 * too rarely to be compiled with the vector intrinsics) allocates every vector and fails this.
 */
class StepAllocationTest {
    static long allocatedBytesAllThreads() {
        var mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long sum = 0;
        for (long id : mx.getAllThreadIds()) {
            long b = mx.getThreadAllocatedBytes(id);
            if (b > 0) sum += b;
        }
        return sum;
    }

    static long gcCount() {
        long n = 0;
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) n += Math.max(0, gc.getCollectionCount());
        return n;
    }

    @Test
    void aHundredStepsAllocateLessThanOneMegabyteAndNoGc() {
        Config c = new Config(128, 4, 2, 256, 4, false, 1.2, true, true, 0.01, false, 8, 32,
                1.0, 100, 0.9, 0.999, 1e-8, 1.0, 5).with("dropout", 0.1).with("expertDropout", 0.2).validate();
        Batcher b = new Batcher(TrainingTest.IDS, c.batchSize(), c.seqLen());
        Rng rng = new Rng(c.seed());
        float[] init = new ParamLayout(c, TrainingTest.TOK.size()).initialize(c.seed());
        try (SwitchModel m = new SwitchModel(c, new JvmBackend(c, TrainingTest.TOK.size(), init, 2), c.seed())) {
            for (int i = 0; i < 60; i++) { // warm-up: the JIT compiles the kernels
                b.nextTrain(rng);
                m.trainStep(b.inputs(), b.targets(), c.batchSize(), c.seqLen());
            }
            long gc0 = gcCount(), a0 = allocatedBytesAllThreads();
            for (int i = 0; i < 100; i++) {
                b.nextTrain(rng);
                m.trainStep(b.inputs(), b.targets(), c.batchSize(), c.seqLen());
            }
            long bytes = allocatedBytesAllThreads() - a0;
            assertTrue(bytes < 1_000_000, "100 steps allocated " + bytes + " bytes");
            assertEquals(0, gcCount() - gc0, "GCs during 100 steps");
        }
    }
}
