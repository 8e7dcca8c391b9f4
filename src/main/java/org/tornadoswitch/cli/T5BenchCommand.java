package org.tornadoswitch.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import org.tornadoswitch.hf.T5Config;
import org.tornadoswitch.hf.T5Data;
import org.tornadoswitch.hf.T5Model;
import org.tornadoswitch.hf.T5Optimizer;
import org.tornadoswitch.util.Rng;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code t5 bench}: the speed of generation (batch 1, greedy, exactly N new tokens) or of one
 * fine-tuning step on random ids, after a warm-up; one JSON object (scripts/bench-t5 runs it beside
 * transformers on torch).
 */
@Command(name = "bench", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Measure generation (--mode generate: batch 1, greedy, --new-tokens exactly, EOS suppressed) or one"
                + " fine-tuning step (--mode finetune: forward, backward, clipping, Adafactor) on seeded random ids, after"
                + " --warmup untimed runs; prints one JSON object with the median and every run, the load time and the peak"
                + " resident memory (VmHWM) of this process, and the process's CPU seconds per run."})
public final class T5BenchCommand implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin T5ModelOptions model;

    @Option(names = "--mode", description = "generate or finetune (default: ${DEFAULT-VALUE}).")
    String mode = "generate";
    @Option(names = "--input-tokens", description = "Encoder tokens (default: 32 for generate, 64 for finetune).")
    Integer inputTokens;
    @Option(names = "--new-tokens", description = "Generated tokens (default: ${DEFAULT-VALUE}).")
    int newTokens = 32;
    @Option(names = "--batch-size", description = "Fine-tuning batch (default: ${DEFAULT-VALUE}).")
    int batch = 8;
    @Option(names = "--target-tokens", description = "Fine-tuning target tokens (default: ${DEFAULT-VALUE}).")
    int targetTokens = 16;
    @Option(names = "--repeats", description = "Timed runs (default: ${DEFAULT-VALUE}).")
    int repeats = 3;
    @Option(names = "--warmup", description = "Untimed runs first (default: ${DEFAULT-VALUE}).")
    int warmup = 1;
    @Option(names = "--seed", description = "Seed of the random ids (default: ${DEFAULT-VALUE}).")
    long seed = 1;

    @Override
    public Integer call() throws Exception {
        if (repeats < 1 || warmup < 0 || newTokens < 1 || batch < 1 || targetTokens < 1)
            throw new IllegalArgumentException("--repeats, --new-tokens, --batch-size and --target-tokens must be >= 1, --warmup >= 0");
        boolean gen = switch (mode) {
            case "generate" -> true;
            case "finetune" -> false;
            default -> throw new IllegalArgumentException("--mode must be generate or finetune, got " + mode);
        };
        int in = inputTokens != null ? inputTokens : gen ? 32 : 64;
        long t0 = System.nanoTime();
        try (T5Model m = gen ? model.open(spec.commandLine().getErr()) : model.open(spec.commandLine().getErr(), 2.05, "fine-tuning")) {
            double loadS = (System.nanoTime() - t0) / 1e9;
            T5Config c = m.config();
            Rng rng = new Rng(seed);
            ObjectNode o = new ObjectMapper().createObjectNode();
            o.put("mode", mode);
            o.put("threads", model.threads);
            o.put("backend", m.backend().describe());
            o.put("parameters", c.parameterCount());
            o.put("weights_mb", c.parameterCount() * 4 / 1e6);
            o.put("load_s", loadS);
            List<Double> times = new ArrayList<>(), cpu = new ArrayList<>();
            if (gen) {
                int[] ids = randomIds(rng, in, c.vocabSize(), c.eosTokenId());
                for (int r = 0; r < warmup + repeats; r++) {
                    long s = System.nanoTime();
                    double c0 = cpuSeconds();
                    int[] out = m.generateSampled(ids, newTokens, 0, 0, 0, newTokens, null);
                    double dt = (System.nanoTime() - s) / 1e9;
                    if (out.length != newTokens + 1) throw new IllegalStateException("generated " + (out.length - 1) + " tokens");
                    if (r >= warmup) {
                        times.add(dt);
                        cpu.add(cpuSeconds() - c0);
                    }
                }
                double med = median(times);
                o.put("input_tokens", in);
                o.put("new_tokens", newTokens);
                o.put("tokens_per_s", newTokens / med);
                o.put("seconds_median", med);
            } else {
                List<T5Data.Example> ex = new ArrayList<>();
                for (int b = 0; b < batch; b++)
                    ex.add(new T5Data.Example(randomIds(rng, in, c.vocabSize(), c.eosTokenId()), randomIds(rng, targetTokens, c.vocabSize(), c.eosTokenId())));
                T5Model.Batch bt = T5Data.batch(ex, c);
                T5Optimizer opt = T5Optimizer.adafactor(null);
                for (int r = 0; r < warmup + repeats; r++) {
                    long s = System.nanoTime();
                    double c0 = cpuSeconds();
                    m.forward(bt, true, r + 1);
                    m.backward();
                    double norm = Math.sqrt(m.backend().gradSquaredNorm());
                    m.backend().optimizerStep(opt, norm > 1 ? (float) (1 / (norm + 1e-6)) : 1f, r + 1, 0);
                    double dt = (System.nanoTime() - s) / 1e9;
                    if (r >= warmup) {
                        times.add(dt);
                        cpu.add(cpuSeconds() - c0);
                    }
                }
                double med = median(times);
                o.put("batch_size", batch);
                o.put("input_tokens", in);
                o.put("target_tokens", targetTokens);
                o.put("step_s_median", med);
                o.put("tokens_per_s", batch * (in + targetTokens) / med);
            }
            ArrayNode all = o.putArray("seconds");
            times.forEach(all::add);
            o.put("seconds_min", times.stream().mapToDouble(Double::doubleValue).min().orElse(Double.NaN));
            // CPU seconds of the whole process per run (all threads, GC and JIT included): less sensitive
            // than wall time to other jobs on the machine
            ArrayNode cs = o.putArray("cpu_seconds");
            cpu.forEach(cs::add);
            o.put("cpu_s_median", median(cpu));
            o.put("peak_rss_mb", peakRssMb());
            spec.commandLine().getOut().println(o);
            spec.commandLine().getOut().flush();
        }
        return 0;
    }

    /** Random ids in [2, vocab) ending with EOS, as an encoded text. */
    static int[] randomIds(Rng rng, int n, int vocab, int eos) {
        int[] ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = 2 + rng.nextInt(vocab - 2);
        ids[n - 1] = eos >= 0 ? eos : 1;
        return ids;
    }

    static double median(List<Double> x) {
        double[] a = x.stream().mapToDouble(Double::doubleValue).toArray();
        Arrays.sort(a);
        return a.length % 2 == 1 ? a[a.length / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
    }

    static double cpuSeconds() {
        return ProcessHandle.current().info().totalCpuDuration().map(d -> d.toNanos() / 1e9).orElse(Double.NaN);
    }

    /** The process's peak resident set (VmHWM) in MB, or NaN where /proc is not there. */
    static double peakRssMb() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/self/status")))
                if (l.startsWith("VmHWM:")) return Long.parseLong(l.replaceAll("[^0-9]", "")) / 1024.0;
        } catch (IOException | NumberFormatException e) {
            // not Linux
        }
        return Double.NaN;
    }
}
