package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A minimal F32-only safetensors reader for the tests (the fixtures' expected parameters), kept
 * independent of the production loader so that the two check each other.
 */
final class TestSafetensors implements TensorSource {
    private record Entry(long[] shape, long begin, long end) {}

    private final ByteBuffer data;
    private final Map<String, Entry> entries = new LinkedHashMap<>();

    TestSafetensors(Path file) {
        try {
            byte[] all = Files.readAllBytes(file);
            ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
            int n = (int) b.getLong(0);
            JsonNode header = new ObjectMapper().readTree(new String(all, 8, n, java.nio.charset.StandardCharsets.UTF_8));
            for (Iterator<Map.Entry<String, JsonNode>> it = header.fields(); it.hasNext(); ) {
                var e = it.next();
                if (e.getKey().equals("__metadata__")) continue;
                if (!e.getValue().get("dtype").asText().equals("F32")) throw new IllegalArgumentException("F32 only: " + e.getKey());
                JsonNode s = e.getValue().get("shape");
                long[] shape = new long[s.size()];
                for (int i = 0; i < shape.length; i++) shape[i] = s.get(i).asLong();
                JsonNode off = e.getValue().get("data_offsets");
                entries.put(e.getKey(), new Entry(shape, 8 + n + off.get(0).asLong(), 8 + n + off.get(1).asLong()));
            }
            data = b;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public List<String> names() {
        return new ArrayList<>(entries.keySet());
    }

    @Override
    public boolean has(String name) {
        return entries.containsKey(name);
    }

    @Override
    public long[] shape(String name) {
        Entry e = entries.get(name);
        if (e == null) throw new HfFormatException("no tensor " + name);
        return e.shape.clone();
    }

    @Override
    public String dtype(String name) {
        return "F32";
    }

    @Override
    public void readFloats(String name, float[] dst, int off) {
        Entry e = entries.get(name);
        int n = (int) ((e.end - e.begin) / 4);
        for (int i = 0; i < n; i++) dst[off + i] = data.getFloat((int) e.begin + 4 * i);
    }

    @Override
    public void close() {}
}
