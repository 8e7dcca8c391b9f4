package org.tornadoswitch.util;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.LockSupport;

/**
 * A fixed pool that splits an index range into one contiguous chunk per thread. Created once per
 * backend: ops call {@link #parallelFor} thousands of times a step, so nothing is allocated per call
 * and the calling thread does the first chunk itself. Each index is handled by exactly one thread,
 * so results do not depend on the thread count when the body writes per-index results.
 *
 * Each thread's idle time is counted ({@link #idleNanos}): a worker's from the end of one chunk to
 * the start of the next (spinning or parked, also while the caller runs serial code), the caller's
 * while it waits for the workers to finish theirs.
 */
public final class ThreadPool implements AutoCloseable {
    @FunctionalInterface
    public interface RangeBody {
        void run(int lo, int hi);
    }

    /**
     * How long a waiting thread spins before it yields (the caller) or parks (a worker), by the clock:
     * a step's gaps between parallel loops are microseconds to a millisecond, and waking a parked
     * worker costs tens of microseconds in a VM. A count of spins would vary with the cost of the
     * PAUSE instruction (10 to 140 cycles across x86 cores).
     */
    private static final long SPIN_NANOS = Long.getLong("tornadoswitch.pool.spinMicros", 5_000) * 1_000;

    private final int threads;
    private final Thread[] workers;
    private final AtomicInteger pending = new AtomicInteger();
    private volatile long generation;
    private volatile boolean closed;
    private volatile RangeBody body;
    private volatile int count;
    private volatile Throwable failure;
    /** Idle nanoseconds per thread (0 = the calling thread) and, for workers, when the current wait began (0: busy). */
    private final AtomicLongArray idle, waitingSince;
    /** 1 while worker i + 1 is parked (or about to park): only those are unparked, a syscall each in a VM. */
    private final AtomicIntegerArray parked;

    public ThreadPool(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        this.workers = new Thread[threads - 1];
        this.idle = new AtomicLongArray(threads);
        this.waitingSince = new AtomicLongArray(threads);
        this.parked = new AtomicIntegerArray(Math.max(1, threads - 1));
        long now = System.nanoTime();
        for (int i = 1; i < threads; i++) waitingSince.set(i, now);
        for (int i = 0; i < workers.length; i++) {
            final int id = i + 1;
            workers[i] = Thread.ofPlatform().daemon().name("tornado-switch-worker-" + id).start(() -> workLoop(id));
        }
    }

    public int threads() {
        return threads;
    }

    public void parallelFor(int n, RangeBody b) {
        if (threads == 1 || n < 2) {
            b.run(0, n);
            return;
        }
        body = b;
        count = n;
        failure = null;
        pending.set(workers.length);
        generation++;
        // a worker announces parking before its last look at generation, and this reads the flag after
        // bumping it (both volatile): either it sees the new generation or it is unparked here
        for (int i = 0; i < workers.length; i++) if (parked.get(i) != 0) LockSupport.unpark(workers[i]);
        Throwable own = null;
        try {
            runChunk(0, b, n);
        } catch (Throwable t) {
            own = t;
        }
        if (pending.get() != 0) {
            long t0 = System.nanoTime();
            for (int spin = 0; pending.get() != 0; spin++) {
                if ((spin & 63) != 0 || System.nanoTime() - t0 < SPIN_NANOS) Thread.onSpinWait();
                else Thread.yield();
            }
            idle.getAndAdd(0, System.nanoTime() - t0);
        }
        body = null;
        Throwable t = own != null ? own : failure;
        if (t instanceof RuntimeException re) throw re;
        if (t instanceof Error e) throw e;
        if (t != null) throw new RuntimeException(t);
    }

    private void runChunk(int id, RangeBody b, int n) {
        int lo = (int) ((long) id * n / threads);
        int hi = (int) ((long) (id + 1) * n / threads);
        if (lo < hi) b.run(lo, hi);
    }

    private void workLoop(int id) {
        long seen = 0;
        while (true) {
            int spin = 0;
            long waitStart = System.nanoTime();
            while (generation == seen && !closed) {
                if ((++spin & 63) != 0 || System.nanoTime() - waitStart < SPIN_NANOS) {
                    Thread.onSpinWait();
                    continue;
                }
                parked.set(id - 1, 1);
                if (generation == seen && !closed) LockSupport.park(this);
                parked.set(id - 1, 0);
            }
            if (closed) return;
            seen = generation;
            long start = System.nanoTime();
            idle.getAndAdd(id, start - waitingSince.get(id));
            waitingSince.set(id, 0);
            try {
                runChunk(id, body, count);
            } catch (Throwable t) {
                failure = t;
            } finally {
                waitingSince.set(id, System.nanoTime());
                pending.decrementAndGet();
            }
        }
    }

    /**
     * Nanoseconds each thread has been idle since the pool was made (index 0: the calling thread,
     * waiting for workers; a worker's current wait included). Differences over an interval, divided
     * by its length, give each thread's idle fraction.
     */
    public long[] idleNanos() {
        long now = System.nanoTime();
        long[] r = new long[threads];
        for (int i = 0; i < threads; i++) {
            long since = waitingSince.get(i);
            r[i] = idle.get(i) + (since != 0 ? now - since : 0);
        }
        return r;
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) LockSupport.unpark(w);
    }
}
