package org.tornadoswitch.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import org.tornadoswitch.model.SwitchModel;

/** Training metrics as JSON lines, one object per step (evaluation fields on evaluation steps). */
public final class MetricsWriter implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final BufferedWriter out;

    public MetricsWriter(Path file, boolean append) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) Files.createDirectories(parent);
        out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                append ? StandardOpenOption.APPEND : StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
    }

    public static ObjectNode stepRecord(int step, SwitchModel.Stats s, double tokensPerS, double elapsedS) {
        ObjectNode o = JSON.createObjectNode();
        o.put("step", step);
        o.put("loss", s.loss);
        o.put("lb_loss", s.lbLoss);
        if (!Double.isNaN(s.zLoss)) o.put("z_loss", s.zLoss);
        o.put("accuracy", s.accuracy);
        o.put("dropped", s.routed == 0 ? 0 : (double) s.dropped / s.routed);
        o.put("lr", s.lr);
        o.put("grad_norm", s.gradNorm);
        o.put("tokens_per_s", tokensPerS);
        o.put("elapsed_s", elapsedS);
        ArrayNode load = o.putArray("expert_load");
        for (int l = 0; l < s.counts.length; l++) {
            ObjectNode layer = load.addObject();
            ArrayNode counts = layer.putArray("counts"), prob = layer.putArray("mean_prob");
            ArrayNode share = layer.putArray("load"), dropped = layer.putArray("dropped");
            long assignments = (long) s.tokens * s.topK[l], droppedAll = 0;
            for (int e = 0; e < s.counts[l].length; e++) {
                counts.add(s.counts[l][e]);
                prob.add(s.meanProb[l][e]);
                share.add(assignments == 0 ? 0 : (double) s.counts[l][e] / assignments);
                dropped.add(s.counts[l][e] == 0 ? 0 : (double) s.droppedOf[l][e] / s.counts[l][e]);
                droppedAll += s.droppedOf[l][e];
            }
            layer.put("dropped_total", assignments == 0 ? 0 : (double) droppedAll / assignments);
            if (!Double.isNaN(s.zLossOf[l])) layer.put("z_loss", s.zLossOf[l]);
            if (!Double.isNaN(s.entropyOf[l])) layer.put("entropy", s.entropyOf[l]);
        }
        return o;
    }

    public void write(ObjectNode record) {
        try {
            out.write(JSON.writeValueAsString(record));
            out.newLine();
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public void close() throws IOException {
        out.close();
    }
}
