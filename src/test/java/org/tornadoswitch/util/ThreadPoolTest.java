package org.tornadoswitch.util;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;

/** Every index once; the idle time of each thread is counted where it waits. */
class ThreadPoolTest {
    @Test
    void eachIndexRunsOnce() {
        try (ThreadPool pool = new ThreadPool(3)) {
            AtomicIntegerArray hits = new AtomicIntegerArray(1000);
            for (int rep = 0; rep < 50; rep++) pool.parallelFor(1000, (lo, hi) -> {
                for (int i = lo; i < hi; i++) hits.incrementAndGet(i);
            });
            for (int i = 0; i < 1000; i++) assertEquals(50, hits.get(i));
        }
    }

    @Test
    void idleTimeIsCountedPerThread() throws Exception {
        try (ThreadPool pool = new ThreadPool(2)) {
            long[] a = pool.idleNanos();
            Thread.sleep(100); // the worker waits, the caller does not (it is not in parallelFor)
            long[] b = pool.idleNanos();
            assertTrue(b[1] - a[1] >= 80_000_000L, "worker idle " + (b[1] - a[1]));
            assertEquals(a[0], b[0], "the caller counts only its waits for workers");
            // the worker's chunk (index 1) takes 60 ms, the caller's none: the caller waits
            pool.parallelFor(2, (lo, hi) -> {
                if (lo == 1) sleep(60);
            });
            long[] c = pool.idleNanos();
            assertTrue(c[0] - b[0] >= 50_000_000L, "caller idle " + (c[0] - b[0]));
            // now the caller's chunk is the long one: the worker is idle meanwhile, the caller not
            pool.parallelFor(2, (lo, hi) -> {
                if (lo == 0) sleep(60);
            });
            long[] d = pool.idleNanos();
            assertTrue(d[0] - c[0] < 30_000_000L, "caller idle " + (d[0] - c[0]));
            assertTrue(d[1] - c[1] >= 50_000_000L, "worker idle " + (d[1] - c[1]));
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
