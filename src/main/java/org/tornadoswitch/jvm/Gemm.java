package org.tornadoswitch.jvm;

import static org.tornadoswitch.jvm.VectorGemm.L;

import jdk.incubator.vector.FloatVector;
import org.tornadoswitch.util.ThreadPool;

/**
 * The JVM backend's GEMM on the Vector API, in the three forms of a linear layer and over groups
 * (experts), with fused epilogues. Group x of a call:
 * <ul>
 * <li>{@link #NN}: C_x[rows x n] = A_x[rows x k] W_x + bias_x (forward), rows [offset[x], +rows[x]) of A and C;
 * <li>{@link #NT}: C_x[rows x k] (+)= B_x[rows x n] W_x^T (input gradient), B_x given as A here;
 * <li>{@link #TN}: G_x[k x n] += A_x[rows x k]^T B_x[rows x n] (weight gradient), G_x given as W here.
 * </ul>
 * W_x is the x-th [k x n] row-major block at wOff. Internally every form is C[M x N] = init + A·B with
 * A(i, l) read in place (row-major, or column-major for TN) and B(l, j) either rows of a matrix
 * (NN: W, TN: B) or columns of one (NT: W^T).
 *
 * <p>How (BLIS-style, for the vector shape the JVM reports): the inner dimension is cut into blocks
 * of {@link #KC}; per block, a thread packs the B columns it works on into panels of NR = 2 vectors
 * (transposing W for NT), contiguous and zero-padded, then sweeps them with the 6 x NR register tiles
 * of {@link GemmKernels}, rows in chunks of {@link #MC}. Few rows (a decode step's GEMV) read B in
 * place instead. The first block starts from init (bias, C itself, or 0), later ones from C; the last
 * applies the epilogue: residual add, ReLU, then a per-chunk callback ({@link Ops.Epilogue}).
 *
 * <p>Determinism: each C element is summed by one thread, as one FMA chain per k-block in k order,
 * with blocks of the fixed size KC added in order. So results depend neither on the thread count, the
 * split of the work, the tile shape nor the vector width: {@link #reference} computes the same bits.
 * Work units are 6-row slices of a column block of a group; the pool gives each thread a contiguous
 * range of them. One instance per calling thread; nothing is allocated per call.
 */
final class Gemm implements ThreadPool.RangeBody {
    static final int NN = 0, TN = 1, NT = 2;
    /** Rows of a register tile. */
    static final int MR = 6;
    /** Columns of a packed panel: two vectors. */
    static final int NR = 2 * L;
    /** Inner-dimension block: a packed panel [KC x NR] stays in L1 while the tiles sweep it. */
    static final int KC = Integer.getInteger("tornadoswitch.gemm.kc", 256);
    /** Columns per work unit at most: a thread's packed block of B [KC x NC] is at most 1 MB. */
    static final int NC = 1024;
    /** Rows per chunk: the chunk of A [MC x KC] stays in L2 while it meets every panel. */
    static final int MC = 96;
    /** Products of at most this many rows (a decode step's GEMV) stream the rows of B in place instead of packing it. */
    static final int GEMV_MAX_ROWS = 4;

    // the call
    private int form, groups, k, n;
    private float[] a, w, b, c, bias, res;
    private int aOff, wOff, bOff, cOff, biasOff, resOff;
    private int[] offset, rows;
    private boolean acc, relu;
    private Ops.Epilogue epilogue;
    private final int[] oneOffset = new int[2], oneRows = new int[1];
    /** Work units: group x owns [unitStart[x], unitStart[x + 1]), column block major. */
    private int[] unitStart = new int[2];
    private int colBlock;

    /** Per-thread state: the group being worked on (set by {@link #group}: C[gm x gn] = init + A·B over gk), packed panels, an edge tile. */
    private static final class Scratch {
        int group, gm, gn, gk, aBase, ai, ak, bBase, ldb, cBase, ldc, initBase, ldi, resBase;
        float[] bArr, initArr, cArr;
        boolean bTrans;
        float[] panels = new float[0], aPad = new float[0], aBlock = new float[0];
        final float[] tile = new float[MR * NR];
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);
    private static final ThreadLocal<Gemm> TASK = ThreadLocal.withInitial(Gemm::new);

    /** The calling thread's task, cleared. */
    static Gemm task() {
        Gemm g = TASK.get();
        g.bias = g.res = null;
        g.acc = g.relu = false;
        g.epilogue = null;
        return g;
    }

    /** A call: operands as in {@link Ops#groupedMatmul} (NN), {@link Ops#groupedMatmulNT} (NT: a is B_x) and {@link Ops#groupedMatmulTN}. */
    Gemm set(int form, float[] a, int aOff, float[] w, int wOff, float[] b, int bOff, float[] c, int cOff,
             int[] offset, int[] rows, int groups, int k, int n) {
        this.form = form; this.a = a; this.aOff = aOff; this.w = w; this.wOff = wOff; this.b = b; this.bOff = bOff;
        this.c = c; this.cOff = cOff; this.offset = offset; this.rows = rows; this.groups = groups; this.k = k; this.n = n;
        return this;
    }

    /** One product of m rows: a single group. */
    Gemm single(int form, float[] a, int aOff, float[] w, int wOff, float[] b, int bOff, float[] c, int cOff, int m, int k, int n) {
        oneRows[0] = m;
        return set(form, a, aOff, w, wOff, b, bOff, c, cOff, oneOffset, oneRows, 1, k, n);
    }

    Gemm bias(float[] bias, int biasOff) {
        this.bias = bias;
        this.biasOff = biasOff;
        return this;
    }

    /** Add into C instead of overwriting it (NN, NT; TN always adds). */
    Gemm accumulate(boolean acc) {
        this.acc = acc;
        return this;
    }

    /** C += res element by element, res laid out like C at resOff (after the bias). */
    Gemm residual(float[] res, int resOff) {
        this.res = res;
        this.resOff = resOff;
        return this;
    }

    Gemm relu(boolean relu) {
        this.relu = relu;
        return this;
    }

    Gemm epilogue(Ops.Epilogue e) {
        this.epilogue = e;
        return this;
    }

    /** Runs the call on the pool, then drops the references to the operands. */
    void run(ThreadPool pool) {
        if (unitStart.length < groups + 1) unitStart = new int[groups + 1];
        // split columns only when there are too few row slices to keep the threads busy
        int rowUnits = 0;
        for (int x = 0; x < groups; x++) rowUnits += (outRows(x) + MR - 1) / MR;
        int cols = outCols();
        colBlock = Math.min(cols, NC); // a wide output (a vocabulary) in blocks, each packed by the thread that owns it
        int want = 4 * pool.threads();
        if (rowUnits < want && cols > NR) {
            int splits = Math.min((want + rowUnits - 1) / Math.max(1, rowUnits), (cols + NR - 1) / NR);
            colBlock = Math.min(NC, ((cols + splits - 1) / splits + NR - 1) / NR * NR);
        }
        int colBlocks = (cols + colBlock - 1) / colBlock;
        for (int x = 0; x < groups; x++) unitStart[x + 1] = unitStart[x] + (outRows(x) + MR - 1) / MR * colBlocks;
        if (unitStart[groups] > 0) pool.parallelFor(unitStart[groups], this);
        a = w = b = c = bias = res = null;
        offset = rows = null;
        epilogue = null;
    }

    /** Rows of group x's output (0 for a TN group without rows: its G is left as it is). */
    private int outRows(int x) {
        return form == TN ? (rows[x] == 0 ? 0 : k) : rows[x];
    }

    private int outCols() {
        return form == NT ? k : n;
    }

    @Override
    public void run(int lo, int hi) {
        Scratch s = SCRATCH.get();
        int x = 0;
        while (unitStart[x + 1] <= lo) x++;
        for (int u = lo; u < hi; x++) {
            int end = Math.min(hi, unitStart[x + 1]);
            if (end <= u) continue;
            int slices = (outRows(x) + MR - 1) / MR;
            group(s, x);
            // [u, end) within group x: column block (u - start) / slices, row slices (u - start) % slices
            int v = u - unitStart[x], ve = end - unitStart[x];
            while (v < ve) {
                int cb = v / slices, s0 = v % slices, s1 = Math.min(slices, s0 + (ve - v));
                int j0 = cb * colBlock, j1 = Math.min(s.gn, j0 + colBlock);
                segment(s, s0 * MR, Math.min(s.gm, s1 * MR), j0, j1);
                v += s1 - s0;
            }
            u = end;
        }
    }

    /** Sets the geometry of group x in s: C[gm x gn] = init + A·B over gk. */
    private void group(Scratch s, int x) {
        int r = offset[x], wx = wOff + x * k * n;
        s.group = x;
        s.initArr = null;
        s.initBase = s.ldi = s.resBase = 0;
        switch (form) {
            case NN -> {
                s.gm = rows[x]; s.gn = n; s.gk = k;
                s.aBase = aOff + r * k; s.ai = k; s.ak = 1;
                s.bArr = w; s.bBase = wx; s.ldb = n; s.bTrans = false;
                s.cArr = c; s.cBase = cOff + r * n; s.ldc = n;
                if (res != null) s.resBase = resOff + r * n;
            }
            case NT -> {
                s.gm = rows[x]; s.gn = k; s.gk = n;
                s.aBase = aOff + r * n; s.ai = n; s.ak = 1;
                s.bArr = w; s.bBase = wx; s.ldb = n; s.bTrans = true;
                s.cArr = c; s.cBase = cOff + r * k; s.ldc = k;
                if (res != null) s.resBase = resOff + r * k;
            }
            default -> { // TN: the "w" slot is G, the "b" slot the token-side B
                s.gm = k; s.gn = n; s.gk = rows[x];
                s.aBase = aOff + r * k; s.ai = 1; s.ak = k;
                s.bArr = b; s.bBase = bOff + r * n; s.ldb = n; s.bTrans = false;
                s.cArr = w; s.cBase = wx; s.ldc = n;
            }
        }
        if (form == TN || acc) {
            s.initArr = s.cArr;
            s.initBase = s.cBase;
            s.ldi = s.ldc;
        } else if (bias != null) {
            s.initArr = bias;
            s.initBase = biasOff + x * n;
        }
    }

    /** Rows [r0, r1) and columns [j0, j1) of the current group's C, all of its k-blocks. */
    private void segment(Scratch s, int r0, int r1, int j0, int j1) {
        float[] cc = s.cArr, initArr = s.initArr;
        int gm = s.gm, gk = s.gk, initBase = s.initBase, ldi = s.ldi, ldc = s.ldc, cBase = s.cBase, resBase = s.resBase;
        int aBase = s.aBase, ai = s.ai, ak = s.ak;
        if (gk == 0) { // an empty product: C = init
            for (int i = r0; i < r1; i++)
                for (int j = j0; j < j1; j++) {
                    float v = initArr == null ? 0f : initArr[initBase + i * ldi + j];
                    if (res != null) v += res[resBase + i * ldc + j];
                    cc[cBase + i * ldc + j] = relu ? Math.max(v, 0f) : v;
                }
            if (epilogue != null) epilogue.apply(s.group, rowBase(s) + r0, rowBase(s) + r1, j0, j1);
            return;
        }
        // only a product that has few rows in all: a few rows of a bigger one, where a thread's share or a
        // small expert ends, would run the GEMV kernels so rarely that the JIT leaves them in a tier that
        // allocates every vector (600 KB a training step, seen with JFR)
        if (!s.bTrans && groups == 1 && s.gm <= GEMV_MAX_ROWS) {
            gemv(s, r0, r1, j0, j1);
            return;
        }
        // an input gradient of few rows (a small expert): transposing W for its panels would cost more than
        // the product, so the roles swap (see segmentSwapped)
        if (s.bTrans && (long) (r1 - r0) * (gk + (j1 - j0)) < (long) gk * (j1 - j0)) {
            segmentSwapped(s, r0, r1, j0, j1);
            return;
        }
        int panels = (j1 - j0 + NR - 1) / NR;
        if (s.panels.length < panels * NR * KC) s.panels = new float[panels * NR * KC];
        // A read transposed in place (TN: a column of X per row of the weight gradient) is copied per chunk
        // into a block MC floats a column, so that the kernels read every operand with constant strides
        boolean packA = ak != 1;
        for (int pc = 0; pc < gk; pc += KC) {
            int kc = Math.min(KC, gk - pc);
            boolean first = pc == 0, last = pc + kc == gk;
            pack(s, s.panels, pc, kc, j0, j1);
            float[] in = first ? initArr : cc;
            int inBase = first ? initBase : cBase, ldIn = first ? ldi : ldc;
            float[] rs = last ? res : null;
            boolean rl = last && relu;
            for (int ic = r0; ic < r1; ic += MC) {
                int ie = Math.min(r1, ic + MC);
                if (packA) packColumns(s, aBase + ic + pc * ak, ak, ie - ic, kc);
                for (int jp = j0, p = 0; jp < j1; ) {
                    // two full panels at once where the 6 x 4-vector tile exists (AVX-512)
                    boolean pair = GemmKernels.PAIRS && jp + 2 * NR <= j1;
                    int width = Math.min(NR, j1 - jp), nv = width > L ? 2 : 1, pw = nv * L, bo = p * NR * KC;
                    for (int i = ic; i < ie; i += MR) {
                        int mr = Math.min(MR, ie - i), co = cBase + i * ldc + jp;
                        float[] aa = packA ? s.aBlock : a;
                        int ao = packA ? i - ic : aBase + i * ai + pc;
                        if (mr == MR && (pair || width == pw)) {
                            float[] init = in == null ? ZERO : in;
                            int io = in == null ? 0 : inBase + i * ldIn + jp, li = in == null ? 0 : ldIn;
                            if (pair) {
                                if (packA) GemmKernels.k6x4p(aa, ao, s.panels, bo, bo + NR * KC, kc, cc, co, ldc, init, io, li);
                                else GemmKernels.k6x4(aa, ao, ai, s.panels, bo, bo + NR * KC, kc, cc, co, ldc, init, io, li);
                            } else if (packA) GemmKernels.tileP(nv, aa, ao, s.panels, bo, kc, cc, co, ldc, init, io, li);
                            else GemmKernels.tile(nv, aa, ao, ai, s.panels, bo, kc, cc, co, ldc, init, io, li);
                            if (rs != null || rl) finish(cc, co, ldc, pair ? 4 : nv, rs, resBase + i * ldc + jp, rl);
                            continue;
                        }
                        edgeTile(s, packA, aa, ao, mr, kc, bo, nv, width, i, jp, co, in, inBase, ldIn, rs, rl);
                        if (pair) edgeTile(s, packA, aa, ao, mr, kc, bo + NR * KC, 2, NR, i, jp + NR, co + NR, in, inBase, ldIn, rs, rl);
                    }
                    jp += pair ? 2 * NR : NR;
                    p += pair ? 2 : 1;
                }
                if (last && epilogue != null) epilogue.apply(s.group, rowBase(s) + ic, rowBase(s) + ie, j0, j1);
            }
        }
    }

    /**
     * Rows [r0, r1) (at most {@link #GEMV_MAX_ROWS}) and columns [j0, j1) with B read in place, row
     * by row with one-row kernels 8 vectors wide (a decode step's weights are read once per token:
     * packing them would double the traffic; eight cache lines of each row of B per step keep the
     * prefetchers streaming). Columns past the last whole vector are summed in scalar code in the same
     * order.
     */
    private void gemv(Scratch s, int r0, int r1, int j0, int j1) {
        float[] cc = s.cArr, bb = s.bArr;
        for (int pc = 0; pc < s.gk; pc += KC) {
            int kc = Math.min(KC, s.gk - pc);
            boolean first = pc == 0, last = pc + kc == s.gk;
            float[] in = first ? s.initArr : cc;
            int inBase = first ? s.initBase : s.cBase, ldIn = first ? s.ldi : s.ldc;
            float[] rs = last ? res : null;
            boolean rl = last && relu;
            for (int i = r0; i < r1; i++) {
                int ao = s.aBase + i * s.ai + pc * s.ak, bo = s.bBase + pc * s.ldb, co = s.cBase + i * s.ldc;
                int j = j0;
                for (int nv = 8; nv >= 1; nv /= 2)
                    for (; j + nv * L <= j1; j += nv * L) {
                        if (in == null) GemmKernels.row(nv, a, ao, s.ak, bb, bo + j, s.ldb, kc, cc, co + j, ZERO, 0);
                        else GemmKernels.row(nv, a, ao, s.ak, bb, bo + j, s.ldb, kc, cc, co + j, in, inBase + i * ldIn + j);
                        if (rs != null || rl) finishRow(cc, co + j, nv, rs, s.resBase + i * s.ldc + j, rl);
                    }
                for (; j < j1; j++) {
                    float v = 0f;
                    for (int l = 0; l < kc; l++) v = Math.fma(a[ao + l * s.ak], bb[bo + l * s.ldb + j], v);
                    if (in != null) v += in[inBase + i * ldIn + j];
                    if (rs != null) v += rs[s.resBase + i * s.ldc + j];
                    cc[co + j] = rl ? Math.max(v, 0f) : v;
                }
            }
        }
        if (epilogue != null) epilogue.apply(s.group, rowBase(s) + r0, rowBase(s) + r1, j0, j1);
    }

    /**
     * The last rows of a block (mr < MR) or a partial panel: the same 6-row kernel into the edge tile,
     * the rows past the block zero (the packed block is padded; rows in place are copied), then the
     * init, residual and ReLU element by element. One kernel per width for every tile keeps each hot:
     * a rarely called one stays interpreted and allocates.
     */
    private void edgeTile(Scratch s, boolean packA, float[] aa, int ao, int mr, int kc, int bo, int nv, int width, int i, int jp,
                          int co, float[] in, int inBase, int ldIn, float[] rs, boolean rl) {
        int pw = nv * L, aai = s.ai, ldc = s.ldc;
        float[] cc = s.cArr;
        if (packA) GemmKernels.tileP(nv, aa, ao, s.panels, bo, kc, s.tile, 0, pw, ZERO, 0, 0);
        else {
            if (mr < MR) {
                padRows(s, a, ao, aai, 1, mr, kc);
                aa = s.aPad; ao = 0; aai = kc;
            }
            GemmKernels.tile(nv, aa, ao, aai, s.panels, bo, kc, s.tile, 0, pw, ZERO, 0, 0);
        }
        for (int r = 0; r < mr; r++)
            for (int j = 0; j < width; j++) {
                float v = s.tile[r * pw + j];
                if (in != null) v += in[inBase + (i + r) * ldIn + jp + j];
                if (rs != null) v += rs[s.resBase + (i + r) * ldc + jp + j];
                cc[co + r * ldc + j] = rl ? Math.max(v, 0f) : v;
            }
    }

    /** init of a product without one: a row of zeros (ldi = 0). */
    private static final float[] ZERO = new float[8 * L];

    /** The rest of the epilogue on a finished row of nv vectors (GEMV): C += res, then ReLU. */
    private static void finishRow(float[] c, int co, int nv, float[] res, int ro, boolean relu) {
        for (int v = 0; v < nv; v++) {
            FloatVector x = FloatVector.fromArray(VectorGemm.S, c, co + v * L);
            if (res != null) x = x.add(FloatVector.fromArray(VectorGemm.S, res, ro + v * L));
            if (relu) x = x.max(0f);
            x.intoArray(c, co + v * L);
        }
    }

    /** The rest of the epilogue on a finished 6-row tile: C += res, then ReLU. */
    private static void finish(float[] c, int co, int ldc, int nv, float[] res, int ro, boolean relu) {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < nv; v++) {
                int at = co + r * ldc + v * L;
                FloatVector x = FloatVector.fromArray(VectorGemm.S, c, at);
                if (res != null) x = x.add(FloatVector.fromArray(VectorGemm.S, res, ro + r * ldc + v * L));
                if (relu) x = x.max(0f);
                x.intoArray(c, at);
            }
    }

    /**
     * NT with few rows, C[i, j] = init + Σ_l S(i, l) W(j, l), as its transpose: rows of W are the
     * broadcast operand and the few rows of S, transposed, the packed panels; each 6 x NR tile of Cᵀ
     * goes through the edge tile and is written back transposed. Each element is still the one FMA
     * chain in l order (the products commute exactly), so the bits are those of the other path.
     */
    private void segmentSwapped(Scratch s, int r0, int r1, int j0, int j1) {
        float[] cc = s.cArr, w = s.bArr, t = s.tile;
        int rowsN = r1 - r0, panels = (rowsN + NR - 1) / NR;
        if (s.panels.length < panels * NR * KC) s.panels = new float[panels * NR * KC];
        for (int pc = 0; pc < s.gk; pc += KC) {
            int kc = Math.min(KC, s.gk - pc);
            boolean first = pc == 0, last = pc + kc == s.gk;
            for (int ip = 0, p = 0; ip < rowsN; ip += NR, p++) { // B'(l, i) = S(r0 + i, l)
                int width = Math.min(NR, rowsN - ip);
                packPanel(a, s.aBase + r0 * s.ai, s.ai, true, s.panels, p * NR * KC, width > L ? NR : L, pc, kc, ip, width);
            }
            float[] in = first ? s.initArr : cc;
            int inBase = first ? s.initBase : s.cBase, ldIn = first ? s.ldi : s.ldc;
            float[] rs = last ? res : null;
            boolean rl = last && relu;
            for (int jt = j0; jt < j1; jt += MR) {
                int mr = Math.min(MR, j1 - jt), ao = s.bBase + jt * s.ldb + pc, ai = s.ldb; // A'(j, l) = W(jt + j, l)
                float[] aa = w;
                if (mr < MR) {
                    padRows(s, w, ao, ai, 1, mr, kc);
                    aa = s.aPad; ao = 0; ai = kc;
                }
                for (int ip = 0, p = 0; ip < rowsN; ip += NR, p++) {
                    int width = Math.min(NR, rowsN - ip), nv = width > L ? 2 : 1, pw = nv * L;
                    GemmKernels.tile(nv, aa, ao, ai, s.panels, p * NR * KC, kc, t, 0, pw, ZERO, 0, 0);
                    for (int ii = 0; ii < width; ii++) {
                        int i = r0 + ip + ii, co = s.cBase + i * s.ldc + jt;
                        for (int r = 0; r < mr; r++) {
                            float v = t[r * pw + ii];
                            if (in != null) v += in[inBase + i * ldIn + jt + r];
                            if (rs != null) v += rs[s.resBase + i * s.ldc + jt + r];
                            cc[co + r] = rl ? Math.max(v, 0f) : v;
                        }
                    }
                }
            }
        }
        if (epilogue != null) epilogue.apply(s.group, rowBase(s) + r0, rowBase(s) + r1, j0, j1);
    }

    /**
     * s.aBlock = rows 0..rows-1 (at most MC) of A(i, l) = a[ao + i + l·ak] (A stored column-major),
     * l < kc, at l·MC + i: a copy of each column's run, the rows past the last up to a whole tile zero.
     */
    private void packColumns(Scratch s, int ao, int ak, int rows, int kc) {
        if (s.aBlock.length < MC * KC) s.aBlock = new float[MC * KC];
        float[] p = s.aBlock;
        int padded = Math.min(MC, (rows + MR - 1) / MR * MR);
        for (int l = 0; l < kc; l++) {
            System.arraycopy(a, ao + l * ak, p, l * MC, rows);
            for (int i = rows; i < padded; i++) p[l * MC + i] = 0f;
        }
    }

    /** s.aPad = rows 0..mr-1 of A(i, l) = src[ao + i·ai + l·ak], l < kc, row-major [MR x kc], the other rows 0. */
    private static void padRows(Scratch s, float[] src, int ao, int ai, int ak, int mr, int kc) {
        if (s.aPad.length < MR * kc) s.aPad = new float[MR * KC];
        float[] p = s.aPad;
        for (int r = 0; r < mr; r++)
            for (int l = 0; l < kc; l++) p[r * kc + l] = src[ao + r * ai + l * ak];
        java.util.Arrays.fill(p, mr * kc, MR * kc, 0f);
    }

    /** Row of the whole call's C where the current group's rows start. */
    private int rowBase(Scratch s) {
        return form == TN ? 0 : offset[s.group];
    }

    /** Packs B(pc.., j0..j1) of the current group into panels of NR columns (the last may be one vector wide). */
    private static void pack(Scratch s, float[] dst, int pc, int kc, int j0, int j1) {
        for (int jp = j0, p = 0; jp < j1; jp += NR, p++) {
            int width = Math.min(NR, j1 - jp), pw = width > L ? NR : L;
            packPanel(s, dst, p * NR * KC, pw, pc, kc, jp, width);
        }
    }

    /** dst[o + l·pw + jj] = B(pc + l, jp + jj) for jj < width, 0 for width <= jj < pw. */
    private static void packPanel(Scratch sc, float[] dst, int o, int pw, int pc, int kc, int jp, int width) {
        packPanel(sc.bArr, sc.bBase, sc.ldb, sc.bTrans, dst, o, pw, pc, kc, jp, width);
    }

    /**
     * dst[o + l·pw + jj] = B(pc + l, jp + jj) for jj < width, 0 for width <= jj < pw, where
     * B(l, j) = src[bBase + l·ldb + j], or src[bBase + j·ldb + l] when {@code trans}.
     */
    private static void packPanel(float[] src, int bBase, int ldb, boolean trans, float[] dst, int o, int pw, int pc, int kc,
                                  int jp, int width) {
        if (!trans) {
            int s0 = bBase + pc * ldb + jp;
            if (width == pw) {
                for (int l = 0; l < kc; l++) {
                    int s = s0 + l * ldb, d = o + l * pw;
                    for (int v = 0; v < pw; v += L) FloatVector.fromArray(VectorGemm.S, src, s + v).intoArray(dst, d + v);
                }
            } else { // a partial panel: loops, not arraycopy/fill calls, for a few floats a row
                for (int l = 0; l < kc; l++) {
                    int s = s0 + l * ldb, d = o + l * pw, jj = 0;
                    for (; jj < width; jj++) dst[d + jj] = src[s + jj];
                    for (; jj < pw; jj++) dst[d + jj] = 0f;
                }
            }
        } else { // B(l, j) = W[j, l]: row jp + jj of W becomes column jj of the panel
            for (int jj = 0; jj < width; jj++) {
                int s = bBase + (jp + jj) * ldb + pc, d = o + jj;
                for (int l = 0; l < kc; l++) dst[d + l * pw] = src[s + l];
            }
            for (int jj = width; jj < pw; jj++)
                for (int l = 0; l < kc; l++) dst[o + jj + l * pw] = 0f;
        }
    }

    /**
     * {@code iters} rounds of 12 independent FMA chains in registers, no memory traffic: the core's
     * FMA peak. 12 chains cover the FMA latency (4-5 cycles) times the FMA pipes (1-2 per cycle for the
     * vector width) of current x86 cores, and 12 accumulators plus 2 operands fit AVX2's 16 registers.
     * Each round is written out twice, which keeps the method above C2's inlining size: inlined into
     * the probe's timing loop, the chains ran at half speed. Returns a value so the loop is kept.
     */
    static float fmaChains(int iters) {
        FloatVector one = FloatVector.broadcast(VectorGemm.S, 1f), h = FloatVector.broadcast(VectorGemm.S, 1e-9f);
        FloatVector a0 = FloatVector.zero(VectorGemm.S), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
        FloatVector a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (int i = 0; i < iters; i += 2) {
            a0 = a0.fma(one, h); a1 = a1.fma(one, h); a2 = a2.fma(one, h); a3 = a3.fma(one, h);
            a4 = a4.fma(one, h); a5 = a5.fma(one, h); a6 = a6.fma(one, h); a7 = a7.fma(one, h);
            a8 = a8.fma(one, h); a9 = a9.fma(one, h); a10 = a10.fma(one, h); a11 = a11.fma(one, h);
            a0 = a0.fma(one, h); a1 = a1.fma(one, h); a2 = a2.fma(one, h); a3 = a3.fma(one, h);
            a4 = a4.fma(one, h); a5 = a5.fma(one, h); a6 = a6.fma(one, h); a7 = a7.fma(one, h);
            a8 = a8.fma(one, h); a9 = a9.fma(one, h); a10 = a10.fma(one, h); a11 = a11.fma(one, h);
        }
        return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9).add(a10).add(a11).lane(0);
    }

    /** FLOPs of one {@link #fmaChains} round (iters even). */
    static final int FMA_CHAIN_FLOPS = 2 * 12 * L;

    /**
     * The same product element by element in scalar code, in the order the kernels use: per block of
     * KC along the inner dimension an FMA chain from 0, added to what is there (init for the first).
     * A(i, l) = a[ao + i·ai + l·ak], B(l, j) = b[bo + l·bl + j·bj]; init (may be null) at io + i·ldi + j.
     */
    static void reference(float[] a, int ao, int ai, int ak, float[] b, int bo, int bl, int bj, float[] c, int co, int ldc,
                          float[] init, int io, int ldi, int m, int k, int n) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float v = init == null ? 0f : init[io + i * ldi + j];
                if (k == 0) {
                    c[co + i * ldc + j] = v;
                    continue;
                }
                for (int pc = 0; pc < k; pc += KC) {
                    float s = 0f;
                    for (int l = pc; l < Math.min(k, pc + KC); l++) s = Math.fma(a[ao + i * ai + l * ak], b[bo + l * bl + j * bj], s);
                    v = s + v;
                }
                c[co + i * ldc + j] = v;
            }
    }
}
