package org.tornadoswitch.backend;

import java.lang.reflect.InvocationTargetException;
import org.tornadoswitch.Config;
import org.tornadoswitch.jvm.JvmBackend;

/** Creates a backend by name; the TornadoVM one is loaded only when it was built and TornadoVM runs. */
public final class Backends {
    public static final String TORNADO_CLASS = "org.tornadoswitch.tornado.TornadoBackend";

    /** The backend cannot be used here; the message says what is missing. */
    public static final class BackendUnavailableException extends RuntimeException {
        public BackendUnavailableException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    private Backends() {}

    public static Backend create(String name, Config cfg, int vocab, float[] params, int threads, String device) {
        return switch (name) {
            case "jvm" -> new JvmBackend(cfg, vocab, params, threads);
            case "tornado" -> createTornado(cfg, vocab, params, device);
            default -> throw new IllegalArgumentException("unknown backend '" + name + "' (jvm or tornado)");
        };
    }

    public static boolean tornadoAvailable() {
        try {
            Class.forName("uk.ac.manchester.tornado.api.TaskGraph");
            Class.forName(TORNADO_CLASS);
            return true;
        } catch (ClassNotFoundException | LinkageError e) {
            return false;
        }
    }

    private static Backend createTornado(Config cfg, int vocab, float[] params, String device) {
        try {
            Class.forName("uk.ac.manchester.tornado.api.TaskGraph");
        } catch (ClassNotFoundException | LinkageError e) {
            throw new BackendUnavailableException("TornadoVM is not on this JVM: install TornadoVM and set TORNADOVM_HOME "
                    + "to its SDK (or put `tornado` on PATH); scripts/run and scripts/train then start its `tornado` launcher "
                    + "by themselves", e);
        }
        try {
            Class<?> c = Class.forName(TORNADO_CLASS);
            return (Backend) c.getConstructor(Config.class, int.class, float[].class, String.class)
                    .newInstance(cfg, vocab, params, device);
        } catch (ClassNotFoundException e) {
            throw new BackendUnavailableException("this build has no TornadoVM backend: rebuild with TornadoVM "
                    + "installed (scripts/run and scripts/run-tornado rebuild with it when TORNADOVM_HOME is set or tornado is on PATH)", e);
        } catch (InvocationTargetException e) {
            Throwable t = e.getCause();
            if (t instanceof RuntimeException re) throw re;
            throw new BackendUnavailableException("TornadoVM backend failed to start: " + t, t);
        } catch (ReflectiveOperationException e) {
            throw new BackendUnavailableException("TornadoVM backend failed to load: " + e, e);
        }
    }
}
