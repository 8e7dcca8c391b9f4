package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Times loading a checkpoint into per-tensor fp32 arrays, as the model does: open (map + header
 * checks), then readFloats of every tensor straight from the mapping into its array. Prints one
 * JSON line: seconds (wall, and the process's CPU time including JVM start), parameters, GB/s, and this process's resident memory split into anonymous
 * pages (the arrays: one copy) and file pages (the mapping, shared with the page cache).
 *
 * <pre>java [-Dthreads=N] -cp target/tornado-switch.jar org.tornadoswitch.hf.HfLoadBench DIR_OR_FILE [LABEL]</pre>
 * (scripts/bench-hf-load runs it cold and warm on a switch-base-8-shaped checkpoint.)
 */
public final class HfLoadBench {
    private HfLoadBench() {}

    public static void main(String[] args) throws IOException {
        if (args.length < 1) {
            System.err.println("usage: HfLoadBench DIR_OR_FILE [LABEL]");
            System.exit(2);
        }
        Path p = Path.of(args[0]);
        int threads = Integer.getInteger("threads", 1);
        long t0 = System.nanoTime();
        List<float[]> keep = new ArrayList<>();
        long params = 0, bytes = 0;
        double checksum = 0;
        double openS;
        try (TensorSource s = HfCheckpoint.open(p)) {
            openS = (System.nanoTime() - t0) / 1e9;
            List<String> names = s.names();
            float[][] arrays = new float[names.size()][];
            if (threads <= 1) {
                for (int i = 0; i < arrays.length; i++) arrays[i] = s.readFloats(names.get(i));
            } else {
                // -Dthreads=N: tensors read by N threads (each tensor by one), to see what parallel loading buys
                try (var pool = java.util.concurrent.Executors.newFixedThreadPool(threads)) {
                    List<java.util.concurrent.Future<?>> fs = new ArrayList<>();
                    for (int i = 0; i < arrays.length; i++) {
                        int k = i;
                        fs.add(pool.submit(() -> arrays[k] = s.readFloats(names.get(k))));
                    }
                    for (var f : fs) f.get();
                } catch (InterruptedException | java.util.concurrent.ExecutionException e) {
                    throw new IllegalStateException(e);
                }
            }
            for (int i = 0; i < arrays.length; i++) {
                float[] a = arrays[i];
                keep.add(a);
                params += a.length;
                bytes += (long) a.length * (s.dtype(names.get(i)).equals("F32") ? 4 : 2);
                checksum += a.length == 0 ? 0 : a[a.length / 2];
            }
        } catch (HfFormatException e) {
            System.err.println("error: " + e.getMessage());
            System.exit(2);
            return;
        }
        double totalS = (System.nanoTime() - t0) / 1e9;
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("label", args.length > 1 ? args[1] : p.toString());
        out.put("path", p.toString());
        out.put("threads", threads);
        out.put("tensors", keep.size());
        out.put("parameters", params);
        out.put("stored_bytes", bytes);
        out.put("open_s", round(openS));
        out.put("load_s", round(totalS));
        out.put("cpu_s", round(ProcessHandle.current().info().totalCpuDuration().map(d -> d.toNanos() / 1e9).orElse(Double.NaN)));
        out.put("gb_per_s", round(bytes / 1e9 / totalS));
        out.putAll(memory());
        out.put("checksum", checksum);
        System.out.println(new ObjectMapper().writeValueAsString(out));
    }

    private static double round(double x) {
        return Math.round(x * 1000) / 1000.0;
    }

    /** RssAnon / RssFile / VmHWM of this process in MiB, from /proc/self/status (Linux). */
    static Map<String, Object> memory() {
        Map<String, Object> m = new LinkedHashMap<>();
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                for (String k : new String[] {"RssAnon", "RssFile", "VmHWM"})
                    if (line.startsWith(k + ":")) {
                        long kb = Long.parseLong(line.replaceAll("[^0-9]", ""));
                        m.put(k.toLowerCase() + "_mib", kb / 1024);
                    }
            }
        } catch (IOException | RuntimeException ignored) {
            // not Linux: no memory figures
        }
        return m;
    }
}
