package org.tornadoswitch.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import org.tornadoswitch.hf.T5Checkpoint;
import org.tornadoswitch.hf.T5JvmBackend;
import org.tornadoswitch.hf.T5Model;
import picocli.CommandLine.Option;

/** The options every {@code t5} model command shares: the model directory and the threads. */
public final class T5ModelOptions {
    @Option(names = "--model", required = true, paramLabel = "DIR",
            description = "Hugging Face SwitchTransformers directory: config.json and model.safetensors (or sharded safetensors, or pytorch_model.bin).")
    Path model;

    @Option(names = "--threads", description = "Threads of the JVM backend (default: the machine's cores).")
    int threads = Runtime.getRuntime().availableProcessors();

    @Option(names = "--aux-loss", paramLabel = "hf|per-layer",
            description = "Load-balancing loss: hf = over the concatenated router logits of a stack, as transformers; per-layer = per layer, summed (HF issue 29503) (default: ${DEFAULT-VALUE}).",
            converter = AuxLossConverter.class)
    T5Model.AuxLossMode auxLoss = T5Model.AuxLossMode.HF;

    static final class AuxLossConverter implements picocli.CommandLine.ITypeConverter<T5Model.AuxLossMode> {
        @Override
        public T5Model.AuxLossMode convert(String v) {
            return switch (v.toLowerCase(java.util.Locale.ROOT)) {
                case "hf" -> T5Model.AuxLossMode.HF;
                case "per-layer", "per_layer" -> T5Model.AuxLossMode.PER_LAYER;
                default -> throw new picocli.CommandLine.TypeConversionException("expected hf or per-layer, got '" + v + "'");
            };
        }
    }

    /** Loads the model (notes about ignored tensors to {@code err}) onto the JVM backend. */
    T5Model open(PrintWriter err) {
        return open(err, 1, "inference");
    }

    /** As {@link #open(PrintWriter)}, refusing first a model whose {@code copies} parameter stores do not fit the heap. */
    T5Model open(PrintWriter err, double copies, String what) {
        if (threads < 1) throw new IllegalArgumentException("--threads must be >= 1, got " + threads);
        T5Checkpoint.Loaded l = T5Checkpoint.load(model, copies, what);
        for (String n : l.notes()) err.println("note: " + n);
        err.flush();
        T5Model m = new T5Model(new T5JvmBackend(l.weights(), threads));
        m.setAuxLossMode(auxLoss);
        return m;
    }

    static void checkIds(int[] ids, String option) {
        if (ids == null || ids.length == 0) throw new IllegalArgumentException(option + " needs at least one id");
    }
}
