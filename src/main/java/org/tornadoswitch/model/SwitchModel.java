package org.tornadoswitch.model;

import org.tornadoswitch.Config;
import org.tornadoswitch.backend.Backend;
import org.tornadoswitch.util.Rng;

/**
 * The host side of the Switch Transformer, written once for every backend: it drives the
 * backend's stages, makes the routing decisions (top-1, capacity, dropping), aggregates the
 * cross-entropy and the load-balancing loss, clips gradients and schedules the learning rate.
 */
public final class SwitchModel implements AutoCloseable {
    /** What one forward pass measured. */
    public static final class Stats {
        public double loss, lbLoss, accuracy, gradNorm, lr;
        /** Sum over Switch layers of the router z-loss (NaN when the backend gives no logsumexp). */
        public double zLoss;
        /** What the gradients are of: loss + lbCoef * lbLoss + zLossCoef * zLoss. */
        public double objective;
        /** Wall time of the last training step's phases, in nanoseconds. */
        public long forwardNanos, backwardNanos, optimizerNanos;
        public int tokens, dropped;
        /** Assignments over all blocks (tokens x k in Switch blocks, tokens in dense ones): dropped's denominator. */
        public long routed;
        /** [layer][expert] assignments routed (before dropping) and mean route probability. */
        public int[][] counts;
        public double[][] meanProb;
        /** [layer][expert] assignments dropped. */
        public int[][] droppedOf;
        /** [layer] router z-loss (NaN in dense blocks or without the backend's logsumexp), router entropy in nats (NaN in dense blocks). */
        public double[] zLossOf, entropyOf;
        /** [layer] experts per token (1 in dense blocks). */
        public int[] topK;
    }

    private final Config cfg;
    private final Backend backend;
    private final Routing[] routing;
    /** Per layer: the router's result the backend hands the host (Switch blocks). */
    private final RouterChoice[] choice;
    private final Rng dropRng;
    private final float[] probGrad;
    private final double[] headOut = new double[2];
    private final Stats stats = new Stats();
    private int step;

    public SwitchModel(Config cfg, Backend backend, long dropSeed) {
        this.cfg = cfg;
        this.backend = backend;
        int e = cfg.numExperts();
        routing = new Routing[cfg.layers()];
        choice = new RouterChoice[cfg.layers()];
        for (int l = 0; l < routing.length; l++) {
            int k = cfg.switchLayer(l) ? cfg.topK() : 1;
            routing[l] = new Routing(cfg.tokensPerBatch(), cfg.expertsIn(l), k);
            choice[l] = new RouterChoice(cfg.tokensPerBatch(), cfg.expertsIn(l), k);
        }
        dropRng = new Rng(dropSeed);
        probGrad = new float[e];
        stats.counts = new int[cfg.layers()][];
        stats.meanProb = new double[cfg.layers()][];
        stats.droppedOf = new int[cfg.layers()][];
        stats.zLossOf = new double[cfg.layers()];
        stats.entropyOf = new double[cfg.layers()];
        stats.topK = new int[cfg.layers()];
        for (int l = 0; l < cfg.layers(); l++) {
            stats.counts[l] = new int[cfg.expertsIn(l)];
            stats.meanProb[l] = new double[cfg.expertsIn(l)];
            stats.droppedOf[l] = new int[cfg.expertsIn(l)];
            stats.topK[l] = routing[l].k;
        }
    }

    public Backend backend() {
        return backend;
    }

    public Config config() {
        return cfg;
    }

    public Rng dropRng() {
        return dropRng;
    }

    public int step() {
        return step;
    }

    public void setStep(int step) {
        this.step = step;
    }

    public Routing routing(int layer) {
        return routing[layer];
    }

    /**
     * Training-mode forward pass of the next step (jitter and dropout on, noise of step
     * {@code step() + 1}); with targets, fills and returns the stats (mean loss, LB loss, z-loss,
     * accuracy, dropped tokens, expert load).
     */
    public Stats forward(int[] inputs, int[] targets, int nSeq, int seqLen) {
        return forward(inputs, targets, nSeq, seqLen, dropRng, true);
    }

    /**
     * Evaluation-mode forward pass (no jitter, no dropout) whose dropping decisions draw from
     * {@code rng}: evaluation and generation keep their own.
     */
    public Stats forward(int[] inputs, int[] targets, int nSeq, int seqLen, Rng rng) {
        return forward(inputs, targets, nSeq, seqLen, rng, false);
    }

    private Stats forward(int[] inputs, int[] targets, int nSeq, int seqLen, Rng rng, boolean training) {
        int t = nSeq * seqLen;
        backend.beginPass(training, step + 1);
        backend.setBatch(inputs, targets, nSeq, seqLen);
        double lb = 0, z = 0;
        int dropped = 0;
        long routed = 0;
        for (int l = 0; l < cfg.layers(); l++) {
            Routing r = routing[l];
            RouterChoice rc = choice[l];
            stats.zLossOf[l] = stats.entropyOf[l] = Double.NaN;
            if (!backend.forwardToRouter(l, rc, t)) {
                r.dense(t);
            } else {
                r.route(rc, t, seqLen, training ? cfg.capacity(t) : cfg.evalCapacity(t), cfg.dropTokens(), cfg.dropPolicy(), rng);
                lb += r.loadBalancingLoss();
                stats.zLossOf[l] = rc.zLoss(t);
                z += stats.zLossOf[l];
                stats.entropyOf[l] = rc.entropy(t);
            }
            dropped += r.dropped;
            routed += (long) r.k * t;
            for (int x = 0; x < r.experts; x++) {
                stats.counts[l][x] = r.counts[x];
                stats.meanProb[l][x] = r.probSum[x] / t;
                stats.droppedOf[l][x] = r.counts[x] - r.kept[x];
            }
            backend.forwardFfn(l, r);
        }
        backend.forwardHead(targets == null ? null : headOut);
        stats.tokens = t;
        stats.dropped = dropped;
        stats.routed = routed;
        stats.lbLoss = lb;
        stats.zLoss = cfg.switchBlocks() ? z : 0;
        if (targets != null) {
            stats.loss = headOut[0] / t;
            stats.accuracy = headOut[1] / t;
            stats.objective = stats.loss + cfg.lbCoef() * lb + (cfg.zLossCoef() > 0 ? cfg.zLossCoef() * z : 0);
        }
        return stats;
    }

    /** Gradients of cross-entropy + lbCoef * LB loss + zLossCoef * z-loss for the last forward pass (with targets). */
    public void backward() {
        backend.zeroGrads();
        backend.backwardHead();
        for (int l = cfg.layers() - 1; l >= 0; l--) {
            Routing r = routing[l];
            if (cfg.switchLayer(l)) r.loadBalancingGrad(cfg.lbCoef(), probGrad);
            backend.backwardFfn(l, r, probGrad);
            backend.backwardAttention(l);
        }
        backend.backwardEmbedding();
    }

    /** Noam: lr * d_model^-0.5 * min(t^-0.5, t * warmup^-1.5), t from 1. */
    public static double noam(Config c, int t) {
        return c.lr() * Math.pow(c.dModel(), -0.5) * Math.min(Math.pow(t, -0.5), t * Math.pow(c.warmup(), -1.5));
    }

    /** One full training step on a batch; returns its stats (loss, grad norm, lr, ...). */
    public Stats trainStep(int[] inputs, int[] targets, int nSeq, int seqLen) {
        long t0 = System.nanoTime();
        forward(inputs, targets, nSeq, seqLen);
        long t1 = System.nanoTime();
        backward();
        long t2 = System.nanoTime();
        double norm = Math.sqrt(backend.gradSquaredNorm());
        float scale = norm > cfg.clip() ? (float) (cfg.clip() / (norm + 1e-6)) : 1f;
        step++;
        double lr = noam(cfg, step);
        backend.adamStep((float) lr, scale, step);
        stats.forwardNanos = t1 - t0;
        stats.backwardNanos = t2 - t1;
        stats.optimizerNanos = System.nanoTime() - t2;
        stats.gradNorm = norm;
        stats.lr = lr;
        return stats;
    }

    @Override
    public void close() {
        backend.close();
    }
}
