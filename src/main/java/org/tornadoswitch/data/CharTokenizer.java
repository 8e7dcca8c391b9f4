package org.tornadoswitch.data;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/** One token per Unicode code point of the corpus, ids in code-point order (65 for Tiny Shakespeare). */
public final class CharTokenizer {
    private final int[] symbols;
    private final Map<Integer, Integer> ids = new HashMap<>();

    /** {@code symbols[id]} is the code point of token id; they must be distinct. */
    public CharTokenizer(int[] symbols) {
        this.symbols = symbols.clone();
        for (int i = 0; i < symbols.length; i++)
            if (ids.put(symbols[i], i) != null)
                throw new IllegalArgumentException("vocabulary repeats the character U+" + Integer.toHexString(symbols[i]));
        if (symbols.length == 0) throw new IllegalArgumentException("empty vocabulary");
    }

    public static CharTokenizer fromText(String text) {
        return new CharTokenizer(text.codePoints().distinct().sorted().toArray());
    }

    public int size() {
        return symbols.length;
    }

    public int[] symbols() {
        return symbols.clone();
    }

    /** Token ids of {@code text}; a character outside the vocabulary is an error naming it. */
    public int[] encode(String text) {
        int[] cps = text.codePoints().toArray();
        int[] out = new int[cps.length];
        for (int i = 0; i < cps.length; i++) {
            Integer id = ids.get(cps[i]);
            if (id == null)
                throw new IllegalArgumentException(String.format("character '%s' (U+%04X) at position %d is not in the vocabulary"
                        + " of %d characters", new String(Character.toChars(cps[i])), cps[i], i, symbols.length));
            out[i] = id;
        }
        return out;
    }

    public String decode(int[] tokenIds, int from, int count) {
        StringBuilder sb = new StringBuilder(count);
        for (int i = from; i < from + count; i++) sb.appendCodePoint(symbols[tokenIds[i]]);
        return sb.toString();
    }

    @Override
    public String toString() {
        return "CharTokenizer" + Arrays.toString(symbols);
    }
}
