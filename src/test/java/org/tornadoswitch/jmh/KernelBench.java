package org.tornadoswitch.jmh;

import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * JMH microbenchmarks of the JVM backend's row kernels and optimizer at the default model's shapes
 * (T = 32 x 64 = 2048 tokens, d_model 128, 4 heads): the per-head attention kept for the TornadoVM
 * tests, LayerNorm, Adam. The GEMMs are in {@link GemmBench}, the fused attention in
 * {@link AttentionBench}. Run with scripts/jmh; not part of the tests.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class KernelBench {
    static final int T = 2048, D = 128, HEADS = 4, SEQ = 64;

    @Param({"2"})
    int threads;

    ThreadPool pool;
    float[] x, outD, q, k, v, att, mean, rstd, ln, adamP, adamG, adamM, adamV;

    static float[] random(int n, long seed) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (r.nextDouble() - 0.5);
        return a;
    }

    @Setup(Level.Trial)
    public void setUp() {
        pool = new ThreadPool(threads);
        x = random(T * D, 1);
        outD = new float[T * D];
        q = random(T * D, 8); k = random(T * D, 9); v = random(T * D, 10); att = new float[T / SEQ * HEADS * SEQ * SEQ];
        mean = new float[T]; rstd = new float[T]; ln = random(2 * D, 11);
        int n = 2_000_000;
        adamP = random(n, 12); adamG = random(n, 13); adamM = new float[n]; adamV = new float[n];
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        pool.close();
    }

    @Benchmark
    public float[] causalAttention() {
        Ops.attention(pool, q, k, v, att, 0, outD, T / SEQ, SEQ, HEADS, D);
        return outD;
    }

    @Benchmark
    public float[] layerNorm() {
        Ops.layerNorm(pool, x, 0, ln, 0, ln, D, outD, 0, mean, rstd, 0, T, D);
        return outD;
    }

    /** Adam over 2M parameters (about the default Switch model): memory-bound. */
    @Benchmark
    public float[] adam() {
        int n = adamP.length;
        pool.parallelFor(n / 65536 + 1, (lo, hi) ->
                Ops.adam(adamP, adamG, adamM, adamV, lo * 65536, Math.min(n, hi * 65536), 1e-4f, 1f, 0.9f, 0.999f, 1e-8f, 10));
        return adamP;
    }
}
