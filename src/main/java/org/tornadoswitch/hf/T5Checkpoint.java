package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.tornadoswitch.train.Checkpoint;

/**
 * A SwitchTransformers model directory as Hugging Face has it: {@code config.json} and the tensors
 * (any format {@link HfCheckpoint} reads), read into a {@link T5Weights}; and saved back as
 * {@code config.json} + {@code model.safetensors} with HF's names, which transformers loads with no
 * missing or unexpected keys (an untied model also carries its {@code encoder/decoder.embed_tokens}
 * and {@code lm_head}, as transformers v5 saves it). The tokenizer and generation config files of the
 * source directory are copied beside.
 */
public final class T5Checkpoint {
    /** Files copied from the source model directory into a saved one. */
    static final List<String> SIDE_FILES = List.of("spiece.model", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "added_tokens.json", "generation_config.json");

    private T5Checkpoint() {}

    /** A loaded model: its config, its weights, and notes for the user (tensors ignored, ...). */
    public record Loaded(T5Config config, T5Weights weights, List<String> notes) {}

    /** Reads config.json and the tensors of a model directory, checking every tensor's shape against the config. */
    public static Loaded load(Path dir) {
        return load(dir, 1, "inference");
    }

    /**
     * As {@link #load(Path)}, first refusing (one line, before anything is allocated) a model whose
     * {@code copies} parameter-sized stores (weights 1, gradients +1, Adam's moments +2) do not fit in
     * the heap.
     */
    public static Loaded load(Path dir, double copies, String what) {
        if (!Files.isDirectory(dir)) throw new HfFormatException("model directory " + dir + " does not exist");
        T5Config c = T5Config.load(dir);
        checkHeap(c, copies, what);
        T5Weights w = new T5Weights(c);
        List<String> notes;
        try (TensorSource src = HfCheckpoint.open(dir)) {
            notes = w.load(src);
        }
        return new Loaded(c, w, notes);
    }

    /** Refuses a model that needs more heap than the JVM has, naming how to raise it. */
    public static void checkHeap(T5Config c, double copies, String what) {
        long need = (long) (4.0 * c.parameterCount() * copies * 1.05) + (256L << 20); // + activations and the JVM's own
        long heap = org.tornadoswitch.backend.MemoryPlan.availableHeap(), machine = org.tornadoswitch.backend.MemoryPlan.physicalMemory();
        if (need > heap)
            throw new org.tornadoswitch.backend.MemoryPlan.TooLargeException(String.format(
                    "%s of this model (%,d parameters) needs about %.1f GiB of heap and the JVM has %.1f GiB%s: raise it with %s%dg",
                    what, c.parameterCount(), need / (double) (1L << 30), heap / (double) (1L << 30),
                    machine > 0 ? String.format(" (the machine has %.1f GiB)", machine / (double) (1L << 30)) : "",
                    org.tornadoswitch.backend.MemoryPlan.HEAP_HINT, (need >> 30) + 2));
    }

    /**
     * Writes {@code dir} (created or replaced) with config.json, model.safetensors and the side files
     * of {@code copyFrom} (may be null): into a hidden temporary directory beside it first, every
     * file fsynced, then renamed into place, so an interrupted save leaves the old directory.
     */
    public static void save(Path dir, T5Config c, T5Weights w, Path copyFrom, ObjectNode extraState) throws IOException {
        Path abs = dir.toAbsolutePath();
        Path parent = abs.getParent();
        Files.createDirectories(parent);
        Path tmp = parent.resolve("." + abs.getFileName() + ".tmp");
        Checkpoint.deleteTree(tmp);
        Files.createDirectories(tmp);
        try {
            writeInto(tmp, c, w, copyFrom, extraState);
            Path old = parent.resolve("." + abs.getFileName() + ".old");
            Checkpoint.deleteTree(old);
            if (Files.exists(abs)) Files.move(abs, old);
            Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE);
            Checkpoint.fsyncDir(parent);
            Checkpoint.deleteTree(old);
        } catch (IOException | RuntimeException e) {
            Checkpoint.deleteTree(tmp);
            throw e;
        }
    }

    /**
     * The files of a model directory, written into {@code dir} (which exists), each atomically (a
     * temporary file fsynced, then renamed over the old one).
     */
    public static void writeInto(Path dir, T5Config c, T5Weights w, Path copyFrom, ObjectNode extraState) throws IOException {
        ObjectNode cfg = c.toJson();
        if (!cfg.has("architectures")) cfg.putArray("architectures").add("SwitchTransformersForConditionalGeneration");
        atomic(dir.resolve("config.json"), Json.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsBytes(cfg));
        List<SafeTensorsWriter.NamedTensor> ts = new ArrayList<>();
        for (T5Weights.Tensor t : w.tensors()) ts.add(new SafeTensorsWriter.NamedTensor(t.name(), t.shape(), t.data(), t.off()));
        SafeTensorsWriter.write(dir.resolve(HfCheckpoint.SAFETENSORS), ts, Map.of("format", "pt"));
        if (copyFrom != null && !copyFrom.toAbsolutePath().normalize().equals(dir.toAbsolutePath().normalize()))
            for (String f : SIDE_FILES) {
                Path src = copyFrom.resolve(f);
                if (Files.isRegularFile(src)) atomic(dir.resolve(f), Files.readAllBytes(src));
            }
        if (extraState != null)
            atomic(dir.resolve("trainer_state.json"), Json.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsBytes(extraState));
    }

    private static void atomic(Path file, byte[] bytes) throws IOException {
        Path tmp = file.resolveSibling("." + file.getFileName() + ".tmp");
        Checkpoint.DURABLE.write(tmp, bytes);
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** The names of the tensors a save writes, with their shapes, in file order. */
    public static ArrayNode manifest(T5Weights w) {
        ArrayNode a = Json.MAPPER.createArrayNode();
        for (T5Weights.Tensor t : w.tensors()) {
            ObjectNode o = a.addObject();
            o.put("name", t.name());
            ArrayNode s = o.putArray("shape");
            for (long d : t.shape()) s.add(d);
        }
        return a;
    }
}
