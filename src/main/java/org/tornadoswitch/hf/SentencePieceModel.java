package org.tornadoswitch.hf;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.WireFormat;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A SentencePiece unigram model (spiece.model) and its encoder, written to give SentencePiece's own
 * ids: the normaliser (precompiled charsmap, user-defined symbols kept as they are,
 * remove_extra_whitespaces, add_dummy_prefix, whitespace escaped as U+2581), the Viterbi search of
 * SentencePiece's optimised unigram encoder over UTF-8 bytes (the same float arithmetic, the same
 * tie-breaking, unknown characters scored min_score - 10), consecutive unknowns merged into one
 * {@code <unk>}, or spelled as {@code <0xXX>} byte pieces when byte_fallback is on.
 *
 * <p>The protobuf (ModelProto) is read field by field with protobuf-java's CodedInputStream: only
 * the fields that change encoding are kept (pieces, trainer_spec.model_type / byte_fallback /
 * treat_whitespace_as_suffix, normalizer_spec).
 */
public final class SentencePieceModel {
    public static final int NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6;
    private static final byte[] SPACE_SYMBOL = "\u2581".getBytes(StandardCharsets.UTF_8);
    private static final byte[] REPLACEMENT_CHAR = "\ufffd".getBytes(StandardCharsets.UTF_8);
    private static final float UNK_PENALTY = 10.0f;

    private final String what;
    private final String[] pieces;
    private final float[] scores;
    private final int[] types;
    private final Map<String, Integer> ids = new HashMap<>();
    private final int unkId;
    private final boolean byteFallback;
    private final int[] byteIds = new int[256];
    private final boolean addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces;
    private final PrecompiledCharsMap charsmap;
    private final ByteTrie pieceTrie = new ByteTrie(), userDefined = new ByteTrie();
    private final float minScore, maxScore;
    private final String normalizerName;

    /** Everything of the protobuf that this encoder reads. */
    private static final class Proto {
        final List<String> pieces = new ArrayList<>();
        final List<Float> scores = new ArrayList<>();
        final List<Integer> types = new ArrayList<>();
        int modelType = 1;
        boolean byteFallback, treatWhitespaceAsSuffix;
        String normalizerName = "";
        byte[] charsmap = new byte[0];
        boolean addDummyPrefix = true, removeExtraWhitespaces = true, escapeWhitespaces = true;
    }

    private SentencePieceModel(Proto p, String what) {
        this.what = what;
        int n = p.pieces.size();
        if (n == 0) throw new HfFormatException(what + " has no pieces");
        if (p.modelType != 1)
            throw new HfFormatException(what + " is a " + switch (p.modelType) {
                case 2 -> "BPE";
                case 3 -> "word";
                case 4 -> "char";
                default -> "type-" + p.modelType;
            } + " SentencePiece model; only unigram models (T5's) are supported");
        if (p.treatWhitespaceAsSuffix) throw new HfFormatException(what + ": treat_whitespace_as_suffix is not supported");
        pieces = p.pieces.toArray(new String[0]);
        scores = new float[n];
        types = new int[n];
        int unk = -1;
        float min = Float.MAX_VALUE, max = Float.MIN_VALUE; // as SentencePiece: FLT_MAX, FLT_MIN
        Arrays.fill(byteIds, -1);
        byteFallback = p.byteFallback;
        for (int i = 0; i < n; i++) {
            scores[i] = p.scores.get(i);
            types[i] = p.types.get(i);
            String s = pieces[i];
            if (s.isEmpty()) throw new HfFormatException(what + ": piece " + i + " is empty");
            if (ids.putIfAbsent(s, i) != null) throw new HfFormatException(what + ": piece " + s + " is defined twice");
            switch (types[i]) {
                case NORMAL, USER_DEFINED, UNUSED -> {
                    pieceTrie.put(s.getBytes(StandardCharsets.UTF_8), i);
                    if (types[i] == USER_DEFINED) userDefined.put(s.getBytes(StandardCharsets.UTF_8), i);
                }
                case UNKNOWN -> {
                    if (unk >= 0) throw new HfFormatException(what + ": more than one unknown piece");
                    unk = i;
                }
                case CONTROL -> { }
                case BYTE -> {
                    if (!byteFallback) throw new HfFormatException(what + ": byte piece " + s + " although byte_fallback is off");
                    int b = byteOf(s);
                    if (b < 0) throw new HfFormatException(what + ": invalid byte piece " + s);
                    byteIds[b] = i;
                }
                default -> throw new HfFormatException(what + ": piece " + s + " has unknown type " + types[i]);
            }
            if (types[i] == NORMAL) {
                min = Math.min(min, scores[i]);
                max = Math.max(max, scores[i]);
            }
        }
        if (unk < 0) throw new HfFormatException(what + " defines no unknown piece");
        if (byteFallback)
            for (int b = 0; b < 256; b++)
                if (byteIds[b] < 0) throw new HfFormatException(what + ": byte_fallback is on but piece <0x" + String.format("%02X", b) + "> is missing");
        unkId = unk;
        minScore = min;
        maxScore = max;
        addDummyPrefix = p.addDummyPrefix;
        removeExtraWhitespaces = p.removeExtraWhitespaces;
        escapeWhitespaces = p.escapeWhitespaces;
        charsmap = p.charsmap.length == 0 ? null : PrecompiledCharsMap.parse(p.charsmap, what);
        normalizerName = p.normalizerName;
    }

    private static int byteOf(String piece) {
        if (piece.length() != 6 || !piece.startsWith("<0x") || !piece.endsWith(">")) return -1;
        try {
            return Integer.parseInt(piece.substring(3, 5), 16);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    public static SentencePieceModel load(Path file) {
        if (!Files.isRegularFile(file)) throw new HfFormatException(file + " is missing");
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new HfFormatException("cannot read " + file + ": " + e.getMessage());
        }
        return parse(bytes, file.toString());
    }

    static SentencePieceModel parse(byte[] bytes, String what) {
        Proto p = new Proto();
        try {
            CodedInputStream in = CodedInputStream.newInstance(bytes);
            while (true) {
                int tag = in.readTag();
                if (tag == 0) break;
                switch (tag >>> 3) {
                    case 1 -> message(in, tag, what, () -> readPiece(in, p, what));
                    case 2 -> message(in, tag, what, () -> readTrainerSpec(in, p));
                    case 3 -> message(in, tag, what, () -> readNormalizerSpec(in, p));
                    default -> in.skipField(tag);
                }
            }
        } catch (InvalidProtocolBufferException e) {
            throw new HfFormatException(what + " is not a SentencePiece model (corrupt protobuf: " + Json.firstLine(e.getMessage()) + ")");
        } catch (IOException e) {
            throw new HfFormatException("cannot read " + what + ": " + e.getMessage());
        }
        return new SentencePieceModel(p, what);
    }

    private interface Body {
        void read() throws IOException;
    }

    private static void message(CodedInputStream in, int tag, String what, Body body) throws IOException {
        if (WireFormat.getTagWireType(tag) != WireFormat.WIRETYPE_LENGTH_DELIMITED)
            throw new HfFormatException(what + " is not a SentencePiece model (field " + (tag >>> 3) + " has the wrong wire type)");
        int len = in.readRawVarint32();
        int old = in.pushLimit(len);
        body.read();
        in.checkLastTagWas(0);
        in.popLimit(old);
    }

    private static void expect(int tag, int wireType) throws InvalidProtocolBufferException {
        if (WireFormat.getTagWireType(tag) != wireType)
            throw new InvalidProtocolBufferException("field " + (tag >>> 3) + " has wire type " + WireFormat.getTagWireType(tag));
    }

    private static void readPiece(CodedInputStream in, Proto p, String what) throws IOException {
        String piece = null;
        float score = 0;
        int type = NORMAL;
        while (true) {
            int tag = in.readTag();
            if (tag == 0) break;
            switch (tag >>> 3) {
                case 1 -> {
                    expect(tag, WireFormat.WIRETYPE_LENGTH_DELIMITED);
                    piece = in.readStringRequireUtf8();
                }
                case 2 -> {
                    expect(tag, WireFormat.WIRETYPE_FIXED32);
                    score = in.readFloat();
                }
                case 3 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    type = in.readEnum();
                }
                default -> in.skipField(tag);
            }
        }
        if (piece == null) throw new HfFormatException(what + ": piece " + p.pieces.size() + " has no text");
        p.pieces.add(piece);
        p.scores.add(score);
        p.types.add(type);
    }

    private static void readTrainerSpec(CodedInputStream in, Proto p) throws IOException {
        while (true) {
            int tag = in.readTag();
            if (tag == 0) break;
            switch (tag >>> 3) {
                case 3 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    p.modelType = in.readEnum();
                }
                case 24 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    p.treatWhitespaceAsSuffix = in.readBool();
                }
                case 35 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    p.byteFallback = in.readBool();
                }
                default -> in.skipField(tag);
            }
        }
    }

    private static void readNormalizerSpec(CodedInputStream in, Proto p) throws IOException {
        while (true) {
            int tag = in.readTag();
            if (tag == 0) break;
            switch (tag >>> 3) {
                case 1 -> {
                    expect(tag, WireFormat.WIRETYPE_LENGTH_DELIMITED);
                    p.normalizerName = in.readString();
                }
                case 2 -> {
                    expect(tag, WireFormat.WIRETYPE_LENGTH_DELIMITED);
                    p.charsmap = in.readByteArray();
                }
                case 3 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    p.addDummyPrefix = in.readBool();
                }
                case 4 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    p.removeExtraWhitespaces = in.readBool();
                }
                case 5 -> {
                    expect(tag, WireFormat.WIRETYPE_VARINT);
                    p.escapeWhitespaces = in.readBool();
                }
                default -> in.skipField(tag);
            }
        }
    }

    // ---------------------------------------------------------------- vocabulary

    public int size() {
        return pieces.length;
    }

    public String piece(int id) {
        return pieces[id];
    }

    public float score(int id) {
        return scores[id];
    }

    public int type(int id) {
        return types[id];
    }

    /** The id of a piece, or -1. */
    public int id(String piece) {
        return ids.getOrDefault(piece, -1);
    }

    public int unkId() {
        return unkId;
    }

    public boolean byteFallback() {
        return byteFallback;
    }

    /** The normaliser's name in the model ("nmt_nfkc", "identity", ...). */
    public String normalizerName() {
        return normalizerName;
    }

    /** The precompiled charsmap blob, or an empty array (identity normalisation). */
    PrecompiledCharsMap charsmap() {
        return charsmap;
    }

    // ---------------------------------------------------------------- normalisation

    /** A growable byte string. */
    static final class Bytes {
        byte[] a = new byte[64];
        int n;

        void add(byte b) {
            if (n == a.length) a = Arrays.copyOf(a, 2 * n);
            a[n++] = b;
        }

        void add(byte[] src, int from, int to) {
            for (int i = from; i < to; i++) add(src[i]);
        }

        boolean endsWith(byte[] s) {
            if (n < s.length) return false;
            for (int i = 0; i < s.length; i++) if (a[n - s.length + i] != s[i]) return false;
            return true;
        }
    }

    /** Where NormalizePrefix's result lies: {@code src[from..to)}; {@code consumed} input bytes. */
    private static final class Prefix {
        byte[] src;
        int from, to, consumed;
        final int[] value = new int[1];

        boolean isSingleSpace() {
            return to - from == 1 && src[from] == ' ';
        }
    }

    /** Length of a valid UTF-8 character at s[i], or -1 where the bytes are malformed. */
    static int utf8Len(byte[] s, int i, int end) {
        int c = s[i] & 0xff;
        int len = c < 0x80 ? 1 : c < 0xc2 ? -1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : -1;
        if (len < 0 || i + len > end) return -1;
        for (int k = 1; k < len; k++) if ((s[i + k] & 0xc0) != 0x80) return -1;
        if (len == 3) {
            int cp = ((c & 0x0f) << 12) | ((s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
            if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
        } else if (len == 4) {
            int cp = ((c & 0x07) << 18) | ((s[i + 1] & 0x3f) << 12) | ((s[i + 2] & 0x3f) << 6) | (s[i + 3] & 0x3f);
            if (cp < 0x10000 || cp > 0x10ffff) return -1;
        }
        return len;
    }

    /** SentencePiece's Normalizer::NormalizePrefix. */
    private void normalizePrefix(byte[] in, int pos, int end, Prefix out) {
        int ud = userDefined.longestPrefix(in, pos, end);
        if (ud > 0) {
            out.src = in;
            out.from = pos;
            out.to = pos + ud;
            out.consumed = ud;
            return;
        }
        int longest = charsmap == null ? 0 : charsmap.longestPrefix(in, pos, end, out.value);
        if (longest > 0) {
            int v = out.value[0];
            out.src = charsmap.replacements();
            out.from = v;
            out.to = charsmap.replacementEnd(v);
            out.consumed = longest;
            return;
        }
        int len = utf8Len(in, pos, end);
        if (len < 0) {
            out.src = REPLACEMENT_CHAR;
            out.from = 0;
            out.to = REPLACEMENT_CHAR.length;
            out.consumed = 1;
        } else {
            out.src = in;
            out.from = pos;
            out.to = pos + len;
            out.consumed = len;
        }
    }

    private void addSpace(Bytes out) {
        if (escapeWhitespaces) out.add(SPACE_SYMBOL, 0, SPACE_SYMBOL.length);
        else out.add((byte) ' ');
    }

    /** SentencePiece's Normalizer::Normalize over UTF-8 bytes. */
    Bytes normalize(byte[] in) {
        Bytes out = new Bytes();
        int end = in.length, pos = 0;
        if (end == 0) return out;
        Prefix p = new Prefix();
        if (removeExtraWhitespaces) {
            while (pos < end) {
                normalizePrefix(in, pos, end, p);
                if (!p.isSingleSpace()) break;
                pos += p.consumed;
            }
        }
        if (pos == end) return out;
        if (addDummyPrefix) addSpace(out);
        boolean prevSpace = removeExtraWhitespaces;
        while (pos < end) {
            normalizePrefix(in, pos, end, p);
            int from = p.from;
            while (prevSpace && from < p.to && p.src[from] == ' ') from++;
            if (from < p.to) {
                for (int k = from; k < p.to; k++) {
                    if (escapeWhitespaces && p.src[k] == ' ') out.add(SPACE_SYMBOL, 0, SPACE_SYMBOL.length);
                    else out.add(p.src[k]);
                }
                prevSpace = p.src[p.to - 1] == ' ';
            }
            pos += p.consumed;
            if (!removeExtraWhitespaces) prevSpace = false;
        }
        if (removeExtraWhitespaces) {
            byte[] space = escapeWhitespaces ? SPACE_SYMBOL : new byte[] {' '};
            while (out.endsWith(space)) out.n -= space.length;
        }
        return out;
    }

    /** The normalised text, as SentencePiece's normalizer gives it (whitespace as U+2581). */
    public String normalize(String text) {
        Bytes b = normalize(text.getBytes(StandardCharsets.UTF_8));
        return new String(b.a, 0, b.n, StandardCharsets.UTF_8);
    }

    // ---------------------------------------------------------------- encoding

    /** SentencePiece's ids of {@code text} (EncodeAsIds: no BOS/EOS). */
    public int[] encode(String text) {
        Bytes norm = normalize(text.getBytes(StandardCharsets.UTF_8));
        IntList out = new IntList();
        encodeNormalized(norm.a, norm.n, out);
        return out.toArray();
    }

    /** Appends the ids of an already normalised byte string to {@code out}. */
    void encodeNormalized(byte[] s, int size, IntList out) {
        if (size == 0) return;
        float unkScore = minScore - UNK_PENALTY;
        float[] best = new float[size + 1];
        int[] startsAt = new int[size + 1];
        int[] bestId = new int[size + 1];
        Arrays.fill(startsAt, -1);
        Arrays.fill(bestId, -1);
        int start = 0;
        while (start < size) {
            float tillHere = best[start];
            boolean hasSingle = false;
            int mblen = Math.min(oneCharLen(s[start]), size - start);
            int node = 0;
            for (int k = start; k < size; k++) {
                node = pieceTrie.child(node, s[k]);
                if (node < 0) break;
                int id = pieceTrie.value(node);
                if (id < 0 || types[id] == UNUSED) continue;
                int e = k + 1, length = e - start;
                double score = types[id] == USER_DEFINED ? (double) (length * maxScore) - 0.1 : scores[id];
                double cand = score + tillHere;
                if (startsAt[e] == -1 || cand > best[e]) {
                    best[e] = (float) cand;
                    startsAt[e] = start;
                    bestId[e] = id;
                }
                if (!hasSingle && length == mblen) hasSingle = true;
            }
            if (!hasSingle) {
                int e = start + mblen;
                float cand = unkScore + tillHere;
                if (startsAt[e] == -1 || cand > best[e]) {
                    best[e] = cand;
                    startsAt[e] = start;
                    bestId[e] = unkId;
                }
            }
            start += mblen;
        }
        // backtrack, then emit in order: unknown runs merged, or spelled as bytes with byte_fallback
        IntList ends = new IntList();
        for (int e = size; e > 0; e = startsAt[e]) ends.add(e);
        boolean prevUnk = false;
        for (int i = ends.n - 1; i >= 0; i--) {
            int e = ends.a[i], b = startsAt[e], id = bestId[e];
            boolean unk = id == unkId;
            if (unk && byteFallback) {
                for (int k = b; k < e; k++) out.add(byteIds[s[k] & 0xff]);
            } else if (!(unk && prevUnk)) {
                out.add(id);
            }
            prevUnk = unk;
        }
    }

    private static int oneCharLen(byte lead) {
        int hi = (lead & 0xff) >>> 4;
        return hi < 12 ? 1 : hi < 14 ? 2 : hi == 14 ? 3 : 4;
    }

    /** A growable int list. */
    static final class IntList {
        int[] a = new int[16];
        int n;

        void add(int v) {
            if (n == a.length) a = Arrays.copyOf(a, 2 * n);
            a[n++] = v;
        }

        int[] toArray() {
            return Arrays.copyOf(a, n);
        }
    }

    /** A trie over byte strings: children in one hash map keyed by (node, byte). */
    static final class ByteTrie {
        private final HashMap<Long, Integer> children = new HashMap<>();
        private int[] values = {-1};
        private int nodes = 1;

        void put(byte[] key, int value) {
            int node = 0;
            for (byte b : key) {
                long k = ((long) node << 8) | (b & 0xff);
                Integer c = children.get(k);
                if (c == null) {
                    c = nodes++;
                    children.put(k, c);
                    if (nodes > values.length) {
                        int old = values.length;
                        values = Arrays.copyOf(values, 2 * old);
                        Arrays.fill(values, old, values.length, -1);
                    }
                }
                node = c;
            }
            values[node] = value;
        }

        /** The child of {@code node} by byte {@code b}, or -1. */
        int child(int node, byte b) {
            Integer c = children.get(((long) node << 8) | (b & 0xff));
            return c == null ? -1 : c;
        }

        int value(int node) {
            return values[node];
        }

        /** Length of the longest key that is a prefix of s[from..to), 0 if none. */
        int longestPrefix(byte[] s, int from, int to) {
            if (nodes == 1) return 0;
            int node = 0, longest = 0;
            for (int i = from; i < to; i++) {
                node = child(node, s[i]);
                if (node < 0) break;
                if (values[node] >= 0) longest = i + 1 - from;
            }
            return longest;
        }
    }

    @Override
    public String toString() {
        return what + " (" + pieces.length + " pieces, " + (normalizerName.isEmpty() ? "no" : normalizerName) + " normalisation"
                + (byteFallback ? ", byte fallback" : "") + ")";
    }
}
