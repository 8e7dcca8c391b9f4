package org.tornadoswitch.train;

import org.tornadoswitch.data.Batcher;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/** Validation loss over fixed, non-overlapping windows of the validation split. */
public final class Evaluator {
    public record Result(double loss, double accuracy, double droppedFraction, long tokens) {}

    private Evaluator() {}

    /** Evaluates up to {@code maxBatches} batches (0 = the whole split); dropping uses a fixed seed. */
    public static Result evaluate(SwitchModel model, Batcher data, int maxBatches, long seed) {
        Rng rng = new Rng(seed);
        int seq = model.config().seqLen();
        int windows = data.validWindows();
        int batches = (windows + model.config().batchSize() - 1) / model.config().batchSize();
        if (maxBatches > 0) batches = Math.min(batches, maxBatches);
        double loss = 0, correct = 0;
        long tokens = 0, dropped = 0, routed = 0;
        for (int b = 0; b < batches; b++) {
            int n = data.validBatch(b * model.config().batchSize());
            if (n <= 0) break;
            SwitchModel.Stats s = model.forward(data.inputs(), data.targets(), n, seq, rng);
            loss += s.loss * s.tokens;
            correct += s.accuracy * s.tokens;
            tokens += s.tokens;
            dropped += s.dropped;
            routed += s.routed;
        }
        return new Result(loss / tokens, correct / tokens, (double) dropped / routed, tokens);
    }
}
