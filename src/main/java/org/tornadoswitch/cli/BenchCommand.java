package org.tornadoswitch.cli;

import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.util.List;
import java.util.concurrent.Callable;
import org.tornadoswitch.Config;
import org.tornadoswitch.backend.DeviceCounters;
import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(name = "bench", mixinStandardHelpOptions = true, subcommands = BenchGemmCommand.class,
        description = "Fixed training benchmark: warm-up, then timed steps; tokens/s, phase times, allocation, GC, FLOP/s against the measured FMA peak, MKL's matmul (from results/gemm.csv) and our own; on a device backend the per-step graph executions, launches, bytes and syncs, and each kernel's device time from its profiler.")
public final class BenchCommand implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin ModelOptions model;
    @Mixin RunSetup setup;
    @Option(names = "--warmup-steps", description = "Untimed steps first (default: ${DEFAULT-VALUE}); on the JVM backend more follow, up to "
            + "--max-warmup-steps, until a step allocates under 1 MB (the JIT has compiled the vector kernels: before that each vector is an object) "
            + "and the JIT compiles for at most 2 ms during it (its threads share the cores), 5 steps in a row.")
    int warmupSteps = 20;
    @Option(names = "--max-warmup-steps", description = "At most this many warm-up steps in all (default: ${DEFAULT-VALUE}).")
    int maxWarmupSteps = 200;

    @Option(names = "--steps", description = "Timed steps (default: ${DEFAULT-VALUE}).")
    int steps = 20;
    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;
    @Option(names = "--no-peak", description = "Skip measuring the JVM matmul peak.")
    boolean noPeak;
    @Option(names = "--profile-steps", description = "Steps after the timed ones run with the device's kernel profiler on (device backends; default: ${DEFAULT-VALUE}, 0: none).")
    int profileSteps = 3;
    @Option(names = "--profile-top", description = "Kernels listed in the profile, slowest first (default: ${DEFAULT-VALUE}).")
    int profileTop = 12;
    @Option(names = "--mkl-gflops", description = "MKL's (torch.mm's) 1024^3 matmul GFLOP/s on these threads, to compare the step with "
            + "(default: from --gemm-csv when it has a row for this thread count).")
    double mklGflops = Double.NaN;
    @Option(names = "--gemm-csv", description = "scripts/bench-gemm's results, read for MKL's matmul figure (default: ${DEFAULT-VALUE}).")
    java.nio.file.Path gemmCsv = java.nio.file.Path.of("results/gemm.csv");

    /** Multiply-adds x 2 of one training step: forward, and twice that for backward. */
    static double flopsPerStep(Config c, int vocab) {
        double t = c.tokensPerBatch(), d = c.dModel(), f = c.dFf(), e = c.numExperts(), s = c.seqLen();
        double perLayer = 4 * 2 * d * d                    // Q, K, V, O projections
                + 2 * 2 * (s + 1) / 2.0 * d                 // causal scores and weighted sum, mean over positions
                + 2 * 2 * d * f;                           // one expert per token
        double router = 2 * d * e                          // in Switch blocks only,
                + (c.topK() - 1) * 2 * 2 * d * f;          // with the other k - 1 experts of a token
        double fwd = t * (c.layers() * perLayer + c.switchLayerCount() * router + 2 * d * vocab);
        return 3 * fwd;
    }

    /**
     * GFLOP/s of the JVM backend's own matmul at 1024^3 on all threads at once: every thread multiplies
     * its own operands on a pool of its own, warms up, then times 15 calls by the CPU time its thread
     * used; the figure is the sum over threads of each one's median call. Like the FMA probe it is the
     * per-core rate with every core busy, and timing by CPU time keeps it when another process takes a
     * core for a while (the time of a parallel call would not).
     */
    static double measurePeakGflops(int threads) {
        double[] rate = new double[threads];
        var mx = ManagementFactory.getThreadMXBean();
        try (ThreadPool outer = new ThreadPool(threads)) {
            outer.parallelFor(threads, (lo, hi) -> {
                for (int t = lo; t < hi; t++)
                    try (ThreadPool own = new ThreadPool(1)) {
                        var r = new BenchGemmCommand.Runner(BenchGemmCommand.Case.parse("nn:1024x1024x1024"), own);
                        r.measure(500, 1e-6, 1); // warm-up
                        double[] x = new double[15];
                        for (int i = 0; i < x.length; i++) {
                            long c0 = mx.getCurrentThreadCpuTime();
                            r.call();
                            x[i] = 2.0 * 1024 * 1024 * 1024 / Math.max(1, mx.getCurrentThreadCpuTime() - c0);
                        }
                        rate[t] = BenchGemmCommand.median(x);
                    }
            });
        }
        double sum = 0;
        for (double x : rate) sum += x;
        return sum;
    }

    /**
     * MKL's matmul on this machine and thread count: torch.mm's 1024^3 figure in the newest row of
     * results/gemm.csv (written by scripts/bench-gemm) with this many threads, or NaN. Returns
     * {GFLOP/s, source description} as a pair.
     */
    static Object[] mklFromCsv(java.nio.file.Path csv, int threads) {
        if (csv == null || !java.nio.file.Files.isRegularFile(csv)) return new Object[] {Double.NaN, ""};
        try {
            var lines = java.nio.file.Files.readAllLines(csv);
            if (lines.isEmpty()) return new Object[] {Double.NaN, ""};
            var head = java.util.Arrays.asList(lines.get(0).split(","));
            int iDate = head.indexOf("date"), iThreads = head.indexOf("threads"), iShape = head.indexOf("shape"),
                    iForm = head.indexOf("form"), iTorch = head.indexOf("gflops_torch");
            if (Math.min(Math.min(iDate, iThreads), Math.min(Math.min(iShape, iForm), iTorch)) < 0) return new Object[] {Double.NaN, ""};
            for (int i = lines.size() - 1; i > 0; i--) {
                String[] f = lines.get(i).split(",");
                if (f.length <= iTorch) continue;
                if (f[iThreads].equals(Integer.toString(threads)) && f[iShape].equals("1024x1024x1024") && f[iForm].equals("nn"))
                    return new Object[] {Double.parseDouble(f[iTorch]), csv + " of " + f[iDate]};
            }
        } catch (java.io.IOException | NumberFormatException e) {
            return new Object[] {Double.NaN, ""};
        }
        return new Object[] {Double.NaN, ""};
    }

    /** Memory bandwidth of a large array copy on all threads (bytes read plus written per second), best of a few. */
    static double measureCopyGbPerS(int threads) {
        float[] src = new float[32 << 20], dst = new float[32 << 20];
        double best = 0;
        try (ThreadPool pool = new ThreadPool(threads)) {
            for (int rep = 0; rep < 6; rep++) {
                long t0 = System.nanoTime();
                pool.parallelFor(src.length >> 16, (lo, hi) -> System.arraycopy(src, lo << 16, dst, lo << 16, (hi - lo) << 16));
                best = Math.max(best, 2.0 * 4 * src.length / (System.nanoTime() - t0));
            }
        }
        return best;
    }

    /** JIT compile time per warm-up step at most this for the JIT to count as idle. */
    private static final long JIT_QUIET_MS = 2;
    /** Consecutive settled warm-up steps needed. */
    private static final int QUIET_STEPS = 5;

    /** Milliseconds the JIT has spent compiling so far (0 where the JVM does not say). */
    private static long jitMillis() {
        var c = ManagementFactory.getCompilationMXBean();
        return c != null && c.isCompilationTimeMonitoringSupported() ? c.getTotalCompilationTime() : 0;
    }

    /** Bytes allocated so far by all live threads (bench and the allocation test read it before and after). */
    public static long allocatedBytesAllThreads() {
        var mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long sum = 0;
        for (long id : mx.getAllThreadIds()) {
            long b = mx.getThreadAllocatedBytes(id);
            if (b > 0) sum += b;
        }
        return sum;
    }

    private static long processCpuNanos() {
        return ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os
                ? os.getProcessCpuTime() : -1;
    }

    /** Collections so far, all collectors. */
    public static long gcCount() {
        long n = 0;
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) n += Math.max(0, gc.getCollectionCount());
        return n;
    }

    @Override
    public Integer call() {
        Config cfg = model.toConfig();
        if (steps < 1 || warmupSteps < 0) throw new IllegalArgumentException("--steps must be >= 1 and --warmup-steps >= 0");
        RunSetup.Data data = setup.loadData(cfg, null);
        Batcher b = data.batcher();
        int vocab = data.tokenizer().size();
        Rng rng = new Rng(cfg.seed());
        var out = spec.commandLine().getOut();
        try (SwitchModel m = setup.buildModel(cfg, vocab, null)) {
            // C2 compiles the kernels in the background; on 2 cores a long compile can keep them in the
            // lower tiers' boxed form (every vector an object) for seconds after a fixed warm-up: the JVM backend waits
            int warmed = 0;
            boolean settle = setup.backend.equals("jvm") && warmupSteps > 0, quiet = false;
            int quietRun = 0; // consecutive settled steps: the JIT compiles in bursts
            // and until the JIT is idle: its compiler threads share the 2 cores, and a worker preempted by one
            // stalls every parallel loop it is part of (milliseconds each, seen in the pool's hand-off times)
            long a0 = allocatedBytesAllThreads(), j0 = jitMillis();
            while (warmed < warmupSteps || (settle && !quiet && warmed < maxWarmupSteps)) {
                b.nextTrain(rng);
                m.trainStep(b.inputs(), b.targets(), cfg.batchSize(), cfg.seqLen());
                warmed++;
                long a1 = allocatedBytesAllThreads(), j1 = jitMillis();
                quietRun = a1 - a0 < 1_000_000 && j1 - j0 <= JIT_QUIET_MS ? quietRun + 1 : 0;
                quiet = quietRun >= QUIET_STEPS;
                a0 = a1;
                j0 = j1;
            }
            warmupSteps = warmed;
            long fwd = 0, bwd = 0, opt = 0;
            double loss = 0;
            long[] stage0 = m.backend().stageNanos(), idle0 = m.backend().threadIdleNanos();
            DeviceCounters dev0 = m.backend().deviceCounters();
            long gc0 = gcCount(), alloc0 = allocatedBytesAllThreads(), cpu0 = processCpuNanos();
            long t0 = System.nanoTime();
            for (int i = 0; i < steps; i++) {
                b.nextTrain(rng);
                SwitchModel.Stats s = m.trainStep(b.inputs(), b.targets(), cfg.batchSize(), cfg.seqLen());
                loss = s.loss;
                fwd += s.forwardNanos;
                bwd += s.backwardNanos;
                opt += s.optimizerNanos;
            }
            double sec = (System.nanoTime() - t0) / 1e9;
            double cpuMs = (processCpuNanos() - cpu0) / 1e6 / steps;
            long alloc = allocatedBytesAllThreads() - alloc0, gcs = gcCount() - gc0;
            long[] stage1 = m.backend().stageNanos(), idle1 = m.backend().threadIdleNanos();
            DeviceCounters dev = dev0 == null ? null : m.backend().deviceCounters().since(dev0);
            double stepMs = 1000 * sec / steps, tps = (double) steps * cfg.tokensPerBatch() / sec;
            // the kernel profile: extra steps with the device profiler on (it slows them, so they are not timed)
            List<DeviceCounters.KernelTime> kernels = List.of();
            if (dev != null && profileSteps > 0 && m.backend().profileKernels(true)) {
                for (int i = 0; i < profileSteps; i++) {
                    b.nextTrain(rng);
                    m.trainStep(b.inputs(), b.targets(), cfg.batchSize(), cfg.seqLen());
                }
                m.backend().profileKernels(false);
                kernels = m.backend().kernelProfile();
            }
            double gflops = flopsPerStep(cfg, vocab) * steps / sec / 1e9;
            double peak = noPeak || !setup.backend.equals("jvm") ? Double.NaN : measurePeakGflops(setup.threads);
            double fmaPeak = Double.NaN;
            if (!noPeak && setup.backend.equals("jvm"))
                try (ThreadPool pool = new ThreadPool(setup.threads)) {
                    fmaPeak = Ops.fmaPeakGflops(pool);
                }
            var o = new com.fasterxml.jackson.databind.ObjectMapper().createObjectNode();
            o.put("backend", setup.backend);
            o.put("device", m.backend().describe());
            o.put("experts", cfg.numExperts());
            o.put("parameters", new ParamLayout(cfg, vocab).size());
            o.put("tokens_per_s", tps);
            o.put("step_ms", stepMs);
            o.put("forward_ms", fwd / 1e6 / steps);
            o.put("backward_ms", bwd / 1e6 / steps);
            o.put("fwd_bwd_ms", (fwd + bwd) / 1e6 / steps);
            o.put("optimizer_ms", opt / 1e6 / steps);
            o.put("cpu_ms_per_step", cpuMs); // all threads of the process, spinning included: robust with 1 thread on a shared machine
            StringBuilder stages = new StringBuilder();
            if (stage0 != null) {
                var so = o.putObject("stage_ms");
                for (int i = 0; i < stage0.length; i++) {
                    double ms = (stage1[i] - stage0[i]) / 1e6 / steps;
                    so.put(org.tornadoswitch.backend.Backend.STAGES[i], ms);
                    stages.append(String.format("%s%s %.1f", i == 0 ? "" : ", ", org.tornadoswitch.backend.Backend.STAGES[i], ms));
                }
            }
            StringBuilder idleText = new StringBuilder();
            if (idle0 != null) { // share of the timed steps each pool thread spent waiting (0 = the calling thread)
                var io = o.putArray("thread_idle_fraction");
                for (int i = 0; i < idle0.length; i++) {
                    double fr = (idle1[i] - idle0[i]) / 1e9 / sec;
                    io.add(fr);
                    idleText.append(String.format("%s%d %.0f%%", i == 0 ? "" : ", ", i, 100 * fr));
                }
            }
            o.put("alloc_bytes_per_step", alloc / steps);
            o.put("gc_count", gcs);
            o.put("gflops", gflops);
            if (!Double.isNaN(peak)) {
                o.put("peak_gflops", peak);
                o.put("peak_fraction", gflops / peak);
            }
            if (stage0 != null) {
                // Adam reads parameters, gradients and both moments and writes three of them back: 28 bytes a parameter
                int optIdx = java.util.Arrays.asList(org.tornadoswitch.backend.Backend.STAGES).indexOf("optimizer");
                double adamS = (stage1[optIdx] - stage0[optIdx]) / 1e9 / steps;
                long nParams = new ParamLayout(cfg, vocab).size();
                o.put("adam_gb_per_s", 28.0 * nParams / adamS / 1e9);
                if (!noPeak) o.put("copy_gb_per_s", measureCopyGbPerS(setup.threads));
            }
            if (!Double.isNaN(fmaPeak)) {
                o.put("fma_peak_gflops", fmaPeak);
                o.put("fma_peak_fraction", gflops / fmaPeak);
            }
            StringBuilder devText = new StringBuilder();
            if (dev != null) {
                var dc = o.putObject("device_per_step");
                dc.put("graph_executions", (double) dev.executions / steps);
                dc.put("kernel_launches", (double) dev.launches / steps);
                dc.put("bytes_to_device", (double) dev.bytesToDevice / steps);
                dc.put("bytes_to_host", (double) dev.bytesToHost / steps);
                dc.put("host_syncs", (double) dev.syncs / steps);
                dc.put("execute_ms", dev.executeNanos / 1e6 / steps);
                devText.append(String.format("  device per step: %.0f graph executions, %.0f kernel launches, %.1f KiB to the device, %.1f KiB back, %.0f host syncs;"
                                + " %.1f ms waiting on the device runtime, %.1f ms on the host between its calls%n",
                        (double) dev.executions / steps, (double) dev.launches / steps, dev.bytesToDevice / 1024.0 / steps,
                        dev.bytesToHost / 1024.0 / steps, (double) dev.syncs / steps, dev.executeNanos / 1e6 / steps,
                        stepMs - dev.executeNanos / 1e6 / steps));
            }
            if (!kernels.isEmpty()) {
                double kernelMs = 0;
                for (DeviceCounters.KernelTime k : kernels) kernelMs += k.deviceNanos() / 1e6 / profileSteps;
                o.put("kernel_ms_per_step", kernelMs);
                o.put("outside_kernels_fraction", Math.max(0, 1 - kernelMs / stepMs));
                var ko = o.putArray("kernel_profile");
                devText.append(String.format("  kernels by device time (%d profiled steps; %.1f of the %.1f ms step in kernels, %.0f%% outside them):%n",
                        profileSteps, kernelMs, stepMs, 100 * Math.max(0, 1 - kernelMs / stepMs)));
                int shown = 0;
                for (DeviceCounters.KernelTime k : kernels) {
                    double ms = k.deviceNanos() / 1e6 / profileSteps, sec1 = k.deviceNanos() / 1e9;
                    double gf = sec1 > 0 ? k.flops() / sec1 / 1e9 : 0, gb = sec1 > 0 ? k.bytes() / sec1 / 1e9 : 0;
                    var ke = ko.addObject();
                    ke.put("kernel", k.kind());
                    ke.put("launches_per_step", (double) k.launches() / profileSteps);
                    ke.put("ms_per_step", ms);
                    ke.put("share_of_step", ms / stepMs);
                    ke.put("gflops", gf);
                    ke.put("gb_per_s", gb);
                    ke.put("compute_bound", k.computeBound());
                    if (shown++ < profileTop)
                        devText.append(String.format("    %-28s %8.2f ms %5.1f%%  %3.0f launches  %s%n", k.kind(), ms, 100 * ms / stepMs,
                                (double) k.launches() / profileSteps,
                                k.computeBound() ? String.format("%.1f GFLOP/s", gf) : String.format("%.1f GB/s", gb)));
                }
            }
            double mkl = mklGflops;
            String mklSource = Double.isNaN(mkl) ? "" : "--mkl-gflops";
            if (Double.isNaN(mkl)) {
                Object[] m2 = mklFromCsv(gemmCsv, setup.threads);
                mkl = (double) m2[0];
                mklSource = (String) m2[1];
            }
            if (!Double.isNaN(mkl) && mkl > 0) {
                o.put("mkl_gflops", mkl);
                o.put("mkl_fraction", gflops / mkl);
                o.put("mkl_source", mklSource);
            }
            o.put("compile_s", m.backend().compileSeconds());
            o.put("loss", loss);
            o.put("warmup_steps", warmupSteps);
            o.put("steps", warmupSteps + steps);
            if (json) {
                out.println(o.toString());
            } else {
                StringBuilder vs = new StringBuilder();
                if (!Double.isNaN(fmaPeak)) vs.append(String.format("%.0f%% of the %.1f GFLOP/s FMA peak", 100 * gflops / fmaPeak, fmaPeak));
                if (!Double.isNaN(mkl) && mkl > 0)
                    vs.append(vs.isEmpty() ? "" : ", ").append(String.format("%.0f%% of MKL's %.1f GFLOP/s 1024^3 matmul", 100 * gflops / mkl, mkl));
                if (!Double.isNaN(peak))
                    vs.append(vs.isEmpty() ? "" : ", ").append(String.format("%.0f%% of our %.1f GFLOP/s 1024^3 matmul", 100 * gflops / peak, peak));
                out.printf("%s: %.1f ms/step (forward %.1f, backward %.1f, optimizer %.1f), %.0f tokens/s, %.2f GFLOP/s%s,"
                                + " %d bytes allocated per step, %d GCs; loss %.4f after %d steps%n",
                        m.backend().describe(), stepMs, fwd / 1e6 / steps, bwd / 1e6 / steps, opt / 1e6 / steps, tps, gflops,
                        vs.isEmpty() ? "" : " (" + vs + ")", alloc / steps, gcs, loss, warmupSteps + steps);
                if (!stages.isEmpty()) out.println("  ms per step by stage: " + stages);
                if (!idleText.isEmpty()) out.println("  idle share of the timed steps by pool thread (0 = main): " + idleText);
                if (!devText.isEmpty()) out.print(devText);
                out.flush();
            }
        }
        return 0;
    }
}
