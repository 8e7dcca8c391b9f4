package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tornadoswitch.hf.SafeTensorsWriter.NamedTensor;

/** SafeTensorsWriter -> reader round trip; the header as the safetensors library writes it; atomic replacement. */
class SafeTensorsWriterTest {
    @Test
    void roundTripKeepsNamesOrderShapesAndBits(@TempDir Path dir) throws IOException {
        float[] big = new float[3_000_000]; // more than one write chunk
        for (int i = 0; i < big.length; i++) big[i] = (float) Math.sin(i) * (i % 7 == 0 ? 1e-30f : 1f);
        big[5] = Float.NaN;
        big[6] = Float.NEGATIVE_INFINITY;
        big[7] = -0f;
        float[] packed = {9, 9, 1, 2, 3, 4, 5, 6, 9};
        List<NamedTensor> ts = List.of(
                new NamedTensor("encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight", new long[] {1000, 3000}, big, 0),
                new NamedTensor("b.slice", new long[] {2, 3}, packed, 2),
                new NamedTensor("scalar", new long[0], new float[] {42f}),
                new NamedTensor("empty", new long[] {0, 4}, new float[0]));
        Path f = dir.resolve("model.safetensors");
        SafeTensorsWriter.write(f, ts, Map.of("format", "pt"));
        try (TensorSource s = HfCheckpoint.open(dir)) {
            assertEquals(List.of("encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight", "b.slice", "scalar", "empty"), s.names());
            float[] back = s.readFloats("encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight");
            for (int i = 0; i < big.length; i++)
                assertEquals(Float.floatToRawIntBits(big[i]), Float.floatToRawIntBits(back[i]), "at " + i);
            assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, s.readFloats("b.slice"));
            assertArrayEquals(new long[] {2, 3}, s.shape("b.slice"));
            assertArrayEquals(new float[] {42f}, s.readFloats("scalar"));
            assertArrayEquals(new long[] {0, 4}, s.shape("empty"));
        }
        try (SafeTensorsFile sf = SafeTensorsFile.open(f)) {
            assertEquals(Map.of("format", "pt"), sf.metadata());
        }
        byte[] all = Files.readAllBytes(f);
        long hl = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, hl % 8, "header padded to 8 bytes");
        JsonNode h = Json.MAPPER.readTree(new String(all, 8, (int) hl, StandardCharsets.UTF_8));
        assertEquals("pt", h.get("__metadata__").get("format").asText());
        assertEquals("[12000000,12000024]", h.get("b.slice").get("data_offsets").toString());
        try (var st = Files.list(dir)) {
            assertEquals(List.of(f), st.toList(), "no temporary file left");
        }
    }

    @Test
    void replacesAnExistingFileAndRefusesBadTensorsWithoutWriting(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("model.safetensors");
        SafeTensorsWriter.write(f, List.of(new NamedTensor("a", new long[] {2}, new float[] {1, 2})), Map.of());
        SafeTensorsWriter.write(f, List.of(new NamedTensor("a", new long[] {3}, new float[] {4, 5, 6})), Map.of());
        try (TensorSource s = HfCheckpoint.open(f)) {
            assertArrayEquals(new float[] {4, 5, 6}, s.readFloats("a"));
        }
        byte[] before = Files.readAllBytes(f);
        for (List<NamedTensor> bad : List.of(
                List.of(new NamedTensor("a", new long[] {4}, new float[] {1, 2, 3})),
                List.of(new NamedTensor("a", new long[] {1}, new float[] {1}), new NamedTensor("a", new long[] {1}, new float[] {1})),
                List.of(new NamedTensor("__metadata__", new long[] {1}, new float[] {1})),
                List.of(new NamedTensor("n", new long[] {-1}, new float[] {1})))) {
            assertThrows(IllegalArgumentException.class, () -> SafeTensorsWriter.write(f, bad, Map.of()));
            assertArrayEquals(before, Files.readAllBytes(f), "the old file is untouched");
        }
        try (var st = Files.list(dir)) {
            assertEquals(1, st.count());
        }
    }
}
