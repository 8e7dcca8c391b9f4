package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.WorkerGrid;
import uk.ac.manchester.tornado.api.WorkerGrid2D;
import uk.ac.manchester.tornado.api.WorkerGrid3D;
import uk.ac.manchester.tornado.api.common.TornadoDevice;
import uk.ac.manchester.tornado.api.common.TornadoFunctions.Task11;
import uk.ac.manchester.tornado.api.common.TornadoFunctions.Task13;
import uk.ac.manchester.tornado.api.common.TornadoFunctions.Task15;
import uk.ac.manchester.tornado.api.enums.TornadoDeviceType;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The capability check: which form of the kernels a device gets, and the work-group sizes that go
 * with it. The kernels are the same Java methods for every backend (OpenCL, PTX, SPIR-V); what differs
 * is the local size of the row, attention and reduction kernels (a work item per lane on a GPU, one
 * work item looping over the lanes on a CPU) and, for the GEMMs, the tile form ({@link GemmKernels}).
 *
 * <p>GPU form: GEMMs in 16 x 16 tiles, rows reduced by 32 lanes, attention by 32 work items per
 * block of queries. CPU form (OpenCL CPU devices: PoCL, Intel's CPU runtime): GEMM panels, two lanes
 * per row, one work item per attention block. (One lane per row with 4 or more rows per work-group
 * makes PoCL 3.1 read a stale value in the first row of a work-group when a kernel reads and then
 * writes the same buffer, as LayerNorm's accumulating backward does; two lanes do not.) {@code -Dtornadoswitch.kernels=gpu|cpu} overrides the choice (the
 * tests run both forms on PoCL).
 */
public enum KernelForm {
    CPU(2, 1), GPU(32, 32);

    /** Work items per row of the row kernels; work items per block of queries of attention. */
    public final int lanes, attentionItems;

    KernelForm(int lanes, int attentionItems) {
        this.lanes = lanes;
        this.attentionItems = attentionItems;
    }

    public static KernelForm of(TornadoDevice device) {
        String o = System.getProperty("tornadoswitch.kernels");
        if (o != null && !o.isBlank()) return valueOf(o.trim().toUpperCase(java.util.Locale.ROOT));
        return device.getDeviceType() == TornadoDeviceType.CPU ? CPU : GPU;
    }

    /** Rows handled per work-group by the row kernels (the second dimension of their local size). */
    public int rowsPerGroup() {
        return this == CPU ? 16 : 8;
    }

    /** Grid of a row kernel over {@code rows} rows: x = lanes, y = rows. */
    public WorkerGrid rowGrid(int rows) {
        int per = rowsPerGroup();
        WorkerGrid g = new WorkerGrid2D(lanes, ceil(rows, per) * per);
        g.setLocalWork(lanes, per, 1);
        return g;
    }

    /** Grid of a column-reduction kernel over {@code cols} columns: x = columns, y = lanes reducing the rows. */
    public WorkerGrid columnGrid(int cols) {
        int per = this == CPU ? 16 : 32;
        int red = this == CPU ? 1 : 8;
        WorkerGrid g = new WorkerGrid2D(ceil(cols, per) * per, red);
        g.setLocalWork(per, red, 1);
        return g;
    }

    /** Grid of attention over nSeq x heads x query blocks. */
    public WorkerGrid attentionGrid(int blocks) {
        WorkerGrid g = new WorkerGrid2D(attentionItems, blocks);
        g.setLocalWork(attentionItems, 1, 1);
        return g;
    }

    /** Grid of a GEMM with an output of rows x n per group, G groups. */
    public WorkerGrid gemmGrid(int rows, int n, int groups) {
        WorkerGrid g;
        if (this == CPU) {
            g = new WorkerGrid3D(ceil(n, GemmKernels.PC), ceil(rows, GemmKernels.PANEL_ROWS), groups);
            g.setLocalWork(1, 1, 1);
        } else {
            g = new WorkerGrid3D(ceil(n, GemmKernels.TS) * GemmKernels.TW, ceil(rows, GemmKernels.TS) * GemmKernels.TW, groups);
            g.setLocalWork(GemmKernels.TW, GemmKernels.TW, 1);
        }
        return g;
    }

    static int ceil(int a, int b) {
        return Math.max(1, (a + b - 1) / b);
    }

    /** The forward GEMM of this form. */
    public Task15<KernelContext, FloatArray, IntArray, IntArray, FloatArray, FloatArray, FloatArray, IntArray, FloatArray, Integer,
            Integer, Integer, Integer, Integer, Integer> linear() {
        return this == CPU ? GemmKernels::linearPanel : GemmKernels::linearTiled;
    }

    /** The input-gradient GEMM of this form. */
    public Task13<KernelContext, FloatArray, FloatArray, FloatArray, FloatArray, IntArray, FloatArray, Integer, Integer, Integer,
            Integer, Integer, Integer> inputGrad() {
        return this == CPU ? GemmKernels::inputGradPanel : GemmKernels::inputGradTiled;
    }

    /** The weight-gradient GEMM of this form. */
    public Task11<KernelContext, FloatArray, IntArray, IntArray, FloatArray, FloatArray, Integer, Integer, Integer, Integer, Integer>
            weightGrad() {
        return this == CPU ? GemmKernels::weightGradPanel : GemmKernels::weightGradTiled;
    }
}
