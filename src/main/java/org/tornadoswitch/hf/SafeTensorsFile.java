package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header
 * ({@code name -> {dtype, shape, data_offsets}} and optional {@code __metadata__}), then the tensor
 * bytes. Everything the header says is checked against the file at open.
 */
final class SafeTensorsFile extends MappedTensors {
    /** The safetensors library's own limit on the header size. */
    static final long MAX_HEADER = 100_000_000L;
    /** dtypes of the format that this reader does not convert (named in the refusal). */
    static final Set<String> OTHER_DTYPES = Set.of("F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
            "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", "C128");

    private final Path file;
    private final Map<String, String> metadata;

    private SafeTensorsFile(Arena arena, Path file, Map<String, String> metadata) {
        super(arena, file.toString());
        this.file = file;
        this.metadata = metadata;
    }

    Path file() {
        return file;
    }

    /** The header's {@code __metadata__} (string to string), empty when it has none. */
    Map<String, String> metadata() {
        return metadata;
    }

    static SafeTensorsFile open(Path file) {
        if (!Files.isRegularFile(file)) throw new HfFormatException(file + " is missing");
        Arena arena = Arena.ofShared();
        try {
            MemorySegment seg;
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
                long size = ch.size();
                if (size < 8) throw new HfFormatException(file + " is truncated: " + size + " bytes, not even a header length");
                seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            }
            SafeTensorsFile f = parse(file, arena, seg);
            return f;
        } catch (IOException e) {
            arena.close();
            throw new HfFormatException("cannot read " + file + ": " + e.getMessage());
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static SafeTensorsFile parse(Path file, Arena arena, MemorySegment seg) {
        long size = seg.byteSize();
        long n = seg.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
        if (n < 0 || n > MAX_HEADER)
            throw new HfFormatException(file + " is not a safetensors file (header length " + Long.toUnsignedString(n) + ")");
        if (8 + n > size)
            throw new HfFormatException(file + " is truncated: its header needs " + (8 + n) + " bytes, the file has " + size);
        byte[] hb = seg.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
        String text = new String(hb, StandardCharsets.UTF_8);
        if (text.isEmpty() || text.charAt(0) != '{')
            throw new HfFormatException(file + " has a corrupt header (it does not start with '{')");
        JsonNode h = Json.parse(text, file + "'s header");
        if (!h.isObject()) throw new HfFormatException(file + " has a corrupt header (not a JSON object)");
        Map<String, String> meta = new java.util.LinkedHashMap<>();
        JsonNode m = h.get("__metadata__");
        if (m != null) {
            if (!m.isObject()) throw new HfFormatException(file + ": __metadata__ is not an object");
            for (Iterator<Map.Entry<String, JsonNode>> it = m.fields(); it.hasNext(); ) {
                var kv = it.next();
                if (!kv.getValue().isTextual())
                    throw new HfFormatException(file + ": __metadata__ value of " + kv.getKey() + " is not a string");
                meta.put(kv.getKey(), kv.getValue().asText());
            }
        }
        SafeTensorsFile f = new SafeTensorsFile(arena, file, java.util.Collections.unmodifiableMap(meta));
        long base = 8 + n;
        long dataSize = size - base;
        List<long[]> spans = new ArrayList<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = h.fields(); it.hasNext(); ) {
            var kv = it.next();
            String name = kv.getKey();
            if (name.equals("__metadata__")) continue;
            JsonNode t = kv.getValue();
            String where = file + ": tensor " + name;
            if (!t.isObject()) throw new HfFormatException(where + " is not described by an object");
            JsonNode dt = t.get("dtype"), sh = t.get("shape"), offs = t.get("data_offsets");
            if (dt == null || !dt.isTextual()) throw new HfFormatException(where + " has no dtype");
            if (sh == null || !sh.isArray()) throw new HfFormatException(where + " has no shape");
            if (offs == null || !offs.isArray() || offs.size() != 2 || !offs.get(0).canConvertToExactIntegral()
                    || !offs.get(1).canConvertToExactIntegral() || !offs.get(0).canConvertToLong() || !offs.get(1).canConvertToLong())
                throw new HfFormatException(where + " has no valid data_offsets [begin, end]");
            DType dtype;
            try {
                dtype = DType.valueOf(dt.asText());
            } catch (IllegalArgumentException e) {
                String kind = OTHER_DTYPES.contains(dt.asText()) ? "unsupported" : "unknown";
                throw new HfFormatException(where + " has " + kind + " dtype " + dt.asText() + " (supported: F32, F16, BF16)");
            }
            long[] shape = new long[sh.size()];
            for (int i = 0; i < shape.length; i++) {
                JsonNode d = sh.get(i);
                if (!d.canConvertToExactIntegral() || !d.canConvertToLong() || d.asLong() < 0)
                    throw new HfFormatException(where + " has an invalid shape " + sh);
                shape[i] = d.asLong();
            }
            long numel;
            try {
                numel = numel(shape);
                Math.multiplyExact(numel, (long) dtype.bytes);
            } catch (ArithmeticException e) {
                throw new HfFormatException(where + " has an impossibly large shape " + sh);
            }
            long begin = offs.get(0).asLong(), end = offs.get(1).asLong();
            if (begin < 0 || end < begin) throw new HfFormatException(where + " has invalid data_offsets " + offs);
            if (end - begin != numel * dtype.bytes)
                throw new HfFormatException(where + " has " + (end - begin) + " bytes but its shape " + sh + " x " + dtype
                        + " needs " + numel * dtype.bytes);
            if (end > dataSize)
                throw new HfFormatException(file + " is truncated: tensor " + name + " ends at byte " + (base + end)
                        + ", the file has " + size + " bytes");
            spans.add(new long[] {begin, end});
            f.entries.put(name, new Entry(name, dtype, shape, numel, seg, base + begin, null));
        }
        // as the safetensors library requires: the tensors tile the data section, no gaps, no overlap
        spans.sort(Comparator.comparingLong((long[] s) -> s[0]).thenComparingLong(s -> s[1]));
        long at = 0;
        for (long[] s : spans) {
            if (s[0] != at)
                throw new HfFormatException(file + " has a corrupt header: tensor data " + (s[0] < at ? "overlaps" : "has a gap")
                        + " at data byte " + Math.min(s[0], at));
            at = s[1];
        }
        if (at != dataSize)
            throw new HfFormatException(file + " has " + (dataSize - at) + " bytes after its last tensor (corrupt or not safetensors)");
        return f;
    }
}
