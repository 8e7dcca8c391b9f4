package org.tornadoswitch.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.Callable;
import org.tornadoswitch.hf.T5Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code t5 tokenize --model DIR --text TEXT}: the SentencePiece ids of a text, as HF's T5Tokenizer gives them. */
@Command(name = "tokenize", mixinStandardHelpOptions = true,
        description = {"Print {\"ids\": [...]}: the ids of TEXT as transformers' T5Tokenizer(text, add_special_tokens=False)"
                + " gives them (no EOS appended; <extra_id_N> sentinels in the text are single tokens).",
                "Reads DIR/tokenizer.json when present (Hugging Face's tokenizers library), else DIR/spiece.model."})
public final class T5TokenizeCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Option(names = "--model", required = true, paramLabel = "DIR", description = "model directory with tokenizer.json and/or spiece.model")
    Path model;

    @Option(names = "--text", required = true, paramLabel = "TEXT", description = "the text to tokenize")
    String text;

    @Override
    public Integer call() throws Exception {
        try (T5Tokenizer tok = T5Tokenizer.load(model)) {
            spec.commandLine().getOut().println(new ObjectMapper().writeValueAsString(Map.of("ids", tok.encode(text))));
        }
        return 0;
    }
}
