package org.tornadoswitch.cli;

import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.tornadoswitch.hf.T5Checkpoint;
import org.tornadoswitch.hf.T5Config;
import org.tornadoswitch.hf.T5Data;
import org.tornadoswitch.hf.T5Model;
import org.tornadoswitch.hf.T5Optimizer;
import org.tornadoswitch.hf.T5Tokenizer;
import org.tornadoswitch.hf.T5Trainer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code t5 finetune}: fine-tune a SwitchTransformers checkpoint on JSON-lines pairs and save it as HF loads it. */
@Command(name = "finetune", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Fine-tune on lines {\"input\": \"...\", \"target\": \"...\"} (tokenized as T5's tokenizer: ids, then EOS) or"
                + " {\"input_ids\": [...], \"labels\": [...]}, with HF's objective: cross-entropy + router_z_loss_coef · z-losses +"
                + " router_aux_loss_coef · load-balancing losses, dropout and router jitter from config.json unless overridden.",
                "Writes OUT/metrics.jsonl, OUT/checkpoints/step-N/ (Hugging Face model directories, the newest --keep kept) and"
                + " the final model in OUT (config.json, model.safetensors, the tokenizer files): transformers loads OUT directly."})
public final class T5FinetuneCommand implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin T5ModelOptions model;

    @Option(names = "--train", required = true, paramLabel = "FILE.jsonl", description = "training examples")
    Path train;
    @Option(names = "--valid", paramLabel = "FILE.jsonl", description = "validation examples (evaluated every --eval-every steps and at the end)")
    Path valid;
    @Option(names = "--steps", description = "Optimizer steps (default: ${DEFAULT-VALUE}).")
    int steps = 100;
    @Option(names = "--out", required = true, paramLabel = "DIR2", description = "output directory: the fine-tuned model, metrics, checkpoints")
    Path out;
    @Option(names = "--optimizer", description = "adafactor (HF's Adafactor), adam (AdamW) or sgd (plain p - lr * grad) (default: ${DEFAULT-VALUE}).")
    String optimizer = "adafactor";
    @Option(names = "--lr", description = "Learning rate. adafactor without --lr: HF's relative step and parameter scaling; with it a fixed"
            + " lr (relative_step and scale_parameter off, T5's fine-tuning recipe). Defaults: adam 5e-5, sgd 1e-2.")
    Double lr;
    @Option(names = "--batch-size", description = "Examples per step (default: ${DEFAULT-VALUE}).")
    int batchSize = 8;
    @Option(names = "--max-input-length", description = "Encoder tokens per example at most, EOS kept (default: ${DEFAULT-VALUE}).")
    int maxInput = 512;
    @Option(names = "--max-target-length", description = "Target tokens per example at most, EOS kept (default: ${DEFAULT-VALUE}).")
    int maxTarget = 128;
    @Option(names = "--dropout", description = "Dropout rate of training passes (default: the config's dropout_rate).")
    Double dropout;
    @Option(names = "--jitter", description = "Router jitter of training passes (default: the config's router_jitter_noise).")
    Double jitter;
    @Option(names = "--clip", description = "Global gradient-norm clipping; 0 = off (default: 1.0 for adafactor and adam, off for sgd).")
    Double clip;
    @Option(names = "--warmup", description = "Linear warm-up steps of a fixed lr (default: ${DEFAULT-VALUE}).")
    int warmup = 0;
    @Option(names = "--weight-decay", description = "AdamW's decoupled weight decay (default: ${DEFAULT-VALUE}).")
    double weightDecay = 0;
    @Option(names = "--eval-every", description = "Validate every N steps; 0 = only at the end (default: ${DEFAULT-VALUE}).")
    int evalEvery = 100;
    @Option(names = "--eval-batches", description = "Validation batches per evaluation; 0 = all (default: ${DEFAULT-VALUE}).")
    int evalBatches = 0;
    @Option(names = "--save-every", description = "Checkpoint every N steps; 0 = only the final model (default: ${DEFAULT-VALUE}).")
    int saveEvery = 500;
    @Option(names = "--keep", description = "Checkpoints kept, newest first (default: ${DEFAULT-VALUE}).")
    int keep = 3;
    @Option(names = "--seed", description = "Seed of the batch order and the dropout/jitter masks (default: ${DEFAULT-VALUE}).")
    long seed = 42;
    @Option(names = "--metrics", paramLabel = "FILE", description = "Per-step metrics as JSON lines (default: OUT/metrics.jsonl).")
    Path metrics;
    @Option(names = "--quiet", description = "No progress.")
    boolean quiet;

    @Override
    public Integer call() throws Exception {
        PrintWriter log = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        if (steps < 1) throw new IllegalArgumentException("--steps must be >= 1, got " + steps);
        if (batchSize < 1 || batchSize > 1 << 14) throw new IllegalArgumentException("--batch-size must be in [1, 16384], got " + batchSize);
        if (maxInput < 1 || maxTarget < 1) throw new IllegalArgumentException("--max-input-length and --max-target-length must be >= 1");
        if (lr != null && !(lr > 0 && lr <= 10)) throw new IllegalArgumentException("--lr must be in (0, 10], got " + lr);
        if (clip != null && !(clip >= 0)) throw new IllegalArgumentException("--clip must be >= 0, got " + clip);
        if (warmup < 0 || evalEvery < 0 || evalBatches < 0 || saveEvery < 0)
            throw new IllegalArgumentException("--warmup, --eval-every, --eval-batches and --save-every must be >= 0");
        if (keep < 1) throw new IllegalArgumentException("--keep must be >= 1, got " + keep);
        if (!(weightDecay >= 0 && weightDecay < 1)) throw new IllegalArgumentException("--weight-decay must be in [0, 1), got " + weightDecay);
        if (dropout != null && !(dropout >= 0 && dropout < 1)) throw new IllegalArgumentException("--dropout must be in [0, 1), got " + dropout);
        if (jitter != null && !(jitter >= 0 && jitter < 1)) throw new IllegalArgumentException("--jitter must be in [0, 1), got " + jitter);
        T5Optimizer opt = switch (optimizer) {
            case "adafactor" -> T5Optimizer.adafactor(lr);
            case "adam", "adamw" -> T5Optimizer.adam(lr == null ? 5e-5 : lr, 0.9, 0.999, 1e-8, weightDecay);
            case "sgd" -> T5Optimizer.sgd(lr == null ? 1e-2 : lr);
            default -> throw new IllegalArgumentException("--optimizer must be adafactor, adam or sgd, got " + optimizer);
        };
        double clipNorm = clip != null ? clip : optimizer.equals("sgd") ? 0 : 1.0;
        // everything that can be refused is checked before the model loads or OUT is written
        T5Config cfg = T5Config.load(model.model);
        boolean hasTok = Files.isRegularFile(model.model.resolve(T5Tokenizer.SPIECE_MODEL))
                || Files.isRegularFile(model.model.resolve(T5Tokenizer.TOKENIZER_JSON));
        List<T5Data.Example> trainEx, validEx = null;
        try (T5Tokenizer tok = hasTok ? T5Tokenizer.load(model.model) : null) {
            int eos = cfg.eosTokenId() >= 0 ? cfg.eosTokenId() : tok == null ? 1 : tok.eosId();
            trainEx = T5Data.read(train, tok, eos, cfg.vocabSize(), maxInput, maxTarget);
            if (valid != null) validEx = T5Data.read(valid, tok, eos, cfg.vocabSize(), maxInput, maxTarget);
        }
        // weights and gradients, Adam's two moments (Adafactor's factored state is small)
        double copies = 2 + (optimizer.startsWith("adam") ? 2 : 0.05);
        T5Checkpoint.checkHeap(cfg, copies, "fine-tuning with " + optimizer);
        TrainCommand.requireWritable(out);
        try (T5Model m = model.open(err, copies, "fine-tuning with " + optimizer)) {
            m.backend().setTrainingNoise(dropout != null ? dropout : cfg.dropoutRate(), jitter != null ? jitter : cfg.routerJitterNoise(), seed);
            log.printf("fine-tuning %s: %,d parameters, %d + %d blocks (%d + %d sparse, %d experts, capacity %d per sequence); %d training%s examples; %s%s; %s%n",
                    model.model, cfg.parameterCount(), cfg.numLayers(), cfg.numDecoderLayers(), cfg.sparseLayers(T5Config.Stack.ENCODER),
                    cfg.sparseLayers(T5Config.Stack.DECODER), cfg.numExperts(), cfg.expertCapacity(), trainEx.size(),
                    validEx == null ? "" : " / " + validEx.size() + " validation", opt.describe(),
                    clipNorm > 0 ? ", clip " + clipNorm : "", m.backend().describe());
            log.flush();
            Path metricsFile = metrics != null ? metrics : out.resolve("metrics.jsonl");
            T5Trainer t = new T5Trainer(m, opt, trainEx, validEx, seed,
                    new T5Trainer.Options(steps, batchSize, evalEvery, evalBatches, saveEvery, keep, clipNorm, warmup, out, metricsFile,
                            quiet, model.model), log);
            TrainCommand.installInterruptHandler(T5Trainer::requestStop);
            T5Trainer.Summary s;
            try {
                s = t.run();
            } catch (T5Trainer.Stopped e) {
                log.printf("%ninterrupted: saved a checkpoint of step %d in %s%n", e.step, out.resolve("checkpoints"));
                log.flush();
                return 130;
            }
            log.printf("done: %d steps, train loss %.4f%s, %.0f tokens/s (%.1f s training); model: %s  metrics: %s%n", s.steps(), s.trainLoss(),
                    Double.isNaN(s.validLoss()) ? "" : String.format(", valid loss %.4f, valid ce %.4f", s.validLoss(), s.validCe()),
                    s.tokensPerS(), s.seconds(), out, metricsFile);
            log.flush();
        }
        return 0;
    }
}
