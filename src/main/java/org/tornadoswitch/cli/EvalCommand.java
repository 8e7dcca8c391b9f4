package org.tornadoswitch.cli;

import java.util.concurrent.Callable;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.train.Checkpoint;
import org.tornadoswitch.train.Evaluator;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Mixin;

@Command(name = "eval", mixinStandardHelpOptions = true, description = "Report the validation loss of a trained model.")
public final class EvalCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    private java.io.PrintWriter out() {
        return spec.commandLine().getOut();
    }

    @Mixin CheckpointOptions ckpt;
    @Mixin RunSetup setup;
    @Mixin EvalCapacityOptions capacity;

    @Override
    public Integer call() {
        Checkpoint.State st = Checkpoint.load(ckpt.checkpoint, false);
        org.tornadoswitch.Config cfg = capacity.apply(st.config());
        RunSetup.Data data = setup.loadData(cfg, st.tokenizer());
        try (SwitchModel m = setup.buildModel(cfg, st.tokenizer().size(), st.params())) {
            Evaluator.Result r = Evaluator.evaluate(m, data.batcher(), 0, cfg.seed());
            out().printf("valid loss %.4f nats/char, accuracy %.4f, dropped %.2f%%, %d tokens (step %d)%n",
                    r.loss(), r.accuracy(), 100 * r.droppedFraction(), r.tokens(), st.step());
        }
        return 0;
    }
}
