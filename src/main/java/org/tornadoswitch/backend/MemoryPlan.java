package org.tornadoswitch.backend;

import java.lang.management.ManagementFactory;
import org.tornadoswitch.Config;
import org.tornadoswitch.jvm.JvmBackend;
import org.tornadoswitch.model.ParamLayout;

/**
 * The memory a model will need, worked out from its configuration before anything is allocated, so
 * that a model too large for the heap (or for one Java array) is refused with one line instead of
 * an OutOfMemoryError or ArithmeticException half-way through building it.
 *
 * @param parameters number of parameters (may exceed an int)
 * @param activationElements floats of activations and scratch (JVM backend)
 * @param largestBuffer elements of the largest single array
 * @param initialCopy whether the initial weights are a separate array while the backend copies them
 */
public record MemoryPlan(long parameters, long activationElements, long largestBuffer, boolean initialCopy) {
    /** The scripts' way to set the heap, named in the refusal. */
    public static final String HEAP_HINT = "JAVA_OPTS=-Xmx";

    /** Thrown when the model does not fit: the message is the one line to print (exit code 2). */
    public static final class TooLargeException extends IllegalArgumentException {
        public TooLargeException(String message) {
            super(message);
        }
    }

    public static MemoryPlan of(Config cfg, int vocab, boolean initialCopy) {
        long p = new ParamLayout(cfg, vocab).count();
        return new MemoryPlan(p, JvmBackend.plannedActivationElements(cfg, vocab),
                Math.max(p, JvmBackend.largestActivationBuffer(cfg, vocab)), initialCopy);
    }

    public long parameterBytes() {
        return 4 * parameters;
    }

    /** Weights, gradients, Adam's two moments, activations, and the initial weights while they are copied. */
    public long totalBytes() {
        return parameterBytes() * (4 + (initialCopy ? 1 : 0)) + 4 * activationElements;
    }

    /** Heap still free for the model: the maximum heap less what is in use now. */
    public static long availableHeap() {
        Runtime rt = Runtime.getRuntime();
        return rt.maxMemory() - (rt.totalMemory() - rt.freeMemory());
    }

    /** The machine's physical memory in bytes, or 0 when the JVM cannot tell. */
    public static long physicalMemory() {
        if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os)
            return os.getTotalMemorySize();
        return 0;
    }

    static String gib(long bytes) {
        return String.format("%.1f GiB", bytes / (double) (1L << 30));
    }

    /** What the model needs, in one phrase: "21.4 GiB (parameters 4.0 GiB, gradients 4.0 GiB, ...)". */
    public String needs() {
        return gib(totalBytes()) + " (parameters " + gib(parameterBytes()) + ", gradients " + gib(parameterBytes())
                + ", Adam state " + gib(2 * parameterBytes()) + ", activations " + gib(4 * activationElements)
                + (initialCopy ? ", initial weights " + gib(parameterBytes()) : "") + ")";
    }

    /**
     * Refuses the model when one of its arrays would exceed a Java array, or (JVM backend) when it
     * needs more heap than the JVM has. {@code heap} and {@code machine} are in bytes (the machine's 0 when unknown).
     */
    public void check(boolean jvmBackend, long heap, long machine) {
        if (largestBuffer > ParamLayout.MAX_FLOATS) {
            String what = parameters > ParamLayout.MAX_FLOATS
                    ? String.format("%,d parameters", parameters) : String.format("a buffer of %,d floats", largestBuffer);
            throw new TooLargeException("the model is too large: " + what + ", more than one Java array holds ("
                    + String.format("%,d", ParamLayout.MAX_FLOATS) + "); it would need " + needs() + " and the JVM has "
                    + gib(heap) + " of heap: make it smaller (--d-model, --d-ff, --layers, --experts, --batch-size)");
        }
        if (jvmBackend && totalBytes() > heap) {
            long suggest = (long) Math.ceil(totalBytes() * 1.15 / (1L << 30)) + 1;
            String where = " (raise it with " + HEAP_HINT + suggest + "g for the scripts, whose default is 75% of the machine's memory,"
                    + " or java -Xmx" + suggest + "g)" + (machine > 0 && suggest * (1L << 30) > machine
                    ? "; this machine has only " + gib(machine) + ": make the model smaller" : " or make the model smaller");
            throw new TooLargeException("the model needs " + needs() + " of JVM heap but the JVM has " + gib(heap) + where);
        }
    }
}
