package org.tornadoswitch.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import jdk.jfr.Recording;
import jdk.jfr.consumer.RecordedEvent;
import jdk.jfr.consumer.RecordedFrame;
import jdk.jfr.consumer.RecordingFile;
import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;
import org.tornadoswitch.cli.BenchCommand;
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
    /** The five project frames that allocated most (sampled weight), with the frame under each. */
    static String topSites(Path jfr) throws IOException {
        Map<String, Long> bytes = new HashMap<>();
        for (RecordedEvent e : RecordingFile.readAllEvents(jfr)) {
            if (!e.getEventType().getName().equals("jdk.ObjectAllocationSample") || e.getStackTrace() == null) continue;
            List<RecordedFrame> frames = e.getStackTrace().getFrames();
            String site = "?";
            for (int i = 0; i < frames.size(); i++) {
                var mth = frames.get(i).getMethod();
                if (!mth.getType().getName().startsWith("org.tornadoswitch")) continue;
                site = mth.getType().getName() + "." + mth.getName() + ":" + frames.get(i).getLineNumber();
                if (i + 1 < frames.size())
                    site += " <- " + frames.get(i + 1).getMethod().getName() + ":" + frames.get(i + 1).getLineNumber();
                break;
            }
            bytes.merge(site, e.getLong("weight"), Long::sum);
        }
        return bytes.entrySet().stream().sorted(Map.Entry.<String, Long>comparingByValue().reversed()).limit(5)
                .map(x -> x.getKey() + " " + x.getValue() / 1000 + " kB").toList().toString();
    }

    @Test
    void aHundredStepsAllocateLessThanOneMegabyteAndNoGc() throws IOException {
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
            long gc0 = BenchCommand.gcCount(), a0 = BenchCommand.allocatedBytesAllThreads();
            for (int i = 0; i < 100; i++) {
                b.nextTrain(rng);
                m.trainStep(b.inputs(), b.targets(), c.batchSize(), c.seqLen());
            }
            long bytes = BenchCommand.allocatedBytesAllThreads() - a0, gcs = BenchCommand.gcCount() - gc0;
            if (bytes >= 1_000_000) { // 100 more steps under JFR (which allocates itself), to name the sites
                try (Recording rec = new Recording()) {
                    rec.enable("jdk.ObjectAllocationSample").withStackTrace();
                    rec.start();
                    for (int i = 0; i < 100; i++) {
                        b.nextTrain(rng);
                        m.trainStep(b.inputs(), b.targets(), c.batchSize(), c.seqLen());
                    }
                    rec.stop();
                    Path f = Files.createTempFile("step-alloc", ".jfr");
                    rec.dump(f);
                    String sites = topSites(f);
                    Files.deleteIfExists(f);
                    fail("100 steps allocated " + bytes + " bytes; sampled allocation sites of 100 more: " + sites);
                }
            }
            assertEquals(0, gcs, "GCs during 100 steps");
        }
    }
}
