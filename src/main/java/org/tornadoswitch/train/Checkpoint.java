package org.tornadoswitch.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.tornadoswitch.Config;
import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.model.ParamLayout;

/**
 * A checkpoint directory: {@code model.safetensors} (parameters by name), {@code optimizer.safetensors}
 * (Adam moments) and {@code state.json} (format, config, vocabulary, step, RNG states, checksums).
 * A run directory keeps its checkpoints under {@code checkpoints/step-NNNNNNNN}.
 */
public final class Checkpoint {
    public static final int FORMAT = 1;
    private static final ObjectMapper JSON = new ObjectMapper();

    /** A checkpoint that cannot be used; the message says why. */
    public static final class CheckpointException extends RuntimeException {
        public CheckpointException(String message) {
            super(message);
        }
    }

    public record State(Config config, CharTokenizer tokenizer, int step, long dataRng, long dropRng,
                        float[] params, float[] adamM, float[] adamV) {}

    private Checkpoint() {}

    /** Writes one file durably; tests replace it to simulate a disk that fills up. */
    @FunctionalInterface
    public interface FileWriter {
        void write(Path file, byte[] bytes) throws IOException;
    }

    /** The real writer: write, then fsync. */
    public static final FileWriter DURABLE = (file, bytes) -> {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer b = ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) ch.write(b);
            ch.force(true);
        }
    };

    /**
     * Saves a checkpoint of {@code runDir} as {@code checkpoints/step-NNNNNNNN}: the files go into a
     * hidden temporary directory, each fsynced, state.json (with the other files' checksums) last,
     * then the directory is renamed into place, so a crash or a full disk leaves the previous
     * checkpoints as they were. Keeps the newest {@code keep}.
     */
    public static Path save(Path runDir, State s, int keep, FileWriter writer) throws IOException {
        Path root = runDir.resolve("checkpoints");
        Files.createDirectories(root);
        String name = String.format("step-%08d", s.step());
        Path tmp = root.resolve("." + name + ".tmp");
        deleteTree(tmp);
        Files.createDirectories(tmp);
        try {
            ParamLayout layout = new ParamLayout(s.config(), s.tokenizer().size());
            byte[] model = safetensors(layout, List.of(""), s.params());
            writer.write(tmp.resolve("model.safetensors"), model);
            ObjectNode st = JSON.createObjectNode();
            st.put("format", FORMAT);
            st.set("config", JSON.valueToTree(s.config()));
            st.set("vocab", JSON.valueToTree(s.tokenizer().symbols()));
            st.put("step", s.step());
            st.put("data_rng", s.dataRng());
            st.put("drop_rng", s.dropRng());
            st.put("model_sha256", org.tornadoswitch.data.Corpus.sha256(model));
            if (s.adamM() != null) {
                byte[] opt = safetensors(layout, List.of("adam_m.", "adam_v."), s.adamM(), s.adamV());
                writer.write(tmp.resolve("optimizer.safetensors"), opt);
                st.put("optimizer_sha256", org.tornadoswitch.data.Corpus.sha256(opt));
            }
            writer.write(tmp.resolve("state.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(st));
            Path target = root.resolve(name);
            deleteTree(target);
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
            fsyncDir(root);
            prune(root, keep);
            return target;
        } catch (IOException | RuntimeException e) {
            deleteTree(tmp);
            throw e;
        }
    }

    /** Complete checkpoints of a run directory, newest first. */
    public static List<Path> checkpoints(Path runDir) throws IOException {
        Path root = runDir.resolve("checkpoints");
        if (!Files.isDirectory(root)) return List.of();
        try (var st = Files.list(root)) {
            return st.filter(p -> p.getFileName().toString().startsWith("step-") && Files.isRegularFile(p.resolve("state.json")))
                    .sorted(java.util.Comparator.comparing((Path p) -> p.getFileName().toString()).reversed()).toList();
        }
    }

    private static void prune(Path root, int keep) throws IOException {
        List<Path> all = checkpoints(root.getParent());
        for (int i = Math.max(1, keep); i < all.size(); i++) deleteTree(all.get(i));
    }

    public static void fsyncDir(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException ignored) {
            // not every file system lets a directory be opened for fsync
        }
    }

    public static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (var walk = Files.walk(p)) {
            for (Path x : walk.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(x);
        }
    }

    /**
     * Loads {@code dir} itself when it holds a state.json, else the newest complete checkpoint of the
     * run directory {@code dir}. Checks format, checksums and tensor shapes.
     */
    public static State load(Path dir, boolean withOptimizer) {
        Path cp = dir;
        if (!Files.isRegularFile(dir.resolve("state.json"))) {
            List<Path> all;
            try {
                all = checkpoints(dir);
            } catch (IOException e) {
                throw new CheckpointException("cannot list checkpoints in " + dir + ": " + e.getMessage());
            }
            if (all.isEmpty()) throw new CheckpointException("no checkpoint in " + dir + " (no checkpoints/step-*/state.json)");
            cp = all.get(0);
        }
        return loadOne(cp, withOptimizer);
    }

    private static State loadOne(Path dir, boolean withOptimizer) {
        Path state = dir.resolve("state.json");
        try {
            JsonNode st = JSON.readTree(state.toFile());
            int format = st.path("format").asInt(-1);
            if (format > FORMAT) throw new CheckpointException("checkpoint " + dir + " has format " + format
                    + ", newer than this program's " + FORMAT + "; use a newer tornado-switch");
            if (format < 1) throw new CheckpointException("checkpoint " + dir + " has no valid format field");
            // fields added after the checkpoint was written take their defaults
            Config cfg = Config.fromJson(st.get("config")).validate();
            int[] vocab = JSON.treeToValue(st.get("vocab"), int[].class);
            CharTokenizer tok = new CharTokenizer(vocab);
            ParamLayout layout = new ParamLayout(cfg, tok.size());
            float[] params = readSafetensors(dir.resolve("model.safetensors"), st.path("model_sha256").asText(null), layout, "")[0];
            float[] m = null, v = null;
            if (withOptimizer && Files.isRegularFile(dir.resolve("optimizer.safetensors"))) {
                float[][] mv = readSafetensors(dir.resolve("optimizer.safetensors"), st.path("optimizer_sha256").asText(null),
                        layout, "adam_m.", "adam_v.");
                m = mv[0];
                v = mv[1];
            }
            return new State(cfg, tok, st.path("step").asInt(), st.path("data_rng").asLong(), st.path("drop_rng").asLong(),
                    params, m, v);
        } catch (IOException | RuntimeException e) {
            if (e instanceof CheckpointException ce) throw ce;
            throw new CheckpointException("cannot read checkpoint " + dir + ": " + e.getMessage());
        }
    }

    private static byte[] safetensors(ParamLayout layout, List<String> prefixes, float[]... buffers) throws IOException {
        Map<String, Object> header = new LinkedHashMap<>();
        long off = 0;
        for (int b = 0; b < buffers.length; b++) {
            for (ParamLayout.Tensor t : layout.tensors()) {
                long end = off + 4L * t.size();
                header.put(prefixes.get(b) + t.name(), Map.of("dtype", "F32", "shape", t.shape(), "data_offsets", new long[] {off, end}));
                off = end;
            }
        }
        header.put("__metadata__", Map.of("format", "pt", "producer", "tornado-switch"));
        byte[] h = JSON.writeValueAsBytes(header);
        int pad = (8 - h.length % 8) % 8;
        int hl = h.length + pad;
        ByteBuffer buf = ByteBuffer.allocate(8 + hl + (int) off).order(ByteOrder.LITTLE_ENDIAN);
        buf.putLong(hl);
        buf.put(h);
        for (int i = 0; i < pad; i++) buf.put((byte) ' ');
        for (float[] data : buffers)
            for (ParamLayout.Tensor t : layout.tensors())
                for (int i = 0; i < t.size(); i++) buf.putFloat(data[t.offset() + i]);
        return buf.array();
    }

    private static float[][] readSafetensors(Path file, String sha256, ParamLayout layout, String... prefixes) throws IOException {
        if (!Files.isRegularFile(file)) throw new CheckpointException(file + " is missing");
        byte[] all = Files.readAllBytes(file);
        if (sha256 != null && !sha256.equals(org.tornadoswitch.data.Corpus.sha256(all)))
            throw new CheckpointException(file + " is corrupt: its checksum does not match state.json");
        ByteBuffer buf = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        if (all.length < 8) throw new CheckpointException(file + " is truncated");
        long hl = buf.getLong();
        if (hl < 2 || 8 + hl > all.length) throw new CheckpointException(file + " is truncated or corrupt (header length " + hl + ")");
        JsonNode header = JSON.readTree(new String(all, 8, (int) hl, StandardCharsets.UTF_8));
        int base = 8 + (int) hl;
        float[][] out = new float[prefixes.length][layout.size()];
        for (int b = 0; b < prefixes.length; b++) {
            for (ParamLayout.Tensor t : layout.tensors()) {
                JsonNode n = header.get(prefixes[b] + t.name());
                if (n == null) throw new CheckpointException(file + " lacks tensor " + prefixes[b] + t.name() + " (another config?)");
                long start = n.get("data_offsets").get(0).asLong(), end = n.get("data_offsets").get(1).asLong();
                if (end - start != 4L * t.size())
                    throw new CheckpointException(file + ": tensor " + t.name() + " has the wrong size (another config?)");
                if (base + end > all.length) throw new CheckpointException(file + " is truncated");
                ByteBuffer view = ByteBuffer.wrap(all, base + (int) start, (int) (end - start)).order(ByteOrder.LITTLE_ENDIAN);
                for (int i = 0; i < t.size(); i++) out[b][t.offset() + i] = view.getFloat();
            }
        }
        return out;
    }
}
