package org.tornadoswitch.hf;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Tensors that lie in memory-mapped files: each entry knows its segment, byte offset, dtype,
 * shape and (for PyTorch's views) its strides. Reading converts straight from the mapping into the
 * destination array.
 */
abstract class MappedTensors implements TensorSource {
    static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfShort I16_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** The element types this reader converts to fp32. */
    enum DType {
        F32(4), F16(2), BF16(2);
        final int bytes;

        DType(int bytes) {
            this.bytes = bytes;
        }
    }

    /**
     * One tensor: {@code stride == null} means contiguous (row-major); otherwise strides in elements
     * from {@code byteOffset}, the address of element 0.
     */
    record Entry(String name, DType dtype, long[] shape, long numel, MemorySegment segment, long byteOffset, long[] stride) {}

    final Map<String, Entry> entries = new LinkedHashMap<>();
    final Arena arena;
    private final String what;

    MappedTensors(Arena arena, String what) {
        this.arena = arena;
        this.what = what;
    }

    static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) n = Math.multiplyExact(n, d);
        return n;
    }

    Entry entry(String name) {
        Entry e = entries.get(name);
        if (e == null) throw new HfFormatException(what + " has no tensor " + name);
        return e;
    }

    @Override
    public List<String> names() {
        return Collections.unmodifiableList(new ArrayList<>(entries.keySet()));
    }

    @Override
    public boolean has(String name) {
        return entries.containsKey(name);
    }

    @Override
    public long[] shape(String name) {
        return entry(name).shape().clone();
    }

    @Override
    public String dtype(String name) {
        return entry(name).dtype().name();
    }

    @Override
    public long numel(String name) {
        return entry(name).numel();
    }

    @Override
    public void readFloats(String name, float[] dst, int off) {
        Entry e = entry(name);
        if (off < 0 || e.numel() > dst.length - (long) off)
            throw new IllegalArgumentException("tensor " + name + " has " + e.numel() + " elements; dst holds "
                    + Math.max(0, dst.length - off) + " from offset " + off);
        int n = (int) e.numel();
        if (e.stride() == null) {
            convert(e.segment(), e.dtype(), e.byteOffset(), dst, off, n);
        } else {
            readStrided(e, dst, off);
        }
    }

    @Override
    public Optional<MemorySegment> mappedF32(String name) {
        Entry e = entry(name);
        if (e.dtype() != DType.F32 || e.stride() != null) return Optional.empty();
        return Optional.of(e.segment().asSlice(e.byteOffset(), 4 * e.numel()).asReadOnly());
    }

    /** Converts n contiguous elements starting at byte {@code pos} into dst[off..off+n). */
    static void convert(MemorySegment seg, DType dt, long pos, float[] dst, int off, int n) {
        switch (dt) {
            case F32 -> MemorySegment.copy(seg, F32_LE, pos, dst, off, n);
            case F16 -> {
                for (int i = 0; i < n; i++) dst[off + i] = Float.float16ToFloat(seg.get(I16_LE, pos + 2L * i));
            }
            case BF16 -> {
                for (int i = 0; i < n; i++) dst[off + i] = Float.intBitsToFloat((seg.get(I16_LE, pos + 2L * i) & 0xffff) << 16);
            }
        }
    }

    /** A strided view: rows of the last dimension at a time, the outer indices counted like an odometer. */
    private static void readStrided(Entry e, float[] dst, int off) {
        long[] shape = e.shape(), stride = e.stride();
        int nd = shape.length;
        if (e.numel() == 0) return;
        if (nd == 0) {
            convert(e.segment(), e.dtype(), e.byteOffset(), dst, off, 1);
            return;
        }
        int b = e.dtype().bytes;
        long[] idx = new long[nd];
        int inner = (int) shape[nd - 1];
        long innerStride = stride[nd - 1];
        int o = off;
        while (true) {
            long base = 0;
            for (int d = 0; d < nd - 1; d++) base += idx[d] * stride[d];
            if (innerStride == 1) {
                convert(e.segment(), e.dtype(), e.byteOffset() + base * b, dst, o, inner);
            } else {
                for (int i = 0; i < inner; i++)
                    convert(e.segment(), e.dtype(), e.byteOffset() + (base + i * innerStride) * b, dst, o + i, 1);
            }
            o += inner;
            int d = nd - 2;
            while (d >= 0 && ++idx[d] == shape[d]) idx[d--] = 0;
            if (d < 0) return;
        }
    }

    @Override
    public void close() {
        if (arena.scope().isAlive()) arena.close();
    }
}
