package org.tornadoswitch.tornado;

import static org.tornadoswitch.tornado.PlanBuilder.grid1D;

import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.common.TaskPackage;

/**
 * Gradient zeroing, the gradient norm's partial sums and Adam.
 *
 * <pre>
 * zeroGrads: zero_grads ─► g = 0 (first task of the backward graph)
 * gradNorm:  g ─ grad_sum_squares (chunks of 4096 reduced per work-group) ─► partial ─► host (adds them, clips)
 * adam:      hp (lr, clip scale, betas, eps, bias corrections; host) ─ adam_update ─► w, m, v
 * </pre>
 */
final class OptimizerPlanner {
    private final DeviceBuffers b;
    private final PlanBuilder pb;

    OptimizerPlanner(DeviceBuffers b, PlanBuilder pb) {
        this.b = b;
        this.pb = pb;
    }

    void zeroGrads(TaskGraph tg) {
        pb.add(tg, new TaskPackage(pb.task(tg, "zero_grads", -1, grid1D(b.nParams), 0, 4.0 * b.nParams), SwitchKernels::fill, b.g, b.nParams, 0f));
    }

    void gradNorm(TaskGraph tg) {
        pb.add(tg, new TaskPackage(pb.task(tg, "grad_sum_squares", -1, pb.form.rowGrid(b.chunks), 2.0 * b.nParams, 4.0 * b.nParams), RowKernels::sumSquares,
                pb.kc, b.g, b.partial, b.nParams, DeviceBuffers.NORM_CHUNK, b.chunks));
    }

    void adam(TaskGraph tg) {
        pb.add(tg, new TaskPackage(pb.task(tg, "adam_update", -1, grid1D(b.nParams), 12.0 * b.nParams, 28.0 * b.nParams), SwitchKernels::adam, b.w, b.g, b.m,
                b.v, b.hp, b.nParams));
    }
}
