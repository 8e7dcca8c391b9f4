package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The checkpoint readers on the fixtures of scripts/hf_format_fixtures.py: every layout gives the
 * same floats, fp16/bf16 widen as torch widens them, and every bad file is refused at open with one
 * line naming it.
 */
class HfCheckpointTest {
    static final Path FORMATS = Path.of("src/test/resources/hf/formats");
    static final List<String> F32_LAYOUTS = List.of("single", "sharded", "bin", "bin_dict", "bin_param", "bin_sharded", "bin_zip64");

    static float[] read(TensorSource s, String name) {
        return s.readFloats(name);
    }

    @Test
    void everyLayoutGivesTheSameFloatsAsPythonWrote() throws IOException {
        JsonNode expected = new ObjectMapper().readTree(FORMATS.resolve("expected.json").toFile());
        try (TensorSource ref = HfCheckpoint.open(FORMATS.resolve("single"))) {
            assertEquals(List.of("shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
                    "encoder.block.1.layer.1.mlp.router.classifier.weight", "encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight",
                    "encoder.final_layer_norm.weight", "scalar", "empty", "lm_head.weight", "view.weight", "transposed.weight")
                    .stream().sorted().toList(), ref.names().stream().sorted().toList());
            for (String layout : F32_LAYOUTS) {
                try (TensorSource s = HfCheckpoint.open(FORMATS.resolve(layout))) {
                    assertEquals(ref.names().stream().sorted().toList(), s.names().stream().sorted().toList(), layout);
                    for (String n : ref.names()) {
                        assertArrayEquals(ref.shape(n), s.shape(n), layout + " " + n);
                        assertEquals("F32", s.dtype(n));
                        assertArrayEquals(read(ref, n), read(s, n), layout + " " + n);
                        JsonNode e = expected.get(n);
                        long[] shape = new ObjectMapper().convertValue(e.get("shape"), long[].class);
                        assertArrayEquals(shape, s.shape(n), n);
                        float[] v = read(s, n);
                        double sum = 0;
                        for (float x : v) sum += x;
                        assertEquals(e.get("sum").asDouble(), sum, 1e-5 * (1 + Math.abs(sum)), layout + " " + n);
                        for (int i = 0; i < e.get("first").size(); i++)
                            assertEquals((float) e.get("first").get(i).asDouble(), v[i], layout + " " + n + "[" + i + "]");
                    }
                }
            }
        }
    }

    @Test
    void tensorShapesAndViewsAsStored() {
        try (TensorSource s = HfCheckpoint.open(FORMATS.resolve("bin"))) {
            assertArrayEquals(new long[0], s.shape("scalar"));
            assertArrayEquals(new float[] {3.5f}, s.readFloats("scalar"));
            assertArrayEquals(new long[] {0, 8}, s.shape("empty"));
            assertEquals(0, s.readFloats("empty").length);
            assertArrayEquals(new long[] {5, 3}, s.shape("view.weight"));
            assertArrayEquals(new long[] {4, 3}, s.shape("transposed.weight"));
            assertArrayEquals(s.readFloats("shared.weight"), s.readFloats("lm_head.weight"), "a tied tensor reads like its twin");
            // strided views are not exposed as mapped segments; contiguous F32 tensors are
            assertTrue(s.mappedF32("view.weight").isEmpty());
            assertTrue(s.mappedF32("transposed.weight").isEmpty());
            assertEquals(16 * 8 * 4, s.mappedF32("shared.weight").orElseThrow().byteSize());
            HfFormatException e = assertThrows(HfFormatException.class, () -> s.shape("no.such"));
            assertTrue(e.getMessage().contains("no.such"), e.getMessage());
        }
    }

    @Test
    void readIntoAnOffsetOfALargerArray() {
        try (TensorSource s = HfCheckpoint.open(FORMATS.resolve("single"))) {
            float[] q = s.readFloats("encoder.final_layer_norm.weight");
            float[] dst = new float[20];
            Arrays.fill(dst, -7f);
            s.readFloats("encoder.final_layer_norm.weight", dst, 5);
            for (int i = 0; i < 20; i++) assertEquals(i >= 5 && i < 13 ? q[i - 5] : -7f, dst[i], "at " + i);
            assertThrows(IllegalArgumentException.class, () -> s.readFloats("encoder.final_layer_norm.weight", new float[10], 3));
            var seg = s.mappedF32("encoder.final_layer_norm.weight").orElseThrow();
            assertEquals(q[2], seg.get(MappedTensors.F32_LE, 8));
        }
    }

    @Test
    void halfAndBfloat16WidenExactlyAsTorchDoes() {
        for (String dt : List.of("f16", "bf16")) {
            Path d = FORMATS.resolve(dt);
            try (TensorSource exp = HfCheckpoint.openFile(d.resolve("expected_f32.safetensors"));
                 TensorSource st = HfCheckpoint.openFile(d.resolve("model.safetensors"));
                 TensorSource bin = HfCheckpoint.openFile(d.resolve("pytorch_model.bin"))) {
                String want = dt.equals("f16") ? "F16" : "BF16";
                for (String n : exp.names()) {
                    assertEquals(want, st.dtype(n), n);
                    assertEquals(want, bin.dtype(n), n);
                    assertArrayEquals(exp.readFloats(n), st.readFloats(n), dt + " safetensors " + n);
                    assertArrayEquals(exp.readFloats(n), bin.readFloats(n), dt + " bin " + n);
                    assertTrue(st.mappedF32(n).isEmpty());
                }
            }
        }
    }

    static HfFormatException refused(Path p) {
        HfFormatException e = assertThrows(HfFormatException.class, () -> HfCheckpoint.open(p).close(), p.toString());
        assertFalse(e.getMessage().contains("\n"), "one line: " + e.getMessage());
        return e;
    }

    static void refused(Path p, String... words) {
        HfFormatException e = refused(p);
        for (String w : words) assertTrue(e.getMessage().contains(w), "'" + w + "' in: " + e.getMessage());
    }

    @Test
    void picklesThatAreNotStateDictsAreRefused() {
        Path bad = FORMATS.resolve("bad");
        refused(bad.resolve("os_system.bin"), "os_system.bin", "global posix.system");
        refused(bad.resolve("eval.bin"), "eval.bin", "global __builtin__.eval");
        refused(bad.resolve("object.bin"), "object.bin", "__main__.UserObject");
        refused(bad.resolve("list.bin"), "list.bin", "not a state dict", "a list");
        refused(bad.resolve("dict_of_ints.bin"), "not a state dict", "value of a is an int");
        refused(bad.resolve("nested.bin"), "not a state dict", "value of model is a dict");
        refused(bad.resolve("legacy.bin"), "legacy.bin", "legacy");
    }

    @Test
    void unsupportedDtypesAreRefused() {
        Path bad = FORMATS.resolve("bad");
        refused(bad.resolve("int64.bin"), "int64.bin", "tensor x", "unsupported dtype LongStorage");
        refused(bad.resolve("int64.safetensors"), "int64.safetensors", "tensor x", "unsupported dtype I64");
        refused(bad.resolve("f64.safetensors"), "unsupported dtype F64");
    }

    static Path copy(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        try (var st = Files.list(from)) {
            for (Path p : st.toList()) Files.copy(p, to.resolve(p.getFileName()));
        }
        return to;
    }

    static void truncate(Path f, long size) throws IOException {
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "rw")) {
            r.setLength(size);
        }
    }

    @Test
    void missingAndTruncatedFilesAreRefusedAtOpen(@TempDir Path tmp) throws IOException {
        refused(tmp.resolve("nowhere"), "nowhere", "does not exist");
        Files.createDirectories(tmp.resolve("empty"));
        refused(tmp.resolve("empty"), "has no checkpoint");

        Path st = copy(FORMATS.resolve("single"), tmp.resolve("st"));
        long size = Files.size(st.resolve("model.safetensors"));
        truncate(st.resolve("model.safetensors"), size - 1);
        refused(st, "model.safetensors", "truncated");
        truncate(st.resolve("model.safetensors"), 100);
        refused(st, "model.safetensors", "truncated");
        truncate(st.resolve("model.safetensors"), 3);
        refused(st, "model.safetensors", "truncated");

        Path bin = copy(FORMATS.resolve("bin"), tmp.resolve("bin"));
        truncate(bin.resolve("pytorch_model.bin"), Files.size(bin.resolve("pytorch_model.bin")) / 2);
        refused(bin, "pytorch_model.bin", "truncated");

        Path sh = copy(FORMATS.resolve("sharded"), tmp.resolve("sh"));
        Files.delete(sh.resolve("model-00002-of-00002.safetensors"));
        refused(sh, "shard model-00002-of-00002.safetensors", "missing");
        Path shb = copy(FORMATS.resolve("bin_sharded"), tmp.resolve("shb"));
        truncate(shb.resolve("pytorch_model-00001-of-00002.bin"), 200);
        refused(shb, "pytorch_model-00001-of-00002.bin", "truncated");
    }

    /** A copy of bin/pytorch_model.bin without the entries ending in {@code drop}, every entry stored or deflated. */
    static Path rezip(Path tmp, String name, String drop, boolean deflate) throws IOException {
        Path d = tmp.resolve(name);
        Files.createDirectories(d);
        try (java.util.zip.ZipFile in = new java.util.zip.ZipFile(FORMATS.resolve("bin/pytorch_model.bin").toFile());
             java.util.zip.ZipOutputStream out = new java.util.zip.ZipOutputStream(Files.newOutputStream(d.resolve("pytorch_model.bin")))) {
            for (var e : java.util.Collections.list(in.entries())) {
                if (drop != null && e.getName().endsWith(drop)) continue;
                byte[] data = in.getInputStream(e).readAllBytes();
                java.util.zip.ZipEntry n = new java.util.zip.ZipEntry(e.getName());
                if (deflate) {
                    n.setMethod(java.util.zip.ZipEntry.DEFLATED);
                } else {
                    java.util.zip.CRC32 crc = new java.util.zip.CRC32();
                    crc.update(data);
                    n.setMethod(java.util.zip.ZipEntry.STORED);
                    n.setSize(data.length);
                    n.setCrc(crc.getValue());
                }
                out.putNextEntry(n);
                out.write(data);
                out.closeEntry();
            }
        }
        return d;
    }

    @Test
    void binArchivesThatTorchWouldNotWriteAreRefused(@TempDir Path tmp) throws IOException {
        try (TensorSource s = HfCheckpoint.open(rezip(tmp, "same", null, false));
             TensorSource ref = HfCheckpoint.open(FORMATS.resolve("bin"))) {
            for (String n : ref.names()) assertArrayEquals(ref.readFloats(n), s.readFloats(n), n);
        }
        refused(rezip(tmp, "nodata", "/data/1", false), "lacks data/1", "storage of tensor");
        refused(rezip(tmp, "nopkl", "data.pkl", false), "without PREFIX/data.pkl");
        refused(rezip(tmp, "deflated", null, true), "compressed");
        Path big = rezip(tmp, "bigendian", "byteorder", false);
        try (java.nio.file.FileSystem z = java.nio.file.FileSystems.newFileSystem(big.resolve("pytorch_model.bin"))) {
            Path root = Files.list(z.getPath("/")).findFirst().orElseThrow();
            Files.writeString(root.resolve("byteorder"), "big");
        }
        refused(big, "big-endian");
    }

    /** The header of a copy of single/model.safetensors rewritten by {@code edit}, lengths kept consistent. */
    static Path withHeader(Path tmp, String name, java.util.function.UnaryOperator<String> edit) throws IOException {
        byte[] all = Files.readAllBytes(FORMATS.resolve("single/model.safetensors"));
        long n = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String h = new String(all, 8, (int) n, StandardCharsets.UTF_8);
        byte[] nh = edit.apply(h).getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate(8 + nh.length + all.length - 8 - (int) n).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(nh.length).put(nh).put(all, 8 + (int) n, all.length - 8 - (int) n);
        Path d = tmp.resolve(name);
        Files.createDirectories(d);
        Files.write(d.resolve("model.safetensors"), out.array());
        return d;
    }

    @Test
    void corruptHeadersAreRefused(@TempDir Path tmp) throws IOException {
        refused(withHeader(tmp, "notjson", h -> "{\"a\": [1, 2" + " ".repeat(h.length() - 11)), "model.safetensors", "not valid JSON");
        refused(withHeader(tmp, "array", h -> "[" + h.substring(1, h.length() - 1) + "]"), "does not start with '{'");
        refused(withHeader(tmp, "shape", h -> h.replace("\"shared.weight\":{\"dtype\":\"F32\",\"shape\":[16,8]",
                "\"shared.weight\":{\"dtype\":\"F32\",\"shape\":[16,9]")), "tensor shared.weight", "needs");
        refused(withHeader(tmp, "dup", h -> h.replaceFirst("\\{", "{\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},")),
                "not valid JSON", "scalar");
        refused(withHeader(tmp, "dtype", h -> h.replaceFirst("\"F32\"", "\"Q7\"")), "unknown dtype Q7");
        refused(withHeader(tmp, "offsets", h -> h.replaceFirst("\"data_offsets\":\\[", "\"data_offsets\":[\"x\",")), "no valid data_offsets");
        // a header length beyond the file
        Path d = copy(FORMATS.resolve("single"), tmp.resolve("hl"));
        byte[] all = Files.readAllBytes(d.resolve("model.safetensors"));
        ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 1L << 40);
        Files.write(d.resolve("model.safetensors"), all);
        refused(d, "not a safetensors file");
        ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN).putLong(0, all.length);
        Files.write(d.resolve("model.safetensors"), all);
        refused(d, "truncated");
    }

    @Test
    void badShardIndexesAreRefused(@TempDir Path tmp) throws IOException {
        Path d = copy(FORMATS.resolve("sharded"), tmp.resolve("a"));
        Path idx = d.resolve("model.safetensors.index.json");
        String text = Files.readString(idx);
        Files.writeString(idx, text.replace("\"model-00002-of-00002.safetensors\"", "\"../model-00002-of-00002.safetensors\""));
        refused(d, "not a plain file name");
        Files.writeString(idx, text.replaceFirst("\"model-00002-of-00002.safetensors\"", "\"model-00001-of-00002.safetensors\""));
        refused(d, "lacks it");
        Files.writeString(idx, "{\"weight_map\": 3}");
        refused(d, "no weight_map");
        Files.writeString(idx, "{\"weight_map\": ");
        refused(d, "model.safetensors.index.json", "not valid JSON");
    }

    @Test
    void filesLargerThan2GiBAreMapped(@TempDir Path tmp) throws IOException {
        // a sparse file: one 2.4 GB tensor of zeros that takes no disk, then a small tensor after 2^31
        long big = 600_000_000L;
        String h = "{\"big\":{\"dtype\":\"F32\",\"shape\":[" + big + "],\"data_offsets\":[0," + 4 * big + "]},"
                + "\"tail\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[" + 4 * big + "," + (4 * big + 12) + "]}}";
        byte[] hb = h.getBytes(StandardCharsets.UTF_8);
        Path f = tmp.resolve("model.safetensors");
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "rw")) {
            ByteBuffer head = ByteBuffer.allocate(8 + hb.length).order(ByteOrder.LITTLE_ENDIAN);
            head.putLong(hb.length).put(hb);
            r.write(head.array());
            r.setLength(8 + hb.length + 4 * big + 12);
            r.seek(8 + hb.length + 4 * big);
            ByteBuffer tail = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putFloat(1.5f).putFloat(-2f).putFloat(7.25f);
            r.write(tail.array());
        }
        try (TensorSource s = HfCheckpoint.open(tmp)) {
            assertArrayEquals(new float[] {1.5f, -2f, 7.25f}, s.readFloats("tail"));
            assertEquals(4 * big, s.mappedF32("big").orElseThrow().byteSize());
            assertEquals(big, s.numel("big"));
            // the last elements of the big tensor lie beyond 2 GiB too
            assertEquals(0f, s.mappedF32("big").orElseThrow().get(MappedTensors.F32_LE, 4 * (big - 1)));
        }
    }
}
