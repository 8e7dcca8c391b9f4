package org.tornadoswitch.tornado;

import static org.tornadoswitch.tornado.DeviceBuffers.RATE_DROPOUT;
import static org.tornadoswitch.tornado.DeviceBuffers.keyAt;
import static org.tornadoswitch.tornado.DeviceBuffers.noise;
import static org.tornadoswitch.tornado.GemmKernels.EPI_RELU;
import static org.tornadoswitch.tornado.GemmKernels.GATHER;
import static org.tornadoswitch.tornado.GemmKernels.HIDDEN_DROPOUT;
import static org.tornadoswitch.tornado.GemmKernels.RELU_MASK;
import static org.tornadoswitch.tornado.GemmKernels.VALID_ROWS;
import static org.tornadoswitch.tornado.GemmKernels.flags;
import static org.tornadoswitch.tornado.GemmKernels.topK;
import static org.tornadoswitch.tornado.PlanBuilder.gemmFlops;
import static org.tornadoswitch.tornado.PlanBuilder.grid1D;

import org.tornadoswitch.util.Rng;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.common.TaskPackage;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;

/**
 * The expert FFN of a block: all its experts in one launch per matrix, over capacity-sized slot
 * buffers, on the device that holds the block's experts. It needs from the attention side the
 * normalized input ln2 (and xMid for the residual) and the host's routing arrays; it gives back the
 * block's output and, in the backward pass, dLn and the router gate's dot products.
 *
 * <pre>
 * routing arrays (host) ─► slotAssignment, expertOffset, tokRow, tokScale, expertOf
 * forward(l):  ln2 ─ experts_ff1_relu (gathers each slot's token, + b1, ReLU, hidden dropout) ─► he
 *              he ─ experts_ff2 (+ b2) ─► ye
 *              ye, ln2, xMid ─ combine_residual (k assignments, passthrough, p scale, dropout) ─► xIn[l + 1]
 * backward(l): dX (─ residual dropout) = dB ─ experts_out_grad (p scale per slot) ─► dYe
 *              dB, ye, ln2 ─ router_gate_dots ─► gate (the router's backward, AttentionPlanner)
 *              he, dYe ─ experts_ff2_weight_grad ─► g (W2, b2)
 *              dYe ─ experts_hidden_grad (W2^T, ReLU and dropout mask) ─► dHe
 *              ln2 (gathered), dHe ─ experts_ff1_weight_grad ─► g (W1, b1)
 *              dHe ─ experts_input_grad (W1^T) ─► dXe
 *              dXe, dB ─ scatter_passthrough_grad ─► dLn
 * </pre>
 *
 * Slots beyond an expert's kept count are neither computed nor read: the GEMMs take the kept counts
 * from the routing's grouped offsets, so an expert costs what it is given.
 */
final class ExpertFfnPlanner {
    private final DeviceBuffers b;
    private final PlanBuilder pb;

    ExpertFfnPlanner(DeviceBuffers b, PlanBuilder pb) {
        this.b = b;
        this.pb = pb;
    }

    /** The arrays the host sends for block l before its forward. */
    Object[] hostInputs(int l) {
        return new Object[] {b.slotAssignment[l], b.expertOffset[l], b.tokRow[l], b.tokScale[l], b.expertOf[l]};
    }

    void forward(TaskGraph tg, int l) {
        KernelForm form = pb.form;
        int t = b.maxT, d = b.d, f = b.f, td = t * d, el = b.eL[l], cl = b.capL[l], k = b.kL[l];
        int rows = b.expectedRows(l);
        var p = b.p;
        int ff1 = GATHER | VALID_ROWS | topK(k) | EPI_RELU | (b.hiddenDropout(l) ? HIDDEN_DROPOUT : 0);
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_ff1_relu", l, form.gemmGrid(cl, f, el), gemmFlops(rows, f, d, el), 4.0 * el * rows * (d + f)),
                form.linear(), pb.kc, b.ln2[l], b.slotAssignment[l], b.expertOffset[l], b.w, b.he[l], b.noRes, b.noiseKeys, b.noiseRates,
                cl, f, d, p.w1[l], flags(el, ff1), noise(keyAt(l, Rng.SITE_HIDDEN), b.hiddenRate(l))));
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_ff2", l, form.gemmGrid(cl, d, el), gemmFlops(rows, d, f, el), 4.0 * el * rows * (d + f)),
                form.linear(), pb.kc, b.he[l], b.noRows, b.expertOffset[l], b.w, b.ye[l], b.noRes, b.noiseKeys, b.noiseRates, cl, d, f,
                p.w2[l], flags(el, VALID_ROWS), 0));
        pb.add(tg, new TaskPackage(pb.task(tg, "combine_residual", l, new PlanBuilder.DefaultGrid2D(t, d), 2.0 * td * k, 16.0 * td), SwitchKernels::expertCombine, b.xMid[l], b.ye[l],
                b.ln2[l], b.tokRow[l], b.tokScale[l], b.xIn[l + 1], t, d, k, b.zeroDropped, b.noiseKeys, keyAt(l, Rng.SITE_FFN_RES),
                b.noiseRates, RATE_DROPOUT));
    }

    void backward(TaskGraph tg, int l) {
        KernelForm form = pb.form;
        int t = b.maxT, d = b.d, f = b.f, td = t * d, el = b.eL[l], cl = b.capL[l], k = b.kL[l], sl = b.slotsL[l];
        int rows = b.expectedRows(l);
        var p = b.p;
        // dX is d loss / d block output; the FFN branch's gradient dB is dX through its dropout mask
        FloatArray dB = b.dX;
        if (b.cfg.dropout() > 0) {
            dB = b.dRes;
            pb.add(tg, new TaskPackage(pb.task(tg, "ffn_residual_dropout_grad", l, grid1D(td), td, 8.0 * td), SwitchKernels::dropoutMask, b.dX, b.dRes,
                    td, b.noiseKeys, keyAt(l, Rng.SITE_FFN_RES), b.noiseRates, RATE_DROPOUT));
        }
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_out_grad", l, new PlanBuilder.DefaultGrid2D(sl, d), 1.0 * sl * d, 8.0 * sl * d), SwitchKernels::expertBackOutput, dB,
                b.slotAssignment[l], b.tokScale[l], b.dYe, sl, d, k));
        if (b.routes[l])
            pb.add(tg, new TaskPackage(pb.task(tg, "router_gate_dots", l, form.rowGrid(t * k), 2.0 * td * k, 12.0 * td * k), RowKernels::gateDots, pb.kc,
                    dB, b.ye[l], b.ln2[l], b.tokRow[l], b.gate, t * k, d, k, b.zeroDropped));
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_ff2_weight_grad", l, form.gemmGrid(f + 1, d, el), gemmFlops(f, d, rows, el), 4.0 * el * rows * (d + f)),
                form.weightGrad(), pb.kc, b.he[l], b.noRows, b.expertOffset[l], b.dYe, b.g, cl, d, f, p.w2[l], flags(el, VALID_ROWS)));
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_hidden_grad", l, form.gemmGrid(cl, f, el), gemmFlops(rows, f, d, el), 4.0 * el * rows * (d + 2 * f)),
                form.inputGrad(), pb.kc, b.dYe, b.w, b.dHe, b.he[l], b.expertOffset[l], b.noiseRates, cl, f, d, p.w2[l],
                flags(el, VALID_ROWS | RELU_MASK), b.hiddenRate(l)));
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_ff1_weight_grad", l, form.gemmGrid(d + 1, f, el), gemmFlops(d, f, rows, el), 4.0 * el * rows * (d + f)),
                form.weightGrad(), pb.kc, b.ln2[l], b.slotAssignment[l], b.expertOffset[l], b.dHe, b.g, cl, f, d, p.w1[l],
                flags(el, GATHER | VALID_ROWS | topK(k))));
        pb.add(tg, new TaskPackage(pb.task(tg, "experts_input_grad", l, form.gemmGrid(cl, d, el), gemmFlops(rows, d, f, el), 4.0 * el * rows * (d + f)),
                form.inputGrad(), pb.kc, b.dHe, b.w, b.dXe, b.noMask, b.expertOffset[l], b.noiseRates, cl, d, f, p.w1[l],
                flags(el, VALID_ROWS), 0));
        pb.add(tg, new TaskPackage(pb.task(tg, "scatter_passthrough_grad", l, new PlanBuilder.DefaultGrid2D(t, d), 1.0 * td * k, 12.0 * td), SwitchKernels::expertBackScatter, b.dXe, dB,
                b.tokRow[l], b.tokScale[l], b.dLn, t, d, k, b.zeroDropped));
    }
}
