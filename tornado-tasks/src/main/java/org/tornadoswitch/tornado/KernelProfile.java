package org.tornadoswitch.tornado;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.MappingIterator;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.tornadoswitch.backend.DeviceCounters;

/**
 * Per-kernel device times from TornadoVM's profiler. With the plan's profiler on (SILENT mode) every
 * execution of a graph appends a JSON object to that graph's log: per task "graph.task" its
 * TASK_KERNEL_TIME in nanoseconds, measured by the driver's events. A graph's log only grows, and an
 * execution result gives the log of the graph it ran, so the backend keeps each graph's latest log
 * and a profile is the difference of two readings of them.
 */
final class KernelProfile {
    private KernelProfile() {}

    private static final ObjectMapper JSON = new ObjectMapper();

    /** "graph.task" -> {launches, device nanoseconds} over every execution in the given graph logs. */
    static Map<String, long[]> taskTimes(java.util.Collection<String> logs) {
        Map<String, long[]> out = new HashMap<>();
        for (String log : logs) if (log != null && !log.isBlank()) add(log, out);
        return out;
    }

    private static void add(String log, Map<String, long[]> out) {
        try (MappingIterator<JsonNode> it = JSON.readerFor(JsonNode.class).readValues(log)) {
            while (it.hasNext()) {
                JsonNode o = it.next();
                for (Iterator<Map.Entry<String, JsonNode>> gi = o.fields(); gi.hasNext(); ) {
                    JsonNode graph = gi.next().getValue();
                    for (Iterator<Map.Entry<String, JsonNode>> ti = graph.fields(); ti.hasNext(); ) {
                        Map.Entry<String, JsonNode> t = ti.next();
                        JsonNode kt = t.getValue().get("TASK_KERNEL_TIME");
                        if (kt == null) continue;
                        long[] acc = out.computeIfAbsent(t.getKey(), k -> new long[2]);
                        acc[0]++;
                        acc[1] += Long.parseLong(kt.asText().trim());
                    }
                }
            }
        } catch (IOException | RuntimeException ex) {
            throw new IllegalStateException("cannot read TornadoVM's profile log: " + ex.getMessage(), ex);
        }
    }

    /** Per kernel kind, what was logged between the two readings, slowest first. */
    static List<DeviceCounters.KernelTime> aggregate(Map<String, long[]> now, Map<String, long[]> before,
                                                    Map<String, PlanBuilder.TaskInfo> tasks) {
        Map<String, double[]> kinds = new HashMap<>();
        for (Map.Entry<String, long[]> en : now.entrySet()) {
            long[] b0 = before.getOrDefault(en.getKey(), new long[2]);
            long launches = en.getValue()[0] - b0[0], ns = en.getValue()[1] - b0[1];
            if (launches <= 0) continue;
            PlanBuilder.TaskInfo info = tasks.get(en.getKey());
            String kind = info == null ? en.getKey() : info.kind();
            double[] acc = kinds.computeIfAbsent(kind, k -> new double[4]);
            acc[0] += launches;
            acc[1] += ns;
            if (info != null) {
                acc[2] += launches * info.flops();
                acc[3] += launches * info.bytes();
            }
        }
        List<DeviceCounters.KernelTime> out = new ArrayList<>();
        for (Map.Entry<String, double[]> en : kinds.entrySet()) {
            double[] a = en.getValue();
            out.add(new DeviceCounters.KernelTime(en.getKey(), (long) a[0], (long) a[1], a[2], a[3]));
        }
        out.sort(Comparator.comparingLong(DeviceCounters.KernelTime::deviceNanos).reversed());
        return out;
    }
}
