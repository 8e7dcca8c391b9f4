package org.tornadoswitch.data;

import org.tornadoswitch.util.Rng;

/**
 * The 90/10 train/validation split and the batches drawn from it: training batches are sequences
 * at random offsets of the first 90%; validation uses fixed, non-overlapping windows of the rest.
 * The input and target arrays are allocated once and refilled (inputs[b·seq + t] predicts targets[b·seq + t]).
 */
public final class Batcher {
    private final int[] ids;
    private final int trainSize, batchSize, seqLen;
    private final int[] inputs, targets;

    public Batcher(int[] ids, int batchSize, int seqLen) {
        if (batchSize < 1 || seqLen < 1) throw new IllegalArgumentException("batch size and sequence length must be >= 1");
        this.ids = ids;
        this.trainSize = (int) (ids.length * 0.9);
        this.batchSize = batchSize;
        this.seqLen = seqLen;
        if (trainSize < seqLen + 1 || ids.length - trainSize < seqLen + 1)
            throw new IllegalArgumentException("seq-len " + seqLen + " is too long for a text of " + ids.length + " characters");
        this.inputs = new int[batchSize * seqLen];
        this.targets = new int[batchSize * seqLen];
    }

    public int trainSize() {
        return trainSize;
    }

    public int validSize() {
        return ids.length - trainSize;
    }

    /** Fills a training batch of {@code batchSize} sequences at offsets drawn from {@code rng}. */
    public void nextTrain(Rng rng) {
        int offsets = trainSize - seqLen; // the last target is at offset + seqLen < trainSize
        for (int b = 0; b < batchSize; b++) fill(b, rng.nextInt(offsets));
    }

    /** Number of non-overlapping validation windows of seqLen + 1 characters. */
    public int validWindows() {
        return (validSize() - 1) / seqLen;
    }

    /** Fills up to batchSize validation windows starting at window {@code first}; returns how many. */
    public int validBatch(int first) {
        int n = Math.max(0, Math.min(batchSize, validWindows() - first));
        for (int b = 0; b < n; b++) fill(b, trainSize + (first + b) * seqLen);
        return n;
    }

    private void fill(int b, int offset) {
        System.arraycopy(ids, offset, inputs, b * seqLen, seqLen);
        System.arraycopy(ids, offset + 1, targets, b * seqLen, seqLen);
    }

    public int[] inputs() {
        return inputs;
    }

    public int[] targets() {
        return targets;
    }
}
