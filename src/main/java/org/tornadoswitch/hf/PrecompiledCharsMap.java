package org.tornadoswitch.hf;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * SentencePiece's precompiled normalisation rules (NormalizerSpec.precompiled_charsmap, also the
 * "Precompiled" normalizer of tokenizer.json): a 4-byte little-endian trie size, a Darts-clone
 * double-array trie over UTF-8 byte strings whose values index the third part, the replacement
 * strings, each ended by a NUL byte.
 */
final class PrecompiledCharsMap {
    /** SentencePiece's Normalizer::kMaxTrieResultsSize: only the first 32 matches count. */
    private static final int MAX_RESULTS = 32;

    private final int[] units;
    private final byte[] normalized;

    private PrecompiledCharsMap(int[] units, byte[] normalized) {
        this.units = units;
        this.normalized = normalized;
    }

    /** Parses the blob; {@code what} names the file in errors. */
    static PrecompiledCharsMap parse(byte[] blob, String what) {
        if (blob.length <= 4) throw new HfFormatException(what + ": the precompiled charsmap is broken (" + blob.length + " bytes)");
        ByteBuffer b = ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN);
        long trieSize = b.getInt() & 0xffffffffL;
        if (trieSize >= blob.length || trieSize % 4 != 0 || trieSize == 0)
            throw new HfFormatException(what + ": the precompiled charsmap is broken (trie size " + trieSize + " of " + blob.length + " bytes)");
        int[] units = new int[(int) (trieSize / 4)];
        for (int i = 0; i < units.length; i++) units[i] = b.getInt();
        byte[] norm = new byte[blob.length - 4 - (int) trieSize];
        b.get(norm);
        return new PrecompiledCharsMap(units, norm);
    }

    private static boolean hasLeaf(int unit) {
        return ((unit >>> 8) & 1) == 1;
    }

    private static int value(int unit) {
        return unit & 0x7fffffff;
    }

    private static int label(int unit) {
        return unit & (0x80000000 | 0xff);
    }

    private static int offset(int unit) {
        return (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
    }

    /**
     * The longest rule matching a prefix of {@code s[from..to)}: returns its length in bytes and
     * puts the replacement's start in {@code valueOut[0]}; 0 when no rule matches.
     */
    int longestPrefix(byte[] s, int from, int to, int[] valueOut) {
        int nodePos = 0;
        int unit = units[0];
        nodePos ^= offset(unit);
        int longest = 0, found = 0;
        for (int i = from; i < to; i++) {
            int c = s[i] & 0xff;
            nodePos ^= c;
            if (nodePos < 0 || nodePos >= units.length) return longest;
            unit = units[nodePos];
            if (label(unit) != c) return longest;
            nodePos ^= offset(unit);
            if (hasLeaf(unit)) {
                if (nodePos < 0 || nodePos >= units.length) return longest;
                if (found < MAX_RESULTS) {
                    int len = i + 1 - from;
                    if (longest == 0 || len > longest) {
                        longest = len;
                        valueOut[0] = value(units[nodePos]);
                    }
                }
                found++;
            }
        }
        return longest;
    }

    /** Start and (exclusive) end of the NUL-terminated replacement at {@code value}. */
    int replacementEnd(int value) {
        if (value < 0 || value >= normalized.length) throw new HfFormatException("the precompiled charsmap is broken (value " + value + ")");
        int e = value;
        while (e < normalized.length && normalized[e] != 0) e++;
        return e;
    }

    byte[] replacements() {
        return normalized;
    }
}
