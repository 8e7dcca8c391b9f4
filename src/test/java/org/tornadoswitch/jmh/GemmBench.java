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
import org.tornadoswitch.util.ThreadPool;

/**
 * JMH microbenchmarks of the JVM backend's GEMM in every form the training step uses, at the default
 * model's shapes (T = 2048 tokens, d_model 128, d_ff 256, 4 experts of 512 rows, vocab 65, router 4),
 * plus 1024^3 and a batch-1 decode GEMV (768 x 3072). Run with scripts/jmh GemmBench; not part of the
 * tests. {@code scripts/bench-gemm} compares the same products with torch.mm.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class GemmBench {
    static final int T = 2048, D = 128, F = 256, E = 4, VOCAB = 65, ROUTER = 4, BIG = 1024, DEC_IN = 768, DEC_OUT = 3072;

    @Param({"2"})
    int threads;

    ThreadPool pool;
    float[] x, h, dy, dh, wDD, wDF, wFD, wHead, wRouter, wE1, wE2, bias, outD, outF, outV, outR, gDD, gDF, gFD, gHead, gRouter;
    float[] big, bigW, bigOut, decX, decW, decOut, decB;
    final int[] offset = new int[E + 1], rows = new int[E];

    @Setup(Level.Trial)
    public void setUp() {
        pool = new ThreadPool(threads);
        x = KernelBench.random(T * D, 1); h = KernelBench.random(T * F, 2); dy = KernelBench.random(T * D, 3);
        dh = KernelBench.random(T * F, 4);
        wDD = KernelBench.random(D * D, 5); wDF = KernelBench.random(D * F, 6); wFD = KernelBench.random(F * D, 7);
        wHead = KernelBench.random(D * VOCAB, 8); wRouter = KernelBench.random(D * ROUTER, 9);
        wE1 = KernelBench.random(E * D * F, 10); wE2 = KernelBench.random(E * F * D, 11); bias = KernelBench.random(E * F, 12);
        outD = new float[T * D]; outF = new float[T * F]; outV = KernelBench.random(T * VOCAB, 13); outR = KernelBench.random(T * ROUTER, 14);
        gDD = new float[D * D]; gDF = new float[E * D * F]; gFD = new float[E * F * D]; gHead = new float[D * VOCAB];
        gRouter = new float[D * ROUTER];
        big = KernelBench.random(BIG * BIG, 15); bigW = KernelBench.random(BIG * BIG, 16); bigOut = new float[BIG * BIG];
        decX = KernelBench.random(DEC_IN, 17); decW = KernelBench.random(DEC_IN * DEC_OUT, 18); decB = KernelBench.random(DEC_OUT, 19);
        decOut = new float[DEC_OUT];
        for (int e = 0; e < E; e++) {
            rows[e] = T / E;
            offset[e + 1] = offset[e] + rows[e];
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        pool.close();
    }

    /** A Q/K/V/O projection: [2048 x 128] x [128 x 128] + bias. */
    @Benchmark
    public float[] projectionNN() {
        Ops.matmul(pool, x, 0, wDD, 0, bias, 0, outD, 0, T, D, D, false);
        return outD;
    }

    /** Its input gradient: [2048 x 128] x [128 x 128]^T. */
    @Benchmark
    public float[] projectionNT() {
        Ops.matmulNT(pool, dy, 0, wDD, 0, outD, 0, T, D, D, false);
        return outD;
    }

    /** Its weight gradient: [128 x 2048] x [2048 x 128]. */
    @Benchmark
    public float[] projectionTN() {
        Ops.matmulTN(pool, x, 0, dy, 0, gDD, 0, T, D, D);
        return gDD;
    }

    /** The attention output projection with the residual in its epilogue. */
    @Benchmark
    public float[] projectionResidual() {
        Ops.matmulFused(pool, x, 0, wDD, 0, bias, 0, outD, 0, T, D, D, dy, 0, false, null);
        return outD;
    }

    /** Experts' first layer, 4 groups of 512 rows: [512 x 128] x [128 x 256] + bias, ReLU fused. */
    @Benchmark
    public float[] expertsFf1() {
        Ops.groupedMatmulFused(pool, x, 0, wE1, 0, bias, 0, outF, 0, offset, rows, E, D, F, true, null);
        return outF;
    }

    /** Experts' second layer: [512 x 256] x [256 x 128] + bias. */
    @Benchmark
    public float[] expertsFf2() {
        Ops.groupedMatmul(pool, h, 0, wE2, 0, bias, 0, outD, 0, offset, rows, E, F, D);
        return outD;
    }

    /** Input gradient of the second layer: [512 x 128] x [256 x 128]^T per expert. */
    @Benchmark
    public float[] expertsFf2NT() {
        Ops.groupedMatmulNT(pool, dy, 0, wE2, 0, outF, 0, offset, rows, E, F, D);
        return outF;
    }

    /** Input gradient of the first layer: [512 x 256] x [128 x 256]^T per expert. */
    @Benchmark
    public float[] expertsFf1NT() {
        Ops.groupedMatmulNT(pool, dh, 0, wE1, 0, outD, 0, offset, rows, E, D, F);
        return outD;
    }

    /** Weight gradient of the first layer: [128 x 512] x [512 x 256] per expert. */
    @Benchmark
    public float[] expertsFf1TN() {
        Ops.groupedMatmulTN(pool, x, 0, dh, 0, gDF, 0, offset, rows, E, D, F);
        return gDF;
    }

    /** Weight gradient of the second layer: [256 x 512] x [512 x 128] per expert. */
    @Benchmark
    public float[] expertsFf2TN() {
        Ops.groupedMatmulTN(pool, h, 0, dy, 0, gFD, 0, offset, rows, E, F, D);
        return gFD;
    }

    /** The head: [2048 x 128] x [128 x 65] + bias (a width that is no multiple of the vectors). */
    @Benchmark
    public float[] headNN() {
        Ops.matmul(pool, x, 0, wHead, 0, bias, 0, outV, 0, T, D, VOCAB, false);
        return outV;
    }

    @Benchmark
    public float[] headNT() {
        Ops.matmulNT(pool, outV, 0, wHead, 0, outD, 0, T, D, VOCAB, false);
        return outD;
    }

    @Benchmark
    public float[] headTN() {
        Ops.matmulTN(pool, x, 0, outV, 0, gHead, 0, T, D, VOCAB);
        return gHead;
    }

    /** The router: [2048 x 128] x [128 x 4] + bias. */
    @Benchmark
    public float[] routerNN() {
        Ops.matmul(pool, x, 0, wRouter, 0, bias, 0, outR, 0, T, D, ROUTER, false);
        return outR;
    }

    @Benchmark
    public float[] routerTN() {
        Ops.matmulTN(pool, x, 0, outR, 0, gRouter, 0, T, D, ROUTER);
        return gRouter;
    }

    /** 1024^3, several k-blocks. */
    @Benchmark
    public float[] square1024() {
        Ops.matmul(pool, big, 0, bigW, 0, null, 0, bigOut, 0, BIG, BIG, BIG, false);
        return bigOut;
    }

    /** One token through a 768 x 3072 linear layer: the GEMV of a batch-1 decode step. */
    @Benchmark
    public float[] decodeGemv() {
        Ops.matmul(pool, decX, 0, decW, 0, decB, 0, decOut, 0, 1, DEC_IN, DEC_OUT, false);
        return decOut;
    }
}
