package org.tornadoswitch.hf;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A restricted unpickler for exactly what {@code torch.save(state_dict)} writes: a dict or
 * {@code collections.OrderedDict} (its {@code _metadata} attribute ignored) of names to tensors
 * made by {@code torch._utils._rebuild_tensor_v2} (or {@code _rebuild_parameter}) over storages
 * named by persistent ids {@code ('storage', torch.FloatStorage, key, location, numel)}. It runs
 * no code and builds no objects: any other global, any other call, and the object-building
 * opcodes are refused with one line. Protocols 2 to 5.
 */
final class TorchUnpickler {
    /** A storage of the archive: data/KEY, {@code type} is e.g. "FloatStorage". */
    record Storage(String key, String type, long numel) {}

    /** A tensor view over a storage, sizes and strides in elements. */
    record Tensor(Storage storage, long offset, long[] size, long[] stride) {}

    private record Global(String module, String name) {
        String qualified() {
            return module + "." + name;
        }
    }

    private record Tuple(List<Object> items) {}

    /** Python's dict / OrderedDict: keys in insertion order. */
    private static final class Dict extends LinkedHashMap<Object, Object> {}

    private static final Object MARK = new Object();
    private static final Object NONE = new Object();
    private static final Set<String> REBUILDERS = Set.of("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter");

    private final byte[] b;
    private final String what;
    private int pos;
    private final ArrayList<Object> stack = new ArrayList<>();
    private final ArrayList<Integer> marks = new ArrayList<>();
    private final Map<Long, Object> memo = new HashMap<>();
    private final Map<String, Storage> storages = new HashMap<>();

    private TorchUnpickler(byte[] bytes, String what) {
        this.b = bytes;
        this.what = what;
    }

    /**
     * The state dict of a pickle, names in the pickle's order; {@code what} names the file in
     * errors.
     */
    static LinkedHashMap<String, Tensor> stateDict(byte[] pickle, String what) {
        TorchUnpickler u = new TorchUnpickler(pickle, what);
        Object top;
        try {
            top = u.run();
        } catch (IndexOutOfBoundsException e) {
            throw new HfFormatException(what + ": the pickle is truncated or corrupt");
        }
        if (!(top instanceof Dict d))
            throw new HfFormatException(what + " is not a state dict: the pickle holds " + describe(top) + ", not a dict of tensors");
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        for (var e : d.entrySet()) {
            if (!(e.getKey() instanceof String k))
                throw new HfFormatException(what + " is not a state dict: a key is " + describe(e.getKey()) + ", not a string");
            if (!(e.getValue() instanceof Tensor t))
                throw new HfFormatException(what + " is not a state dict: the value of " + k + " is " + describe(e.getValue())
                        + ", not a tensor");
            out.put(k, t);
        }
        return out;
    }

    private static String describe(Object o) {
        if (o == null || o == NONE) return "None";
        if (o instanceof Dict) return "a dict";
        if (o instanceof String) return "a string";
        if (o instanceof Long || o instanceof BigInteger) return "an int";
        if (o instanceof Double) return "a float";
        if (o instanceof Boolean) return "a bool";
        if (o instanceof Tuple) return "a tuple";
        if (o instanceof List) return "a list";
        if (o instanceof byte[]) return "bytes";
        if (o instanceof Tensor) return "a tensor";
        if (o instanceof Storage) return "a storage";
        if (o instanceof Global g) return "the global " + g.qualified();
        return "an object";
    }

    private HfFormatException refuse(String why) {
        return new HfFormatException(what + ": refused: " + why + " (only a state dict of tensors is read)");
    }

    private int u8() {
        return b[pos++] & 0xff;
    }

    private long le(int n) {
        if (pos + n > b.length) throw new IndexOutOfBoundsException();
        long v = 0;
        for (int i = 0; i < n; i++) v |= (long) (b[pos + i] & 0xff) << (8 * i);
        pos += n;
        return v;
    }

    private byte[] bytes(long n) {
        if (n < 0 || n > b.length - pos) throw new IndexOutOfBoundsException();
        byte[] out = new byte[(int) n];
        System.arraycopy(b, pos, out, 0, (int) n);
        pos += (int) n;
        return out;
    }

    private String line() {
        int start = pos;
        while (b[pos] != '\n') pos++;
        String s = new String(b, start, pos - start, StandardCharsets.UTF_8);
        pos++;
        return s;
    }

    private Object pop() {
        if (stack.isEmpty()) throw new HfFormatException(what + ": corrupt pickle (stack underflow)");
        Object o = stack.remove(stack.size() - 1);
        if (o == MARK) throw new HfFormatException(what + ": corrupt pickle (unexpected mark)");
        return o;
    }

    private Object peek() {
        if (stack.isEmpty() || stack.get(stack.size() - 1) == MARK) throw new HfFormatException(what + ": corrupt pickle (empty stack)");
        return stack.get(stack.size() - 1);
    }

    private List<Object> popMark() {
        if (marks.isEmpty()) throw new HfFormatException(what + ": corrupt pickle (no mark)");
        int m = marks.remove(marks.size() - 1);
        List<Object> items = new ArrayList<>(stack.subList(m + 1, stack.size()));
        while (stack.size() > m) stack.remove(stack.size() - 1);
        return items;
    }

    private void push(Object o) {
        stack.add(o);
    }

    private Object run() {
        while (true) {
            if (pos >= b.length) throw new HfFormatException(what + ": the pickle ends without STOP (truncated)");
            int op = u8();
            switch (op) {
                case 0x80 -> { // PROTO
                    int v = u8();
                    if (v < 2 || v > 5) throw refuse("pickle protocol " + v);
                }
                case 0x95 -> le(8); // FRAME
                case '.' -> { // STOP
                    Object top = pop();
                    return top;
                }
                case '(' -> { // MARK
                    marks.add(stack.size());
                    push(MARK);
                }
                case '}' -> push(new Dict());
                case ']' -> push(new ArrayList<Object>());
                case ')' -> push(new Tuple(List.of()));
                case 't' -> push(new Tuple(popMark()));
                case 0x85 -> push(new Tuple(List.of(pop())));
                case 0x86 -> {
                    Object y = pop(), x = pop();
                    push(new Tuple(List.of(x, y)));
                }
                case 0x87 -> {
                    Object z = pop(), y = pop(), x = pop();
                    push(new Tuple(List.of(x, y, z)));
                }
                case 's' -> { // SETITEM
                    Object v = pop(), k = pop();
                    dict(peek()).put(key(k), v);
                }
                case 'u' -> { // SETITEMS
                    List<Object> kv = popMark();
                    Dict d = dict(peek());
                    if (kv.size() % 2 != 0) throw new HfFormatException(what + ": corrupt pickle (odd SETITEMS)");
                    for (int i = 0; i < kv.size(); i += 2) d.put(key(kv.get(i)), kv.get(i + 1));
                }
                case 'a' -> { // APPEND
                    Object v = pop();
                    list(peek()).add(v);
                }
                case 'e' -> { // APPENDS
                    List<Object> items = popMark();
                    list(peek()).addAll(items);
                }
                case 'J' -> push((long) (int) le(4));
                case 'K' -> push((long) u8());
                case 'M' -> push(le(2));
                case 0x8a -> { // LONG1
                    int n = u8();
                    byte[] v = bytes(n);
                    push(longOf(v));
                }
                case 'N' -> push(NONE);
                case 0x88 -> push(Boolean.TRUE);
                case 0x89 -> push(Boolean.FALSE);
                case 'G' -> push(ByteBuffer.wrap(bytes(8)).order(ByteOrder.BIG_ENDIAN).getDouble());
                case 'X' -> push(utf8(bytes(le(4))));
                case 0x8c -> push(utf8(bytes(u8())));
                case 0x8d -> push(utf8(bytes(le(8))));
                case 'T' -> push(new String(bytes(le(4)), StandardCharsets.ISO_8859_1));
                case 'U' -> push(new String(bytes(u8()), StandardCharsets.ISO_8859_1));
                case 'B' -> push(bytes(le(4)));
                case 'C' -> push(bytes(u8()));
                case 0x8e -> push(bytes(le(8)));
                case 'c' -> { // GLOBAL "module\nname\n"
                    String module = line(), name = line();
                    push(global(module, name));
                }
                case 0x93 -> { // STACK_GLOBAL
                    Object name = pop(), module = pop();
                    if (!(module instanceof String m) || !(name instanceof String n))
                        throw new HfFormatException(what + ": corrupt pickle (STACK_GLOBAL of non-strings)");
                    push(global(m, n));
                }
                case 'q' -> memo.put((long) u8(), peek());
                case 'r' -> memo.put(le(4), peek());
                case 0x94 -> memo.put((long) memo.size(), peek());
                case 'h' -> push(memoGet(u8()));
                case 'j' -> push(memoGet(le(4)));
                case '0' -> pop();
                case '1' -> popMark();
                case '2' -> push(peek());
                case 'R' -> { // REDUCE
                    Object args = pop(), f = pop();
                    push(reduce(f, args));
                }
                case 'b' -> { // BUILD
                    Object state = pop();
                    Object obj = peek();
                    build(obj, state);
                }
                case 'Q' -> push(persistent(pop()));
                case 'P' -> throw refuse("a text persistent id");
                case 'i', 'o', 0x81, 0x92 -> throw refuse("an object construction (opcode " + opName(op) + ")");
                case 0x82, 0x83, 0x84 -> throw refuse("an extension-registry object (opcode " + opName(op) + ")");
                default -> throw refuse("pickle opcode " + opName(op));
            }
        }
    }

    private static String opName(int op) {
        return op >= 0x21 && op < 0x7f ? "'" + (char) op + "'" : String.format("0x%02x", op);
    }

    private static String utf8(byte[] v) {
        return new String(v, StandardCharsets.UTF_8);
    }

    private static Object longOf(byte[] v) {
        if (v.length == 0) return 0L;
        byte[] be = new byte[v.length];
        for (int i = 0; i < v.length; i++) be[i] = v[v.length - 1 - i];
        BigInteger x = new BigInteger(be);
        return x.bitLength() < 64 ? (Object) x.longValue() : x;
    }

    private Object memoGet(long k) {
        Object o = memo.get(k);
        if (o == null) throw new HfFormatException(what + ": corrupt pickle (memo " + k + " unset)");
        return o;
    }

    private Dict dict(Object o) {
        if (o instanceof Dict d) return d;
        throw refuse("setting items on " + describe(o));
    }

    @SuppressWarnings("unchecked")
    private List<Object> list(Object o) {
        if (o instanceof List<?> l && !(o instanceof Tuple)) return (List<Object>) l;
        throw refuse("appending to " + describe(o));
    }

    private Object key(Object k) {
        if (k instanceof String || k instanceof Long) return k;
        throw refuse("a dict key that is " + describe(k));
    }

    private static boolean isStorageType(String module, String name) {
        return module.equals("torch") && name.endsWith("Storage") && name.length() > 7 && name.chars().allMatch(Character::isLetterOrDigit);
    }

    private Global global(String module, String name) {
        Global g = new Global(module, name);
        String q = g.qualified();
        if (q.equals("collections.OrderedDict") || REBUILDERS.contains(q) || isStorageType(module, name)) return g;
        throw refuse("global " + q);
    }

    private Object reduce(Object f, Object argsObj) {
        if (!(f instanceof Global g)) throw refuse("calling " + describe(f));
        if (!(argsObj instanceof Tuple t)) throw refuse("calling " + g.qualified() + " with " + describe(argsObj));
        List<Object> a = t.items();
        switch (g.qualified()) {
            case "collections.OrderedDict" -> {
                if (!a.isEmpty()) throw refuse("OrderedDict built from arguments");
                return new Dict();
            }
            case "torch._utils._rebuild_tensor_v2" -> {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (a.size() < 6 || a.size() > 7) throw refuse("_rebuild_tensor_v2 with " + a.size() + " arguments");
                if (!(a.get(0) instanceof Storage s)) throw refuse("_rebuild_tensor_v2 over " + describe(a.get(0)));
                long off = integer(a.get(1), "storage offset");
                long[] size = ints(a.get(2), "size"), stride = ints(a.get(3), "stride");
                if (size.length != stride.length) throw new HfFormatException(what + ": a tensor's size and stride differ in length");
                if (!(a.get(4) instanceof Boolean)) throw refuse("_rebuild_tensor_v2 with requires_grad " + describe(a.get(4)));
                if (!(a.get(5) instanceof Dict hooks) || !hooks.isEmpty()) throw refuse("a tensor with backward hooks");
                if (a.size() == 7 && a.get(6) != NONE && !(a.get(6) instanceof Dict m && m.isEmpty()))
                    throw refuse("a tensor with metadata");
                return new Tensor(s, off, size, stride);
            }
            case "torch._utils._rebuild_parameter" -> {
                // (data, requires_grad, backward_hooks)
                if (a.size() != 3 || !(a.get(0) instanceof Tensor x) || !(a.get(1) instanceof Boolean)
                        || !(a.get(2) instanceof Dict hooks) || !hooks.isEmpty())
                    throw refuse("an unusual _rebuild_parameter call");
                return x;
            }
            default -> throw refuse("calling " + g.qualified());
        }
    }

    private void build(Object obj, Object state) {
        // OrderedDict's state is its instance __dict__: state_dict() sets only _metadata (module versions)
        if (obj instanceof Dict && state instanceof Dict st && st.keySet().stream().allMatch("_metadata"::equals)) return;
        throw refuse("setting the state of " + describe(obj));
    }

    private Object persistent(Object pid) {
        if (!(pid instanceof Tuple t) || t.items().size() != 5 || !"storage".equals(t.items().get(0)))
            throw refuse("a persistent id that is not a storage");
        List<Object> a = t.items();
        if (!(a.get(1) instanceof Global g) || !isStorageType(g.module(), g.name()))
            throw refuse("a storage of type " + describe(a.get(1)));
        if (!(a.get(2) instanceof String key) || key.isEmpty() || !key.chars().allMatch(c -> Character.isLetterOrDigit(c) || c == '_'))
            throw new HfFormatException(what + ": a storage key is not a plain name");
        if (!(a.get(3) instanceof String)) throw new HfFormatException(what + ": a storage location is not a string");
        long numel = integer(a.get(4), "storage size");
        Storage s = new Storage(key, g.name(), numel);
        Storage old = storages.putIfAbsent(key, s);
        if (old != null && !old.equals(s))
            throw new HfFormatException(what + ": storage " + key + " is named with two different types or sizes");
        return old != null ? old : s;
    }

    private long integer(Object o, String field) {
        if (o instanceof Long l && l >= 0) return l;
        throw new HfFormatException(what + ": a tensor's " + field + " is " + describe(o) + (o instanceof Long ? " below 0" : ""));
    }

    private long[] ints(Object o, String field) {
        if (!(o instanceof Tuple t)) throw new HfFormatException(what + ": a tensor's " + field + " is " + describe(o));
        long[] out = new long[t.items().size()];
        for (int i = 0; i < out.length; i++) out[i] = integer(t.items().get(i), field);
        return out;
    }
}
