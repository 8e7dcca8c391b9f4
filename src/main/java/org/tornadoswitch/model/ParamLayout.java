package org.tornadoswitch.model;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.tornadoswitch.Config;
import org.tornadoswitch.util.Rng;

/**
 * All parameters of the model in one flat float buffer with named views (llm.c style), so that
 * gradients, Adam moments and checkpoints share one layout. Linear weights are stored [in x out]
 * (y = x W + b). The experts of a layer are contiguous per kind, expert e of {@code w1[l]} at
 * {@code w1[l] + e * dModel * dFf}, so all experts can be addressed from one base offset. A dense
 * block (sparse step) has one expert and no router.
 */
public final class ParamLayout {
    public enum Init { ZEROS, ONES, NORMAL, UNIFORM_FAN_IN }

    /** One named tensor: shape, offset into the flat buffer, how it is initialized. */
    public record Tensor(String name, int[] shape, int offset, int size, Init init, int fanIn) {}

    public final int dModel, dFf, vocab, experts, layers, seqLen;
    private final Config.Init scheme;
    private final double initScale;
    /** Experts of each block: {@link #experts} in a Switch block, 1 in a dense one. */
    public final int[] expertsIn;
    public final int tokEmb, posEmb, lnfG, lnfB, headW, headB;
    public final int[] ln1G, ln1B, wq, bq, wk, bk, wv, bv, wo, bo, ln2G, ln2B, routerW, routerB, w1, b1, w2, b2;
    private final List<Tensor> tensors = new ArrayList<>();
    /** Parameter count, in long: a layout too large for one float array is still described (see {@link #count}). */
    private long total;

    public ParamLayout(Config c, int vocab) {
        this.dModel = c.dModel();
        this.dFf = c.dFf();
        this.vocab = vocab;
        this.experts = c.numExperts();
        this.layers = c.layers();
        this.seqLen = c.seqLen();
        this.scheme = c.init();
        this.initScale = c.initScale();
        int d = dModel, f = dFf, e = experts;
        tokEmb = add("tok_emb.weight", Init.NORMAL, 0, vocab, d);
        posEmb = c.posEmbedding() ? add("pos_emb.weight", Init.NORMAL, 0, seqLen, d) : -1;
        int n = layers;
        ln1G = new int[n]; ln1B = new int[n]; wq = new int[n]; bq = new int[n]; wk = new int[n]; bk = new int[n];
        wv = new int[n]; bv = new int[n]; wo = new int[n]; bo = new int[n]; ln2G = new int[n]; ln2B = new int[n];
        routerW = new int[n]; routerB = new int[n]; w1 = new int[n]; b1 = new int[n]; w2 = new int[n]; b2 = new int[n];
        expertsIn = new int[n];
        for (int l = 0; l < n; l++) {
            String p = "layers." + l + ".";
            expertsIn[l] = c.expertsIn(l);
            ln1G[l] = add(p + "ln1.weight", Init.ONES, 0, d);
            ln1B[l] = add(p + "ln1.bias", Init.ZEROS, 0, d);
            wq[l] = add(p + "attn.q.weight", Init.UNIFORM_FAN_IN, d, d, d);
            bq[l] = add(p + "attn.q.bias", Init.UNIFORM_FAN_IN, d, d);
            wk[l] = add(p + "attn.k.weight", Init.UNIFORM_FAN_IN, d, d, d);
            bk[l] = add(p + "attn.k.bias", Init.UNIFORM_FAN_IN, d, d);
            wv[l] = add(p + "attn.v.weight", Init.UNIFORM_FAN_IN, d, d, d);
            bv[l] = add(p + "attn.v.bias", Init.UNIFORM_FAN_IN, d, d);
            wo[l] = add(p + "attn.o.weight", Init.UNIFORM_FAN_IN, d, d, d);
            bo[l] = add(p + "attn.o.bias", Init.UNIFORM_FAN_IN, d, d);
            ln2G[l] = add(p + "ln2.weight", Init.ONES, 0, d);
            ln2B[l] = add(p + "ln2.bias", Init.ZEROS, 0, d);
            if (c.switchLayer(l)) {
                routerW[l] = add(p + "router.weight", Init.UNIFORM_FAN_IN, d, d, e);
                routerB[l] = add(p + "router.bias", Init.UNIFORM_FAN_IN, d, e);
            } else {
                routerW[l] = routerB[l] = -1;
            }
            w1[l] = addExperts(p, expertsIn[l], "ff1.weight", d, d, f);
            b1[l] = addExperts(p, expertsIn[l], "ff1.bias", d, f);
            w2[l] = addExperts(p, expertsIn[l], "ff2.weight", f, f, d);
            b2[l] = addExperts(p, expertsIn[l], "ff2.bias", f, d);
        }
        lnfG = add("ln_f.weight", Init.ONES, 0, d);
        lnfB = add("ln_f.bias", Init.ZEROS, 0, d);
        headW = add("head.weight", Init.UNIFORM_FAN_IN, d, d, vocab);
        headB = add("head.bias", Init.UNIFORM_FAN_IN, d, vocab);
    }

    private int addExperts(String prefix, int count, String kind, int fanIn, int... shape) {
        int first = -1;
        for (int x = 0; x < count; x++) {
            int off = add(prefix + "experts." + x + "." + kind, Init.UNIFORM_FAN_IN, fanIn, shape);
            if (x == 0) first = off;
        }
        return first;
    }

    private int add(String name, Init init, int fanIn, int... shape) {
        long size = 1;
        for (int s : shape) size *= s;
        long off = total;
        total += size;
        // past one array's reach offsets are meaningless (-1): only count() may be asked then
        boolean fits = total <= MAX_FLOATS;
        tensors.add(new Tensor(name, shape.clone(), fits ? (int) off : -1, fits ? (int) size : -1, init, fanIn));
        return fits ? (int) off : -1;
    }

    /** The longest float array the JVM allocates (a few words below Integer.MAX_VALUE). */
    public static final int MAX_FLOATS = Integer.MAX_VALUE - 8;

    /** Number of parameters; may exceed what one float array holds (then {@link #size} refuses). */
    public long count() {
        return total;
    }

    /** Number of parameters, the length of the flat buffer. */
    public int size() {
        if (total > MAX_FLOATS)
            throw new IllegalArgumentException("the model has " + total + " parameters, more than one Java float array holds (" + MAX_FLOATS + ")");
        return (int) total;
    }

    /** N(0, 1) resampled until it lies within 2 standard deviations (the paper's truncation). */
    static double truncatedGaussian(Rng rng) {
        while (true) {
            double z = rng.nextGaussian();
            if (Math.abs(z) <= 2) return z;
        }
    }

    public List<Tensor> tensors() {
        return Collections.unmodifiableList(tensors);
    }

    /**
     * PyTorch's defaults: N(0,1) embeddings, U(+-1/sqrt(fan_in)) linear layers, LayerNorm 1 and 0.
     * With the paper's scheme linear weights come from a truncated normal and biases are 0.
     */
    public float[] initialize(long seed) {
        float[] p = new float[size()];
        Rng rng = new Rng(seed);
        for (Tensor t : tensors) {
            if (scheme == Config.Init.SWITCH && t.init() == Init.UNIFORM_FAN_IN) {
                boolean bias = t.shape().length == 1;
                double sigma = Math.sqrt(initScale / t.fanIn());
                for (int i = 0; i < t.size(); i++) p[t.offset() + i] = bias ? 0f : (float) (sigma * truncatedGaussian(rng));
                continue;
            }
            for (int i = 0; i < t.size(); i++) {
                p[t.offset() + i] = switch (t.init()) {
                    case ZEROS -> 0f;
                    case ONES -> 1f;
                    case NORMAL -> (float) rng.nextGaussian();
                    case UNIFORM_FAN_IN -> (float) ((rng.nextDouble() * 2 - 1) / Math.sqrt(t.fanIn()));
                };
            }
        }
        return p;
    }
}
