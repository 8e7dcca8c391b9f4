package org.tornadoswitch.cli;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.concurrent.Callable;
import org.tornadoswitch.hf.T5Model;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code t5 logits}: the LM head's logits of one input and decoder input, as HF's model(...).logits. */
@Command(name = "logits", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Print {\"logits\": [[...], ...]}: one row of vocab_size logits per decoder position, as transformers'"
                + " SwitchTransformersForConditionalGeneration(input_ids, decoder_input_ids).logits in eval mode."})
public final class T5LogitsCommand implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin T5ModelOptions model;

    @Option(names = "--input-ids", required = true, split = ",", paramLabel = "IDS", description = "encoder input ids, e.g. 5,9,1")
    int[] inputIds;

    @Option(names = "--decoder-input-ids", required = true, split = ",", paramLabel = "IDS",
            description = "decoder input ids, starting with the decoder start token (0), e.g. 0,7,3")
    int[] decoderIds;

    @Override
    public Integer call() throws Exception {
        T5ModelOptions.checkIds(inputIds, "--input-ids");
        T5ModelOptions.checkIds(decoderIds, "--decoder-input-ids");
        try (T5Model m = model.open(spec.commandLine().getErr())) {
            float[][] lg = m.logits(inputIds, decoderIds);
            StringWriter sw = new StringWriter();
            try (JsonGenerator g = new ObjectMapper().getFactory().createGenerator(sw)) {
                g.writeStartObject();
                g.writeArrayFieldStart("logits");
                for (float[] row : lg) {
                    g.writeStartArray();
                    for (float x : row) g.writeNumber(x);
                    g.writeEndArray();
                }
                g.writeEndArray();
                g.writeEndObject();
            }
            PrintWriter out = spec.commandLine().getOut();
            out.println(sw);
            out.flush();
        }
        return 0;
    }
}
