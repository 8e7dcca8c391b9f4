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
 * JMH microbenchmarks of the JVM backend's kernels at the default model's shapes (T = 32 x 64 = 2048
 * tokens, d_model 128, d_ff 256, 4 heads, vocab 65). Run with scripts/jmh; not part of the tests.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class KernelBench {
    static final int T = 2048, D = 128, F = 256, HEADS = 4, SEQ = 64, VOCAB = 65;

    @Param({"2"})
    int threads;

    ThreadPool pool;
    float[] x, h, wDF, wFD, wDD, wHead, bias, outD, outF, outV, gradW, q, k, v, att, mean, rstd, ln, adamP, adamG, adamM, adamV;

    static float[] random(int n, long seed) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (r.nextDouble() - 0.5);
        return a;
    }

    @Setup(Level.Trial)
    public void setUp() {
        pool = new ThreadPool(threads);
        x = random(T * D, 1); h = random(T * F, 2); wDF = random(D * F, 3); wFD = random(F * D, 4); wDD = random(D * D, 5);
        wHead = random(D * VOCAB, 6); bias = random(F, 7);
        outD = new float[T * D]; outF = new float[T * F]; outV = new float[T * VOCAB]; gradW = new float[D * F];
        q = random(T * D, 8); k = random(T * D, 9); v = random(T * D, 10); att = new float[T / SEQ * HEADS * SEQ * SEQ];
        mean = new float[T]; rstd = new float[T]; ln = random(2 * D, 11);
        int n = 2_000_000;
        adamP = random(n, 12); adamG = random(n, 13); adamM = new float[n]; adamV = new float[n];
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        pool.close();
    }

    /** Expert FFN first layer over all tokens: [2048 x 128] x [128 x 256]. */
    @Benchmark
    public float[] matmulFf1() {
        Ops.matmul(pool, x, 0, wDF, 0, bias, 0, outF, 0, T, D, F, false);
        return outF;
    }

    /** Expert FFN second layer: [2048 x 256] x [256 x 128]. */
    @Benchmark
    public float[] matmulFf2() {
        Ops.matmul(pool, h, 0, wFD, 0, bias, 0, outD, 0, T, F, D, false);
        return outD;
    }

    /** A Q/K/V/O projection: [2048 x 128] x [128 x 128]. */
    @Benchmark
    public float[] matmulProjection() {
        Ops.matmul(pool, x, 0, wDD, 0, null, 0, outD, 0, T, D, D, false);
        return outD;
    }

    /** The head: [2048 x 128] x [128 x 65] (a vocabulary that is not a multiple of the vector width). */
    @Benchmark
    public float[] matmulHead() {
        Ops.matmul(pool, x, 0, wHead, 0, null, 0, outV, 0, T, D, VOCAB, false);
        return outV;
    }

    /** A weight gradient: [128 x 2048] (transposed in place) x [2048 x 256]. */
    @Benchmark
    public float[] matmulWeightGrad() {
        Ops.matmulTN(pool, x, 0, h, 0, gradW, 0, T, D, F);
        return gradW;
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
