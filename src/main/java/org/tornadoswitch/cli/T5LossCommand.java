package org.tornadoswitch.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.concurrent.Callable;
import org.tornadoswitch.hf.T5Model;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code t5 loss}: HF's training objective of one (input, labels) pair and its parts. */
@Command(name = "loss", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Print {\"total\", \"ce\", \"encoder_z_loss\", \"decoder_z_loss\", \"encoder_aux_loss\", \"decoder_aux_loss\"}"
                + " as transformers' forward(input_ids, labels=..., output_router_logits=True) computes them: the decoder input is the"
                + " labels shifted right with the decoder start token, labels -100 are ignored, total = ce + router_z_loss_coef ·"
                + " (z losses) + router_aux_loss_coef · (aux losses). No dropout or jitter (eval mode)."})
public final class T5LossCommand implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin T5ModelOptions model;

    @Option(names = "--input-ids", required = true, split = ",", paramLabel = "IDS", description = "encoder input ids")
    int[] inputIds;

    @Option(names = "--labels", required = true, split = ",", paramLabel = "IDS", description = "target ids (-100 = ignored)")
    int[] labels;

    @Override
    public Integer call() throws Exception {
        T5ModelOptions.checkIds(inputIds, "--input-ids");
        T5ModelOptions.checkIds(labels, "--labels");
        try (T5Model m = model.open(spec.commandLine().getErr())) {
            T5Model.Losses l = m.loss(inputIds, labels);
            ObjectNode o = new ObjectMapper().createObjectNode();
            o.put("total", l.total());
            o.put("ce", l.ce());
            o.put("encoder_z_loss", l.encoderZLoss());
            o.put("decoder_z_loss", l.decoderZLoss());
            o.put("encoder_aux_loss", l.encoderAuxLoss());
            o.put("decoder_aux_loss", l.decoderAuxLoss());
            spec.commandLine().getOut().println(o);
            spec.commandLine().getOut().flush();
        }
        return 0;
    }
}
