package org.tornadoswitch.cli;

import java.util.concurrent.Callable;
import org.tornadoswitch.backend.Backends;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

@Command(name = "devices", mixinStandardHelpOptions = true, description = "List TornadoVM's backends and devices.")
public final class DevicesCommand implements Callable<Integer> {
    @Spec CommandSpec spec;

    private java.io.PrintWriter out() {
        return spec.commandLine().getOut();
    }

    @Override
    public Integer call() throws Exception {
        if (!Backends.tornadoAvailable()) {
            out().println("TornadoVM is not installed or this JVM was not started by the `tornado` launcher: "
                    + "only the jvm backend is available (" + Runtime.getRuntime().availableProcessors() + " cores).");
            return 0;
        }
        Class.forName("org.tornadoswitch.tornado.TornadoDevices").getMethod("print").invoke(null);
        return 0;
    }
}
