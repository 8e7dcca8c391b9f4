package org.tornadoswitch.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.util.concurrent.Callable;
import org.tornadoswitch.hf.T5Model;
import org.tornadoswitch.hf.T5Tokenizer;
import org.tornadoswitch.util.Progress;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code t5 generate}: greedy, beam-search or sampled decoding with the decoder's key/value cache. */
@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Generate from a prompt as transformers' generate does: greedy (default), beam search (--num-beams B,"
                + " HF's algorithm: length_penalty 1, early_stopping false) or sampling (--temperature T > 0, top-k, seeded; HF"
                + " draws from torch's generator, so samples differ). The prompt is tokenized with the model directory's"
                + " tokenizer and EOS appended, as tokenizer(text); --input-ids takes ids as they are.",
                "Prints the decoded text, or with --json {\"ids\": [...]} (decoder start token first, as HF returns it; with a"
                + " prompt also \"text\"). Progress and the speed go to stderr."})
public final class T5GenerateCommand implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin T5ModelOptions model;

    static final class Input {
        @Option(names = "--prompt", paramLabel = "TEXT", description = "text to continue (needs spiece.model or tokenizer.json in DIR)")
        String prompt;

        @Option(names = "--input-ids", split = ",", paramLabel = "IDS", description = "encoder input ids instead of a prompt, e.g. 5,9,1")
        int[] inputIds;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = "--max-new-tokens", description = "New tokens at most; stops earlier at EOS (default: ${DEFAULT-VALUE}).")
    int maxNew = 32;
    @Option(names = "--min-new-tokens", description = "EOS is not generated before this many new tokens (HF's min_new_tokens) (default: ${DEFAULT-VALUE}).")
    int minNew = 0;
    @Option(names = "--num-beams", description = "Beams of beam search; 1 = greedy or sampling (default: ${DEFAULT-VALUE}).")
    int beams = 1;
    @Option(names = "--temperature", description = "0 = greedy; > 0 samples from softmax(logits / T) (default: ${DEFAULT-VALUE}).")
    double temperature = 0;
    @Option(names = "--top-k", description = "Sampling keeps the k most likely tokens; 0 = all (default: ${DEFAULT-VALUE}, HF's).")
    int topK = 50;
    @Option(names = "--seed", description = "Seed of the sampling (default: ${DEFAULT-VALUE}).")
    long seed = 42;
    @Option(names = "--json", description = "Print {\"ids\": [...]} (and \"text\" with a prompt).")
    boolean json;
    @Option(names = "--quiet", description = "No progress or speed on stderr.")
    boolean quiet;

    @Override
    public Integer call() throws Exception {
        if (maxNew < 1 || maxNew > 1 << 16) throw new IllegalArgumentException("--max-new-tokens must be in [1, 65536], got " + maxNew);
        if (beams < 1 || beams > 64) throw new IllegalArgumentException("--num-beams must be in [1, 64], got " + beams);
        if (!(temperature >= 0 && temperature <= 1e3)) throw new IllegalArgumentException("--temperature must be in [0, 1000], got " + temperature);
        if (temperature > 0 && beams > 1) throw new IllegalArgumentException("--temperature > 0 samples: use it with --num-beams 1");
        if (minNew < 0 || minNew > maxNew) throw new IllegalArgumentException("--min-new-tokens must be in [0, --max-new-tokens], got " + minNew);
        if (topK < 0) throw new IllegalArgumentException("--top-k must be >= 0, got " + topK);
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        T5Tokenizer tok = null;
        boolean hasTokenizer = Files.isRegularFile(model.model.resolve(T5Tokenizer.SPIECE_MODEL))
                || Files.isRegularFile(model.model.resolve(T5Tokenizer.TOKENIZER_JSON));
        int[] ids = input.inputIds;
        if (input.prompt != null || (!json && hasTokenizer)) tok = T5Tokenizer.load(model.model);
        try (T5Tokenizer closeMe = tok; T5Model m = model.open(err)) {
            if (ids == null) {
                int[] enc = tok.encode(input.prompt);
                ids = java.util.Arrays.copyOf(enc, enc.length + 1);
                ids[enc.length] = m.config().eosTokenId() >= 0 ? m.config().eosTokenId() : tok.eosId();
            }
            T5ModelOptions.checkIds(ids, "--input-ids");
            long t0 = System.nanoTime();
            int[] result;
            try (Progress bar = quiet ? null : new Progress("generate", maxNew, 0, " tokens", err, 10, false)) {
                T5Model.TokenListener l = bar == null ? null : (i, id) -> bar.stepTo(i + 1);
                result = beams > 1 ? m.generateBeam(ids, maxNew, beams, minNew, l)
                        : m.generateSampled(ids, maxNew, temperature, topK, seed, minNew, l);
            }
            double s = (System.nanoTime() - t0) / 1e9;
            if (!quiet) {
                err.printf("%d new tokens in %.2f s (%.1f tokens/s, prompt %d tokens)%n", result.length - 1, s, (result.length - 1) / s, ids.length);
                err.flush();
            }
            if (json) {
                ObjectNode o = new ObjectMapper().createObjectNode();
                o.putPOJO("ids", result);
                if (input.prompt != null) o.put("text", tok.decode(result));
                out.println(new ObjectMapper().writeValueAsString(o));
            } else if (tok != null) {
                out.println(tok.decode(result));
            } else {
                StringBuilder b = new StringBuilder();
                for (int i = 0; i < result.length; i++) b.append(i == 0 ? "" : " ").append(result[i]);
                out.println(b);
            }
            out.flush();
        }
        return 0;
    }
}
