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
 * (Adam moments) and {@code state.json} (format, config, vocabulary, step, RNG states). Every file
 * is written to a temporary name, fsynced and renamed, and state.json last, so a directory with a
 * state.json is complete.
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

    public static void save(Path dir, State s) throws IOException {
        Files.createDirectories(dir);
        ParamLayout layout = new ParamLayout(s.config(), s.tokenizer().size());
        writeAtomic(dir.resolve("model.safetensors"), safetensors(layout, List.of(""), s.params()));
        if (s.adamM() != null)
            writeAtomic(dir.resolve("optimizer.safetensors"), safetensors(layout, List.of("adam_m.", "adam_v."), s.adamM(), s.adamV()));
        ObjectNode st = JSON.createObjectNode();
        st.put("format", FORMAT);
        st.set("config", JSON.valueToTree(s.config()));
        st.set("vocab", JSON.valueToTree(s.tokenizer().symbols()));
        st.put("step", s.step());
        st.put("data_rng", s.dataRng());
        st.put("drop_rng", s.dropRng());
        writeAtomic(dir.resolve("state.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(st));
    }

    public static State load(Path dir, boolean withOptimizer) {
        Path state = dir.resolve("state.json");
        if (!Files.isRegularFile(state)) throw new CheckpointException("no checkpoint in " + dir + " (state.json missing)");
        try {
            JsonNode st = JSON.readTree(state.toFile());
            int format = st.path("format").asInt(-1);
            if (format > FORMAT) throw new CheckpointException("checkpoint " + dir + " has format " + format
                    + ", newer than this program's " + FORMAT);
            Config cfg = JSON.treeToValue(st.get("config"), Config.class).validate();
            int[] vocab = JSON.treeToValue(st.get("vocab"), int[].class);
            CharTokenizer tok = new CharTokenizer(vocab);
            ParamLayout layout = new ParamLayout(cfg, tok.size());
            float[] params = readSafetensors(dir.resolve("model.safetensors"), layout, "")[0];
            float[] m = null, v = null;
            if (withOptimizer && Files.isRegularFile(dir.resolve("optimizer.safetensors"))) {
                float[][] mv = readSafetensors(dir.resolve("optimizer.safetensors"), layout, "adam_m.", "adam_v.");
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

    private static float[][] readSafetensors(Path file, ParamLayout layout, String... prefixes) throws IOException {
        byte[] all = Files.readAllBytes(file);
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

    /** Temporary file, fsync, rename: a reader sees the old file or the whole new one. */
    static void writeAtomic(Path target, byte[] bytes) throws IOException {
        Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer b = ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) ch.write(b);
            ch.force(true);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
        Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
