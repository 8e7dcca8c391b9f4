package org.tornadoswitch.tornado;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.tornadoswitch.Config;
import org.tornadoswitch.backend.Backend;
import org.tornadoswitch.backend.Backends;
import org.tornadoswitch.backend.DeviceCounters;
import org.tornadoswitch.model.RouterChoice;
import org.tornadoswitch.model.Routing;
import org.tornadoswitch.util.Rng;
import uk.ac.manchester.tornado.api.ImmutableTaskGraph;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.common.TaskPackage;
import uk.ac.manchester.tornado.api.TornadoExecutionPlan;
import uk.ac.manchester.tornado.api.TornadoExecutionResult;
import uk.ac.manchester.tornado.api.common.TornadoDevice;
import uk.ac.manchester.tornado.api.enums.DataTransferMode;
import uk.ac.manchester.tornado.api.enums.ProfilerMode;
import uk.ac.manchester.tornado.api.enums.TornadoVMBackendType;
import uk.ac.manchester.tornado.api.exceptions.TornadoMemoryException;
import uk.ac.manchester.tornado.api.exceptions.TornadoOutOfMemoryException;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;

/**
 * The training step as TornadoVM TaskGraphs, one execution plan on one device. The planners
 * ({@link EmbeddingPlanner}, {@link AttentionPlanner}, {@link ExpertFfnPlanner}, {@link HeadPlanner},
 * {@link OptimizerPlanner}) add each stage's tasks to a graph they are given; this class decides
 * which stages share a graph and drives the graphs from the host's stage calls:
 *
 * <pre>
 *  layer_0:  [tokens, noise keys ─►] embed, attention 0, router 0 ─► choices, router stats ─► host routes 0
 *  layer_l:  [routing l-1 ─►] experts l-1, attention l, router l ─► choices, router stats ─► host routes l
 *  head:     [routing L-1 ─►] experts L-1, head ─► per-token losses ─► host
 *  backward_0 .. : [load-balancing gradients ─►] zero grads, head, for l = L-1 .. 0: experts l, attention l;
 *            embedding, gradient norm partials ─► host clips
 *  adam:     [lr, clip scale, bias corrections ─►] Adam
 * </pre>
 *
 * The backward is cut into as few graphs as TornadoVM's per-graph task code allows (two for six
 * layers). That is L + 4 graph executions and host synchronisations per training step for six layers. The host's calls
 * still come stage by stage ({@link Backend}): forwardFfn(l) only records the routing, which the next
 * graph sends; the backward stages run as one graph at backwardEmbedding. With expert parallelism a
 * layer's experts would instead go into graphs of their own, on another device's execution plan.
 *
 * <p>Weights, gradients, Adam moments and every activation live on the device for the whole run.
 * The first graph uploads them once; every graph then takes the device buffers over from the graph
 * before it and hands them on (consumeFromDevice / persistOnDevice of the same set), so any order of
 * graphs sees one copy. A graph that uploads a buffer itself owns it and hands its copy on.
 *
 * <p>The device always runs full batches of batchSize x seqLen tokens; a smaller batch (evaluation's
 * last batch, generation) is padded at the end of each sequence and of the batch. Causal attention
 * keeps padding from affecting real tokens, and the host routes only the real tokens (for a padded
 * batch the full router probabilities are read on demand, since the device statistics would include
 * the padding).
 */
public final class TornadoBackend implements Backend {
    static {
        // Every graph hands on the whole shared buffer set, so its TornadoVM bytecode outgrows the
        // 4 KiB default for deep models. Read once when TornadoVM compiles its first graph.
        if (System.getProperty("tornado.tvm.maxbytecodesize") == null)
            System.setProperty("tornado.tvm.maxbytecodesize", "262144");
    }

    private final Config cfg;
    private final TornadoDevice device;
    private final KernelForm form;
    private final DeviceBuffers b;
    private final PlanBuilder pb;
    private final KernelCache cache;
    private final int layers, e, maxT, vocab;

    private final TornadoExecutionPlan plan;
    private final Map<String, Integer> graphIndex = new HashMap<>();
    private final String[] forwardGraph;
    private String[] backwardGraphs;
    /** A graph's TornadoVM task code holds 8 KiB, 15 + 5 bytes per argument a task: at most about 90 tasks of ours. */
    private static final int MAX_TASKS_PER_GRAPH = 85, TASKS_PER_LAYER_BACKWARD = 30;
    private final float[] probsHost, lseHost;
    private final double compileSeconds;
    private final DeviceCounters counters = new DeviceCounters();
    private TornadoExecutionResult last;
    /** While profiling: each graph's profiler log as of its last execution (a graph's log holds all its profiled executions). */
    private final Map<String, String> profileLogs = new HashMap<>();
    private boolean profiling;
    /** -Dtornadoswitch.graphTimes=true: wall time per graph, printed at close (a closer look at the runtime's overhead). */
    private final Map<String, long[]> graphTimes = Boolean.getBoolean("tornadoswitch.graphTimes") ? new java.util.TreeMap<>() : null;
    private Map<String, long[]> profileAtStart = Map.of();
    private List<DeviceCounters.KernelTime> profile = List.of();

    private int nSeq, seqLen, nTok;
    private boolean hasTargets;
    /** The next layer whose forward the host may ask for; the layer whose routing waits for the next graph (-1: none). */
    private int nextLayer, pendingFfn = -1;
    private boolean backwardPending;

    public TornadoBackend(Config cfg, int vocab, float[] params, String deviceSpec) {
        this(cfg, vocab, params, deviceSpec, KernelCache.Options.fromSystemProperties());
    }

    /** With these kernel cache settings (tests). */
    TornadoBackend(Config cfg, int vocab, float[] params, String deviceSpec, KernelCache.Options cacheOptions) {
        this.cfg = cfg;
        this.device = TornadoDevices.select(deviceSpec);
        this.form = KernelForm.of(device);
        this.b = new DeviceBuffers(cfg, vocab, params);
        this.cache = KernelCache.open(device, form, cacheOptions);
        this.pb = new PlanBuilder(form, cache);
        this.layers = cfg.layers();
        this.e = cfg.numExperts();
        this.maxT = cfg.tokensPerBatch();
        this.vocab = vocab;
        forwardGraph = new String[layers + 1];
        probsHost = new float[maxT * e];
        lseHost = new float[maxT];

        List<ImmutableTaskGraph> graphs = buildGraphs();
        plan = new TornadoExecutionPlan(graphs.toArray(new ImmutableTaskGraph[0]));
        plan.withDevice(device);
        plan.withGridScheduler(pb.grids);
        if (device.getTornadoVMBackend() == TornadoVMBackendType.PTX && !Boolean.getBoolean("tornadoswitch.noCudaGraph")) {
            // per-step values live in device arrays (captured scalars would be frozen), so each graph can be replayed
            plan.withCUDAGraph();
        }
        long t0 = System.nanoTime();
        cache.clearDumps();
        try {
            plan.withPreCompilation();
        } catch (RuntimeException ex) {
            throw new Backends.BackendUnavailableException("TornadoVM could not compile the kernels for "
                    + TornadoDevices.describe(device) + ": " + rootMessage(ex), ex);
        }
        run("init");
        compileSeconds = (System.nanoTime() - t0) / 1e9;
        cache.recordCompiled();
        if (!Boolean.getBoolean("tornadoswitch.kernelCache.quiet"))
            System.err.printf("tornado: kernels compiled in %.1f s; kernel cache: %s%n", compileSeconds, cache.status());
    }

    /** The kernel cache of this backend: off, hit, miss or partial, with counts (also in describe()). */
    String kernelCacheStatus() {
        return cache.status();
    }

    /** Tasks built from the kernel cache and tasks compiled by TornadoVM (tests). */
    int[] kernelCacheCounts() {
        return new int[] {cache.prebuiltTasks(), cache.jitTasks(), cache.recordedTasks()};
    }

    /** The buffer set less the ones a graph uploads itself: an uploading graph owns those and hands them on. */
    private static Object[] except(Object[] all, Object... own) {
        List<Object> out = new ArrayList<>();
        for (Object o : all) {
            boolean mine = false;
            for (Object x : own) mine |= o == x;
            if (!mine) out.add(o);
        }
        return out.toArray();
    }

    private static Object[] concat(Object[]... parts) {
        List<Object> out = new ArrayList<>();
        for (Object[] p : parts) out.addAll(List.of(p));
        return out.toArray();
    }

    private TaskGraph graph(String name, List<TaskGraph> out) {
        graphIndex.put(name, out.size());
        TaskGraph tg = new KernelCache.CachedTaskGraph(name);
        out.add(tg);
        return tg;
    }

    /** A graph that takes the buffers over from its predecessor, except those it sends itself. */
    private TaskGraph stageGraph(String name, List<TaskGraph> out, Object[] all, Object... uploads) {
        TaskGraph tg = graph(name, out).consumeFromDevice(except(all, uploads));
        if (uploads.length > 0) pb.upload(tg, uploads);
        return tg;
    }

    private List<ImmutableTaskGraph> buildGraphs() {
        Object[] all = b.all();
        List<TaskGraph> gs = new ArrayList<>();
        var emb = new EmbeddingPlanner(b, pb);
        var att = new AttentionPlanner(b, pb);
        var ffn = new ExpertFfnPlanner(b, pb);
        var head = new HeadPlanner(b, pb);
        var opt = new OptimizerPlanner(b, pb);

        // init: upload everything once (parameters, zeroed state)
        TaskGraph init = graph("init", gs).transferToDevice(DataTransferMode.FIRST_EXECUTION, all);
        for (String tk : new String[] {"zero_grads", "zero_m", "zero_v"}) pb.grid("init." + tk, PlanBuilder.grid1D(b.nParams));
        pb.add(init, new TaskPackage("zero_grads", SwitchKernels::fill, b.g, b.nParams, 0f));
        pb.add(init, new TaskPackage("zero_m", SwitchKernels::fill, b.m, b.nParams, 0f));
        pb.add(init, new TaskPackage("zero_v", SwitchKernels::fill, b.v, b.nParams, 0f));
        List<FloatArray> fl = new ArrayList<>();
        List<IntArray> il = new ArrayList<>();
        for (Object o : all) {
            if (o instanceof FloatArray fa) {
                if (fa != b.g && fa != b.m && fa != b.v) fl.add(fa);
            } else {
                il.add((IntArray) o);
            }
        }
        // pad the last group with distinct dummies: the same array twice in one task hangs TornadoVM's graph compiler
        while (fl.size() % 14 != 0) fl.add(new FloatArray(1));
        while (il.size() % 14 != 0) il.add(new IntArray(1));
        for (int i = 0; i < fl.size(); i += 14) {
            FloatArray[] a = fl.subList(i, i + 14).toArray(new FloatArray[0]);
            pb.grid("init.upload_f" + i, new PlanBuilder.DefaultGrid1D(1));
            pb.add(init, new TaskPackage("upload_f" + i, SwitchKernels::touch, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]));
        }
        for (int i = 0; i < il.size(); i += 14) {
            IntArray[] a = il.subList(i, i + 14).toArray(new IntArray[0]);
            pb.grid("init.upload_i" + i, new PlanBuilder.DefaultGrid1D(1));
            pb.add(init, new TaskPackage("upload_i" + i, SwitchKernels::touchInt, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]));
        }
        init.persistOnDevice(all);

        // forward: layer_0 .. layer_{L-1}, head
        for (int l = 0; l < layers; l++) {
            TaskGraph tg;
            if (l == 0) {
                tg = stageGraph("layer_0", gs, all, concat(emb.hostInputs(), new Object[] {b.noiseKeys, b.noiseRates}));
                emb.forward(tg);
            } else {
                tg = stageGraph("layer_" + l, gs, all, ffn.hostInputs(l - 1));
                ffn.forward(tg, l - 1);
            }
            att.forward(tg, l);
            Object[] out = att.hostOutputs(l);
            if (out.length > 0) pb.download(tg, out);
            tg.persistOnDevice(all);
            forwardGraph[l] = "layer_" + l;
        }
        TaskGraph hg = stageGraph("head", gs, all, ffn.hostInputs(layers - 1));
        ffn.forward(hg, layers - 1);
        head.forward(hg);
        pb.download(hg, head.hostOutputs());
        hg.persistOnDevice(all);
        forwardGraph[layers] = "head";

        TaskGraph lr = stageGraph("logits_row", gs, all, b.rowIndex);
        pb.add(lr, new TaskPackage(pb.task(lr, "copy_logits_row", -1, PlanBuilder.grid1D(vocab), 0, 8.0 * vocab), SwitchKernels::copyRow, b.logits,
                b.rowIndex, b.logitRow, vocab));
        pb.download(lr, b.logitRow);
        lr.persistOnDevice(all);

        // backward: as few graphs as TornadoVM's task-graph code buffer allows (8 KiB, about 90 tasks)
        TaskGraph bw = stageGraph("backward_0", gs, all, b.lbGrad);
        List<String> bwNames = new ArrayList<>(List.of("backward_0"));
        opt.zeroGrads(bw);
        head.backward(bw);
        for (int l = layers - 1; l >= 0; l--) {
            if (pb.info(bw).launches + TASKS_PER_LAYER_BACKWARD > MAX_TASKS_PER_GRAPH) {
                bw.persistOnDevice(all);
                String name = "backward_" + bwNames.size();
                bwNames.add(name);
                bw = stageGraph(name, gs, all);
            }
            ffn.backward(bw, l);
            att.backward(bw, l);
        }
        emb.backward(bw);
        opt.gradNorm(bw);
        pb.download(bw, b.partial);
        bw.persistOnDevice(all);
        backwardGraphs = bwNames.toArray(new String[0]);

        TaskGraph ad = stageGraph("adam", gs, all, b.hp);
        opt.adam(ad);
        ad.persistOnDevice(all);

        // reads back parameters, gradients and moments for checkpoints and tests
        TaskGraph sh = graph("sync_to_host", gs).consumeFromDevice(all);
        pb.grid("sync_to_host.touch", new PlanBuilder.DefaultGrid1D(1));
        pb.add(sh, new TaskPackage("touch", SwitchKernels::touch4, b.w, b.g, b.m, b.v));
        sh.transferToHost(DataTransferMode.EVERY_EXECUTION, b.w, b.g, b.m, b.v).persistOnDevice(all);
        // writes parameters and moments set on the host (resume, tests)
        TaskGraph sd = graph("sync_to_device", gs).consumeFromDevice(except(all, b.w, b.m, b.v))
            .transferToDevice(DataTransferMode.EVERY_EXECUTION, b.w, b.m, b.v);
        pb.grid("sync_to_device.touch", new PlanBuilder.DefaultGrid1D(1));
        pb.add(sd, new TaskPackage("touch", SwitchKernels::touch4, b.w, b.m, b.v, new FloatArray(1)));
        sd.persistOnDevice(all);

        List<ImmutableTaskGraph> out = new ArrayList<>();
        for (TaskGraph tg : gs) out.add(tg.snapshot());
        return out;
    }

    private void run(String name) {
        long t0 = System.nanoTime();
        try {
            last = plan.withGraph(graphIndex.get(name)).execute();
        } catch (TornadoOutOfMemoryException | TornadoMemoryException ex) {
            throw new Backends.BackendUnavailableException("the device " + TornadoDevices.describe(device)
                    + " ran out of memory in " + name + " (" + rootMessage(ex) + "): use a smaller --batch-size, --seq-len"
                    + " or model, or give TornadoVM more device memory with -Dtornado.device.memory=8GB", ex);
        }
        long dt = System.nanoTime() - t0;
        counters.executeNanos += dt;
        if (graphTimes != null) { // after each graph's first three runs
            long[] gt = graphTimes.computeIfAbsent(name, k -> new long[3]);
            if (++gt[2] > 3) {
                gt[0] += dt;
                gt[1]++;
            }
        }
        if (profiling) profileLogs.put(name, last.getProfilerResult().getProfileLog());
        PlanBuilder.GraphInfo gi = pb.graphs.get(name);
        counters.executions++;
        counters.syncs++;
        if (gi != null) {
            counters.launches += gi.launches;
            counters.bytesToDevice += gi.bytesToDevice;
            counters.bytesToHost += gi.bytesToHost;
        }
    }

    /** Reads an array of the last graph back now (one more host synchronisation). */
    private void readNow(FloatArray a) {
        last.transferToHost(a);
        counters.syncs++;
        counters.bytesToHost += 4L * a.getSize();
    }

    private static String rootMessage(Throwable t) {
        while (t.getCause() != null && t.getCause() != t) t = t.getCause();
        return t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage().lines().findFirst().orElse("");
    }

    /** Reads an activation of the last graph run back to the host (tests and debugging). */
    float[] peek(String what, int layer) {
        FloatArray a = switch (what) {
            case "qkv" -> b.qkv[layer];
            case "attOut" -> b.attOut[layer];
            case "xMid" -> b.xMid[layer];
            case "ln1" -> b.ln1[layer];
            case "ln2" -> b.ln2[layer];
            case "xIn" -> b.xIn[layer];
            case "probs" -> b.probs[layer];
            default -> throw new IllegalArgumentException(what);
        };
        readNow(a);
        return a.toHeapArray();
    }

    /** The form of the kernels this device got (tests). */
    KernelForm kernelForm() {
        return form;
    }

    @Override
    public double compileSeconds() {
        return compileSeconds;
    }

    @Override
    public String describe() {
        return String.format("tornado (%s; %s kernels; compiled in %.1f s; kernel cache %s)", TornadoDevices.describe(device),
                form.name().toLowerCase(java.util.Locale.ROOT), compileSeconds, cache.enabled() ? cache.summary() : "off");
    }

    /** Padded device index of compact token c of a batch of nSeq x seqLen. */
    private int padded(int c) {
        return (c / seqLen) * b.seq + c % seqLen;
    }

    @Override
    public void setBatch(int[] inputs, int[] tgts, int nSeq, int seqLen) {
        if (seqLen > b.seq || nSeq > b.bsz)
            throw new IllegalArgumentException("batch " + nSeq + "x" + seqLen + " exceeds " + b.bsz + "x" + b.seq);
        this.nSeq = nSeq;
        this.seqLen = seqLen;
        this.nTok = nSeq * seqLen;
        this.hasTargets = tgts != null;
        IntArray tok = b.tokens, tg = b.targets;
        for (int i = 0; i < maxT; i++) {
            tok.set(i, 0);
            tg.set(i, 0);
        }
        for (int c = 0; c < nTok; c++) {
            tok.set(padded(c), inputs[c]);
            if (hasTargets) tg.set(padded(c), tgts[c]);
        }
        // the batch's positions grouped by token id (a counting sort, stable), for the embedding gradient
        IntArray start = b.embedStart, order = b.embedOrder;
        for (int v = 0; v <= vocab; v++) start.set(v, 0);
        for (int i = 0; i < maxT; i++) start.set(tok.get(i) + 1, start.get(tok.get(i) + 1) + 1);
        for (int v = 0; v < vocab; v++) start.set(v + 1, start.get(v + 1) + start.get(v));
        for (int i = 0; i < maxT; i++) {
            int v = tok.get(i);
            order.set(start.get(v), i);
            start.set(v, start.get(v) + 1);
        }
        for (int v = vocab; v > 0; v--) start.set(v, start.get(v - 1));
        start.set(0, 0);
        nextLayer = 0;
        pendingFfn = -1;
        backwardPending = false;
    }

    @Override
    public void beginPass(boolean training, int step) {
        // uploaded with the tokens by layer_0; the same keys serve the backward graph
        for (int l = 0; l < layers; l++)
            for (int site = 0; site < DeviceBuffers.SITES; site++) {
                long key = Rng.streamKey(cfg.seed(), step, l, site);
                b.noiseKeys.set(DeviceBuffers.keyAt(l, site), (int) (key >> 32));
                b.noiseKeys.set(DeviceBuffers.keyAt(l, site) + 1, (int) key);
            }
        b.noiseRates.set(DeviceBuffers.RATE_DROPOUT, training ? (float) cfg.dropout() : 0f);
        b.noiseRates.set(DeviceBuffers.RATE_EXPERT_DROPOUT, training ? (float) cfg.expertDropout() : 0f);
        b.noiseRates.set(DeviceBuffers.RATE_JITTER, training ? (float) cfg.jitter() : 0f);
    }

    /** Runs the graph that ends with layer l's router: the embedding, or layer l-1's experts, then l's attention. */
    private void runToRouter(int layer) {
        if (layer != nextLayer || (layer > 0 && pendingFfn != layer - 1))
            throw new IllegalStateException("forwardToRouter(" + layer + ") out of order: the next stage is "
                    + (pendingFfn >= 0 ? "layer " + (pendingFfn + 1) + "'s router" : nextLayer > 0 ? "forwardFfn(" + (nextLayer - 1) + ")" : "layer 0"));
        run(forwardGraph[layer]);
        nextLayer = layer + 1;
        pendingFfn = -1;
    }

    @Override
    public boolean forwardToRouter(int layer, RouterChoice out, int tokens) {
        runToRouter(layer);
        if (!b.routes[layer]) return false;
        if (tokens != nTok) throw new IllegalArgumentException("router of " + tokens + " tokens for a batch of " + nTok);
        if (nTok < maxT) { // padded batch: the device statistics include the padding; route from the real rows
            compactRouter(layer);
            out.fromProbs(probsHost, lseHost, nTok);
            return true;
        }
        int k = b.kL[layer];
        FloatArray ch = b.choice[layer], st = b.routerStats[layer];
        for (int a = 0; a < nTok * k; a++) {
            out.expert[a] = (int) ch.get(2 * a);
            out.prob[a] = ch.get(2 * a + 1);
        }
        for (int x = 0; x < e; x++) out.probSum[x] = st.get(x);
        out.entropySum = st.get(e);
        out.lseSquaredSum = st.get(e + 1);
        return true;
    }

    /** Reads layer's router probabilities and logsumexp now, compacted to the batch's real tokens. */
    private void compactRouter(int layer) {
        FloatArray pr = b.probs[layer], ls = b.routerLse[layer];
        readNow(pr);
        readNow(ls);
        for (int c = 0; c < nTok; c++) {
            int pc = padded(c);
            for (int x = 0; x < e; x++) probsHost[c * e + x] = pr.get(pc * e + x);
            lseHost[c] = ls.get(pc);
        }
    }

    @Override
    public float[] forwardToRouter(int layer) {
        runToRouter(layer);
        if (!b.routes[layer]) return null;
        compactRouter(layer);
        return probsHost;
    }

    @Override
    public float[] routerLogSumExp(int layer) {
        return b.routes[layer] ? lseHost : null;
    }

    @Override
    public void forwardFfn(int layer, Routing r) {
        if (layer != nextLayer - 1 || pendingFfn >= 0)
            throw new IllegalStateException("forwardFfn(" + layer + ") must follow forwardToRouter(" + layer + ")");
        int cl = b.capL[layer], k = b.kL[layer];
        if (r.k != k) throw new IllegalStateException("routing has k = " + r.k + ", block " + layer + " has " + k);
        for (int x = 0; x < r.experts; x++)
            if (r.kept[x] > cl) throw new IllegalStateException("expert " + x + " keeps " + r.kept[x] + " > device capacity " + cl);
        IntArray sa = b.slotAssignment[layer], tr = b.tokRow[layer], eo = b.expertOf[layer], off = b.expertOffset[layer];
        FloatArray ts = b.tokScale[layer];
        for (int s = 0; s < b.slotsL[layer]; s++) sa.set(s, -1);
        for (int x = 0; x <= r.experts; x++) off.set(x, r.offset[x]); // the JVM's grouped rows: kept counts and hidden dropout's mask index
        for (int i = 0; i < maxT * k; i++) {
            tr.set(i, -1);
            ts.set(i, 0f);
            eo.set(i, 0);
        }
        // k = 1: the output scale is p (scale_prob) or p / stop_gradient(p) = 1; k > 1: the renormalized weight
        boolean scaleByProb = b.routes[layer] && (cfg.scaleProb() || k > 1);
        for (int c = 0; c < nTok; c++) {
            int pc = padded(c);
            for (int j = 0; j < k; j++) {
                int a = c * k + j, pa = pc * k + j, x = r.expertOf[a], slot = r.slot[a];
                float scale = scaleByProb ? r.prob[a] : 1f;
                if (slot >= 0) {
                    int s = x * cl + slot;
                    sa.set(s, pa);
                    tr.set(pa, s);
                }
                ts.set(pa, scale);
                eo.set(pa, x);
            }
        }
        pendingFfn = layer; // sent and run by the next graph
    }

    @Override
    public void forwardHead(double[] out) {
        if (pendingFfn != layers - 1) throw new IllegalStateException("forwardHead must follow forwardFfn(" + (layers - 1) + ")");
        run("head");
        pendingFfn = -1;
        nextLayer = -1;
        if (!hasTargets || out == null) return;
        double sum = 0, c = 0;
        for (int i = 0; i < nTok; i++) {
            int pc = padded(i);
            sum += b.losses.get(pc);
            c += b.correct.get(pc);
        }
        out[0] = sum;
        out[1] = c;
    }

    @Override
    public void logits(int t, float[] out) {
        b.rowIndex.set(0, padded(t));
        run("logits_row");
        for (int j = 0; j < vocab; j++) out[j] = b.logitRow.get(j);
    }

    @Override
    public void zeroGrads() {
        // the backward graph zeroes the gradients on the device as its first task
    }

    private void requireFullBatch() {
        if (nTok != maxT || !hasTargets)
            throw new IllegalStateException("the TornadoVM backend trains on full batches of " + b.bsz + "x" + b.seq + " only");
    }

    @Override
    public void backwardHead() {
        requireFullBatch();
        backwardPending = true;
    }

    @Override
    public void backwardFfn(int layer, Routing r, float[] probGrad) {
        for (int x = 0; x < e; x++) b.lbGrad.set(layer * e + x, b.routes[layer] ? probGrad[x] : 0f);
    }

    @Override
    public void backwardAttention(int layer) {
        // part of the backward graph
    }

    @Override
    public void backwardEmbedding() {
        if (!backwardPending) throw new IllegalStateException("backwardEmbedding without backwardHead");
        for (String g : backwardGraphs) run(g);
        backwardPending = false;
    }

    @Override
    public double gradSquaredNorm() {
        double s = 0;
        for (int c = 0; c < b.chunks; c++) s += b.partial.get(c);
        return s;
    }

    @Override
    public void adamStep(float lr, float gradScale, int t) {
        FloatArray hp = b.hp;
        hp.set(0, lr);
        hp.set(1, gradScale);
        hp.set(2, (float) cfg.beta1());
        hp.set(3, (float) cfg.beta2());
        hp.set(4, (float) cfg.eps());
        hp.set(5, (float) (1 - Math.pow(cfg.beta1(), t)));
        hp.set(6, (float) (1 - Math.pow(cfg.beta2(), t)));
        run("adam");
    }

    @Override
    public DeviceCounters deviceCounters() {
        return counters.copy();
    }

    @Override
    public boolean profileKernels(boolean on) {
        if (on) {
            profileAtStart = KernelProfile.taskTimes(profileLogs.values()); // earlier sessions' entries stay in the logs
            plan.withProfiler(ProfilerMode.SILENT);
            profiling = true;
        } else {
            profiling = false;
            plan.withoutProfiler();
            profile = KernelProfile.aggregate(KernelProfile.taskTimes(profileLogs.values()), profileAtStart, pb.tasks);
            String dump = System.getProperty("tornadoswitch.profileDump"); // TornadoVM's raw per-graph logs, for a closer look
            if (dump != null) {
                try {
                    java.nio.file.Files.writeString(java.nio.file.Path.of(dump), String.join("\n", profileLogs.values()));
                } catch (java.io.IOException ex) {
                    throw new java.io.UncheckedIOException(ex);
                }
            }
        }
        return true;
    }

    @Override
    public List<DeviceCounters.KernelTime> kernelProfile() {
        return profile;
    }

    private float[] toHost(FloatArray a) {
        return a.toHeapArray();
    }

    @Override
    public float[] params() {
        run("sync_to_host");
        return toHost(b.w);
    }

    @Override
    public float[] grads() {
        run("sync_to_host");
        return toHost(b.g);
    }

    @Override
    public float[][] adamMoments() {
        run("sync_to_host");
        return new float[][] {toHost(b.m), toHost(b.v)};
    }

    @Override
    public void setParams(float[] params) {
        run("sync_to_host");
        for (int i = 0; i < b.nParams; i++) b.w.set(i, params[i]);
        run("sync_to_device");
    }

    @Override
    public void setAdamMoments(float[] mm, float[] vm) {
        run("sync_to_host");
        for (int i = 0; i < b.nParams; i++) {
            b.m.set(i, mm[i]);
            b.v.set(i, vm[i]);
        }
        run("sync_to_device");
    }

    @Override
    public void close() {
        if (graphTimes != null)
            graphTimes.forEach((g, t) -> System.err.printf("graph %-12s %6d runs after the first 3, %8.2f ms each%n", g, t[1], t[0] / 1e6 / Math.max(1, t[1])));
        try {
            plan.freeDeviceMemory();
        } catch (RuntimeException ignored) {
            // the device may already be gone when the JVM is shutting down
        }
    }
}
