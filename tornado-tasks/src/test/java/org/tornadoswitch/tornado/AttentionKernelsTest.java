package org.tornadoswitch.tornado;

import static org.tornadoswitch.tornado.DeviceRun.assertClose;
import static org.tornadoswitch.tornado.DeviceRun.random;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.tornadoswitch.jvm.Attention;
import org.tornadoswitch.util.Rng;
import org.tornadoswitch.util.ThreadPool;
import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The flash-attention kernels in both work-group forms against the JVM's {@link Attention}: output,
 * log-sum-exp and dQ, dK, dV, with and without dropout, on sequence lengths that are no multiple of
 * the query, key and tile blocks (37: two query blocks of 32, three dK/dV tiles of 16) and one of 1.
 */
class AttentionKernelsTest {
    static final ThreadPool POOL = new ThreadPool(1);

    @AfterAll
    static void close() {
        POOL.close();
    }

    @ParameterizedTest(name = "{0} nSeq={1} s={2} heads={3} hd={4} dropout={5}")
    @CsvSource({"CPU,3,37,2,12,0", "GPU,3,37,2,12,0", "CPU,2,37,2,12,0.3", "GPU,2,37,2,12,0.3", "CPU,2,1,1,8,0", "GPU,1,64,4,32,0.1",
            "CPU,1,64,4,32,0.1"})
    void flashAttentionMatchesTheJvmAttention(KernelForm form, int nSeq, int s, int heads, int hd, float drop) {
        int d = heads * hd, t = nSeq * s, n = t * d;
        float[] q = random(n, 1), k = random(n, 2), v = random(n, 3), dout = random(n, 4);
        long key = Rng.streamKey(5, 2, 1, Rng.SITE_ATTN);
        Attention.Shape shape = Attention.Shape.dense(nSeq, s, heads, hd);
        Attention.Options opt = Attention.Options.causal((float) (1 / Math.sqrt(hd)));
        if (drop > 0) opt = opt.withDropout(drop, key);
        float[] out = new float[n], lse = new float[nSeq * heads * s], dq = new float[n], dk = new float[n], dv = new float[n];
        Attention.forward(POOL, shape, opt, q, 0, k, 0, v, 0, out, 0, lse, 0);
        Attention.backward(POOL, shape, opt, q, 0, k, 0, v, 0, out, 0, dout, 0, lse, 0, dq, 0, dk, 0, dv, 0, null, 0);

        float[] qkv = new float[3 * n];
        System.arraycopy(q, 0, qkv, 0, n);
        System.arraycopy(k, 0, qkv, n, n);
        System.arraycopy(v, 0, qkv, 2 * n, n);
        FloatArray fqkv = FloatArray.fromArray(qkv), fout = new FloatArray(n), flse = new FloatArray(nSeq * heads * s);
        FloatArray fdo = FloatArray.fromArray(dout), fd = new FloatArray(3 * n);
        IntArray keys = new IntArray(2);
        keys.set(0, (int) (key >> 32));
        keys.set(1, (int) key);
        FloatArray rates = FloatArray.fromArray(new float[] {drop, 0f, 0f});
        KernelContext kc = new KernelContext();
        DeviceRun.run("attention_" + form + "_" + s + "_" + (drop > 0), tg -> tg
                        .task("fwd", AttentionKernels::forward, kc, fqkv, fout, flse, keys, rates, nSeq, s, heads, d, 0)
                        .task("dkv", AttentionKernels::backwardKeyValue, kc, fqkv, fout, fdo, flse, fd, keys, rates, nSeq, s, heads, d, 0)
                        .task("dq", AttentionKernels::backwardQuery, kc, fqkv, fout, fdo, flse, fd, keys, rates, nSeq, s, heads, d, 0),
                new Object[] {"fwd", form.attentionGrid(AttentionKernels.queryBlocks(nSeq, heads, s)),
                        "dkv", form.attentionGrid(AttentionKernels.keyBlocks(nSeq, heads, s)),
                        "dq", form.attentionGrid(AttentionKernels.queryBlocks(nSeq, heads, s))},
                fqkv, fout, flse, fdo, fd, keys, rates);
        assertClose(out, fout, "out");
        assertClose(lse, flse, "lse");
        float[] grads = new float[3 * n];
        System.arraycopy(dq, 0, grads, 0, n);
        System.arraycopy(dk, 0, grads, n, n);
        System.arraycopy(dv, 0, grads, 2 * n, n);
        assertClose(grads, fd, 0, n, "dq");
        assertClose(grads, fd, n, n, "dk");
        assertClose(grads, fd, 2 * n, n, "dv");
    }
}
