package org.tornadoswitch.tornado;

import static org.tornadoswitch.tornado.DeviceBuffers.RATE_DROPOUT;
import static org.tornadoswitch.tornado.DeviceBuffers.RATE_JITTER;
import static org.tornadoswitch.tornado.DeviceBuffers.keyAt;
import static org.tornadoswitch.tornado.DeviceBuffers.noise;
import static org.tornadoswitch.tornado.GemmKernels.ACCUMULATE;
import static org.tornadoswitch.tornado.GemmKernels.EPI_RESIDUAL;
import static org.tornadoswitch.tornado.GemmKernels.SHARED_INPUT;
import static org.tornadoswitch.tornado.GemmKernels.flags;
import static org.tornadoswitch.tornado.PlanBuilder.gemmFlops;
import static org.tornadoswitch.tornado.PlanBuilder.grid1D;

import org.tornadoswitch.util.Rng;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.common.TaskPackage;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;

/**
 * The attention side of a block: everything but the experts, on the device that holds the block's
 * attention and router weights.
 *
 * <pre>
 * forward(l):  xIn[l] ─ ln1 ─► ln1 ─ qkv_projection (one GEMM, 3 groups) ─► qkv[l] = [Q | K | V]
 *              ─ causal_attention (flash, lse saved) ─► attOut ─ o_projection_residual (+ xIn, dropout) ─► xMid
 *              ─ ln2 ─► ln2 ─ router (jitter, logits, softmax, lse, top-k) ─► choice[l] ─► host
 *                                └ router_stats (P_i, entropy, lse^2 sums) ─► routerStats[l] ─► host
 * backward(l): gate (from the experts) ─ router_grad ─► dRouter ─ router_weight_grad ─► g
 *                                                      └ router_input_grad (+ jitter) ─► dLn += ...
 *              dLn ─ ln2_input_grad ─► dX += ...; ln2_param_grad ─► g
 *              dX (─ residual dropout) ─ o_weight_grad ─► g; o_input_grad ─► dA
 *              dA ─ attention_key_value_grad, attention_query_grad ─► dQkv
 *              dQkv ─ qkv_weight_grad ─► g; qkv_input_grad (the three products summed) ─► dLn
 *              dLn ─ ln1_input_grad ─► dX += ...; ln1_param_grad ─► g
 * </pre>
 *
 * Between forward(l) and the experts' forward the host reads choice[l] and routerStats[l], routes,
 * and sends the routing arrays (see {@link ExpertFfnPlanner}).
 */
final class AttentionPlanner {
    private final DeviceBuffers b;
    private final PlanBuilder pb;

    AttentionPlanner(DeviceBuffers b, PlanBuilder pb) {
        this.b = b;
        this.pb = pb;
    }

    /** The arrays forward(l) produces for the host: router choices and statistics (none in a dense block). */
    Object[] hostOutputs(int l) {
        return b.routes[l] ? new Object[] {b.choice[l], b.routerStats[l]} : new Object[0];
    }

    void forward(TaskGraph tg, int l) {
        KernelForm form = pb.form;
        int t = b.maxT, d = b.d, td = t * d;
        var p = b.p;
        pb.add(tg, new TaskPackage(pb.task(tg, "ln1", l, form.rowGrid(t), 8.0 * td, 12.0 * td), RowKernels::layerNorm, pb.kc, b.xIn[l], b.w,
                p.ln1G[l], p.ln1B[l], b.ln1[l], b.ln1Mean[l], b.ln1Rstd[l], t, d));
        pb.add(tg, new TaskPackage(pb.task(tg, "qkv_projection", l, form.gemmGrid(t, d, 3), gemmFlops(t, d, d, 3), 16.0 * td), form.linear(), pb.kc,
                b.ln1[l], b.noRows, b.noOffsets, b.w, b.qkv[l], b.noRes, b.noiseKeys, b.noiseRates, t, d, d, p.wq[l],
                flags(3, SHARED_INPUT), 0));
        int qBlocks = AttentionKernels.queryBlocks(b.bsz, b.heads, b.seq);
        double attFlops = 2.0 * 2.0 * b.bsz * b.heads * (b.seq * (b.seq + 1) / 2.0) * (d / b.heads);
        pb.add(tg, new TaskPackage(pb.task(tg, "causal_attention", l, form.attentionGrid(qBlocks), attFlops, 16.0 * td), AttentionKernels::forward, pb.kc,
                b.qkv[l], b.attOut[l], b.attLse[l], b.noiseKeys, b.noiseRates, b.bsz, b.seq, b.heads, d,
                noise(keyAt(l, Rng.SITE_ATTN), RATE_DROPOUT)));
        pb.add(tg, new TaskPackage(pb.task(tg, "o_projection_residual", l, form.gemmGrid(t, d, 1), gemmFlops(t, d, d, 1), 12.0 * td), form.linear(),
                pb.kc, b.attOut[l], b.noRows, b.noOffsets, b.w, b.xMid[l], b.xIn[l], b.noiseKeys, b.noiseRates, t, d, d, p.wo[l],
                flags(1, EPI_RESIDUAL), noise(keyAt(l, Rng.SITE_ATTN_RES), RATE_DROPOUT)));
        pb.add(tg, new TaskPackage(pb.task(tg, "ln2", l, form.rowGrid(t), 8.0 * td, 12.0 * td), RowKernels::layerNorm, pb.kc, b.xMid[l], b.w,
                p.ln2G[l], p.ln2B[l], b.ln2[l], b.ln2Mean[l], b.ln2Rstd[l], t, d));
        if (!b.routes[l]) return;
        int e = b.e;
        int rnoise = noise(keyAt(l, Rng.SITE_JITTER), RATE_JITTER) | (b.cfg.jitter() > 0 ? 0x100000 : 0);
        pb.add(tg, new TaskPackage(pb.task(tg, "router", l, form.rowGrid(t), 2.0 * td * e, 4.0 * (td + t * e)), RowKernels::router, pb.kc, b.ln2[l], b.w,
                p.routerW[l], b.routerIn[l], b.probs[l], b.routerLse[l], b.routerEnt[l], b.choice[l], b.noiseKeys, b.noiseRates, t, d, e,
                b.kL[l], rnoise));
        pb.add(tg, new TaskPackage(pb.task(tg, "router_stats", l, form.columnGrid(e + 2), 1.0 * t * (e + 2), 4.0 * t * (e + 2)), RowKernels::routerStats,
                pb.kc, b.probs[l], b.routerEnt[l], b.routerLse[l], b.routerStats[l], t, e));
    }

    void backward(TaskGraph tg, int l) {
        KernelForm form = pb.form;
        int t = b.maxT, d = b.d, td = t * d;
        var p = b.p;
        if (b.routes[l]) {
            int e = b.e;
            boolean jitter = b.cfg.jitter() > 0;
            float zScale = (float) (2 * b.cfg.zLossCoef() / t); // d(coef * mean_t lse_t^2)/d lse_t; training batches are full
            pb.add(tg, new TaskPackage(pb.task(tg, "router_grad", l, grid1D(t), 6.0 * t * e, 4.0 * t * (3 * e + 3)), SwitchKernels::routerBack, b.gate,
                    b.expertOf[l], b.tokScale[l], b.probs[l], b.lbGrad, l * e, b.routerLse[l], b.dRouter, t, e, b.kL[l],
                    b.cfg.scaleProb() ? 1 : 0, zScale));
            FloatArray rin = jitter ? b.routerIn[l] : b.ln2[l];
            pb.add(tg, new TaskPackage(pb.task(tg, "router_weight_grad", l, form.gemmGrid(d + 1, e, 1), gemmFlops(d, e, t, 1), 4.0 * (td + t * e)),
                    form.weightGrad(), pb.kc, rin, b.noRows, b.noOffsets, b.dRouter, b.g, t, e, d, p.routerW[l], flags(1, 0)));
            if (jitter) { // router input = ln2 * noise: d ln2 += (dz W^T) * noise
                pb.add(tg, new TaskPackage(pb.task(tg, "router_input_grad", l, form.gemmGrid(t, d, 1), gemmFlops(t, d, e, 1), 4.0 * (td + t * e)),
                        form.inputGrad(), pb.kc, b.dRouter, b.w, b.dA, b.noMask, b.noOffsets, b.noiseRates, t, d, e, p.routerW[l],
                        flags(1, 0), 0));
                pb.add(tg, new TaskPackage(pb.task(tg, "router_jitter_grad", l, grid1D(td), 3.0 * td, 12.0 * td), SwitchKernels::jitterBack, b.dA, b.dLn,
                        td, b.noiseKeys, keyAt(l, Rng.SITE_JITTER), b.noiseRates, RATE_JITTER));
            } else {
                pb.add(tg, new TaskPackage(pb.task(tg, "router_input_grad", l, form.gemmGrid(t, d, 1), gemmFlops(t, d, e, 1), 4.0 * (2 * td + t * e)),
                        form.inputGrad(), pb.kc, b.dRouter, b.w, b.dLn, b.noMask, b.noOffsets, b.noiseRates, t, d, e, p.routerW[l],
                        flags(1, ACCUMULATE), 0));
            }
        }
        pb.add(tg, new TaskPackage(pb.task(tg, "ln2_input_grad", l, form.rowGrid(t), 10.0 * td, 16.0 * td), RowKernels::layerNormBackward, pb.kc,
                b.xMid[l], b.w, p.ln2G[l], b.ln2Mean[l], b.ln2Rstd[l], b.dLn, b.dX, t, d, 1));
        pb.add(tg, new TaskPackage(pb.task(tg, "ln2_param_grad", l, form.columnGrid(d), 5.0 * td, 8.0 * td), RowKernels::layerNormParams, pb.kc,
                b.xMid[l], b.ln2Mean[l], b.ln2Rstd[l], b.dLn, b.g, p.ln2G[l], p.ln2B[l], t, d));
        FloatArray dO = b.dX; // d loss / d (attention branch), through its dropout mask
        if (b.cfg.dropout() > 0) {
            dO = b.dRes;
            pb.add(tg, new TaskPackage(pb.task(tg, "attn_residual_dropout_grad", l, grid1D(td), td, 8.0 * td), SwitchKernels::dropoutMask, b.dX, b.dRes,
                    td, b.noiseKeys, keyAt(l, Rng.SITE_ATTN_RES), b.noiseRates, RATE_DROPOUT));
        }
        pb.add(tg, new TaskPackage(pb.task(tg, "o_weight_grad", l, form.gemmGrid(d + 1, d, 1), gemmFlops(d, d, t, 1), 8.0 * td), form.weightGrad(),
                pb.kc, b.attOut[l], b.noRows, b.noOffsets, dO, b.g, t, d, d, p.wo[l], flags(1, 0)));
        pb.add(tg, new TaskPackage(pb.task(tg, "o_input_grad", l, form.gemmGrid(t, d, 1), gemmFlops(t, d, d, 1), 8.0 * td), form.inputGrad(), pb.kc,
                dO, b.w, b.dA, b.noMask, b.noOffsets, b.noiseRates, t, d, d, p.wo[l], flags(1, 0), 0));
        int qBlocks = AttentionKernels.queryBlocks(b.bsz, b.heads, b.seq);
        int kBlocks = AttentionKernels.keyBlocks(b.bsz, b.heads, b.seq);
        double pairs = b.bsz * b.heads * (b.seq * (b.seq + 1) / 2.0) * (d / b.heads);
        int attNoise = noise(keyAt(l, Rng.SITE_ATTN), RATE_DROPOUT);
        pb.add(tg, new TaskPackage(pb.task(tg, "attention_key_value_grad", l, form.attentionGrid(kBlocks), 8.0 * pairs, 24.0 * td),
                AttentionKernels::backwardKeyValue, pb.kc, b.qkv[l], b.attOut[l], b.dA, b.attLse[l], b.dQkv, b.noiseKeys, b.noiseRates,
                b.bsz, b.seq, b.heads, d, attNoise));
        pb.add(tg, new TaskPackage(pb.task(tg, "attention_query_grad", l, form.attentionGrid(qBlocks), 6.0 * pairs, 24.0 * td),
                AttentionKernels::backwardQuery, pb.kc, b.qkv[l], b.attOut[l], b.dA, b.attLse[l], b.dQkv, b.noiseKeys, b.noiseRates,
                b.bsz, b.seq, b.heads, d, attNoise));
        pb.add(tg, new TaskPackage(pb.task(tg, "qkv_weight_grad", l, form.gemmGrid(d + 1, d, 3), gemmFlops(d, d, t, 3), 16.0 * td), form.weightGrad(),
                pb.kc, b.ln1[l], b.noRows, b.noOffsets, b.dQkv, b.g, t, d, d, p.wq[l], flags(3, SHARED_INPUT)));
        pb.add(tg, new TaskPackage(pb.task(tg, "qkv_input_grad", l, form.gemmGrid(t, d, 1), gemmFlops(t, d, d, 3), 16.0 * td), form.inputGrad(), pb.kc,
                b.dQkv, b.w, b.dLn, b.noMask, b.noOffsets, b.noiseRates, t, d, d, p.wq[l], flags(3, SHARED_INPUT), 0));
        pb.add(tg, new TaskPackage(pb.task(tg, "ln1_input_grad", l, form.rowGrid(t), 10.0 * td, 16.0 * td), RowKernels::layerNormBackward, pb.kc,
                b.xIn[l], b.w, p.ln1G[l], b.ln1Mean[l], b.ln1Rstd[l], b.dLn, b.dX, t, d, 1));
        pb.add(tg, new TaskPackage(pb.task(tg, "ln1_param_grad", l, form.columnGrid(d), 5.0 * td, 8.0 * td), RowKernels::layerNormParams, pb.kc,
                b.xIn[l], b.ln1Mean[l], b.ln1Rstd[l], b.dLn, b.g, p.ln1G[l], p.ln1B[l], t, d));
    }
}
