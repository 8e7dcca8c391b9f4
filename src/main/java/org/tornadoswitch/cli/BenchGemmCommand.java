package org.tornadoswitch.cli;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

/**
 * {@code bench gemm}: the JVM backend's matrix products at the model's shapes (and any others), each
 * timed over repeated calls after warm-up, the median of several samples; one JSON object per case.
 * scripts/gemm_torch.py times torch.mm on the same cases the same way, and scripts/bench-gemm runs both.
 */
@Command(name = "gemm", mixinStandardHelpOptions = true,
        description = "GEMM benchmark: GFLOP/s of Ops.matmul / matmulNT / matmulTN and the grouped forms per case, one JSON line each.")
public final class BenchGemmCommand implements Callable<Integer> {
    /**
     * The default model's products (T = 32 x 64 = 2048 tokens, d 128, d_ff 256, 4 experts of about 512 rows,
     * vocab 65, router 4) in their three forms, the experts' grouped, plus 1024^3 and a batch-1 decode GEMV.
     */
    public static final String MODEL_CASES = String.join(",",
            "nn:2048x128x128", "nt:2048x128x128", "tn:2048x128x128",
            "nn:2048x128x256", "nt:2048x128x256", "tn:2048x128x256",
            "gnn:2048x128x256/4", "gnt:2048x128x256/4", "gtn:2048x128x256/4",
            "gnn:2048x256x128/4", "gnt:2048x256x128/4", "gtn:2048x256x128/4",
            "nn:2048x128x65", "nt:2048x128x65", "tn:2048x128x65",
            "nn:2048x128x4", "nt:2048x128x4", "tn:2048x128x4",
            "nn:1024x1024x1024", "nt:1024x1024x1024", "tn:1024x1024x1024",
            "nn:1x768x3072", "nn:1x3072x768");

    @Spec CommandSpec spec;
    @Option(names = "--threads", description = "Threads (default: all cores, ${DEFAULT-VALUE}).")
    int threads = Runtime.getRuntime().availableProcessors();
    @Option(names = "--cases", description = "Comma-separated FORM:MxKxN[/G], FORM one of nn, nt, tn, gnn, gnt, gtn (default: the model's).")
    String cases = MODEL_CASES;
    @Option(names = "--samples", description = "Timed samples per case; the median is reported (default: ${DEFAULT-VALUE}).")
    int samples = 7;
    @Option(names = "--sample-ms", description = "Length of one sample in ms (default: ${DEFAULT-VALUE}).")
    double sampleMs = 40;
    @Option(names = "--warmup-ms", description = "Untimed calls first, per case, in ms (default: ${DEFAULT-VALUE}).")
    double warmupMs = 300;
    @Option(names = "--list-cases", description = "Print the case list and exit.")
    boolean listCases;
    @Option(names = "--cpu-time", description = "Time by the thread's CPU time instead of the clock (only with --threads 1): "
            + "a per-core figure that holds on a machine others share.")
    boolean cpuTime;

    /** One case: form (nn, nt, tn), sizes in the project's convention, groups of m / groups rows. */
    record Case(String name, String form, int m, int k, int n, int groups) {
        static Case parse(String s) {
            String[] fd = s.split(":");
            if (fd.length != 2) throw new IllegalArgumentException("bad case '" + s + "' (want FORM:MxKxN or FORM:MxKxN/G)");
            String form = fd[0], dims = fd[1];
            int groups = 1;
            boolean grouped = form.startsWith("g");
            String base = grouped ? form.substring(1) : form;
            try {
                int slash = dims.indexOf('/');
                if (slash >= 0) {
                    groups = Integer.parseInt(dims.substring(slash + 1));
                    dims = dims.substring(0, slash);
                }
                int[] d = Arrays.stream(dims.split("x")).mapToInt(Integer::parseInt).toArray();
                if (d.length != 3) throw new NumberFormatException();
                if (!List.of("nn", "nt", "tn").contains(base) || Math.min(Math.min(d[0], d[1]), Math.min(d[2], groups)) < 1
                        || d[0] % groups != 0 || (long) d[0] * d[1] > 1 << 28 || (long) d[1] * d[2] * groups > 1 << 28
                        || (long) d[0] * d[2] > 1 << 28)
                    throw new NumberFormatException();
                return new Case(s, form, d[0], d[1], d[2], groups);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad case '" + s
                        + "': form nn, nt, tn, gnn, gnt or gtn, sizes >= 1 (at most 2^28 elements per matrix), groups dividing m");
            }
        }
    }

    /** The calls of one case, on random operands, ready to run. */
    static final class Runner {
        final Case c;
        final ThreadPool pool;
        final float[] a, b, w, bias, out;
        final int[] offset, rows;

        Runner(Case c, ThreadPool pool) {
            this.c = c;
            this.pool = pool;
            int m = c.m, k = c.k, n = c.n, g = c.groups;
            String base = c.form.substring(c.form.length() - 2);
            a = random(base.equals("nt") ? m * n : m * k, 1);
            b = random(base.equals("tn") ? m * n : 0, 2);
            w = random(base.equals("tn") ? 0 : g * k * n, 3);
            bias = random(g * n, 4);
            out = new float[base.equals("tn") ? g * k * n : base.equals("nt") ? m * k : m * n];
            rows = new int[g];
            offset = new int[g + 1];
            for (int x = 0; x < g; x++) {
                rows[x] = m / g;
                offset[x + 1] = offset[x] + rows[x];
            }
        }

        void call() {
            int m = c.m, k = c.k, n = c.n;
            switch (c.form) {
                case "nn" -> Ops.matmul(pool, a, 0, w, 0, bias, 0, out, 0, m, k, n, false);
                case "nt" -> Ops.matmulNT(pool, a, 0, w, 0, out, 0, m, k, n, false);
                case "tn" -> Ops.matmulTN(pool, a, 0, b, 0, out, 0, m, k, n);
                case "gnn" -> Ops.groupedMatmul(pool, a, 0, w, 0, bias, 0, out, 0, offset, rows, c.groups, k, n);
                case "gnt" -> Ops.groupedMatmulNT(pool, a, 0, w, 0, out, 0, offset, rows, c.groups, k, n);
                case "gtn" -> Ops.groupedMatmulTN(pool, a, 0, b, 0, out, 0, offset, rows, c.groups, k, n);
                default -> throw new IllegalStateException(c.form);
            }
        }

        /** GFLOP/s of each sample (see {@link #measure(double, double, int, boolean)}), by the clock. */
        double[] measure(double warmupMs, double sampleMs, int samples) {
            return measure(warmupMs, sampleMs, samples, false);
        }

        /**
         * Calls for warmupMs, then {@code samples} samples of as many calls as take sampleMs; GFLOP/s of
         * each, timed by the clock or by the calling thread's CPU time.
         */
        double[] measure(double warmupMs, double sampleMs, int samples, boolean cpu) {
            var mx = java.lang.management.ManagementFactory.getThreadMXBean();
            double flops = 2.0 * c.m * c.k * c.n;
            long end = System.nanoTime() + (long) (warmupMs * 1e6);
            int calls = 0;
            while (System.nanoTime() < end || calls < 3) {
                call();
                calls++;
            }
            long t0 = System.nanoTime();
            call();
            double per = Math.max(System.nanoTime() - t0, 100);
            int reps = (int) Math.max(1, sampleMs * 1e6 / per);
            double[] rates = new double[samples];
            for (int s = 0; s < samples; s++) {
                t0 = cpu ? mx.getCurrentThreadCpuTime() : System.nanoTime();
                for (int r = 0; r < reps; r++) call();
                rates[s] = flops * reps / Math.max(1, (cpu ? mx.getCurrentThreadCpuTime() : System.nanoTime()) - t0);
            }
            return rates;
        }
    }

    static float[] random(int n, long seed) {
        Rng r = new Rng(seed);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextDouble() - 0.5);
        return x;
    }

    static double median(double[] x) {
        double[] s = x.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    @Override
    public Integer call() {
        var out = spec.commandLine().getOut();
        if (listCases) {
            out.println(cases);
            return 0;
        }
        if (threads < 1 || threads > 1024) throw new IllegalArgumentException("--threads must be in [1, 1024], got " + threads);
        if (samples < 1 || sampleMs <= 0 || warmupMs < 0)
            throw new IllegalArgumentException("--samples must be >= 1, --sample-ms > 0 and --warmup-ms >= 0");
        if (cpuTime && threads != 1) throw new IllegalArgumentException("--cpu-time needs --threads 1 (one thread's CPU time), got " + threads);
        List<Case> list = new ArrayList<>();
        for (String s : cases.split(",")) if (!s.isBlank()) list.add(Case.parse(s.trim()));
        if (list.isEmpty()) throw new IllegalArgumentException("--cases is empty");
        var mapper = new com.fasterxml.jackson.databind.ObjectMapper();
        try (ThreadPool pool = new ThreadPool(threads)) {
            // every case's calls first, so that the JIT has compiled all kernel paths before any is timed
            List<Runner> runners = new ArrayList<>();
            for (Case c : list) runners.add(new Runner(c, pool));
            for (Runner r : runners) {
                long end = System.nanoTime() + (long) (Math.min(warmupMs, 200) * 1e6);
                do r.call(); while (System.nanoTime() < end);
            }
            for (Runner r : runners) {
                Case c = r.c;
                double[] rates = r.measure(warmupMs, sampleMs, samples, cpuTime);
                var o = mapper.createObjectNode();
                o.put("impl", "tornado-switch");
                o.put("vector_bits", Ops.vectorBits());
                o.put("threads", threads);
                o.put("clock", cpuTime ? "cpu" : "wall");
                o.put("form", c.form);
                o.put("m", c.m);
                o.put("k", c.k);
                o.put("n", c.n);
                o.put("groups", c.groups);
                o.put("gflops", Math.round(median(rates) * 1000) / 1000.0);
                var arr = o.putArray("samples");
                for (double x : rates) arr.add(Math.round(x * 1000) / 1000.0);
                out.println(o);
                out.flush();
            }
        }
        return 0;
    }
}
