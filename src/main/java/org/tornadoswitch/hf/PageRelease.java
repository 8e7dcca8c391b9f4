package org.tornadoswitch.hf;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * Hands the pages of a read-only file mapping back to the OS once their floats are copied into the
 * heap ({@code madvise(MADV_DONTNEED)}): the page cache keeps the file, but the pages stop counting
 * in this process's resident memory, so loading a model peaks at about its size, not twice it. A
 * no-op where the call is not available.
 */
final class PageRelease {
    private static final long PAGE = 4096;
    private static final int MADV_DONTNEED = 4;
    private static final MethodHandle MADVISE = find();

    private PageRelease() {}

    private static MethodHandle find() {
        try {
            if (!System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).contains("linux")) return null;
            Linker l = Linker.nativeLinker();
            return l.defaultLookup().find("madvise").map(a -> l.downcallHandle(a,
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT)))
                    .orElse(null);
        } catch (RuntimeException | LinkageError e) {
            return null;
        }
    }

    /** Drops the pages under {@code seg} (whole pages around it) from this process's mappings. */
    static void release(MemorySegment seg) {
        if (MADVISE == null || seg.byteSize() < PAGE) return;
        long a = seg.address(), lo = a & -PAGE, hi = (a + seg.byteSize() + PAGE - 1) & -PAGE;
        try {
            int rc = (int) MADVISE.invokeExact(MemorySegment.ofAddress(lo), hi - lo, MADV_DONTNEED);
        } catch (Throwable ignored) {
            // only a memory hint
        }
    }
}
