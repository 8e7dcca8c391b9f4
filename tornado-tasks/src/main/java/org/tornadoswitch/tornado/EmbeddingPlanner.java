package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.common.TaskPackage;

/**
 * Token (and position) embedding and its gradient.
 *
 * <pre>
 * forward:  tokens ─ embed (+ positions) ─► xIn[0]
 * backward: dX ─ embedding_grad (each id's positions, listed by the host in embedOrder) ─► g
 *              └ position_embedding_grad ─► g
 * </pre>
 */
final class EmbeddingPlanner {
    private final DeviceBuffers b;
    private final PlanBuilder pb;

    EmbeddingPlanner(DeviceBuffers b, PlanBuilder pb) {
        this.b = b;
        this.pb = pb;
    }

    /** The batch the host sends before the first forward graph. */
    Object[] hostInputs() {
        return new Object[] {b.tokens, b.targets, b.embedOrder, b.embedStart};
    }

    void forward(TaskGraph tg) {
        int t = b.maxT, d = b.d;
        pb.add(tg, new TaskPackage(pb.task(tg, "embed", -1, new PlanBuilder.DefaultGrid2D(t, d), t * d, 8.0 * t * d), SwitchKernels::embed, b.tokens, b.w, b.xIn[0], b.p.tokEmb, b.p.posEmb,
                t, d, b.seq));
    }

    void backward(TaskGraph tg) {
        int t = b.maxT, d = b.d;
        pb.add(tg, new TaskPackage(pb.task(tg, "embedding_grad", -1, new PlanBuilder.DefaultGrid2D(b.vocab, d), t * d, 8.0 * t * d), SwitchKernels::embedBack, b.embedOrder, b.embedStart, b.dX,
                b.g, b.p.tokEmb, d, b.vocab));
        if (b.p.posEmb >= 0)
            pb.add(tg, new TaskPackage(pb.task(tg, "position_embedding_grad", -1, new PlanBuilder.DefaultGrid2D(b.seq, d), t * d, 8.0 * t * d), SwitchKernels::posEmbedBack, b.dX, b.g,
                    b.p.posEmb, t, d, b.seq));
    }
}
