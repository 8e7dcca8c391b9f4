package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Function;

/**
 * A sharded checkpoint: an index ({@code model.safetensors.index.json} or
 * {@code pytorch_model.bin.index.json}) whose {@code weight_map} names the shard of every tensor,
 * and the shards beside it. The index and the shards must agree exactly.
 */
final class ShardedTensors implements TensorSource {
    private final List<TensorSource> shards = new ArrayList<>();
    private final Map<String, TensorSource> where = new LinkedHashMap<>();
    private final Path index;

    private ShardedTensors(Path index) {
        this.index = index;
    }

    static ShardedTensors open(Path index, Function<Path, TensorSource> opener) {
        JsonNode root = Json.read(index);
        JsonNode wm = root.get("weight_map");
        if (wm == null || !wm.isObject()) throw new HfFormatException(index + " has no weight_map object");
        Map<String, List<String>> byShard = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = wm.fields(); it.hasNext(); ) {
            var kv = it.next();
            if (!kv.getValue().isTextual()) throw new HfFormatException(index + ": weight_map entry " + kv.getKey() + " is not a file name");
            String shard = kv.getValue().asText();
            Path p = Path.of(shard);
            if (shard.isEmpty() || p.isAbsolute() || p.getNameCount() != 1 || shard.equals("..") || shard.equals("."))
                throw new HfFormatException(index + ": shard name " + shard + " is not a plain file name beside the index");
            byShard.computeIfAbsent(shard, k -> new ArrayList<>()).add(kv.getKey());
        }
        if (byShard.isEmpty()) throw new HfFormatException(index + " has an empty weight_map");
        Path dir = index.toAbsolutePath().getParent();
        for (String shard : byShard.keySet()) {
            Path p = dir.resolve(shard);
            if (!Files.isRegularFile(p)) throw new HfFormatException("shard " + shard + " named by " + index + " is missing");
        }
        ShardedTensors s = new ShardedTensors(index);
        try {
            for (var e : byShard.entrySet()) {
                Path p = dir.resolve(e.getKey());
                TensorSource t = opener.apply(p);
                s.shards.add(t);
                for (String name : e.getValue())
                    if (!t.has(name)) throw new HfFormatException(index + " puts tensor " + name + " in " + p + ", which lacks it");
                for (String name : t.names()) {
                    if (!wm.has(name))
                        throw new HfFormatException(p + " holds tensor " + name + ", which " + index + " does not list");
                    if (!wm.get(name).asText().equals(e.getKey()))
                        throw new HfFormatException(p + " holds tensor " + name + ", which " + index + " puts in "
                                + wm.get(name).asText());
                }
            }
            // file order: shards in the order the index first names them, each shard in its own order
            for (TensorSource t : s.shards)
                for (String name : t.names()) s.where.put(name, t);
            return s;
        } catch (RuntimeException e) {
            s.close();
            throw e;
        }
    }

    private TensorSource src(String name) {
        TensorSource t = where.get(name);
        if (t == null) throw new HfFormatException(index + " has no tensor " + name);
        return t;
    }

    @Override
    public List<String> names() {
        return Collections.unmodifiableList(new ArrayList<>(where.keySet()));
    }

    @Override
    public boolean has(String name) {
        return where.containsKey(name);
    }

    @Override
    public long[] shape(String name) {
        return src(name).shape(name);
    }

    @Override
    public String dtype(String name) {
        return src(name).dtype(name);
    }

    @Override
    public long numel(String name) {
        return src(name).numel(name);
    }

    @Override
    public void readFloats(String name, float[] dst, int off) {
        src(name).readFloats(name, dst, off);
    }

    @Override
    public Optional<MemorySegment> mappedF32(String name) {
        return src(name).mappedF32(name);
    }

    @Override
    public void close() {
        for (TensorSource t : shards) t.close();
    }
}
