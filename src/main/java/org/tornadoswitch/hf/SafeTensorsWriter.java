package org.tornadoswitch.hf;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Writes a safetensors file (F32), atomically: into a temporary file beside the target, fsynced,
 * then renamed over it (and the directory fsynced), so a crash leaves either the old file or the
 * new one. The data streams out through a small buffer: a model larger than one Java array can be
 * written tensor by tensor.
 */
public final class SafeTensorsWriter {
    private static final int CHUNK_FLOATS = 1 << 20;

    private SafeTensorsWriter() {}

    /** A tensor to write: {@code data[offset .. offset + prod(shape))}, row-major. */
    public record NamedTensor(String name, long[] shape, float[] data, int offset) {
        public NamedTensor(String name, long[] shape, float[] data) {
            this(name, shape, data, 0);
        }
    }

    /** tensors in the given order; metadata may be empty (HF writes {"format": "pt"}). */
    public static void write(Path file, List<NamedTensor> tensors, Map<String, String> metadata) throws IOException {
        byte[] header = header(tensors, metadata);
        Path dir = file.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        // a unique name, created with the process's umask (createTempFile would make it private)
        Path tmp = dir.resolve("." + file.getFileName() + "." + ProcessHandle.current().pid() + "." + System.nanoTime() + ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                ByteBuffer buf = ByteBuffer.allocateDirect(4 * CHUNK_FLOATS).order(ByteOrder.LITTLE_ENDIAN);
                ByteBuffer hl = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, header.length);
                writeFully(ch, hl);
                writeFully(ch, ByteBuffer.wrap(header));
                for (NamedTensor t : tensors) {
                    long n = MappedTensors.numel(t.shape());
                    int at = t.offset();
                    for (long done = 0; done < n; ) {
                        int k = (int) Math.min(CHUNK_FLOATS, n - done);
                        buf.clear();
                        buf.asFloatBuffer().put(t.data(), at, k);
                        buf.limit(4 * k);
                        writeFully(ch, buf);
                        at += k;
                        done += k;
                    }
                }
                ch.force(true);
            }
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
            fsyncDir(dir);
        } catch (IOException | RuntimeException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
    }

    /** The JSON header, padded with spaces to a multiple of 8 bytes (as the safetensors library does). */
    static byte[] header(List<NamedTensor> tensors, Map<String, String> metadata) {
        Map<String, Object> h = new LinkedHashMap<>();
        if (metadata != null && !metadata.isEmpty()) h.put("__metadata__", new LinkedHashMap<>(metadata));
        Set<String> seen = new HashSet<>();
        long off = 0;
        for (NamedTensor t : tensors) {
            if (t.name() == null || t.name().isEmpty() || t.name().equals("__metadata__"))
                throw new IllegalArgumentException("invalid tensor name '" + t.name() + "'");
            if (!seen.add(t.name())) throw new IllegalArgumentException("tensor " + t.name() + " given twice");
            for (long d : t.shape())
                if (d < 0) throw new IllegalArgumentException("tensor " + t.name() + " has a negative dimension");
            long n = MappedTensors.numel(t.shape());
            if (t.offset() < 0 || n > t.data().length - (long) t.offset())
                throw new IllegalArgumentException("tensor " + t.name() + " needs " + n + " floats from offset " + t.offset()
                        + ", its array has " + t.data().length);
            long end = off + 4 * n;
            Map<String, Object> e = new LinkedHashMap<>();
            e.put("dtype", "F32");
            e.put("shape", t.shape());
            e.put("data_offsets", new long[] {off, end});
            h.put(t.name(), e);
            off = end;
        }
        byte[] json;
        try {
            json = Json.MAPPER.writeValueAsBytes(h);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        int pad = (8 - json.length % 8) % 8;
        byte[] out = new byte[json.length + pad];
        System.arraycopy(json, 0, out, 0, json.length);
        for (int i = json.length; i < out.length; i++) out[i] = ' ';
        return out;
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) ch.write(b);
    }

    private static void fsyncDir(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException ignored) {
            // not every file system lets a directory be opened for fsync
        }
    }
}
