package org.tornadoswitch.tornado;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.reflect.Method;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.stream.Stream;
import uk.ac.manchester.tornado.api.KernelContext;
import uk.ac.manchester.tornado.api.TaskGraph;
import uk.ac.manchester.tornado.api.TornadoTaskGraphInterface;
import uk.ac.manchester.tornado.api.WorkerGrid;
import uk.ac.manchester.tornado.api.common.Access;
import uk.ac.manchester.tornado.api.common.SchedulableTask;
import uk.ac.manchester.tornado.api.common.TornadoDevice;
import uk.ac.manchester.tornado.api.enums.TornadoVMBackendType;
import uk.ac.manchester.tornado.api.types.arrays.FloatArray;
import uk.ac.manchester.tornado.api.types.arrays.IntArray;
import uk.ac.manchester.tornado.api.types.arrays.TornadoNativeArray;

/**
 * A persistent cache of the OpenCL C that TornadoVM generates for our tasks, so that a later start
 * builds each task with {@link TaskGraph#prebuiltTask} instead of running Graal on its bytecode
 * (TornadoVM 5.2 has no reusable code cache of its own for CPUs and GPUs: every start recompiles
 * every task, 47-56 s on PoCL).
 *
 * <p>How: on a miss the task is added as now ({@code addTask}, JIT) and, with
 * {@code -Dtornado.opencl.source.dump=true}, TornadoVM writes the source it builds for it; after the
 * compilation this class copies that file into the cache beside a manifest holding the task's
 * entry point, the accesses TornadoVM's sketcher gave its arguments, and the task's full signature.
 * On a later start a task whose signature is in the cache is added as a prebuilt task with the
 * recorded accesses and grid.
 *
 * <p>Safety: TornadoVM bakes every scalar argument and every array size into the kernel's source
 * (TornadoTaskSpecialisation), so a cached kernel is only right for exactly the same arguments.
 * The cache directory ({@link #key}) is one per TornadoVM build, device, TornadoVM option set
 * ({@code tornado.*} properties), object header size, JVM, kernel form and bytecode of this package's
 * classes; inside it each task is found by a hash of its signature: task id, the Java method it runs,
 * its grid, and per argument its type, array size, scalar value (bits) and aliasing. The manifest
 * repeats the whole signature and is compared in full. Anything unknown (an argument type, a missing
 * or unreadable file, a failing reflective look-up of TornadoVM internals) makes that task JIT.
 * Only OpenCL devices use it; PTX (and anything else) is untouched.
 *
 * <p>Settings: {@code -Dtornadoswitch.kernelCache=false} turns it off;
 * {@code -Dtornadoswitch.kernelCache.dir=DIR} sets its root (default
 * {@code $TORNADO_SWITCH_CACHE/kernels}, else {@code ${XDG_CACHE_HOME:-~/.cache}/tornado-switch/kernels}).
 * Delete the directory to start cold.
 */
final class KernelCache {
    static final String FORMAT = "tornado-switch kernel cache 1";

    /** Settings of one backend: enabled or not, the root (null: the default). */
    record Options(boolean enabled, Path root) {
        static Options fromSystemProperties() {
            String on = System.getProperty("tornadoswitch.kernelCache", "true");
            boolean enabled = !(on.equalsIgnoreCase("false") || on.equals("0") || on.equalsIgnoreCase("off"));
            String dir = System.getProperty("tornadoswitch.kernelCache.dir");
            return new Options(enabled, dir == null || dir.isBlank() ? null : Path.of(dir));
        }

        static Options off() {
            return new Options(false, null);
        }
    }

    /** A recorded task: its kernel file, entry point and argument accesses. */
    record Entry(Path file, String entryPoint, Access[] accesses) {}

    /** A JIT task to record after the compilation. */
    private record Pending(String id, String signature, Access[] accesses) {}

    private final String offReason;
    private final Path dir;
    private final Path dumpRoot;
    private final List<Pending> pending = new ArrayList<>();
    private int prebuilt, jit, uncacheable, recorded, notRecorded;
    private String firstProblem;

    private KernelCache(String offReason, Path dir, Path dumpRoot) {
        this.offReason = offReason;
        this.dir = dir;
        this.dumpRoot = dumpRoot;
    }

    static KernelCache off(String reason) {
        return new KernelCache(reason, null, null);
    }

    /** The cache for this device, or one that is off (with the reason) for any doubt. */
    static KernelCache open(TornadoDevice device, KernelForm form, Options options) {
        if (!options.enabled()) return off("off (-Dtornadoswitch.kernelCache=false)");
        if (device.getTornadoVMBackend() != TornadoVMBackendType.OPENCL)
            return off("off (only for OpenCL devices; this one is " + device.getTornadoVMBackend() + ")");
        try {
            Path dumpRoot = dumpRoot();
            if (dumpRoot == null)
                return off("off (TornadoVM's kernel sources cannot be collected: TORNADOVM_HOME is not set or -Dtornado.opencl.source.dump=false)");
            Path release = Path.of(System.getenv("TORNADOVM_HOME"), "etc", "tornado.release");
            String rel = Files.exists(release) ? Files.readString(release) : "";
            // prebuilt tasks rely on TornadoVM 5.2's internals (see PrebuiltTasks); other versions are not known to work
            if (!rel.lines().anyMatch(l -> l.trim().startsWith("version=5.2.")))
                return off("off (TornadoVM " + rel.lines().filter(l -> l.startsWith("version=")).findFirst().orElse("of unknown version")
                        + ": the cache is only known to work with 5.2)");
            Path root = options.root() != null ? options.root() : defaultRoot();
            String keyText = keyText(device, form);
            Path dir = root.resolve(hash(keyText).substring(0, 24));
            Files.createDirectories(dir);
            Path keyFile = dir.resolve("KEY.txt");
            if (!Files.exists(keyFile)) writeAtomically(keyFile, keyText.getBytes(StandardCharsets.UTF_8));
            else if (!Files.readString(keyFile).equals(keyText)) return off("off (hash collision of cache keys in " + dir + ")");
            return new KernelCache(null, dir, dumpRoot);
        } catch (IOException | RuntimeException | ReflectiveOperationException ex) {
            return off("off (" + ex + ")");
        }
    }

    boolean enabled() {
        return offReason == null;
    }

    static Path defaultRoot() {
        String ts = System.getenv("TORNADO_SWITCH_CACHE");
        if (ts != null && !ts.isBlank()) return Path.of(ts, "kernels");
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path base = xdg != null && !xdg.isBlank() ? Path.of(xdg) : Path.of(System.getProperty("user.home"), ".cache");
        return base.resolve("tornado-switch").resolve("kernels");
    }

    /**
     * Where TornadoVM's OpenCL backend writes the source of each kernel it builds:
     * {@code $TORNADOVM_HOME/<tornado.opencl.source.dir>/device-P-D/<graph>.<task>-<kernel>.cl}. Unless the
     * caller chose them, this turns the dumps on and points them at a directory of this JVM under
     * java.io.tmpdir (the option is read when an execution plan's code cache is made, so before the
     * plan; the directory is relative to TORNADOVM_HOME, which TornadoVM always puts in front).
     */
    private static synchronized Path dumpRoot() throws IOException {
        String home = System.getenv("TORNADOVM_HOME");
        if (home == null || home.isBlank()) return null;
        Path realHome = Path.of(home).toRealPath();
        String dumpDir = System.getProperty("tornado.opencl.source.dir");
        if (System.getProperty("tornado.opencl.source.dump") == null && dumpDir == null) {
            Path staging = Files.createTempDirectory("tornado-switch-kernel-dumps-").toRealPath();
            Runtime.getRuntime().addShutdownHook(new Thread(() -> deleteTree(staging)));
            System.setProperty("tornado.opencl.source.dir", realHome.relativize(staging).toString());
            System.setProperty("tornado.opencl.source.dump", "true");
            return staging;
        }
        if (!Boolean.parseBoolean(System.getProperty("tornado.opencl.source.dump"))) return null;
        return Path.of(home + "/" + (dumpDir == null ? "/var/opencl-compiler" : dumpDir));
    }

    private static void deleteTree(Path p) {
        try (Stream<Path> s = Files.walk(p)) {
            s.sorted((a, b) -> b.getNameCount() - a.getNameCount()).forEach(f -> f.toFile().delete());
        } catch (IOException | UncheckedIOException ignored) {
            // a temporary directory: nothing else to do
        }
    }

    /** Everything the generated kernels may depend on beyond the task's own arguments. */
    static String keyText(TornadoDevice device, KernelForm form) throws IOException, ReflectiveOperationException {
        StringBuilder sb = new StringBuilder(FORMAT).append('\n');
        String home = System.getenv("TORNADOVM_HOME");
        Path release = Path.of(home, "etc", "tornado.release");
        sb.append("tornadovm.home ").append(Path.of(home).toRealPath()).append('\n');
        sb.append("tornadovm.release ").append(Files.exists(release) ? Files.readString(release).trim().replace('\n', ' ') : "unknown").append('\n');
        sb.append("tornadovm.jars ").append(tornadoJarsHash()).append('\n');
        sb.append("device ").append(device.getTornadoVMBackend()).append(" | ").append(device.getPlatformName()).append(" | ")
            .append(device.getDeviceName()).append(" | ").append(device.getDescription()).append(" | ")
            .append(device.getDeviceOpenCLCVersion()).append(" | ").append(Arrays.toString(device.getDeviceMaxWorkgroupDimensions()))
            .append(" | local ").append(device.getDeviceLocalMemorySize()).append('\n');
        sb.append("array.header ").append(TornadoNativeArray.ARRAY_HEADER).append('\n');
        sb.append("java ").append(System.getProperty("java.vm.name")).append(' ').append(System.getProperty("java.vm.version")).append('\n');
        sb.append("form ").append(form.name()).append('\n');
        Map<String, String> props = new TreeMap<>();
        for (String k : System.getProperties().stringPropertyNames())
            if (k.startsWith("tornado.") && !k.startsWith("tornado.opencl.source.")) props.put(k, System.getProperty(k));
        props.forEach((k, v) -> sb.append("property ").append(k).append('=').append(v).append('\n'));
        sb.append("classes ").append(classesHash()).append('\n');
        return sb.toString();
    }

    /** Names and sizes of TornadoVM's jars (a rebuilt SDK in the same place changes them). */
    private static String tornadoJarsHash() throws IOException {
        Path jars = Path.of(System.getenv("TORNADOVM_HOME"), "share", "java", "tornado");
        if (!Files.isDirectory(jars)) return "none";
        StringBuilder sb = new StringBuilder();
        try (Stream<Path> s = Files.list(jars)) {
            for (Path p : s.sorted().toList()) sb.append(p.getFileName()).append(' ').append(Files.size(p)).append(' ')
                .append(Files.getLastModifiedTime(p).toMillis()).append('\n');
        }
        return hash(sb.toString());
    }

    /** A hash of every class file of this package (the kernels, the planners that choose them and their arguments). */
    private static String classesHash() throws IOException {
        String pkg = KernelCache.class.getPackageName().replace('.', '/') + "/";
        Path loc;
        try {
            loc = Path.of(KernelCache.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        } catch (URISyntaxException | RuntimeException ex) {
            throw new IOException("cannot find this package's classes", ex);
        }
        TreeMap<String, byte[]> files = new TreeMap<>();
        if (Files.isDirectory(loc)) {
            Path d = loc.resolve(pkg);
            try (Stream<Path> s = Files.list(d)) {
                for (Path p : s.filter(f -> f.toString().endsWith(".class")).toList())
                    files.put(p.getFileName().toString(), Files.readAllBytes(p));
            }
        } else {
            try (JarFile jar = new JarFile(loc.toFile())) {
                for (JarEntry e : jar.stream().toList()) {
                    String n = e.getName();
                    if (n.startsWith(pkg) && n.endsWith(".class") && n.indexOf('/', pkg.length()) < 0) {
                        try (InputStream in = jar.getInputStream(e)) {
                            files.put(n.substring(pkg.length()), in.readAllBytes());
                        }
                    }
                }
            }
        }
        if (files.isEmpty()) throw new IOException("no class files of " + pkg + " in " + loc);
        MessageDigest md = sha256();
        files.forEach((n, b) -> {
            md.update(n.getBytes(StandardCharsets.UTF_8));
            md.update(b);
        });
        return HexFormat.of().formatHex(md.digest());
    }

    /**
     * The task's signature: everything TornadoVM may have specialised its kernel on. Null when an
     * argument is of a kind this class does not know (the task then stays JIT).
     */
    static String signature(String id, Method kernel, Object[] args, WorkerGrid grid, boolean defaultGrid) {
        StringBuilder sb = new StringBuilder("task ").append(id).append('\n');
        sb.append("kernel ").append(kernel.getDeclaringClass().getName()).append('#').append(kernel.getName())
            .append(Arrays.toString(kernel.getParameterTypes())).append('\n');
        sb.append("grid ").append(grid == null ? "none" : (defaultGrid ? "default " : "") + Arrays.toString(grid.getGlobalWork())
                + " local " + Arrays.toString(grid.getLocalWork())).append('\n');
        for (int i = 0; i < args.length; i++) {
            Object a = args[i];
            sb.append("arg ").append(i).append(' ');
            if (a == null) return null;
            for (int j = 0; j < i; j++)
                if (args[j] == a) {
                    sb.append("same as ").append(j).append(' ');
                    break;
                }
            switch (a) {
                case KernelContext kc -> sb.append("KernelContext");
                case FloatArray fa -> sb.append("FloatArray ").append(fa.getSize());
                case IntArray ia -> sb.append("IntArray ").append(ia.getSize());
                case Integer v -> sb.append("int ").append(v);
                case Long v -> sb.append("long ").append(v);
                case Float v -> sb.append("float 0x").append(Integer.toHexString(Float.floatToRawIntBits(v)));
                case Double v -> sb.append("double 0x").append(Long.toHexString(Double.doubleToRawLongBits(v)));
                case Short v -> sb.append("short ").append(v);
                case Byte v -> sb.append("byte ").append(v);
                case Character v -> sb.append("char ").append((int) v);
                case Boolean v -> sb.append("boolean ").append(v);
                default -> {
                    return null;
                }
            }
            sb.append('\n');
        }
        return sb.toString();
    }

    /** The recorded task for this signature, or null (then a JIT task). */
    Entry lookup(String signature) {
        if (!enabled() || signature == null) return null;
        String h = hash(signature);
        Path manifest = dir.resolve(h + ".properties"), file = dir.resolve(h + ".cl");
        try {
            if (!Files.isRegularFile(manifest) || !Files.isRegularFile(file)) return null;
            Properties p = new Properties();
            try (var r = Files.newBufferedReader(manifest, StandardCharsets.UTF_8)) {
                p.load(r);
            }
            if (!FORMAT.equals(p.getProperty("format")) || !signature.equals(p.getProperty("signature"))) return problem("manifest " + manifest + " does not match");
            String entry = p.getProperty("entryPoint");
            String acc = p.getProperty("accesses");
            String size = p.getProperty("sourceBytes"), sum = p.getProperty("sourceSha256");
            if (entry == null || acc == null || size == null || sum == null) return problem("manifest " + manifest + " is incomplete");
            byte[] src = Files.readAllBytes(file);
            if (src.length != Long.parseLong(size) || !hash(src).equals(sum)) return problem("kernel file " + file + " does not match its manifest");
            String[] parts = acc.isEmpty() ? new String[0] : acc.split(",");
            Access[] accesses = new Access[parts.length];
            for (int i = 0; i < parts.length; i++) accesses[i] = Access.valueOf(parts[i]);
            return new Entry(file, entry, accesses);
        } catch (IOException | RuntimeException ex) {
            return problem(ex.toString());
        }
    }

    private Entry problem(String what) {
        if (firstProblem == null) firstProblem = what;
        return null;
    }

    void countPrebuilt() {
        prebuilt++;
    }

    void countUncacheable() {
        uncacheable++;
    }

    /**
     * A task just added for JIT: remembers its signature and the accesses TornadoVM's sketcher gave
     * its arguments, to record it once it is compiled.
     */
    void addedJit(TaskGraph tg, String id, String signature, Object code, int nArgs) {
        jit++;
        if (!enabled() || signature == null) return;
        try {
            Access[] acc = sketchAccesses(tg, id, code);
            if (acc == null || acc.length != nArgs) {
                notRecorded++;
                problem("no accesses for " + id);
                return;
            }
            pending.add(new Pending(id, signature, acc.clone()));
        } catch (ReflectiveOperationException | RuntimeException ex) {
            notRecorded++;
            problem("sketch accesses of " + id + ": " + ex);
        }
    }

    /** The Java method a task's code (a method reference) runs, as TornadoVM itself resolves it; null if it can't. */
    static Method kernelMethod(Object code) {
        try {
            Class<?> tu = Class.forName("uk.ac.manchester.tornado.runtime.analyzer.TaskUtils");
            return (Method) tu.getMethod("resolveMethodHandle", Object.class).invoke(null, code);
        } catch (ReflectiveOperationException | RuntimeException | LinkageError ex) {
            return null;
        }
    }

    /**
     * The accesses of the task's arguments as TornadoVM's sketcher found them (what a JIT task uses), read
     * through TornadoVM's public runtime classes: TornadoSketcher.lookup(method, backend, device).
     */
    private static Access[] sketchAccesses(TaskGraph tg, String id, Object code) throws ReflectiveOperationException {
        if (!(tg instanceof CachedTaskGraph ctg)) return null;
        SchedulableTask task = ctg.schedulable(id);
        if (task == null) return null;
        Method kernel = kernelMethod(code);
        if (kernel == null) return null;
        Class<?> rtc = Class.forName("uk.ac.manchester.tornado.runtime.TornadoCoreRuntime");
        Object rt = rtc.getMethod("getTornadoRuntime").invoke(null);
        Object resolved = rtc.getMethod("resolveMethod", Method.class).invoke(rt, kernel);
        Class<?> sk = Class.forName("uk.ac.manchester.tornado.runtime.sketcher.TornadoSketcher");
        Method lookup = null;
        for (Method m : sk.getMethods())
            if (m.getName().equals("lookup") && m.getParameterCount() == 3) lookup = m;
        if (lookup == null) return null;
        Object sketch = lookup.invoke(null, resolved, task.meta().getBackendIndex(), task.meta().getDeviceIndex());
        return (Access[]) sketch.getClass().getMethod("getArgumentsAccess").invoke(sketch);
    }

    /** After the compilation: copies the kernels TornadoVM dumped for the JIT tasks into the cache. */
    void recordCompiled() {
        if (!enabled()) return;
        for (Pending p : pending) {
            try {
                Path src = findDump(p.id());
                if (src == null) {
                    notRecorded++;
                    problem("TornadoVM dumped no kernel for " + p.id() + " under " + dumpRoot);
                    continue;
                }
                String fn = src.getFileName().toString();
                String entry = fn.substring(p.id().length() + 1, fn.length() - 3);
                byte[] bytes = Files.readAllBytes(src);
                String h = hash(p.signature());
                StringBuilder acc = new StringBuilder();
                for (Access a : p.accesses()) acc.append(acc.isEmpty() ? "" : ",").append(a.name());
                Properties m = new Properties();
                m.setProperty("format", FORMAT);
                m.setProperty("task", p.id());
                m.setProperty("entryPoint", entry);
                m.setProperty("accesses", acc.toString());
                m.setProperty("sourceBytes", Integer.toString(bytes.length));
                m.setProperty("sourceSha256", hash(bytes));
                m.setProperty("signature", p.signature());
                var out = new java.io.StringWriter();
                m.store(out, null);
                // the kernel first, the manifest last: a manifest always has its kernel
                writeAtomically(dir.resolve(h + ".cl"), bytes);
                writeAtomically(dir.resolve(h + ".properties"), out.toString().getBytes(StandardCharsets.UTF_8));
                Files.deleteIfExists(src);
                recorded++;
            } catch (IOException | RuntimeException ex) {
                notRecorded++;
                problem("recording " + p.id() + ": " + ex);
            }
        }
        pending.clear();
    }

    /** Deletes earlier dumps of these tasks (another plan of this JVM), before compiling. */
    void clearDumps() {
        if (!enabled() || pending.isEmpty()) return;
        for (Pending p : pending) {
            try {
                Path f = findDump(p.id());
                if (f != null) Files.deleteIfExists(f);
            } catch (IOException | RuntimeException ignored) {
                // then recordCompiled finds TornadoVM's new file in its place
            }
        }
    }

    private Path findDump(String id) throws IOException {
        if (!Files.isDirectory(dumpRoot)) return null;
        try (Stream<Path> s = Files.walk(dumpRoot, 2)) {
            List<Path> hits = s.filter(f -> {
                String n = f.getFileName().toString();
                return n.startsWith(id + "-") && n.endsWith(".cl") && n.indexOf('-', id.length() + 1) < 0 && Files.isRegularFile(f);
            }).toList();
            return hits.size() == 1 ? hits.get(0) : null;
        }
    }

    private static void writeAtomically(Path target, byte[] bytes) throws IOException {
        Path tmp = Files.createTempFile(target.getParent(), ".tmp-", null);
        try {
            Files.write(tmp, bytes);
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException ex) {
                Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    int prebuiltTasks() {
        return prebuilt;
    }

    int jitTasks() {
        return jit;
    }

    int recordedTasks() {
        return recorded;
    }

    /** Short: hit / miss / partial hit with prebuilt of all tasks. */
    String summary() {
        if (!enabled()) return "off";
        int total = prebuilt + jit;
        return (jit == 0 ? "hit " : prebuilt == 0 ? "miss " : "partial hit ") + prebuilt + "/" + total;
    }

    /** One line: off (why), hit, miss or partial, with the counts. */
    String status() {
        if (!enabled()) return offReason;
        int total = prebuilt + jit;
        String what = jit == 0 ? "hit" : prebuilt == 0 ? "miss" : "partial hit";
        StringBuilder sb = new StringBuilder(what).append(" (").append(prebuilt).append(" of ").append(total).append(" tasks prebuilt");
        if (jit > 0) sb.append(", ").append(jit).append(" compiled, ").append(recorded).append(" recorded");
        if (uncacheable > 0) sb.append(", ").append(uncacheable).append(" not cacheable");
        if (notRecorded > 0) sb.append(", ").append(notRecorded).append(" not recorded");
        sb.append("; ").append(dir).append(')');
        if (firstProblem != null && (notRecorded > 0 || jit > 0)) sb.append(" [").append(firstProblem).append(']');
        return sb.toString();
    }

    static String hash(String s) {
        return hash(s.getBytes(StandardCharsets.UTF_8));
    }

    static String hash(byte[] b) {
        return HexFormat.of().formatHex(sha256().digest(b));
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException ex) {
            throw new IllegalStateException(ex);
        }
    }

    /** A TaskGraph that can hand out its runtime's task (for the sketcher's accesses of a JIT task). */
    static final class CachedTaskGraph extends TaskGraph {
        CachedTaskGraph(String name) {
            super(name);
        }

        TornadoTaskGraphInterface impl() {
            return taskGraphImpl;
        }

        SchedulableTask schedulable(String id) {
            SchedulableTask t = taskGraphImpl.getTask(id);
            if (t == null && id.startsWith(getTaskGraphName() + ".")) t = taskGraphImpl.getTask(id.substring(getTaskGraphName().length() + 1));
            return t;
        }
    }

    @Override
    public String toString() {
        return "KernelCache[" + status() + "]";
    }
}
