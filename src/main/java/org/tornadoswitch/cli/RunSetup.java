package org.tornadoswitch.cli;

import java.nio.file.Path;
import org.tornadoswitch.Config;
import org.tornadoswitch.backend.Backend;
import org.tornadoswitch.backend.Backends;
import org.tornadoswitch.backend.MemoryPlan;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.data.Corpus;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import picocli.CommandLine.Option;

/** Options every command that builds a model shares: data, backend, device, threads. */
public final class RunSetup {
    @Option(names = "--data", paramLabel = "FILE", description = "UTF-8 training text (default: Tiny Shakespeare from data/, downloaded if missing).")
    Path data;
    @Option(names = "--backend", defaultValue = "${sys:tornadoswitch.backend:-jvm}",
            description = "jvm or tornado (default: ${DEFAULT-VALUE}; scripts/run and scripts/train start TornadoVM's launcher for tornado).")
    String backend;
    @Option(names = "--device", paramLabel = "BACKEND:DEVICE", description = "TornadoVM device, e.g. 0:0 (see `devices`).")
    String device;
    @Option(names = "--threads", description = "JVM backend threads (default: all cores, ${DEFAULT-VALUE}).")
    int threads = Runtime.getRuntime().availableProcessors();

    /** Text, tokenizer and split, checked before any model is built. */
    public record Data(String text, CharTokenizer tokenizer, Batcher batcher) {}

    public Data loadData(Config cfg, CharTokenizer fixedVocab) {
        if (threads < 1 || threads > 1024) throw new IllegalArgumentException("--threads must be in [1, 1024], got " + threads);
        if (!backend.equals("jvm") && !backend.equals("tornado"))
            throw new IllegalArgumentException("--backend must be jvm or tornado, got '" + backend + "'");
        String text = Corpus.load(data);
        CharTokenizer tok = fixedVocab != null ? fixedVocab : CharTokenizer.fromText(text);
        int[] ids;
        try {
            ids = tok.encode(text);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("data does not match the checkpoint's vocabulary: " + e.getMessage());
        }
        if (ids.length < 2 * (cfg.seqLen() + 1) * 10)
            throw new IllegalArgumentException("seq-len " + cfg.seqLen() + " is too long for a text of " + ids.length
                    + " characters (the 10% validation split needs more than one window)");
        checkMemory(cfg, tok.size(), fixedVocab == null);
        return new Data(text, tok, new Batcher(ids, cfg.batchSize(), cfg.seqLen()));
    }

    /** Refuses a model that does not fit (one line, exit code 2) before anything of it is allocated. */
    public void checkMemory(Config cfg, int vocab, boolean initialCopy) {
        MemoryPlan.of(cfg, vocab, initialCopy).check(backend.equals("jvm"), MemoryPlan.availableHeap(), MemoryPlan.physicalMemory());
    }

    public SwitchModel buildModel(Config cfg, int vocab, float[] params) {
        checkMemory(cfg, vocab, params == null);
        if (params == null) params = new ParamLayout(cfg, vocab).initialize(cfg.seed());
        Backend b = Backends.create(backend, cfg, vocab, params, threads, device);
        return new SwitchModel(cfg, b, cfg.seed() * 31 + 7);
    }
}
