package org.tornadoswitch.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.HeatMapChart;
import org.knowm.xchart.HeatMapChartBuilder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** PNG charts from the project's CSV and JSON-lines outputs. */
@Command(name = "chart", mixinStandardHelpOptions = true,
        description = "Draw a PNG: `bars` from a CSV column by a label column, `curves` of a metric from metrics.jsonl files,"
                + " or `expert-load`: a heat map of each Switch block's expert load over training from one metrics.jsonl.")
public final class ChartCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "bars, curves or expert-load")
    String kind;
    @Parameters(index = "1..*", description = "Input files: one CSV for bars, one or more metrics.jsonl for curves, one metrics.jsonl for expert-load.")
    List<Path> inputs;
    @Option(names = "--out", required = true, description = "PNG file to write.")
    Path out;
    @Option(names = "--label", description = "bars: CSV column(s) naming each bar, joined by '/' (default: ${DEFAULT-VALUE}).")
    String label = "backend,device";
    @Option(names = "--value", description = "bars: CSV column to plot; curves: JSON field (default: tokens_per_s / valid_loss).")
    String value;
    @Option(names = "--title", description = "Chart title.")
    String title = "";
    @Option(names = "--names", split = ",", description = "curves: series names, one per file (default: the parent directory names);"
            + " files given the same name are drawn as one series: their mean, with error bars of one standard deviation.")
    List<String> names;
    @Option(names = "--x", description = "curves: JSON field on the x axis, e.g. elapsed_s (default: ${DEFAULT-VALUE}).")
    String x = "step";
    @Option(names = "--y-min", description = "Lower end of the y axis (default: automatic).")
    Double yMin;
    @Option(names = "--y-max", description = "Upper end of the y axis (default: automatic).")
    Double yMax;
    @Option(names = "--bins", description = "expert-load: columns, each the mean over its steps (default: ${DEFAULT-VALUE}).")
    int bins = 40;

    @Override
    public Integer call() throws IOException {
        for (Path p : inputs) if (!Files.isRegularFile(p)) throw new IllegalArgumentException("no such file: " + p);
        switch (kind) {
            case "bars" -> bars();
            case "curves" -> curves();
            case "expert-load" -> expertLoad();
            default -> throw new IllegalArgumentException("chart kind must be bars, curves or expert-load, got '" + kind + "'");
        }
        System.out.println("wrote " + out);
        return 0;
    }

    private void bars() throws IOException {
        String col = value == null ? "tokens_per_s" : value;
        List<String> lines = Files.readAllLines(inputs.get(0));
        List<String> header = List.of(lines.get(0).split(","));
        int vi = header.indexOf(col);
        if (vi < 0) throw new IllegalArgumentException("column " + col + " not in " + header);
        List<Integer> li = new ArrayList<>();
        for (String l : label.split(",")) {
            int i = header.indexOf(l.trim());
            if (i < 0) throw new IllegalArgumentException("column " + l + " not in " + header);
            li.add(i);
        }
        Map<String, Double> bars = new LinkedHashMap<>();
        for (String line : lines.subList(1, lines.size())) {
            if (line.isBlank()) continue;
            String[] f = line.split(",");
            List<String> parts = new ArrayList<>();
            for (int i : li) parts.add(f[i]);
            bars.put(String.join(" / ", parts), Double.parseDouble(f[vi]));
        }
        CategoryChart c = new CategoryChartBuilder().width(900).height(500).title(title).xAxisTitle("").yAxisTitle(col).build();
        c.getStyler().setLegendVisible(false);
        if (yMin != null) c.getStyler().setYAxisMin(yMin);
        if (yMax != null) c.getStyler().setYAxisMax(yMax);
        c.getStyler().setXAxisLabelRotation(0);
        c.getStyler().setAxisTickLabelsFont(new java.awt.Font(java.awt.Font.SANS_SERIF, java.awt.Font.PLAIN, 11));
        c.addSeries(col, new ArrayList<>(bars.keySet()), new ArrayList<>(bars.values()));
        write(c);
    }

    private void curves() throws IOException {
        String field = value == null ? "valid_loss" : value;
        ObjectMapper json = new ObjectMapper();
        XYChart c = new XYChartBuilder().width(900).height(500).title(title).xAxisTitle(x).yAxisTitle(field).build();
        c.getStyler().setDefaultSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Line);
        if (yMin != null) c.getStyler().setYAxisMin(yMin);
        if (yMax != null) c.getStyler().setYAxisMax(yMax);
        // series name -> one (xs, ys) per file, in the order given
        Map<String, List<List<double[]>>> series = new LinkedHashMap<>();
        for (int k = 0; k < inputs.size(); k++) {
            Path p = inputs.get(k);
            List<double[]> points = new ArrayList<>();
            for (String line : Files.readAllLines(p)) {
                if (line.isBlank()) continue;
                JsonNode n = json.readTree(line);
                if (n.has(field) && n.has(x)) points.add(new double[] {n.get(x).asDouble(), n.get(field).asDouble()});
            }
            String name = names != null && k < names.size() ? names.get(k)
                    : (p.toAbsolutePath().getParent() == null ? p.toString() : p.toAbsolutePath().getParent().getFileName().toString());
            if (!points.isEmpty()) series.computeIfAbsent(name, n -> new ArrayList<>()).add(points);
        }
        for (var e : series.entrySet()) {
            int n = e.getValue().size();
            double[][] m = meanAndSd(e.getValue());
            String name = n > 1 ? e.getKey() + " (mean ± sd of " + n + ")" : e.getKey();
            XYSeries s = n > 1 ? c.addSeries(name, m[0], m[1], m[2]) : c.addSeries(name, m[0], m[1]);
            s.setMarker(org.knowm.xchart.style.markers.SeriesMarkers.NONE);
        }
        write(c);
    }

    /**
     * Point i of every run (up to the shortest run): {mean x, mean y, sample standard deviation of y (0 for one run)}.
     */
    static double[][] meanAndSd(List<List<double[]>> runs) {
        int len = runs.stream().mapToInt(List::size).min().orElse(0), n = runs.size();
        double[][] m = new double[3][len];
        for (int i = 0; i < len; i++) {
            double ss = 0;
            for (List<double[]> r : runs) {
                m[0][i] += r.get(i)[0] / n;
                m[1][i] += r.get(i)[1] / n;
            }
            for (List<double[]> r : runs) ss += (r.get(i)[1] - m[1][i]) * (r.get(i)[1] - m[1][i]);
            m[2][i] = n > 1 ? Math.sqrt(ss / (n - 1)) : 0;
        }
        return m;
    }

    /**
     * Heat map: one row per expert of each Switch block ("L3 E1"), one column per bin of steps, the
     * colour the expert's share of its block's assignments (1 / experts when balanced).
     */
    private void expertLoad() throws IOException {
        if (bins < 1) throw new IllegalArgumentException("--bins must be >= 1, got " + bins);
        ObjectMapper json = new ObjectMapper();
        List<Integer> steps = new ArrayList<>();
        List<double[][]> loads = new ArrayList<>(); // per record: [layer][expert] share
        for (String line : Files.readAllLines(inputs.get(0))) {
            if (line.isBlank()) continue;
            JsonNode n = json.readTree(line), layers = n.get("expert_load");
            if (layers == null || !n.has("step")) continue;
            double[][] rec = new double[layers.size()][];
            for (int l = 0; l < layers.size(); l++) {
                JsonNode c = layers.get(l).get("counts");
                double sum = 0;
                for (JsonNode x : c) sum += x.asDouble();
                rec[l] = new double[c.size()];
                for (int e = 0; e < c.size(); e++) rec[l][e] = sum == 0 ? 0 : c.get(e).asDouble() / sum;
            }
            steps.add(n.get("step").asInt());
            loads.add(rec);
        }
        if (loads.isEmpty()) throw new IllegalArgumentException(inputs.get(0) + " has no expert_load records");
        List<String> rows = new ArrayList<>();
        List<int[]> rowIndex = new ArrayList<>(); // {layer, expert}
        double[][] first = loads.get(0);
        for (int l = first.length - 1; l >= 0; l--) // the first block at the top
            if (first[l].length > 1)
                for (int e = first[l].length - 1; e >= 0; e--) {
                    rows.add("L" + l + " E" + e);
                    rowIndex.add(new int[] {l, e});
                }
        if (rows.isEmpty()) throw new IllegalArgumentException(inputs.get(0) + " is of a dense model: no expert load to draw");
        int nb = Math.min(bins, loads.size());
        List<String> cols = new ArrayList<>();
        List<Number[]> heat = new ArrayList<>();
        double max = 0;
        for (int b = 0; b < nb; b++) {
            int lo = (int) ((long) b * loads.size() / nb), hi = (int) ((long) (b + 1) * loads.size() / nb);
            cols.add(String.valueOf(steps.get(hi - 1)));
            for (int r = 0; r < rows.size(); r++) {
                int[] le = rowIndex.get(r);
                double s = 0;
                for (int i = lo; i < hi; i++) s += loads.get(i)[le[0]][le[1]];
                double v = s / (hi - lo);
                max = Math.max(max, v);
                heat.add(new Number[] {b, r, v});
            }
        }
        HeatMapChart c = new HeatMapChartBuilder().width(Math.max(700, 60 + 22 * nb)).height(Math.max(400, 120 + 22 * rows.size()))
                .title(title.isEmpty() ? "expert load: share of each block's assignments (balanced = 1 / experts)" : title)
                .xAxisTitle("step").yAxisTitle("block, expert").build();
        c.getStyler().setMin(0);
        c.getStyler().setMax(Math.ceil(max * 20) / 20); // a round top for the colour scale
        c.getStyler().setXAxisLabelRotation(90);
        c.getStyler().setHeatMapValueDecimalPattern("0.00");
        c.addSeries("load", cols, rows, heat);
        write(c);
    }

    private void write(org.knowm.xchart.internal.chartpart.Chart<?, ?> c) throws IOException {
        Path parent = out.toAbsolutePath().getParent();
        if (parent != null) Files.createDirectories(parent);
        BitmapEncoder.saveBitmap(c, out.toString(), BitmapEncoder.BitmapFormat.PNG);
    }
}
