package org.tornadoswitch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import javax.imageio.ImageIO;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Runs {@code scripts/experiments --quick} (a tiny model, all three experiments) into a temporary
 * directory and checks that it writes well-formed outputs: the CSVs with their columns and one row
 * per run, the JSON lines, the curves, valid PNGs and the report. It checks the form, not the numbers.
 */
class ExperimentScriptsTest {
    static final List<String> COLUMNS = List.of("date", "machine", "rev", "mode", "experiment", "run", "model", "experts",
            "capacity_factor", "seed", "steps", "tokens_per_step", "parameters", "active_parameters", "valid_loss",
            "valid_accuracy", "train_loss", "dropped", "dropped_last", "max_load_last", "step_ms", "tokens_per_s", "train_s",
            "wall_s", "flags");
    static final List<String> NUMERIC = List.of("experts", "capacity_factor", "seed", "steps", "tokens_per_step", "parameters",
            "active_parameters", "valid_loss", "valid_accuracy", "train_loss", "dropped", "dropped_last", "max_load_last",
            "step_ms", "tokens_per_s", "train_s", "wall_s");
    static final byte[] PNG_SIGNATURE = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

    private static boolean bashAvailable() {
        try {
            Process p = new ProcessBuilder("bash", "-c", "exit 0").redirectErrorStream(true).start();
            return p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    @Test
    void quickModeWritesWellFormedTablesChartsAndReport(@TempDir Path dir) throws Exception {
        Assumptions.assumeTrue(bashAvailable(), "bash not found: the experiment scripts cannot run here (skipped)");
        Path root = Path.of("").toAbsolutePath();
        Path readme = root.resolve("results/README.md");
        byte[] committed = Files.isRegularFile(readme) ? Files.readAllBytes(readme) : null;
        Path out = dir.resolve("out"), log = dir.resolve("experiments.log");
        ProcessBuilder pb = new ProcessBuilder("bash", root.resolve("scripts/experiments").toString(), "--quick", "--out-dir", out.toString())
                .directory(root.toFile()).redirectErrorStream(true).redirectOutput(log.toFile());
        // run the classes Maven compiled (the jar is only packaged after the tests), and never build from here
        pb.environment().put("TS_CLASSPATH", System.getProperty("java.class.path"));
        pb.environment().put("DATA", TestData.tinyShakespeare().toAbsolutePath().toString());
        Process p = pb.start();
        if (!p.waitFor(5, TimeUnit.MINUTES)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            fail("scripts/experiments --quick took over 5 minutes:\n" + tail(log));
        }
        assertEquals(0, p.exitValue(), "scripts/experiments --quick failed:\n" + tail(log));

        Map<String, Integer> expectedRows = new LinkedHashMap<>();
        expectedRows.put("switch-vs-dense", 4); // dense and 4 experts, seeds 1 and 2
        expectedRows.put("experts", 7);         // 1, 2, 4, ..., 64
        expectedRows.put("capacity", 4);        // 1.0, 1.25, 1.5, 2.0
        for (var e : expectedRows.entrySet()) {
            List<Map<String, String>> rows = readCsv(out.resolve(e.getKey() + ".csv"));
            assertEquals(e.getValue(), rows.size(), e.getKey() + ".csv rows");
            for (Map<String, String> r : rows) {
                assertEquals(e.getKey(), r.get("experiment"));
                assertEquals("quick", r.get("mode"));
                Instant.parse(r.get("date"));
                assertFalse(r.get("machine").isBlank(), "machine");
                assertTrue(r.get("machine").contains("cores"), r.get("machine"));
                assertFalse(r.get("rev").isBlank(), "rev");
                for (String c : NUMERIC) {
                    double v = Double.parseDouble(r.get(c));
                    assertTrue(Double.isFinite(v) && v >= 0, c + " = " + v);
                }
                assertTrue(Double.parseDouble(r.get("valid_loss")) > 0, "valid_loss");
                assertTrue(Double.parseDouble(r.get("dropped")) <= 1, "dropped is a fraction");
                assertTrue(Files.isRegularFile(out.resolve("curves/" + e.getKey() + "/" + r.get("run") + ".jsonl")), "curve of " + r.get("run"));
                assertCurve(out.resolve("curves/" + e.getKey() + "/" + r.get("run") + ".jsonl"), Integer.parseInt(r.get("steps")));
            }
            List<String> jsonl = Files.readAllLines(out.resolve(e.getKey() + ".jsonl"));
            assertEquals(rows.size(), jsonl.size(), e.getKey() + ".jsonl lines");
            for (String line : jsonl) assertTrue(new ObjectMapper().readTree(line).has("valid_loss"), line);
        }
        List<Map<String, String>> sd = readCsv(out.resolve("switch-vs-dense.csv"));
        assertEquals(Set.of("dense", "switch-4"), models(sd));
        assertEquals(Set.of("1", "2"), column(sd, "seed"));
        assertEquals(Set.of("1", "2", "4", "8", "16", "32", "64"), column(readCsv(out.resolve("experts.csv")), "experts"));
        assertEquals(Set.of("1.0", "1.25", "1.5", "2.0"), column(readCsv(out.resolve("capacity.csv")), "capacity_factor"));
        // the dense and Switch models of a seed have (nearly) the same active parameters: equal compute per token
        for (Map<String, String> r : sd) {
            long active = Long.parseLong(r.get("active_parameters")), all = Long.parseLong(r.get("parameters"));
            assertTrue(r.get("model").equals("dense") ? active == all : active < all, r.toString());
        }

        String report = Files.readString(out.resolve("README.md"));
        for (String s : List.of("Quick mode", "### 1. Switch against dense", "### 2. Number of experts", "### 3. Capacity factor",
                "| model | parameters |", "| experts | parameters |", "| capacity factor |", "### Closing note"))
            assertTrue(report.contains(s), "report lacks '" + s + "'");
        List<String> pngs = List.of("switch-vs-dense-steps", "switch-vs-dense-time", "experts-loss", "experts-step-time",
                "experts-curves", "experts-dropped", "capacity-loss", "capacity-tokens", "capacity-dropped");
        for (String name : pngs) {
            Path png = out.resolve(name + ".png");
            assertTrue(Files.isRegularFile(png), name + ".png missing");
            assertArrayEquals(PNG_SIGNATURE, Arrays.copyOf(Files.readAllBytes(png), 8), name + ".png is not a PNG");
            BufferedImage img = ImageIO.read(png.toFile());
            assertNotNull(img, name + ".png does not decode");
            assertTrue(img.getWidth() >= 400 && img.getHeight() >= 300, name + ".png size");
            assertTrue(report.contains("](" + name + ".png)"), "report does not show " + name + ".png");
        }
        // a run with --out-dir leaves the committed results alone
        if (committed != null) assertArrayEquals(committed, Files.readAllBytes(readme), "results/README.md was rewritten");
    }

    private static void assertCurve(Path curve, int steps) throws IOException {
        ObjectMapper json = new ObjectMapper();
        int last = 0, evals = 0;
        for (String line : Files.readAllLines(curve)) {
            JsonNode n = json.readTree(line);
            for (String f : List.of("step", "train_s", "elapsed_s", "loss", "dropped", "max_load")) assertTrue(n.has(f), curve + ": " + f);
            assertTrue(n.get("step").asInt() > last, curve + ": steps increase");
            last = n.get("step").asInt();
            if (n.has("valid_loss")) evals++;
        }
        assertEquals(steps, last, curve + ": ends at the last step");
        assertTrue(evals >= 2, curve + ": evaluation points");
    }

    private static Set<String> models(List<Map<String, String>> rows) {
        return column(rows, "model");
    }

    private static Set<String> column(List<Map<String, String>> rows, String c) {
        Set<String> s = new TreeSet<>();
        for (Map<String, String> r : rows) s.add(r.get(c));
        return s;
    }

    private static List<Map<String, String>> readCsv(Path csv) throws IOException {
        assertTrue(Files.isRegularFile(csv), csv + " missing");
        List<String> lines = Files.readAllLines(csv);
        assertEquals(COLUMNS, List.of(lines.get(0).split(",", -1)), csv.getFileName() + " header");
        List<Map<String, String>> rows = new ArrayList<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split(",", -1);
            assertEquals(COLUMNS.size(), f.length, csv.getFileName() + ": " + line);
            Map<String, String> r = new LinkedHashMap<>();
            for (int i = 0; i < f.length; i++) r.put(COLUMNS.get(i), f[i]);
            rows.add(r);
        }
        return rows;
    }

    private static String tail(Path log) throws IOException {
        if (!Files.exists(log)) return "(no output)";
        List<String> lines = Files.readAllLines(log);
        return String.join("\n", lines.subList(Math.max(0, lines.size() - 40), lines.size()));
    }
}
