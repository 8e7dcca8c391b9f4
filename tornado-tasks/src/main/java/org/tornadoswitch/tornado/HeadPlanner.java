package org.tornadoswitch.tornado;

import static org.tornadoswitch.tornado.GemmKernels.flags;
import static org.tornadoswitch.tornado.PlanBuilder.gemmFlops;

import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.common.TaskPackage;

/**
 * The head: final LayerNorm, logits and cross-entropy, and their backward.
 *
 * <pre>
 * forward:  xIn[L] ─ ln_f ─► lnf ─ head_logits (+ b) ─► logits ─ cross_entropy ─► losses, correct ─► host
 *                                                                              └ dLogits (d mean loss)
 * backward: lnf, dLogits ─ head_weight_grad ─► g;  dLogits ─ head_input_grad (W^T) ─► dLn
 *           dLn ─ ln_f_input_grad ─► dX (the first gradient of the residual stream); ln_f_param_grad ─► g
 * </pre>
 */
final class HeadPlanner {
    private final DeviceBuffers b;
    private final PlanBuilder pb;

    HeadPlanner(DeviceBuffers b, PlanBuilder pb) {
        this.b = b;
        this.pb = pb;
    }

    Object[] hostOutputs() {
        return new Object[] {b.losses, b.correct};
    }

    void forward(TaskGraph tg) {
        KernelForm form = pb.form;
        int t = b.maxT, d = b.d, td = t * d, v = b.vocab, L = b.layers;
        var p = b.p;
        pb.add(tg, new TaskPackage(pb.task(tg, "ln_f", -1, form.rowGrid(t), 8.0 * td, 12.0 * td), RowKernels::layerNorm, pb.kc, b.xIn[L], b.w, p.lnfG,
                p.lnfB, b.lnf, b.lnfMean, b.lnfRstd, t, d));
        pb.add(tg, new TaskPackage(pb.task(tg, "head_logits", -1, form.gemmGrid(t, v, 1), gemmFlops(t, v, d, 1), 4.0 * (td + t * v)), form.linear(), pb.kc,
                b.lnf, b.noRows, b.noOffsets, b.w, b.logits, b.noRes, b.noiseKeys, b.noiseRates, t, v, d, p.headW, flags(1, 0), 0));
        pb.add(tg, new TaskPackage(pb.task(tg, "cross_entropy", -1, form.rowGrid(t), 5.0 * t * v, 8.0 * t * v), RowKernels::crossEntropy, pb.kc, b.logits,
                b.targets, b.losses, b.correct, b.dLogits, t, v, 1f / t));
    }

    void backward(TaskGraph tg) {
        KernelForm form = pb.form;
        int t = b.maxT, d = b.d, td = t * d, v = b.vocab, L = b.layers;
        var p = b.p;
        pb.add(tg, new TaskPackage(pb.task(tg, "head_weight_grad", -1, form.gemmGrid(d + 1, v, 1), gemmFlops(d, v, t, 1), 4.0 * (td + t * v)),
                form.weightGrad(), pb.kc, b.lnf, b.noRows, b.noOffsets, b.dLogits, b.g, t, v, d, p.headW, flags(1, 0)));
        pb.add(tg, new TaskPackage(pb.task(tg, "head_input_grad", -1, form.gemmGrid(t, d, 1), gemmFlops(t, d, v, 1), 4.0 * (td + t * v)), form.inputGrad(),
                pb.kc, b.dLogits, b.w, b.dLn, b.noMask, b.noOffsets, b.noiseRates, t, d, v, p.headW, flags(1, 0), 0));
        pb.add(tg, new TaskPackage(pb.task(tg, "ln_f_input_grad", -1, form.rowGrid(t), 10.0 * td, 16.0 * td), RowKernels::layerNormBackward, pb.kc, b.xIn[L],
                b.w, p.lnfG, b.lnfMean, b.lnfRstd, b.dLn, b.dX, t, d, 0));
        pb.add(tg, new TaskPackage(pb.task(tg, "ln_f_param_grad", -1, form.columnGrid(d), 5.0 * td, 8.0 * td), RowKernels::layerNormParams, pb.kc, b.xIn[L],
                b.lnfMean, b.lnfRstd, b.dLn, b.g, p.lnfG, p.lnfB, t, d));
    }
}
