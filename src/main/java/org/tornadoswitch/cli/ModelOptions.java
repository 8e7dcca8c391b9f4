package org.tornadoswitch.cli;

import org.tornadoswitch.Config;
import picocli.CommandLine.Option;

/** Every {@link Config} field as a flag; defaults are the labml Switch experiment. */
public final class ModelOptions {
    private static final Config D = Config.defaults();

    @Option(names = "--d-model", description = "Model width (default: ${DEFAULT-VALUE}).")
    int dModel = D.dModel();
    @Option(names = "--heads", description = "Attention heads; must divide --d-model (default: ${DEFAULT-VALUE}).")
    int heads = D.heads();
    @Option(names = "--layers", description = "Transformer blocks (default: ${DEFAULT-VALUE}).")
    int layers = D.layers();
    @Option(names = "--d-ff", description = "Hidden width of each expert FFN (default: ${DEFAULT-VALUE}).")
    int dFf = D.dFf();
    @Option(names = "--experts", description = "Experts per Switch block (default: ${DEFAULT-VALUE}).")
    int experts = D.experts();
    @Option(names = "--dense", description = "Dense baseline: one plain FFN per block, no router.")
    boolean dense = D.dense();
    @Option(names = "--sparse-step", description = "Switch blocks as HF's encoder_sparse_step: 1 = every block, 0 = none (dense), N = block i (from 0) when i %% N == 1; the others one plain FFN (default: ${DEFAULT-VALUE}).")
    int sparseStep = D.sparseStep();
    @Option(names = "--top-k", description = "Experts per token: 1 = Switch; 2 = the MoE baseline (outputs weighted by probabilities renormalized over the chosen; capacity counts all assignments, floor(factor * k * tokens / experts)) (default: ${DEFAULT-VALUE}).")
    int topK = D.topK();
    @Option(names = "--capacity-factor", description = "Training capacity = floor(factor * k * tokens / experts), k = --top-k (default: ${DEFAULT-VALUE}).")
    double capacityFactor = D.capacityFactor();
    @Option(names = "--expert-capacity", description = "Absolute training capacity per expert (HF expert_capacity), at most the batch's tokens; 0 = from --capacity-factor (default: ${DEFAULT-VALUE}).")
    int expertCapacity = D.expertCapacity();
    @Option(names = "--eval-capacity-factor", description = "Capacity factor of evaluation and generation; 0 = the training capacity (default: ${DEFAULT-VALUE}).")
    double evalCapacityFactor = D.evalCapacityFactor();
    @Option(names = "--drop-tokens", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "Drop tokens over an expert's capacity; --no-drop-tokens is dropless: no capacity, every token processed by its expert (default: ${DEFAULT-VALUE}).")
    boolean dropTokens = D.dropTokens();
    @Option(names = "--eval-drop-tokens", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "Drop tokens in evaluation and generation too; --no-eval-drop-tokens processes every token there (default: ${DEFAULT-VALUE}).")
    boolean evalDropTokens = D.evalDropTokens();
    @Option(names = "--drop-policy", paramLabel = "POLICY",
            description = "Which tokens of a full expert keep their slot: random (labml), position (earliest in the sequence first, HF), probability (highest router probability first) (default: ${DEFAULT-VALUE}).")
    Config.DropPolicy dropPolicy = D.dropPolicy();
    @Option(names = "--dropped-output", paramLabel = "MODE",
            description = "FFN output of a dropped token: input (its normalized input, scaled like an expert's, labml) or zero (residual only, HF) (default: ${DEFAULT-VALUE}).")
    Config.DroppedOutput droppedOutput = D.droppedOutput();
    @Option(names = "--scale-prob", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "Scale expert output by the route probability; --no-scale-prob scales by p/stop_grad(p) (default: ${DEFAULT-VALUE}).")
    boolean scaleProb = D.scaleProb();
    @Option(names = "--lb-coef", description = "Load-balancing loss coefficient (default: ${DEFAULT-VALUE}).")
    double lbCoef = D.lbCoef();
    @Option(names = "--z-loss-coef", description = "Router z-loss coefficient (ST-MoE; HF router_z_loss_coef): coef * sum over Switch layers of mean_t logsumexp(router logits)^2 (default: ${DEFAULT-VALUE}).")
    double zLossCoef = D.zLossCoef();
    @Option(names = "--jitter", description = "Router input jitter (HF router_jitter_noise): in training multiply the router input by U(1-x, 1+x); off in evaluation and generation (default: ${DEFAULT-VALUE}).")
    double jitter = D.jitter();
    @Option(names = "--dropout", description = "Training dropout on attention weights, residual branches and dense blocks' FFN hidden layer (default: ${DEFAULT-VALUE}).")
    double dropout = D.dropout();
    @Option(names = "--expert-dropout", description = "Training dropout on the hidden layer inside the experts (the paper fine-tunes with 0.4, and 0.1 elsewhere) (default: ${DEFAULT-VALUE}).")
    double expertDropout = D.expertDropout();
    @Option(names = "--pos-embedding", description = "Add learned positional embeddings (labml has none).")
    boolean posEmbedding = D.posEmbedding();
    @Option(names = "--init", paramLabel = "SCHEME",
            description = "Initialization: torch (PyTorch defaults, labml) or switch (the paper's: linear weights from a normal with sigma = sqrt(s / fan_in), resampled beyond 2 sigma; biases 0) (default: ${DEFAULT-VALUE}).")
    Config.Init init = D.init();
    @Option(names = "--init-scale", description = "The paper's s of --init switch (default: ${DEFAULT-VALUE}).")
    double initScale = D.initScale();
    @Option(names = "--batch-size", description = "Sequences per batch (default: ${DEFAULT-VALUE}).")
    int batchSize = D.batchSize();
    @Option(names = "--seq-len", description = "Characters per sequence (default: ${DEFAULT-VALUE}).")
    int seqLen = D.seqLen();
    @Option(names = "--lr", description = "Noam learning-rate factor (default: ${DEFAULT-VALUE}).")
    double lr = D.lr();
    @Option(names = "--warmup", description = "Noam warm-up steps (default: ${DEFAULT-VALUE}).")
    int warmup = D.warmup();
    @Option(names = "--beta1", description = "Adam beta1 (default: ${DEFAULT-VALUE}).")
    double beta1 = D.beta1();
    @Option(names = "--beta2", description = "Adam beta2 (default: ${DEFAULT-VALUE}).")
    double beta2 = D.beta2();
    @Option(names = "--eps", description = "Adam epsilon (default: ${DEFAULT-VALUE}).")
    double eps = D.eps();
    @Option(names = "--clip", description = "Global gradient-norm clip (default: ${DEFAULT-VALUE}).")
    double clip = D.clip();
    @Option(names = "--seed", description = "Random seed: initialization, batches, dropping, jitter and dropout masks (default: ${DEFAULT-VALUE}).")
    long seed = D.seed();

    public Config toConfig() {
        return new Config(dModel, heads, layers, dFf, experts, dense, capacityFactor, dropTokens, scaleProb, lbCoef,
                posEmbedding, batchSize, seqLen, lr, warmup, beta1, beta2, eps, clip, seed,
                zLossCoef, jitter, dropPolicy, droppedOutput, evalCapacityFactor, evalDropTokens, expertCapacity, sparseStep,
                init, initScale, dropout, expertDropout, topK).validate();
    }
}
