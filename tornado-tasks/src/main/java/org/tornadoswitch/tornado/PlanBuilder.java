package org.tornadoswitch.tornado;

import java.util.LinkedHashMap;
import java.util.Map;
import java.lang.reflect.Method;
import java.util.HashMap;
import uk.ac.manchester.tornado.api.GridScheduler;
import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.WorkerGrid;
import uk.ac.manchester.tornado.api.WorkerGrid1D;
import uk.ac.manchester.tornado.api.WorkerGrid2D;
import uk.ac.manchester.tornado.api.common.TaskPackage;
import uk.ac.manchester.tornado.api.enums.DataTransferMode;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * What the planners add to the task graphs, recorded as they add it: each task's worker grid (the
 * explicit local sizes of {@link KernelForm}), its kind and nominal FLOPs and bytes (for the profile's
 * GFLOP/s and GB/s), and per graph its kernel launches and the bytes it moves each way on every
 * execution (for the per-step counts).
 */
final class PlanBuilder {
    /** A task as the profile reports it: kernel kind (its name less the layer), nominal FLOPs and bytes per launch. */
    record TaskInfo(String graph, String task, String kind, double flops, double bytes) {}

    /** Per graph: kernel launches, bytes sent and read back on every execution. */
    static final class GraphInfo {
        int launches;
        long bytesToDevice, bytesToHost;
    }

    /**
     * A task's grid where TornadoVM's default is used (none registered): its kernel then has no grid
     * of its own (@Parallel loops stride over the grid it gets), and only a prebuilt copy of it, which
     * would otherwise run as one thread, is given this grid.
     */
    interface DefaultGrid {}

    static final class DefaultGrid1D extends WorkerGrid1D implements DefaultGrid {
        DefaultGrid1D(int n) {
            super(n);
        }
    }

    static final class DefaultGrid2D extends WorkerGrid2D implements DefaultGrid {
        DefaultGrid2D(int x, int y) {
            super(x, y);
        }
    }

    /** -Dtornadoswitch.kernelCache.skip=m1,m2: kernel methods that always stay JIT (to narrow a problem down). */
    private static final java.util.Set<String> SKIP = java.util.Set.of(System.getProperty("tornadoswitch.kernelCache.skip", "").split(","));

    final KernelForm form;
    final KernelContext kc = new KernelContext();
    final GridScheduler grids = new GridScheduler();
    final Map<String, TaskInfo> tasks = new LinkedHashMap<>();
    final Map<String, GraphInfo> graphs = new LinkedHashMap<>();
    final KernelCache cache;
    /** Each task's grid as given (a DefaultGrid where none is registered), for the cache. */
    private final Map<String, WorkerGrid> taskGrids = new HashMap<>();

    PlanBuilder(KernelForm form) {
        this(form, KernelCache.off("off"));
    }

    PlanBuilder(KernelForm form, KernelCache cache) {
        this.form = form;
        this.cache = cache;
    }

    GraphInfo info(TaskGraph tg) {
        return graphs.computeIfAbsent(tg.getTaskGraphName(), k -> new GraphInfo());
    }

    /**
     * Registers task {@code kind_lL} (or {@code kind} when layer < 0) of graph tg with its grid
     * (a {@link DefaultGrid} or null: TornadoVM's default) and returns the name to give it.
     */
    String task(TaskGraph tg, String kind, int layer, WorkerGrid grid, double flops, double bytes) {
        String name = layer < 0 ? kind : kind + "_l" + layer;
        String id = tg.getTaskGraphName() + "." + name;
        if (tasks.containsKey(id)) throw new IllegalStateException("task " + id + " added twice");
        tasks.put(id, new TaskInfo(tg.getTaskGraphName(), name, kind, flops, bytes));
        grid(id, grid);
        info(tg).launches++;
        return name;
    }

    /** Registers the grid of task id (graph.task); a DefaultGrid or null is not registered (TornadoVM's default). */
    void grid(String id, WorkerGrid grid) {
        if (grid != null) taskGrids.put(id, grid);
        if (grid != null && !(grid instanceof DefaultGrid)) grids.addWorkerGrid(id, grid);
    }

    /**
     * Adds the task to tg: from the kernel cache as a prebuilt task when it holds this task with
     * exactly these arguments and grid, else as a JIT task (TornadoVM compiles its bytecode), which
     * the cache records once compiled.
     */
    void add(TaskGraph tg, TaskPackage pkg) {
        String id = tg.getTaskGraphName() + "." + pkg.getId();
        Object[] params = pkg.getTaskParameters();
        Object code = params[0];
        Object[] args = java.util.Arrays.copyOfRange(params, 1, params.length);
        WorkerGrid grid = taskGrids.get(id);
        String sig = null;
        if (cache.enabled()) {
            Method kernel = KernelCache.kernelMethod(code);
            // a prebuilt kernel with no grid would run as one thread
            if (kernel != null && grid != null && !SKIP.contains(kernel.getName()))
                sig = KernelCache.signature(id, kernel, args, grid, grid instanceof DefaultGrid);
            if (sig == null) cache.countUncacheable();
        }
        KernelCache.Entry e = tg instanceof KernelCache.CachedTaskGraph ? cache.lookup(sig) : null;
        if (e != null && e.accesses().length == args.length) {
            PrebuiltTasks.add(((KernelCache.CachedTaskGraph) tg).impl(), tg.getTaskGraphName(), pkg.getId(), e.entryPoint(), e.file().toString(), args,
                    e.accesses());
            if (grid instanceof DefaultGrid) grids.addWorkerGrid(id, grid);
            cache.countPrebuilt();
        } else {
            tg.addTask(pkg);
            cache.addedJit(tg, id, sig, code, args.length);
        }
    }

    /** Sends the arrays on every execution of tg, counting their bytes. */
    void upload(TaskGraph tg, Object... arrays) {
        tg.transferToDevice(DataTransferMode.EVERY_EXECUTION, arrays);
        info(tg).bytesToDevice += bytes(arrays);
    }

    /** Reads the arrays back after every execution of tg, counting their bytes. */
    void download(TaskGraph tg, Object... arrays) {
        tg.transferToHost(DataTransferMode.EVERY_EXECUTION, arrays);
        info(tg).bytesToHost += bytes(arrays);
    }

    static long bytes(Object... arrays) {
        long b = 0;
        for (Object o : arrays) {
            if (o instanceof FloatArray fa) b += 4L * fa.getSize();
            else if (o instanceof IntArray ia) b += 4L * ia.getSize();
        }
        return b;
    }

    /**
     * A one-dimensional grid of exactly n work items in blocks of the largest divisor of n up to
     * 128, or TornadoVM's default (a {@link DefaultGrid1D} of n) where n has no divisor of at least 32.
     * Left alone, TornadoVM's PTX backend gives every one-dimensional kernel the device's maximum block
     * (1024 threads), more registers than an SM has for the heavier ones (CUDA error 701).
     */
    static WorkerGrid grid1D(int n) {
        int block = Math.min(128, n);
        while (n % block != 0) block--;
        if (block < 32 && block < n) return new DefaultGrid1D(n);
        WorkerGrid1D wg = new WorkerGrid1D(n);
        wg.setLocalWork(block, 1, 1);
        return wg;
    }

    /** Nominal FLOPs of G products [rows x k] [k x n]. */
    static double gemmFlops(int rows, int n, int k, int groups) {
        return 2.0 * rows * n * k * groups;
    }
}
