package org.tornadoswitch.tornado;

import java.util.ArrayList;
import java.util.List;
import org.tornadoswitch.Config;
import org.tornadoswitch.model.ParamLayout;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * Every array of the TornadoVM backend and the shapes they are sized by, allocated once. All of them
 * live on the device for the whole run and pass from graph to graph; the host fills the per-step
 * inputs (tokens, noise keys, routing arrays, scalars) and reads back the few outputs the host loop
 * needs (router choices and statistics, per-token losses, gradient-norm partials).
 *
 * <p>Each block has its own shapes: a Switch block E experts of capacity C ([E C] slots) and k
 * assignments per token, a dense block (sparse step, dense baseline) one expert over all tokens.
 */
final class DeviceBuffers {
    /** Noise rates: dropout, expert dropout, jitter; sites per layer in {@link #noiseKeys}. */
    static final int RATE_DROPOUT = 0, RATE_EXPERT_DROPOUT = 1, RATE_JITTER = 2, SITES = 8;
    /** Parameters per chunk of the gradient norm's partial sums. */
    static final int NORM_CHUNK = 4096;

    final Config cfg;
    final ParamLayout p;
    final int bsz, seq, maxT, d, f, e, vocab, layers, heads, cap, nParams, chunks;
    /** Per block: whether it routes, its experts, assignments per token, capacity per expert, slots. */
    final boolean[] routes;
    final int[] eL, kL, capL, slotsL;
    final int zeroDropped, maxK;

    final FloatArray w, g, m, v;
    final IntArray tokens, targets;
    /** The batch's positions grouped by token id, and each id's first index into them (embedding gradient). */
    final IntArray embedOrder, embedStart;
    final IntArray noiseKeys;
    final FloatArray noiseRates;

    /** Per layer: residual stream in, LayerNorm 1, Q/K/V planes [3][T][d], attention lse and output, stream after attention, LayerNorm 2. */
    final FloatArray[] xIn, ln1, qkv, attLse, attOut, xMid, ln2, ln1Mean, ln1Rstd, ln2Mean, ln2Rstd;
    /** Per layer: router probabilities [T E], logsumexp, entropy per token, choices [T 2k], statistics [E + 2], jittered input. */
    final FloatArray[] probs, routerLse, routerEnt, choice, routerStats, routerIn;
    /** Per layer: expert hidden layer [slots f] and output [slots d]. */
    final FloatArray[] he, ye;
    /** Per layer: each slot's assignment (-1: empty); each assignment's slot row, expert and scale; the JVM's grouped offsets [E + 1]. */
    final IntArray[] slotAssignment, tokRow, expertOf, expertOffset;
    final FloatArray[] tokScale;
    /** Load-balancing gradient per (layer, expert). */
    final FloatArray lbGrad;

    final FloatArray lnf, lnfMean, lnfRstd, logits, dLogits, losses, correct;
    final FloatArray dX, dLn, dA, dQkv, dXe, dHe, dYe, dRouter, dRes, gate, partial, hp, logitRow;
    final IntArray rowIndex;
    /** Stand-ins for arguments a task does not use (a task must not take the same array twice). */
    final IntArray noRows, noOffsets;
    final FloatArray noRes, noMask;

    DeviceBuffers(Config cfg, int vocab, float[] params) {
        this.cfg = cfg;
        this.p = new ParamLayout(cfg, vocab);
        bsz = cfg.batchSize();
        seq = cfg.seqLen();
        maxT = cfg.tokensPerBatch();
        d = cfg.dModel();
        f = cfg.dFf();
        e = cfg.numExperts();
        this.vocab = vocab;
        layers = cfg.layers();
        heads = cfg.heads();
        cap = Math.max(cfg.capacity(maxT), cfg.evalCapacity(maxT)); // buffers serve both
        zeroDropped = cfg.droppedOutput() == Config.DroppedOutput.ZERO ? 1 : 0;
        maxK = cfg.topK();
        if (d / heads > AttentionKernels.HD)
            throw new IllegalArgumentException("the TornadoVM attention kernels take heads of at most " + AttentionKernels.HD
                    + " columns; d-model / heads = " + d / heads);
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
            // the Q/K/V GEMM addresses the three projections as groups of (W, b) one stride apart
            if (p.wk[l] != p.wq[l] + d * d + d || p.wv[l] != p.wk[l] + d * d + d || p.bq[l] != p.wq[l] + d * d)
                throw new IllegalStateException("parameter layout: Q, K, V are not consecutive (W, b) pairs");
        }
        nParams = p.size();
        chunks = (nParams + NORM_CHUNK - 1) / NORM_CHUNK;
        w = FloatArray.fromArray(params);
        g = new FloatArray(nParams);
        m = new FloatArray(nParams);
        v = new FloatArray(nParams);
        tokens = new IntArray(maxT);
        targets = new IntArray(maxT);
        embedOrder = new IntArray(maxT);
        embedStart = new IntArray(vocab + 1);
        noiseKeys = new IntArray(layers * SITES * 2);
        noiseRates = new FloatArray(4);
        int td = maxT * d;
        xIn = floats(layers + 1, td);
        ln1 = floats(layers, td);
        qkv = floats(layers, 3 * td);
        attLse = floats(layers, bsz * heads * seq);
        attOut = floats(layers, td);
        xMid = floats(layers, td);
        ln2 = floats(layers, td);
        ln1Mean = floats(layers, maxT);
        ln1Rstd = floats(layers, maxT);
        ln2Mean = floats(layers, maxT);
        ln2Rstd = floats(layers, maxT);
        probs = floats(layers, maxT * e);
        routerLse = floats(layers, maxT);
        routerEnt = floats(layers, maxT);
        choice = floats(layers, maxT * 2 * maxK);
        routerStats = floats(layers, e + 2);
        routerIn = floats(layers, cfg.jitter() > 0 ? td : 1);
        he = new FloatArray[layers];
        ye = new FloatArray[layers];
        slotAssignment = new IntArray[layers];
        tokRow = new IntArray[layers];
        expertOf = new IntArray[layers];
        expertOffset = new IntArray[layers];
        tokScale = new FloatArray[layers];
        for (int l = 0; l < layers; l++) {
            he[l] = new FloatArray(Math.max(1, slotsL[l] * f));
            ye[l] = new FloatArray(Math.max(1, slotsL[l] * d));
            slotAssignment[l] = new IntArray(Math.max(1, slotsL[l]));
            tokRow[l] = new IntArray(maxT * kL[l]);
            expertOf[l] = new IntArray(maxT * kL[l]);
            expertOffset[l] = new IntArray(eL[l] + 1);
            tokScale[l] = new FloatArray(maxT * kL[l]);
        }
        lbGrad = new FloatArray(layers * e);
        lnf = new FloatArray(td);
        lnfMean = new FloatArray(maxT);
        lnfRstd = new FloatArray(maxT);
        logits = new FloatArray(maxT * vocab);
        dLogits = new FloatArray(maxT * vocab);
        losses = new FloatArray(maxT);
        correct = new FloatArray(maxT);
        dX = new FloatArray(td);
        dLn = new FloatArray(td);
        dA = new FloatArray(td);
        dQkv = new FloatArray(3 * td);
        dXe = new FloatArray(Math.max(1, maxSlots * d));
        dHe = new FloatArray(Math.max(1, maxSlots * f));
        dYe = new FloatArray(Math.max(1, maxSlots * d));
        dRouter = new FloatArray(maxT * e);
        dRes = new FloatArray(cfg.dropout() > 0 ? td : 1);
        gate = new FloatArray(maxT * maxK);
        partial = new FloatArray(chunks);
        hp = new FloatArray(7);
        logitRow = new FloatArray(vocab);
        rowIndex = new IntArray(1);
        noRows = new IntArray(1);
        noOffsets = new IntArray(2);
        noRes = new FloatArray(1);
        noMask = new FloatArray(1);
    }

    private static FloatArray[] floats(int n, int size) {
        FloatArray[] a = new FloatArray[n];
        for (int i = 0; i < n; i++) a[i] = new FloatArray(size);
        return a;
    }

    /** Every buffer, in a fixed order: the set each graph takes over from the one before and hands on. */
    Object[] all() {
        List<Object> s = new ArrayList<>(List.of(w, g, m, v, tokens, targets, embedOrder, embedStart, noiseKeys, noiseRates, lbGrad,
                lnf, lnfMean, lnfRstd, logits, dLogits, losses, correct, dX, dLn, dA, dQkv, dXe, dHe, dYe, dRouter, dRes, gate, partial,
                hp, logitRow, rowIndex, noRows, noOffsets, noRes, noMask));
        s.add(xIn[layers]);
        for (int l = 0; l < layers; l++) {
            s.addAll(List.of(xIn[l], ln1[l], qkv[l], attLse[l], attOut[l], xMid[l], ln2[l], ln1Mean[l], ln1Rstd[l], ln2Mean[l], ln2Rstd[l],
                    probs[l], routerLse[l], routerEnt[l], choice[l], routerStats[l], routerIn[l], he[l], ye[l], slotAssignment[l], tokRow[l],
                    expertOf[l], expertOffset[l], tokScale[l]));
        }
        return s.toArray();
    }

    /** Index in noiseKeys of the key of (layer, site). */
    static int keyAt(int layer, int site) {
        return (layer * SITES + site) * 2;
    }

    /** A kernel's noise argument: key index and rate index packed (keyAt << 4 | rateAt). */
    static int noise(int keyAt, int rateAt) {
        return keyAt << 4 | rateAt;
    }

    /** Index in noiseRates of the FFN hidden layer's dropout rate in block l: the expert rate in a Switch block. */
    int hiddenRate(int l) {
        return routes[l] ? RATE_EXPERT_DROPOUT : RATE_DROPOUT;
    }

    /** Whether block l's FFN hidden layer has dropout in training. */
    boolean hiddenDropout(int l) {
        return (routes[l] ? cfg.expertDropout() : cfg.dropout()) > 0;
    }

    /** Rows an expert GEMM of block l processes when the load is even (for the profile's FLOP counts). */
    int expectedRows(int l) {
        return Math.min(capL[l], (int) Math.ceil((double) kL[l] * maxT / eL[l]));
    }
}
