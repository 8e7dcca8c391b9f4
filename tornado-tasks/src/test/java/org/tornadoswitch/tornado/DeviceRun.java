package org.tornadoswitch.tornado;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.function.Consumer;
import org.tornadoswitch.util.Rng;
import uk.ac.manchester.tornado.api.GridScheduler;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.TornadoExecutionPlan;
import uk.ac.manchester.tornado.api.WorkerGrid;
import uk.ac.manchester.tornado.api.enums.DataTransferMode;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;

/** Test helpers: run tasks on the test device with their grids, inputs and outputs all sent and read back. */
final class DeviceRun {
    private DeviceRun() {}

    /** Tolerance: relative to the largest magnitude of the expected output. */
    static final double REL = 1e-4;

    static float[] random(int n, long seed) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (r.nextDouble() * 2 - 1);
        return a;
    }

    /** Runs the tasks {@code body} adds to graph "t_name"; grids maps "task" names (without the graph) to worker grids. */
    static void run(String name, Consumer<TaskGraph> body, Object[] grids, Object... arrays) {
        TaskGraph tg = new TaskGraph("t_" + name).transferToDevice(DataTransferMode.EVERY_EXECUTION, arrays);
        body.accept(tg);
        tg.transferToHost(DataTransferMode.EVERY_EXECUTION, arrays);
        GridScheduler gs = new GridScheduler();
        for (int i = 0; i < grids.length; i += 2) gs.addWorkerGrid("t_" + name + "." + grids[i], (WorkerGrid) grids[i + 1]);
        try (TornadoExecutionPlan plan = new TornadoExecutionPlan(tg.snapshot())) {
            plan.withDevice(TornadoDevices.select(System.getProperty("tornado.test.device")));
            if (grids.length > 0) plan.withGridScheduler(gs);
            plan.execute();
        } catch (Exception e) {
            throw new AssertionError("kernel " + name + " failed on the device", e);
        }
    }

    static void assertClose(float[] expected, FloatArray actual, String what) {
        assertClose(expected, actual, 0, expected.length, what);
    }

    static void assertClose(float[] expected, FloatArray actual, int off, int n, String what) {
        double max = 0;
        for (int i = off; i < off + n; i++) max = Math.max(max, Math.abs(expected[i]));
        for (int i = off; i < off + n; i++)
            assertEquals(expected[i], actual.get(i), REL * Math.max(max, 1e-3), what + "[" + i + "]");
    }
}
