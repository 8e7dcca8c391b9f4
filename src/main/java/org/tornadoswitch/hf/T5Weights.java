package org.tornadoswitch.hf;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.tornadoswitch.hf.T5Config.Stack;

/**
 * The parameters of a SwitchTransformers model (or their gradients), one {@code float[]} per
 * tensor, in Hugging Face's own layout: a linear layer's weight is {@code [out, in]} row-major, as
 * {@code nn.Linear} stores it, so a checkpoint is read straight into place and saved from place.
 * The experts of one sparse block share one array per matrix ({@code [E x d_ff x d_model]} for
 * {@code wi}): the grouped kernels run all experts in one pass, and each HF tensor
 * ({@code experts.expert_3.wi.weight}) is a view at offset {@code 3 * d_ff * d_model}.
 *
 * <p>Per-tensor arrays, not one flat buffer: a switch-base-32 model has 2 B parameters, more than
 * one Java array holds. {@link #tensors()} lists every HF tensor (name, shape, array, offset) in
 * the order of HF's state dict; the tied head is {@code shared.weight} itself.
 */
public final class T5Weights {
    private static final java.lang.foreign.ValueLayout.OfFloat F32_LE =
            java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);

    /** One HF tensor: {@code data[off, off + numel)} holds it row-major in {@code shape}. */
    public record Tensor(String name, long[] shape, float[] data, int off) {
        public int numel() {
            long n = 1;
            for (long d : shape) n *= d;
            return (int) n;
        }

        /** Rows and columns of a 2-D tensor (a 1-D one is one row). */
        public int rows() {
            return shape.length == 1 ? 1 : (int) shape[0];
        }

        public int cols() {
            return (int) shape[shape.length - 1];
        }

        @Override
        public String toString() {
            return name + Arrays.toString(shape);
        }
    }

    /** One block's tensors. Decoder blocks have the cross-attention; dense blocks have one "expert" and no router. */
    public static final class Block {
        /** Self-attention norm, q/k/v [inner x d], o [d x inner]. */
        public final float[] ln1, q, k, v, o;
        /** Cross-attention (decoder only, else null): norm, q/k/v [inner x d], o [d x inner]. */
        public final float[] lnX, qx, kx, vx, ox;
        /** FFN norm. */
        public final float[] lnF;
        public final boolean sparse;
        /** Experts of the FFN: num_experts in a sparse block, 1 in a dense one. */
        public final int experts;
        /** [experts x d_ff x d] and [experts x d x d_ff]. */
        public final float[] wi, wo;
        /** Router classifier [E x d] and its bias [E] (null without router_bias or in a dense block). */
        public final float[] router, routerBias;
        /** The HF tensors of each expert's wi and wo (views into {@link #wi}, {@link #wo}). */
        final Tensor[] wiTensors, woTensors;

        Block(T5Config c, Stack s, int i) {
            int d = c.dModel(), in = c.innerDim(), f = c.dFf();
            ln1 = new float[d];
            q = new float[in * d];
            k = new float[in * d];
            v = new float[in * d];
            o = new float[d * in];
            boolean dec = s == Stack.DECODER;
            lnX = dec ? new float[d] : null;
            qx = dec ? new float[in * d] : null;
            kx = dec ? new float[in * d] : null;
            vx = dec ? new float[in * d] : null;
            ox = dec ? new float[d * in] : null;
            lnF = new float[d];
            sparse = c.isSparse(s, i);
            experts = sparse ? c.numExperts() : 1;
            wi = new float[experts * f * d];
            wo = new float[experts * d * f];
            router = sparse ? new float[c.numExperts() * d] : null;
            routerBias = sparse && c.routerBias() ? new float[c.numExperts()] : null;
            wiTensors = new Tensor[experts];
            woTensors = new Tensor[experts];
        }
    }

    /**
     * One stack: its token embedding (the shared one when tie_word_embeddings, else the stack's own
     * {@code embed_tokens}: transformers v5 ties nothing in an untied model), its blocks, the
     * relative position bias table of block 0 [buckets x heads], the final norm.
     */
    public static final class StackWeights {
        public final float[] embed;
        public final Block[] blocks;
        public final float[] relBias, finalNorm;

        StackWeights(T5Config c, Stack s, float[] shared) {
            embed = c.tieWordEmbeddings() ? shared : new float[c.vocabSize() * c.dModel()];
            blocks = new Block[c.layers(s)];
            for (int i = 0; i < blocks.length; i++) blocks[i] = new Block(c, s, i);
            relBias = new float[c.relativeAttentionNumBuckets() * c.numHeads()];
            finalNorm = new float[c.dModel()];
        }

        public float[] relBias() {
            return relBias;
        }
    }

    private final T5Config cfg;
    /**
     * The token embedding [vocab x d]: both stacks' and the head's when tied; in an untied model it is
     * saved and loaded but, as in transformers v5, no stack reads it.
     */
    public final float[] shared;
    /** The LM head [vocab x d]: {@link #shared} itself when tie_word_embeddings. */
    public final float[] lmHead;
    public final StackWeights encoder, decoder;
    private final List<Tensor> tensors;
    private final Map<String, Tensor> byName = new LinkedHashMap<>();
    /** In a gradient store: tensors the last backward gave no gradient (an expert that got no token), as torch's None. */
    private final java.util.Set<String> absent = new java.util.HashSet<>();

    /** All tensors zero (norm weights too): a gradient store, or a model about to be loaded or initialized. */
    public T5Weights(T5Config c) {
        cfg = c;
        shared = new float[c.vocabSize() * c.dModel()];
        lmHead = c.tieWordEmbeddings() ? shared : new float[c.vocabSize() * c.dModel()];
        encoder = new StackWeights(c, Stack.ENCODER, shared);
        decoder = new StackWeights(c, Stack.DECODER, shared);
        List<Tensor> list = new ArrayList<>();
        int d = c.dModel(), in = c.innerDim(), f = c.dFf();
        list.add(new Tensor("shared.weight", shape(c.vocabSize(), d), shared, 0));
        for (Stack s : Stack.values()) {
            String p = s == Stack.ENCODER ? "encoder" : "decoder";
            StackWeights sw = stack(s);
            if (!c.tieWordEmbeddings()) list.add(new Tensor(p + ".embed_tokens.weight", shape(c.vocabSize(), d), sw.embed, 0));
            for (int i = 0; i < sw.blocks.length; i++) {
                Block b = sw.blocks[i];
                String bp = p + ".block." + i + ".layer.";
                String sa = bp + "0.SelfAttention.";
                list.add(new Tensor(sa + "q.weight", shape(in, d), b.q, 0));
                list.add(new Tensor(sa + "k.weight", shape(in, d), b.k, 0));
                list.add(new Tensor(sa + "v.weight", shape(in, d), b.v, 0));
                list.add(new Tensor(sa + "o.weight", shape(d, in), b.o, 0));
                if (i == 0)
                    list.add(new Tensor(sa + "relative_attention_bias.weight", shape(c.relativeAttentionNumBuckets(), c.numHeads()),
                            sw.relBias, 0));
                list.add(new Tensor(bp + "0.layer_norm.weight", shape(d), b.ln1, 0));
                int ff = 1;
                if (s == Stack.DECODER) {
                    String ca = bp + "1.EncDecAttention.";
                    list.add(new Tensor(ca + "q.weight", shape(in, d), b.qx, 0));
                    list.add(new Tensor(ca + "k.weight", shape(in, d), b.kx, 0));
                    list.add(new Tensor(ca + "v.weight", shape(in, d), b.vx, 0));
                    list.add(new Tensor(ca + "o.weight", shape(d, in), b.ox, 0));
                    list.add(new Tensor(bp + "1.layer_norm.weight", shape(d), b.lnX, 0));
                    ff = 2;
                }
                String mlp = bp + ff + ".mlp.";
                if (b.sparse) {
                    list.add(new Tensor(mlp + "router.classifier.weight", shape(c.numExperts(), d), b.router, 0));
                    if (b.routerBias != null) list.add(new Tensor(mlp + "router.classifier.bias", shape(c.numExperts()), b.routerBias, 0));
                    for (int e = 0; e < b.experts; e++) {
                        list.add(b.wiTensors[e] = new Tensor(mlp + "experts.expert_" + e + ".wi.weight", shape(f, d), b.wi, e * f * d));
                        list.add(b.woTensors[e] = new Tensor(mlp + "experts.expert_" + e + ".wo.weight", shape(d, f), b.wo, e * d * f));
                    }
                } else {
                    list.add(b.wiTensors[0] = new Tensor(mlp + "wi.weight", shape(f, d), b.wi, 0));
                    list.add(b.woTensors[0] = new Tensor(mlp + "wo.weight", shape(d, f), b.wo, 0));
                }
                list.add(new Tensor(bp + ff + ".layer_norm.weight", shape(d), b.lnF, 0));
            }
            list.add(new Tensor(p + ".final_layer_norm.weight", shape(d), sw.finalNorm, 0));
        }
        if (!c.tieWordEmbeddings()) list.add(new Tensor("lm_head.weight", shape(c.vocabSize(), d), lmHead, 0));
        tensors = Collections.unmodifiableList(list);
        for (Tensor t : list) byName.put(t.name(), t);
    }

    private static long[] shape(long... dims) {
        return dims;
    }

    public T5Config config() {
        return cfg;
    }

    public StackWeights stack(Stack s) {
        return s == Stack.ENCODER ? encoder : decoder;
    }

    /** Every tensor, in HF's state-dict order; the tied head is not listed separately. */
    public List<Tensor> tensors() {
        return tensors;
    }

    /** The tensor of an HF name, or null. */
    public Tensor tensor(String name) {
        return byName.get(name);
    }

    public long parameterCount() {
        long n = 0;
        for (Tensor t : tensors) n += t.numel();
        return n;
    }

    public void forEach(Consumer<Tensor> f) {
        tensors.forEach(f);
    }

    /** Whether the last backward gave this tensor a gradient (every tensor but the experts that got no token). */
    public boolean present(Tensor t) {
        return !absent.contains(t.name());
    }

    /** Marks expert e of a block as having no gradient in this step (or clears the marks with e = -1 ... see clearAbsent). */
    void markAbsent(Block b, int e) {
        absent.add(b.wiTensors[e].name());
        absent.add(b.woTensors[e].name());
    }

    void clearAbsent() {
        absent.clear();
    }

    /** Every float set to 0 (a gradient store between steps). */
    public void zero() {
        for (float[] a : arrays()) Arrays.fill(a, 0f);
    }

    /** The distinct arrays (experts of a block share one). */
    public List<float[]> arrays() {
        List<float[]> out = new ArrayList<>();
        java.util.IdentityHashMap<float[], Boolean> seen = new java.util.IdentityHashMap<>();
        for (Tensor t : tensors) if (seen.put(t.data(), Boolean.TRUE) == null) out.add(t.data());
        return out;
    }

    /** Copies every value of {@code other} (same config) into this store. */
    public void copyFrom(T5Weights other) {
        List<float[]> a = arrays(), b = other.arrays();
        for (int i = 0; i < a.size(); i++) System.arraycopy(b.get(i), 0, a.get(i), 0, a.get(i).length);
    }

    /**
     * Names a checkpoint may hold beside {@link #tensors()} without being unexpected: the tied
     * copies HF's state dict has of {@code shared.weight}.
     */
    private boolean isAlias(String name) {
        return cfg.tieWordEmbeddings() && (name.equals("encoder.embed_tokens.weight") || name.equals("decoder.embed_tokens.weight")
                || name.equals("lm_head.weight"));
    }

    /** Whether the forward pass reads a tensor (an untied model's shared.weight is only carried along). */
    public boolean usedInForward(Tensor t) {
        return cfg.tieWordEmbeddings() || !t.name().equals("shared.weight");
    }

    /**
     * Reads every tensor of the config from {@code src}, checking its shape. A missing tensor or
     * one of the wrong shape is refused ({@link HfFormatException}, one line naming the tensor).
     * Returns notes for the user: tensors the config does not use (HF warns about them as
     * "unexpected"), an untied stack embedding read from shared.weight.
     */
    public List<String> load(TensorSource src) {
        List<String> notes = new ArrayList<>();
        for (Tensor t : tensors) {
            if (!src.has(t.name()) && t.name().endsWith(".embed_tokens.weight") && src.has("shared.weight")) {
                notes.add(t.name() + " is absent: read shared.weight in its place (transformers v4's tying; v5 would"
                        + " initialize it at random)");
                continue;
            }
            if (!src.has(t.name()))
                throw new HfFormatException("the checkpoint has no tensor " + t.name() + " (the config needs it, shape "
                        + Arrays.toString(t.shape()) + ")");
            long[] s = src.shape(t.name());
            if (!Arrays.equals(s, t.shape()))
                throw new HfFormatException("tensor " + t.name() + " has shape " + Arrays.toString(s) + "; the config needs "
                        + Arrays.toString(t.shape()));
        }
        for (Tensor t : tensors) {
            String name = src.has(t.name()) ? t.name() : "shared.weight";
            var seg = src.mappedF32(name);
            if (seg.isPresent()) { // copied straight from the mapping, whose pages are then handed back
                java.lang.foreign.MemorySegment.copy(seg.get(), F32_LE, 0, t.data(), t.off(), t.numel());
                PageRelease.release(seg.get());
            } else {
                src.readFloats(name, t.data(), t.off());
            }
        }
        List<String> unused = new ArrayList<>();
        for (String n : src.names()) if (!byName.containsKey(n) && !isAlias(n)) unused.add(n);
        if (!unused.isEmpty())
            notes.add(unused.size() + " tensor(s) of the checkpoint are not used by this config and were ignored: "
                    + String.join(", ", unused.subList(0, Math.min(5, unused.size()))) + (unused.size() > 5 ? ", ..." : ""));
        return notes;
    }
}
