package org.tornadoswitch.tornado;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.tornadoswitch.Config;
import org.tornadoswitch.backend.Backend;
import org.tornadoswitch.backend.Backends;
import org.tornadoswitch.model.ParamLayout;
import org.tornadoswitch.model.Routing;
import org.tornadoswitch.util.Rng;
import uk.ac.manchester.tornado.api.ImmutableTaskGraph;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.TornadoExecutionPlan;
import uk.ac.manchester.tornado.api.common.TornadoDevice;
import uk.ac.manchester.tornado.api.enums.DataTransferMode;
import uk.ac.manchester.tornado.api.exceptions.TornadoMemoryException;
import uk.ac.manchester.tornado.api.exceptions.TornadoOutOfMemoryException;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The training step as TornadoVM TaskGraphs, one execution plan on one device.
 *
 * <pre>
 *  init ─► fwd_attn_0 ─(router probs to host; host routes; routing arrays to device)─► fwd_ffn_0 ─► ...
 *       ─► fwd_ffn_{L-1} ─► head (per-token losses to host) ─► bwd_head ─► bwd_ffn_{L-1} ─► bwd_attn_{L-1}
 *       ─► ... ─► bwd_attn_0 ─► bwd_embed (grad-norm partials to host) ─► adam (lr, scale to device)
 * </pre>
 *
 * Weights, gradients, Adam moments and every activation live on the device for the whole run. The
 * first graph uploads them once; every graph then takes the device buffers over from the graph that
 * ran before it and hands them on (consumeFromDevice / persistOnDevice of the same shared set), so
 * any order of graphs sees one copy. A graph that uploads a buffer itself (token ids, routing
 * arrays, scalars) owns it and hands its copy on. Per step only token ids, router probabilities,
 * routing arrays, losses and a few scalars cross.
 *
 * <p>Each block has its own shapes: a Switch block E experts of capacity C ([E·C] slots) and k
 * assignments per token, a dense block (sparse step, dense baseline) one expert over all tokens.
 * Dropout masks and router jitter are drawn on the device from per-step keys ({@link Rng#streamKey},
 * uploaded with the tokens) exactly as the JVM backend draws them; their rates are uploaded too and
 * are 0 in evaluation passes, so one set of graphs serves training and evaluation.
 *
 * <p>The device always runs full batches of batchSize x seqLen tokens; a smaller batch (evaluation's
 * last batch, generation) is padded at the end of each sequence and of the batch. Causal attention
 * keeps padding from affecting real tokens, and the host routes only the real tokens.
 */
public final class TornadoBackend implements Backend {
    static {
        // Every graph hands on the whole shared buffer set, so its TornadoVM bytecode outgrows the
        // 4 KiB default for deep models. Read once when TornadoVM compiles its first graph.
        if (System.getProperty("tornado.tvm.maxbytecodesize") == null)
            System.setProperty("tornado.tvm.maxbytecodesize", "262144");
    }

    private final Config cfg;
    private final ParamLayout p;
    private final TornadoDevice device;
    private final int bsz, seq, maxT, d, f, e, vocab, layers, heads, cap, nParams;
    /** Per block: whether it routes, its experts, assignments per token, capacity per expert, slots. */
    private final boolean[] routes;
    private final int[] eL, kL, capL, slotsL;
    private final int zeroDropped;

    private final FloatArray w, g, m, v;
    private final IntArray tokens, targets;
    private final FloatArray[] xIn, ln1, q, k, vv, att, attOut, xMid, ln2, probs, xe, he, ye;
    private final FloatArray[] ln1Mean, ln1Rstd, ln2Mean, ln2Rstd;
    /** Per layer: each slot's assignment (-1: empty); each assignment's slot row, expert and scale; each expert's first grouped row. */
    private final IntArray[] slotAssignment, tokRow, expertOf, expertOffset;
    private final FloatArray[] tokScale, lbGrad, lse, routerIn;
    private final FloatArray lnf, lnfMean, lnfRstd, logits, dLogits, losses, correct;
    private final FloatArray dX, dLn, dA, dQ, dK, dV, dS, dXe, dHe, dYe, dRouter, partial, hp, logitRow;
    /** dX through a residual dropout mask; the router's per-assignment dot products (routerBack's scratch). */
    private final FloatArray dRes, gate;
    private final IntArray rowIndex;
    /** Noise keys of this pass, (high, low) per (layer, site); rates: dropout, expert dropout, jitter. */
    private final IntArray noiseKeys;
    private final FloatArray noiseRates;
    private static final int RATE_DROPOUT = 0, RATE_EXPERT_DROPOUT = 1, RATE_JITTER = 2, SITES = 8;
    private final int chunk, chunks;

    private final TornadoExecutionPlan plan;
    private final Map<String, Integer> graphIndex = new HashMap<>();
    private final float[] probsHost, lseHost;
    private final double compileSeconds;

    private int nSeq, seqLen, nTok;
    private boolean hasTargets;

    public TornadoBackend(Config cfg, int vocab, float[] params, String deviceSpec) {
        this.cfg = cfg;
        this.p = new ParamLayout(cfg, vocab);
        this.device = TornadoDevices.select(deviceSpec);
        this.bsz = cfg.batchSize();
        this.seq = cfg.seqLen();
        this.maxT = cfg.tokensPerBatch();
        this.d = cfg.dModel();
        this.f = cfg.dFf();
        this.e = cfg.numExperts();
        this.vocab = vocab;
        this.layers = cfg.layers();
        this.heads = cfg.heads();
        this.cap = Math.max(cfg.capacity(maxT), cfg.evalCapacity(maxT)); // buffers serve both
        this.zeroDropped = cfg.droppedOutput() == Config.DroppedOutput.ZERO ? 1 : 0;
        routes = new boolean[layers];
        eL = new int[layers];
        kL = new int[layers];
        capL = new int[layers];
        slotsL = new int[layers];
        int maxSlots = 0;
        for (int l = 0; l < layers; l++) {
            routes[l] = cfg.switchLayer(l);
            eL[l] = cfg.expertsIn(l);
            kL[l] = routes[l] ? cfg.topK() : 1;
            capL[l] = routes[l] ? cap : maxT;
            slotsL[l] = eL[l] * capL[l];
            maxSlots = Math.max(maxSlots, slotsL[l]);
        }
        this.nParams = p.size();
        w = FloatArray.fromArray(params);
        g = new FloatArray(nParams);
        m = new FloatArray(nParams);
        v = new FloatArray(nParams);
        tokens = new IntArray(maxT);
        targets = new IntArray(maxT);
        int td = maxT * d, attSize = bsz * heads * seq * seq;
        xIn = floats(layers + 1, td);
        ln1 = floats(layers, td); q = floats(layers, td); k = floats(layers, td); vv = floats(layers, td);
        att = floats(layers, attSize); attOut = floats(layers, td); xMid = floats(layers, td); ln2 = floats(layers, td);
        probs = floats(layers, maxT * e);
        xe = new FloatArray[layers]; he = new FloatArray[layers]; ye = new FloatArray[layers];
        slotAssignment = new IntArray[layers]; expertOffset = new IntArray[layers];
        tokRow = new IntArray[layers]; expertOf = new IntArray[layers]; tokScale = new FloatArray[layers];
        for (int l = 0; l < layers; l++) {
            xe[l] = new FloatArray(slotsL[l] * d); he[l] = new FloatArray(slotsL[l] * f); ye[l] = new FloatArray(slotsL[l] * d);
            slotAssignment[l] = new IntArray(slotsL[l]); expertOffset[l] = new IntArray(eL[l] + 1);
            tokRow[l] = new IntArray(maxT * kL[l]); expertOf[l] = new IntArray(maxT * kL[l]); tokScale[l] = new FloatArray(maxT * kL[l]);
        }
        ln1Mean = floats(layers, maxT); ln1Rstd = floats(layers, maxT); ln2Mean = floats(layers, maxT); ln2Rstd = floats(layers, maxT);
        lbGrad = floats(layers, e); lse = floats(layers, maxT);
        routerIn = floats(layers, cfg.jitter() > 0 ? td : 1);
        lnf = new FloatArray(td); lnfMean = new FloatArray(maxT); lnfRstd = new FloatArray(maxT);
        logits = new FloatArray(maxT * vocab); dLogits = new FloatArray(maxT * vocab);
        losses = new FloatArray(maxT); correct = new FloatArray(maxT);
        dX = new FloatArray(td); dLn = new FloatArray(td); dA = new FloatArray(td); dQ = new FloatArray(td);
        dK = new FloatArray(td); dV = new FloatArray(td); dS = new FloatArray(attSize);
        dXe = new FloatArray(maxSlots * d); dHe = new FloatArray(maxSlots * f); dYe = new FloatArray(maxSlots * d);
        dRouter = new FloatArray(maxT * e);
        dRes = new FloatArray(cfg.dropout() > 0 ? td : 1);
        gate = new FloatArray(maxT * cfg.topK());
        noiseKeys = new IntArray(layers * SITES * 2);
        noiseRates = new FloatArray(4);
        chunk = 4096;
        chunks = (nParams + chunk - 1) / chunk;
        partial = new FloatArray(chunks);
        hp = new FloatArray(7);
        logitRow = new FloatArray(vocab);
        rowIndex = new IntArray(1);
        probsHost = new float[maxT * e];
        lseHost = new float[maxT];

        List<ImmutableTaskGraph> graphs = buildGraphs();
        plan = new TornadoExecutionPlan(graphs.toArray(new ImmutableTaskGraph[0]));
        plan.withDevice(device);
        plan.withGridScheduler(blocks1D());
        long t0 = System.nanoTime();
        try {
            plan.withPreCompilation();
        } catch (RuntimeException e) {
            throw new Backends.BackendUnavailableException("TornadoVM could not compile the kernels for "
                    + TornadoDevices.describe(device) + ": " + rootMessage(e), e);
        }
        run("init");
        compileSeconds = (System.nanoTime() - t0) / 1e9;
    }

    private static FloatArray[] floats(int n, int size) {
        FloatArray[] a = new FloatArray[n];
        for (int i = 0; i < n; i++) a[i] = new FloatArray(size);
        return a;
    }

    private static IntArray[] ints(int n, int size) {
        IntArray[] a = new IntArray[n];
        for (int i = 0; i < n; i++) a[i] = new IntArray(size);
        return a;
    }

    /** Every buffer that lives on the device and is passed from graph to graph. */
    private Object[] shared() {
        List<Object> s = new ArrayList<>(List.of(w, g, m, v, tokens, targets, lnf, lnfMean, lnfRstd, logits, dLogits,
                losses, correct, dX, dLn, dA, dQ, dK, dV, dS, dXe, dHe, dYe, dRouter, partial, hp, logitRow, rowIndex,
                dRes, gate, noiseKeys, noiseRates));
        s.add(xIn[layers]);
        for (int l = 0; l < layers; l++) {
            s.addAll(List.of(xIn[l], ln1[l], q[l], k[l], vv[l], att[l], attOut[l], xMid[l], ln2[l], probs[l], xe[l], he[l],
                    ye[l], ln1Mean[l], ln1Rstd[l], ln2Mean[l], ln2Rstd[l], slotAssignment[l], expertOffset[l], tokRow[l],
                    expertOf[l], tokScale[l], lbGrad[l], lse[l], routerIn[l]));
        }
        return s.toArray();
    }

    /**
     * The shared set less the buffers a graph uploads itself: TornadoVM skips the upload of a buffer
     * that the graph also takes over from its predecessor, so an uploading graph owns that buffer and
     * hands it on.
     */
    private static Object[] except(Object[] all, Object... own) {
        List<Object> out = new ArrayList<>();
        for (Object o : all) {
            boolean mine = false;
            for (Object x : own) mine |= o == x;
            if (!mine) out.add(o);
        }
        return out.toArray();
    }

    private TaskGraph graph(String name, List<TaskGraph> out) {
        graphIndex.put(name, out.size());
        TaskGraph tg = new TaskGraph(name);
        out.add(tg);
        return tg;
    }

    private List<ImmutableTaskGraph> buildGraphs() {
        Object[] all = shared();
        List<TaskGraph> gs = new ArrayList<>();
        int sc = cfg.scaleProb() ? 1 : 0;
        boolean dropout = cfg.dropout() > 0, jitter = cfg.jitter() > 0;
        float zScale = (float) (2 * cfg.zLossCoef() / maxT); // d(coef * mean_t lse_t^2)/d lse_t; training batches are full
        IntArray nk = noiseKeys;
        FloatArray nr = noiseRates;
        int td = maxT * d;

        // init: upload everything once (parameters, zeroed state)
        TaskGraph init = graph("init", gs).transferToDevice(DataTransferMode.FIRST_EXECUTION, all);
        init.task("zero_grads", SwitchKernels::fill, g, nParams, 0f);
        init.task("zero_m", SwitchKernels::fill, m, nParams, 0f);
        init.task("zero_v", SwitchKernels::fill, v, nParams, 0f);
        List<FloatArray> fl = new ArrayList<>();
        List<IntArray> il = new ArrayList<>();
        for (Object o : all) {
            if (o instanceof FloatArray fa) {
                if (fa != g && fa != m && fa != v) fl.add(fa);
            } else {
                il.add((IntArray) o);
            }
        }
        // pad the last group with distinct dummies: the same array twice in one task hangs TornadoVM's graph compiler
        while (fl.size() % 14 != 0) fl.add(new FloatArray(1));
        while (il.size() % 14 != 0) il.add(new IntArray(1));
        for (int i = 0; i < fl.size(); i += 14) {
            FloatArray[] a = new FloatArray[14];
            for (int j = 0; j < 14; j++) a[j] = fl.get(i + j);
            init.task("upload_f" + i, SwitchKernels::touch, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]);
        }
        for (int i = 0; i < il.size(); i += 14) {
            IntArray[] a = new IntArray[14];
            for (int j = 0; j < 14; j++) a[j] = il.get(i + j);
            init.task("upload_i" + i, SwitchKernels::touchInt, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]);
        }
        init.persistOnDevice(all);

        for (int l = 0; l < layers; l++) {
            TaskGraph a = graph("fwd_attn_" + l, gs).consumeFromDevice(l == 0 ? except(all, tokens, targets, nk, nr) : all);
            if (l == 0) {
                a.transferToDevice(DataTransferMode.EVERY_EXECUTION, tokens, targets, nk, nr);
                a.task("embed", SwitchKernels::embed, tokens, w, xIn[0], p.tokEmb, p.posEmb, maxT, d, seq);
            }
            a.task("ln1", SwitchKernels::layerNorm, xIn[l], w, p.ln1G[l], p.ln1B[l], ln1[l], ln1Mean[l], ln1Rstd[l], maxT, d)
             .task("q_projection", SwitchKernels::groupedLinear, ln1[l], w, p.wq[l], p.bq[l], q[l], 1, maxT, d, d, 0)
             .task("k_projection", SwitchKernels::groupedLinear, ln1[l], w, p.wk[l], p.bk[l], k[l], 1, maxT, d, d, 0)
             .task("v_projection", SwitchKernels::groupedLinear, ln1[l], w, p.wv[l], p.bv[l], vv[l], 1, maxT, d, d, 0)
             .task("causal_attention", SwitchKernels::attention, q[l], k[l], vv[l], att[l], attOut[l], bsz, seq, heads, d,
                     nk, keyAt(l, Rng.SITE_ATTN), nr, RATE_DROPOUT)
             .task("o_projection_residual", SwitchKernels::linearResidual, attOut[l], w, p.wo[l], p.bo[l], xIn[l], xMid[l], maxT, d, d,
                     nk, keyAt(l, Rng.SITE_ATTN_RES), nr, RATE_DROPOUT)
             .task("ln2", SwitchKernels::layerNorm, xMid[l], w, p.ln2G[l], p.ln2B[l], ln2[l], ln2Mean[l], ln2Rstd[l], maxT, d);
            if (routes[l]) {
                FloatArray rin = ln2[l];
                if (jitter) {
                    rin = routerIn[l];
                    a.task("router_jitter", SwitchKernels::jitter, ln2[l], rin, td, nk, keyAt(l, Rng.SITE_JITTER), nr, RATE_JITTER);
                }
                a.task("router_logits", SwitchKernels::groupedLinear, rin, w, p.routerW[l], p.routerB[l], probs[l], 1, maxT, d, e, 0)
                 .task("router_softmax", SwitchKernels::softmaxRows, probs[l], lse[l], maxT, e)
                 .transferToHost(DataTransferMode.EVERY_EXECUTION, probs[l], lse[l]);
            }
            a.persistOnDevice(all);

            int el = eL[l], cl = capL[l], sl = slotsL[l];
            TaskGraph ffn = graph("fwd_ffn_" + l, gs)
                .consumeFromDevice(except(all, slotAssignment[l], expertOffset[l], tokRow[l], tokScale[l], expertOf[l]))
                .transferToDevice(DataTransferMode.EVERY_EXECUTION, slotAssignment[l], expertOffset[l], tokRow[l], tokScale[l], expertOf[l])
                .task("expert_gather", SwitchKernels::expertGather, ln2[l], slotAssignment[l], xe[l], sl, d, kL[l])
                .task("experts_ff1_relu", SwitchKernels::groupedLinear, xe[l], w, p.w1[l], p.b1[l], he[l], el, cl, d, f, 1);
            if (hiddenDropout(l))
                ffn.task("experts_hidden_dropout", SwitchKernels::hiddenDropout, he[l], slotAssignment[l], expertOffset[l], sl, cl, f, nk, keyAt(l, Rng.SITE_HIDDEN),
                        nr, hiddenRate(l));
            ffn.task("experts_ff2", SwitchKernels::groupedLinear, he[l], w, p.w2[l], p.b2[l], ye[l], el, cl, f, d, 0)
                .task("combine_residual", SwitchKernels::expertCombine, xMid[l], ye[l], ln2[l], tokRow[l], tokScale[l], xIn[l + 1],
                        maxT, d, kL[l], zeroDropped, nk, keyAt(l, Rng.SITE_FFN_RES), nr, RATE_DROPOUT)
                .persistOnDevice(all);
        }

        graph("head", gs).consumeFromDevice(all)
            .task("ln_f", SwitchKernels::layerNorm, xIn[layers], w, p.lnfG, p.lnfB, lnf, lnfMean, lnfRstd, maxT, d)
            .task("head_logits", SwitchKernels::groupedLinear, lnf, w, p.headW, p.headB, logits, 1, maxT, d, vocab, 0)
            .task("cross_entropy", SwitchKernels::crossEntropy, logits, targets, losses, correct, dLogits, maxT, vocab, 1f / maxT)
            .transferToHost(DataTransferMode.EVERY_EXECUTION, losses, correct)
            .persistOnDevice(all);

        graph("logits_row", gs).consumeFromDevice(except(all, rowIndex))
            .transferToDevice(DataTransferMode.EVERY_EXECUTION, rowIndex)
            .task("copy_logits_row", SwitchKernels::copyRow, logits, rowIndex, logitRow, vocab)
            .transferToHost(DataTransferMode.EVERY_EXECUTION, logitRow)
            .persistOnDevice(all);

        graph("bwd_head", gs).consumeFromDevice(all)
            .task("zero_grads", SwitchKernels::fill, g, nParams, 0f)
            .task("head_weight_grad", SwitchKernels::groupedLinearBackWeight, lnf, dLogits, g, p.headW, 1, maxT, d, vocab)
            .task("head_bias_grad", SwitchKernels::groupedLinearBackBias, dLogits, g, p.headB, 1, maxT, vocab)
            .task("head_input_grad", SwitchKernels::groupedLinearBackInput, dLogits, w, p.headW, dLn, 1, maxT, d, vocab, 0)
            .task("ln_f_input_grad", SwitchKernels::layerNormBackInput, xIn[layers], w, p.lnfG, lnfMean, lnfRstd, dLn, dX, maxT, d, 0)
            .task("ln_f_param_grad", SwitchKernels::layerNormBackParams, xIn[layers], lnfMean, lnfRstd, dLn, g, p.lnfG, p.lnfB, maxT, d)
            .persistOnDevice(all);

        for (int l = layers - 1; l >= 0; l--) {
            int el = eL[l], cl = capL[l], sl = slotsL[l];
            TaskGraph b = graph("bwd_ffn_" + l, gs).consumeFromDevice(except(all, lbGrad[l]))
                .transferToDevice(DataTransferMode.EVERY_EXECUTION, lbGrad[l]);
            // dX is d loss / d block output; the FFN branch's gradient dB is dX through its dropout mask
            FloatArray dB = dX;
            if (dropout) {
                dB = dRes;
                b.task("ffn_residual_dropout_grad", SwitchKernels::dropoutMask, dX, dRes, td, nk, keyAt(l, Rng.SITE_FFN_RES), nr, RATE_DROPOUT);
            }
            b.task("experts_out_grad", SwitchKernels::expertBackOutput, dB, slotAssignment[l], tokScale[l], dYe, sl, d, kL[l])
                .task("experts_ff2_weight_grad", SwitchKernels::groupedLinearBackWeight, he[l], dYe, g, p.w2[l], el, cl, f, d)
                .task("experts_ff2_bias_grad", SwitchKernels::groupedLinearBackBias, dYe, g, p.b2[l], el, cl, d)
                .task("experts_hidden_grad", SwitchKernels::groupedLinearBackInput, dYe, w, p.w2[l], dHe, el, cl, f, d, 0)
                .task("experts_relu_grad", SwitchKernels::reluBack, he[l], dHe, sl * f, nr, hiddenRate(l))
                .task("experts_ff1_weight_grad", SwitchKernels::groupedLinearBackWeight, xe[l], dHe, g, p.w1[l], el, cl, d, f)
                .task("experts_ff1_bias_grad", SwitchKernels::groupedLinearBackBias, dHe, g, p.b1[l], el, cl, f)
                .task("experts_input_grad", SwitchKernels::groupedLinearBackInput, dHe, w, p.w1[l], dXe, el, cl, d, f, 0)
                .task("scatter_passthrough_grad", SwitchKernels::expertBackScatter, dXe, dB, tokRow[l], tokScale[l], dLn, maxT, d,
                        kL[l], zeroDropped);
            if (routes[l]) {
                b.task("router_grad", SwitchKernels::routerBack, dB, ye[l], ln2[l], tokRow[l], expertOf[l], tokScale[l],
                                probs[l], lbGrad[l], lse[l], gate, dRouter, maxT, d, e, kL[l], sc, zeroDropped, zScale)
                 .task("router_weight_grad", SwitchKernels::groupedLinearBackWeight, jitter ? routerIn[l] : ln2[l], dRouter, g,
                         p.routerW[l], 1, maxT, d, e)
                 .task("router_bias_grad", SwitchKernels::groupedLinearBackBias, dRouter, g, p.routerB[l], 1, maxT, e);
                if (jitter) { // router input = ln2 * noise: d ln2 += (dz W^T) * noise
                    b.task("router_input_grad", SwitchKernels::groupedLinearBackInput, dRouter, w, p.routerW[l], dA, 1, maxT, d, e, 0)
                     .task("router_jitter_grad", SwitchKernels::jitterBack, dA, dLn, td, nk, keyAt(l, Rng.SITE_JITTER), nr, RATE_JITTER);
                } else {
                    b.task("router_input_grad", SwitchKernels::groupedLinearBackInput, dRouter, w, p.routerW[l], dLn, 1, maxT, d, e, 1);
                }
            }
            b.task("ln2_input_grad", SwitchKernels::layerNormBackInput, xMid[l], w, p.ln2G[l], ln2Mean[l], ln2Rstd[l], dLn, dX, maxT, d, 1)
             .task("ln2_param_grad", SwitchKernels::layerNormBackParams, xMid[l], ln2Mean[l], ln2Rstd[l], dLn, g, p.ln2G[l], p.ln2B[l], maxT, d)
             .persistOnDevice(all);

            TaskGraph ba = graph("bwd_attn_" + l, gs).consumeFromDevice(all);
            FloatArray dO = dX; // d loss / d (attention branch), through its dropout mask
            if (dropout) {
                dO = dRes;
                ba.task("attn_residual_dropout_grad", SwitchKernels::dropoutMask, dX, dRes, td, nk, keyAt(l, Rng.SITE_ATTN_RES), nr, RATE_DROPOUT);
            }
            ba.task("o_weight_grad", SwitchKernels::groupedLinearBackWeight, attOut[l], dO, g, p.wo[l], 1, maxT, d, d)
                .task("o_bias_grad", SwitchKernels::groupedLinearBackBias, dO, g, p.bo[l], 1, maxT, d)
                .task("o_input_grad", SwitchKernels::groupedLinearBackInput, dO, w, p.wo[l], dA, 1, maxT, d, d, 0)
                .task("attention_score_grad", SwitchKernels::attentionBackScores, att[l], dA, vv[l], dS, bsz, seq, heads, d,
                        nk, keyAt(l, Rng.SITE_ATTN), nr, RATE_DROPOUT)
                .task("attention_query_grad", SwitchKernels::attentionBackQuery, dS, k[l], dQ, bsz, seq, heads, d)
                .task("attention_key_value_grad", SwitchKernels::attentionBackKeyValue, dS, att[l], q[l], dA, dK, dV, bsz, seq, heads, d,
                        nk, keyAt(l, Rng.SITE_ATTN), nr, RATE_DROPOUT)
                .task("q_weight_grad", SwitchKernels::groupedLinearBackWeight, ln1[l], dQ, g, p.wq[l], 1, maxT, d, d)
                .task("q_bias_grad", SwitchKernels::groupedLinearBackBias, dQ, g, p.bq[l], 1, maxT, d)
                .task("k_weight_grad", SwitchKernels::groupedLinearBackWeight, ln1[l], dK, g, p.wk[l], 1, maxT, d, d)
                .task("k_bias_grad", SwitchKernels::groupedLinearBackBias, dK, g, p.bk[l], 1, maxT, d)
                .task("v_weight_grad", SwitchKernels::groupedLinearBackWeight, ln1[l], dV, g, p.wv[l], 1, maxT, d, d)
                .task("v_bias_grad", SwitchKernels::groupedLinearBackBias, dV, g, p.bv[l], 1, maxT, d)
                .task("q_input_grad", SwitchKernels::groupedLinearBackInput, dQ, w, p.wq[l], dLn, 1, maxT, d, d, 0)
                .task("k_input_grad", SwitchKernels::groupedLinearBackInput, dK, w, p.wk[l], dLn, 1, maxT, d, d, 1)
                .task("v_input_grad", SwitchKernels::groupedLinearBackInput, dV, w, p.wv[l], dLn, 1, maxT, d, d, 1)
                .task("ln1_input_grad", SwitchKernels::layerNormBackInput, xIn[l], w, p.ln1G[l], ln1Mean[l], ln1Rstd[l], dLn, dX, maxT, d, 1)
                .task("ln1_param_grad", SwitchKernels::layerNormBackParams, xIn[l], ln1Mean[l], ln1Rstd[l], dLn, g, p.ln1G[l], p.ln1B[l], maxT, d)
                .persistOnDevice(all);
        }

        TaskGraph emb = graph("bwd_embed", gs).consumeFromDevice(all)
            .task("embedding_grad", SwitchKernels::embedBack, tokens, dX, g, p.tokEmb, maxT, d, vocab);
        if (p.posEmb >= 0) emb.task("position_embedding_grad", SwitchKernels::posEmbedBack, dX, g, p.posEmb, maxT, d, seq);
        emb.task("grad_sum_squares", SwitchKernels::sumSquares, g, partial, nParams, chunk, chunks)
           .transferToHost(DataTransferMode.EVERY_EXECUTION, partial)
           .persistOnDevice(all);

        graph("adam", gs).consumeFromDevice(except(all, hp))
            .transferToDevice(DataTransferMode.EVERY_EXECUTION, hp)
            .task("adam_update", SwitchKernels::adam, w, g, m, v, hp, nParams)
            .persistOnDevice(all);

        // reads back parameters, gradients and moments for checkpoints and tests
        graph("sync_to_host", gs).consumeFromDevice(all)
            .task("touch", SwitchKernels::touch4, w, g, m, v)
            .transferToHost(DataTransferMode.EVERY_EXECUTION, w, g, m, v)
            .persistOnDevice(all);
        // writes parameters and moments set on the host (resume, tests)
        graph("sync_to_device", gs).consumeFromDevice(except(all, w, m, v))
            .transferToDevice(DataTransferMode.EVERY_EXECUTION, w, m, v)
            .task("touch", SwitchKernels::touch4, w, m, v, new FloatArray(1))
            .persistOnDevice(all);

        List<ImmutableTaskGraph> out = new ArrayList<>();
        for (TaskGraph tg : gs) out.add(tg.snapshot());
        return out;
    }

    /** Index in noiseKeys of the key of (layer, site). */
    private static int keyAt(int layer, int site) {
        return (layer * SITES + site) * 2;
    }

    /** Index in noiseRates of the FFN hidden layer's dropout rate in block l: the expert rate in a Switch block. */
    private int hiddenRate(int l) {
        return routes[l] ? RATE_EXPERT_DROPOUT : RATE_DROPOUT;
    }

    /** Whether block l's FFN hidden layer has dropout in training. */
    private boolean hiddenDropout(int l) {
        return (routes[l] ? cfg.expertDropout() : cfg.dropout()) > 0;
    }

    /** Threads per block of the one-dimensional kernels. */
    private static final int BLOCK_1D = 128;

    /**
     * Explicit block sizes for the one-dimensional kernels. Left alone, TornadoVM's PTX backend gives
     * them the device's maximum block (1024 threads), more registers than an SM has for the heavier
     * ones (attention, LayerNorm, cross-entropy), and the launch fails (CUDA error 701). A grid set
     * here also sets the loop bound, so it is exactly n, in blocks of the largest divisor of n up to
     * BLOCK_1D; sizes with no divisor of at least 32 (the flat parameter loops) keep the default.
     */
    private uk.ac.manchester.tornado.api.GridScheduler blocks1D() {
        var gs = new uk.ac.manchester.tornado.api.GridScheduler();
        int rowsAttn = bsz * heads * seq;
        java.util.function.BiConsumer<String, Integer> add = (task, n) -> {
            int block = Math.min(BLOCK_1D, n);
            while (n % block != 0) block--;
            if (block < 32 && block < n) return;
            var wg = new uk.ac.manchester.tornado.api.WorkerGrid1D(n);
            wg.setLocalWork(block, 1, 1);
            gs.addWorkerGrid(task, wg);
        };
        for (String t : new String[] {"zero_grads", "zero_m", "zero_v"}) add.accept("init." + t, nParams);
        for (int l = 0; l < layers; l++) {
            String a = "fwd_attn_" + l + ".";
            add.accept(a + "ln1", maxT);
            add.accept(a + "causal_attention", rowsAttn);
            add.accept(a + "ln2", maxT);
            if (routes[l]) add.accept(a + "router_softmax", maxT);
            if (routes[l] && cfg.jitter() > 0) add.accept(a + "router_jitter", maxT * d);
            String b = "bwd_ffn_" + l + ".";
            add.accept(b + "experts_ff2_bias_grad", eL[l] * d);
            add.accept(b + "experts_relu_grad", slotsL[l] * f);
            add.accept(b + "experts_ff1_bias_grad", eL[l] * f);
            if (cfg.dropout() > 0) {
                add.accept(b + "ffn_residual_dropout_grad", maxT * d);
                add.accept("bwd_attn_" + l + ".attn_residual_dropout_grad", maxT * d);
            }
            if (routes[l]) {
                add.accept(b + "router_grad", maxT);
                add.accept(b + "router_bias_grad", e);
                if (cfg.jitter() > 0) add.accept(b + "router_jitter_grad", maxT * d);
            }
            add.accept(b + "ln2_input_grad", maxT);
            add.accept(b + "ln2_param_grad", d);
            String c = "bwd_attn_" + l + ".";
            for (String t : new String[] {"o_bias_grad", "q_bias_grad", "k_bias_grad", "v_bias_grad", "ln1_param_grad"}) add.accept(c + t, d);
            add.accept(c + "attention_score_grad", rowsAttn);
            add.accept(c + "ln1_input_grad", maxT);
        }
        add.accept("head.ln_f", maxT);
        add.accept("head.cross_entropy", maxT);
        add.accept("logits_row.copy_logits_row", vocab);
        add.accept("bwd_head.zero_grads", nParams);
        add.accept("bwd_head.head_bias_grad", vocab);
        add.accept("bwd_head.ln_f_input_grad", maxT);
        add.accept("bwd_head.ln_f_param_grad", d);
        add.accept("bwd_embed.grad_sum_squares", chunks);
        add.accept("adam.adam_update", nParams);
        return gs;
    }

    private uk.ac.manchester.tornado.api.TornadoExecutionResult last;

    private void run(String name) {
        try {
            last = plan.withGraph(graphIndex.get(name)).execute();
        } catch (TornadoOutOfMemoryException | TornadoMemoryException e) {
            throw new Backends.BackendUnavailableException("the device " + TornadoDevices.describe(device)
                    + " ran out of memory in " + name + " (" + rootMessage(e) + "): use a smaller --batch-size, --seq-len"
                    + " or model, or give TornadoVM more device memory with -Dtornado.device.memory=8GB", e);
        }
    }

    private static String rootMessage(Throwable t) {
        while (t.getCause() != null && t.getCause() != t) t = t.getCause();
        return t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage().lines().findFirst().orElse("");
    }

    /** Reads an activation of the last graph run back to the host (tests and debugging). */
    float[] peek(String what, int layer) {
        FloatArray a = switch (what) {
            case "q" -> q[layer];
            case "k" -> k[layer];
            case "v" -> vv[layer];
            case "att" -> att[layer];
            case "attOut" -> attOut[layer];
            case "xMid" -> xMid[layer];
            case "ln1" -> ln1[layer];
            case "ln2" -> ln2[layer];
            case "xIn" -> xIn[layer];
            default -> throw new IllegalArgumentException(what);
        };
        last.transferToHost(a);
        return a.toHeapArray();
    }

    @Override
    public double compileSeconds() {
        return compileSeconds;
    }

    @Override
    public String describe() {
        return String.format("tornado (%s; kernels compiled in %.1f s)", TornadoDevices.describe(device), compileSeconds);
    }

    /** Padded device index of compact token c of a batch of nSeq x seqLen. */
    private int padded(int c) {
        return (c / seqLen) * seq + c % seqLen;
    }

    @Override
    public void setBatch(int[] inputs, int[] tgts, int nSeq, int seqLen) {
        if (seqLen > seq || nSeq > bsz)
            throw new IllegalArgumentException("batch " + nSeq + "x" + seqLen + " exceeds " + bsz + "x" + seq);
        this.nSeq = nSeq;
        this.seqLen = seqLen;
        this.nTok = nSeq * seqLen;
        this.hasTargets = tgts != null;
        for (int i = 0; i < maxT; i++) {
            tokens.set(i, 0);
            targets.set(i, 0);
        }
        for (int c = 0; c < nTok; c++) {
            tokens.set(padded(c), inputs[c]);
            if (hasTargets) targets.set(padded(c), tgts[c]);
        }
    }

    @Override
    public void beginPass(boolean training, int step) {
        // uploaded with the tokens by fwd_attn_0; the same keys serve the backward graphs
        for (int l = 0; l < layers; l++)
            for (int site = 0; site < SITES; site++) {
                long key = Rng.streamKey(cfg.seed(), step, l, site);
                noiseKeys.set(keyAt(l, site), (int) (key >> 32));
                noiseKeys.set(keyAt(l, site) + 1, (int) key);
            }
        noiseRates.set(RATE_DROPOUT, training ? (float) cfg.dropout() : 0f);
        noiseRates.set(RATE_EXPERT_DROPOUT, training ? (float) cfg.expertDropout() : 0f);
        noiseRates.set(RATE_JITTER, training ? (float) cfg.jitter() : 0f);
    }

    @Override
    public float[] forwardToRouter(int layer) {
        run("fwd_attn_" + layer);
        if (!routes[layer]) return null;
        FloatArray pr = probs[layer], ls = lse[layer];
        for (int c = 0; c < nTok; c++) {
            int pc = padded(c);
            for (int x = 0; x < e; x++) probsHost[c * e + x] = pr.get(pc * e + x);
            lseHost[c] = ls.get(pc);
        }
        return probsHost;
    }

    @Override
    public float[] routerLogSumExp(int layer) {
        return routes[layer] ? lseHost : null;
    }

    @Override
    public void forwardFfn(int layer, Routing r) {
        int cl = capL[layer], k = kL[layer];
        if (r.k != k) throw new IllegalStateException("routing has k = " + r.k + ", block " + layer + " has " + k);
        for (int x = 0; x < r.experts; x++)
            if (r.kept[x] > cl) throw new IllegalStateException("expert " + x + " keeps " + r.kept[x] + " > device capacity " + cl);
        IntArray sa = slotAssignment[layer], tr = tokRow[layer], eo = expertOf[layer], off = expertOffset[layer];
        FloatArray ts = tokScale[layer];
        for (int s = 0; s < slotsL[layer]; s++) sa.set(s, -1);
        for (int x = 0; x <= r.experts; x++) off.set(x, r.offset[x]); // the JVM's grouped rows: hidden dropout's mask index
        for (int i = 0; i < maxT * k; i++) {
            tr.set(i, -1);
            ts.set(i, 0f);
            eo.set(i, 0);
        }
        // k = 1: the output scale is p (scale_prob) or p / stop_gradient(p) = 1; k > 1: the renormalized weight
        boolean scaleByProb = routes[layer] && (cfg.scaleProb() || k > 1);
        for (int c = 0; c < nTok; c++) {
            int pc = padded(c);
            for (int j = 0; j < k; j++) {
                int a = c * k + j, pa = pc * k + j, x = r.expertOf[a], slot = r.slot[a];
                float scale = scaleByProb ? r.prob[a] : 1f;
                if (slot >= 0) {
                    int s = x * cl + slot;
                    sa.set(s, pa);
                    tr.set(pa, s);
                }
                ts.set(pa, scale);
                eo.set(pa, x);
            }
        }
        run("fwd_ffn_" + layer);
    }

    @Override
    public void forwardHead(double[] out) {
        run("head");
        if (!hasTargets || out == null) return;
        double sum = 0, c = 0;
        for (int i = 0; i < nTok; i++) {
            int pc = padded(i);
            sum += losses.get(pc);
            c += correct.get(pc);
        }
        out[0] = sum;
        out[1] = c;
    }

    @Override
    public void logits(int t, float[] out) {
        rowIndex.set(0, padded(t));
        run("logits_row");
        for (int j = 0; j < vocab; j++) out[j] = logitRow.get(j);
    }

    @Override
    public void zeroGrads() {
        // bwd_head zeroes the gradients on the device as its first task
    }

    private void requireFullBatch() {
        if (nTok != maxT || !hasTargets)
            throw new IllegalStateException("the TornadoVM backend trains on full batches of " + bsz + "x" + seq + " only");
    }

    @Override
    public void backwardHead() {
        requireFullBatch();
        run("bwd_head");
    }

    @Override
    public void backwardFfn(int layer, Routing r, float[] probGrad) {
        FloatArray lb = lbGrad[layer];
        for (int x = 0; x < e; x++) lb.set(x, routes[layer] ? probGrad[x] : 0f);
        run("bwd_ffn_" + layer);
    }

    @Override
    public void backwardAttention(int layer) {
        run("bwd_attn_" + layer);
    }

    @Override
    public void backwardEmbedding() {
        run("bwd_embed");
    }

    @Override
    public double gradSquaredNorm() {
        double s = 0;
        for (int c = 0; c < chunks; c++) s += partial.get(c);
        return s;
    }

    @Override
    public void adamStep(float lr, float gradScale, int t) {
        hp.set(0, lr);
        hp.set(1, gradScale);
        hp.set(2, (float) cfg.beta1());
        hp.set(3, (float) cfg.beta2());
        hp.set(4, (float) cfg.eps());
        hp.set(5, (float) (1 - Math.pow(cfg.beta1(), t)));
        hp.set(6, (float) (1 - Math.pow(cfg.beta2(), t)));
        run("adam");
    }

    private float[] toHost(FloatArray a) {
        return a.toHeapArray();
    }

    @Override
    public float[] params() {
        run("sync_to_host");
        return toHost(w);
    }

    @Override
    public float[] grads() {
        run("sync_to_host");
        return toHost(g);
    }

    @Override
    public float[][] adamMoments() {
        run("sync_to_host");
        return new float[][] {toHost(m), toHost(v)};
    }

    @Override
    public void setParams(float[] params) {
        run("sync_to_host");
        for (int i = 0; i < nParams; i++) w.set(i, params[i]);
        run("sync_to_device");
    }

    @Override
    public void setAdamMoments(float[] mm, float[] vm) {
        run("sync_to_host");
        for (int i = 0; i < nParams; i++) {
            m.set(i, mm[i]);
            v.set(i, vm[i]);
        }
        run("sync_to_device");
    }

    @Override
    public void close() {
        try {
            plan.freeDeviceMemory();
        } catch (RuntimeException ignored) {
            // the device may already be gone when the JVM is shutting down
        }
    }
}
