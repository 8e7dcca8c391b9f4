package org.tornadoswitch.hf;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Optional;

/** A read-only view of a checkpoint's tensors, whatever the file format. */
public interface TensorSource extends AutoCloseable {
    /** Tensor names in file order. */
    List<String> names();

    boolean has(String name);

    /** Shape as stored (long dims). Throws HfFormatException naming the tensor if absent. */
    long[] shape(String name);

    /** The stored dtype name: "F32", "F16", "BF16" (others are refused at open with HfFormatException). */
    String dtype(String name);

    /** Number of elements of the tensor (the product of its shape). */
    default long numel(String name) {
        long n = 1;
        for (long d : shape(name)) n = Math.multiplyExact(n, d);
        return n;
    }

    /** The tensor as a new fp32 array (converted from F16/BF16), read from the memory-mapped file. */
    default float[] readFloats(String name) {
        long n = numel(name);
        if (n > Integer.MAX_VALUE - 8)
            throw new HfFormatException("tensor " + name + " has " + n + " elements, more than one Java array holds");
        float[] out = new float[(int) n];
        readFloats(name, out, 0);
        return out;
    }

    /** Reads into dst[off..off+numel) (no temporary copy of the tensor). */
    void readFloats(String name, float[] dst, int off);

    /**
     * The tensor's bytes as a read-only memory-mapped segment of little-endian fp32 values, when it
     * is stored as contiguous F32 (so a caller can use the weights in place, without a copy). Empty
     * for F16/BF16 or strided tensors. The segment is valid until {@link #close()}; it need not be
     * 4-byte aligned (a file may put an odd-sized F16 tensor before it), so read it with unaligned
     * layouts (e.g. {@code ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(LITTLE_ENDIAN)}).
     */
    default Optional<MemorySegment> mappedF32(String name) {
        return Optional.empty();
    }

    /** Unmaps the files; the arrays already read stay valid, mapped segments do not. */
    @Override
    void close();
}
