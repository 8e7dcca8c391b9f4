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
import org.tornadoswitch.jvm.Attention;
import org.tornadoswitch.jvm.Ops;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;

/**
 * JMH of the attention op (and the one-pass LayerNorm backward) at the shapes that use them:
 * <ul>
 * <li>labml: 32 sequences of 64, 4 heads of 32, causal (one layer of the default model), and the
 * old per-head GEMM kernels (Ops.attention) on the same data;
 * <li>T5 encoder: 8 sequences of 128, 12 heads of 64, non-causal with a relative-position bias (backward with dBias);
 * <li>KV-cached decoding: 8 sequences, 1 new query against 256 cached keys, 12 heads of 64.
 * </ul>
 * Run with {@code scripts/jmh AttentionBench}; not part of the tests.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class AttentionBench {
    @Param({"2"})
    int threads;

    ThreadPool pool;
    // labml
    static final int LN = 32, LS = 64, LH = 4, LHD = 32, LD = LH * LHD;
    float[] lq, lk, lv, lo, lg, ldq, ldk, ldv, llse, latt, lscratch;
    Attention.Shape lShape;
    Attention.Options lOpt;
    // T5 encoder
    static final int TN = 8, TS = 128, TH = 12, THD = 64;
    float[] tq, tk, tv, to, tg, tdq, tdk, tdv, tlse, tbias, tdbias;
    Attention.Shape tShape;
    Attention.Options tOpt;
    // decode
    static final int DN = 8, DKV = 256;
    float[] dq, dk, dv, dout, dlse, dbias;
    Attention.Shape dShape;
    Attention.Options dOpt;
    // LayerNorm backward, [2048 x 128]
    float[] lnx, lny, lndy, lndx, lnmean, lnrstd, lng, lnb, lndg, lndb, lnPart;

    static float[] random(int n, long seed, double scale) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) ((r.nextDouble() - 0.5) * scale);
        return a;
    }

    @Setup(Level.Trial)
    public void setUp() {
        pool = new ThreadPool(threads);
        int n = LN * LS * LD;
        lq = random(n, 1, 2); lk = random(n, 2, 2); lv = random(n, 3, 2); lg = random(n, 4, 1);
        lo = new float[n]; ldq = new float[n]; ldk = new float[n]; ldv = new float[n]; llse = new float[LN * LH * LS];
        latt = new float[LN * LH * LS * LS]; lscratch = new float[LN * LH * LS];
        lShape = Attention.Shape.dense(LN, LS, LH, LHD);
        lOpt = Attention.Options.causal((float) (1 / Math.sqrt(LHD)));
        Attention.forward(pool, lShape, lOpt, lq, 0, lk, 0, lv, 0, lo, 0, llse, 0);

        int tn = TN * TS * TH * THD;
        tq = random(tn, 5, 0.5); tk = random(tn, 6, 2); tv = random(tn, 7, 2); tg = random(tn, 8, 1);
        to = new float[tn]; tdq = new float[tn]; tdk = new float[tn]; tdv = new float[tn]; tlse = new float[TN * TH * TS];
        tbias = random(TH * TS * TS, 9, 2); tdbias = new float[TH * TS * TS];
        tShape = Attention.Shape.dense(TN, TS, TH, THD);
        tOpt = Attention.Options.full(1f).withBias(tbias, 0);
        Attention.forward(pool, tShape, tOpt, tq, 0, tk, 0, tv, 0, to, 0, tlse, 0);

        dq = random(DN * TH * THD, 10, 0.5); dk = random(DN * DKV * TH * THD, 11, 2); dv = random(DN * DKV * TH * THD, 12, 2);
        dout = new float[DN * TH * THD]; dlse = new float[DN * TH];
        dbias = random(TH * DKV, 13, 2);
        dShape = Attention.Shape.cross(DN, 1, DKV, TH, THD);
        dOpt = Attention.Options.causal(1f).withQPos0(DKV - 1).withBias(dbias, 0);

        int rows = LN * LS;
        lnx = random(rows * LD, 14, 2); lny = new float[rows * LD]; lndy = random(rows * LD, 15, 1); lndx = new float[rows * LD];
        lnmean = new float[rows]; lnrstd = new float[rows]; lng = random(LD, 16, 1); lnb = random(LD, 17, 1);
        lndg = new float[LD]; lndb = new float[LD]; lnPart = new float[Ops.layerNormPartials(rows, LD)];
        Ops.layerNorm(pool, lnx, 0, lng, 0, lnb, 0, lny, 0, lnmean, lnrstd, 0, rows, LD);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        pool.close();
    }

    /** One layer of the default model's attention, forward (0.067 GFLOP with the causal half). */
    @Benchmark
    public float labmlForward() {
        Attention.forward(pool, lShape, lOpt, lq, 0, lk, 0, lv, 0, lo, 0, llse, 0);
        return lo[7];
    }

    @Benchmark
    public float labmlBackward() {
        Attention.backward(pool, lShape, lOpt, lq, 0, lk, 0, lv, 0, lo, 0, lg, 0, llse, 0, ldq, 0, ldk, 0, ldv, 0, null, 0);
        return ldq[7];
    }

    /** The per-head GEMM kernels the labml model used before (saving the [s x s] weights). */
    @Benchmark
    public float labmlForwardOld() {
        Ops.attention(pool, lq, lk, lv, latt, 0, lo, LN, LS, LH, LD);
        return lo[7];
    }

    @Benchmark
    public float labmlBackwardOld() {
        Ops.attentionBackward(pool, lq, lk, lv, latt, 0, lg, ldq, ldk, ldv, lscratch, LN, LS, LH, LD);
        return ldq[7];
    }

    @Benchmark
    public float t5EncoderForward() {
        Attention.forward(pool, tShape, tOpt, tq, 0, tk, 0, tv, 0, to, 0, tlse, 0);
        return to[7];
    }

    @Benchmark
    public float t5EncoderBackward() {
        Attention.backward(pool, tShape, tOpt, tq, 0, tk, 0, tv, 0, to, 0, tg, 0, tlse, 0, tdq, 0, tdk, 0, tdv, 0, tdbias, 0);
        return tdq[7];
    }

    /** One decoding step's self-attention: 1 query per sequence against 256 cached keys. */
    @Benchmark
    public float kvCacheDecodeRow() {
        Attention.forward(pool, dShape, dOpt, dq, 0, dk, 0, dv, 0, dout, 0, dlse, 0);
        return dout[7];
    }

    @Benchmark
    public float layerNormBackwardTwoPass() {
        Ops.layerNormBackward(pool, lnx, 0, lng, 0, lnmean, lnrstd, 0, lndy, 0, lndx, 0, lndg, 0, lndb, 0, LN * LS, LD, false);
        return lndx[7];
    }

    @Benchmark
    public float layerNormBackwardOnePass() {
        Ops.layerNormBackwardOnePass(pool, lnx, 0, lng, 0, lnmean, lnrstd, 0, lndy, 0, lndx, 0, lndg, 0, lndb, 0, LN * LS, LD, false,
                lnPart);
        return lndx[7];
    }
}
