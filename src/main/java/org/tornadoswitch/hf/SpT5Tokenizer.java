package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * T5's tokenizer over spiece.model with this package's SentencePiece encoder. As transformers'
 * T5Tokenizer: the special tokens (pad, eos, unk, {@code <extra_id_0>} ... {@code <extra_id_{n-1}>})
 * are found in the raw text first (leftmost, longest), and each stretch between them is encoded by
 * SentencePiece on its own; the sentinels take the ids after the pieces, in reverse
 * ({@code <extra_id_0>} = pieces + n - 1). n is tokenizer_config.json's extra_ids, else the number of
 * sentinels it lists, else 100 (HF's default).
 */
final class SpT5Tokenizer implements T5Tokenizer {
    private static final String SPACE = "\u2581";

    private final SentencePieceModel sp;
    private final int extraIds, padId, eosId, unkId;
    private final Map<String, Integer> special = new HashMap<>();
    private final java.util.Set<Integer> specialIds = new java.util.HashSet<>();
    private final TreeSet<Integer> specialLengths = new TreeSet<>();
    private final boolean[] specialFirstChar = new boolean[65536];
    private final String source;

    private SpT5Tokenizer(SentencePieceModel sp, int extraIds, String pad, String eos, String unk, List<String> more, String source) {
        this.sp = sp;
        this.extraIds = extraIds;
        this.source = source;
        padId = need(pad, "pad");
        eosId = need(eos, "eos");
        unkId = sp.id(unk) >= 0 ? sp.id(unk) : sp.unkId();
        addSpecial(pad, padId);
        addSpecial(eos, eosId);
        addSpecial(unk, unkId);
        for (int i = 0; i < extraIds; i++) addSpecial("<extra_id_" + i + ">", sentinelId(i));
        for (String s : more) if (!special.containsKey(s) && sp.id(s) >= 0) addSpecial(s, sp.id(s));
    }

    private int need(String token, String role) {
        int id = sp.id(token);
        if (id < 0) throw new HfFormatException(source + " has no " + role + " piece " + token);
        return id;
    }

    private void addSpecial(String token, int id) {
        special.put(token, id);
        specialIds.add(id);
        specialLengths.add(token.length());
        specialFirstChar[token.charAt(0)] = true;
    }

    static SpT5Tokenizer load(Path dir) {
        Path model = dir.resolve(SPIECE_MODEL);
        SentencePieceModel sp = SentencePieceModel.load(model);
        String pad = "<pad>", eos = "</s>", unk = "<unk>";
        int extra = -1;
        List<String> listed = new ArrayList<>();
        for (String f : new String[] {"special_tokens_map.json", "tokenizer_config.json"}) {
            Path p = dir.resolve(f);
            if (!Files.isRegularFile(p)) continue;
            JsonNode c = Json.read(p);
            pad = token(c.get("pad_token"), pad);
            eos = token(c.get("eos_token"), eos);
            unk = token(c.get("unk_token"), unk);
            if (c.has("extra_ids")) {
                if (!c.get("extra_ids").canConvertToInt() || c.get("extra_ids").asInt() < 0)
                    throw new HfFormatException(p + ": extra_ids is not a non-negative integer");
                extra = c.get("extra_ids").asInt();
            }
            for (String k : new String[] {"additional_special_tokens", "extra_special_tokens"}) {
                JsonNode a = c.get(k);
                if (a != null && a.isArray()) for (JsonNode t : a) listed.add(token(t, null));
            }
        }
        long sentinels = listed.stream().filter(s -> s != null && s.matches("<extra_id_\\d+>")).distinct().count();
        if (extra < 0) extra = sentinels > 0 ? (int) sentinels : 100;
        return new SpT5Tokenizer(sp, extra, pad, eos, unk, listed.stream().filter(s -> s != null && !s.isEmpty()).toList(),
                model.toString());
    }

    private static String token(JsonNode n, String dflt) {
        if (n == null || n.isNull()) return dflt;
        if (n.isTextual()) return n.asText();
        if (n.isObject() && n.has("content")) return n.get("content").asText();
        return dflt;
    }

    @Override
    public int[] encode(String text) {
        SentencePieceModel.IntList out = new SentencePieceModel.IntList();
        int start = 0, i = 0, n = text.length();
        while (i < n) {
            int len = specialFirstChar[text.charAt(i)] ? matchSpecial(text, i) : 0;
            if (len == 0) {
                i++;
                continue;
            }
            encodeChunk(text.substring(start, i), out);
            out.add(special.get(text.substring(i, i + len)));
            i += len;
            start = i;
        }
        encodeChunk(text.substring(start), out);
        return out.toArray();
    }

    private int matchSpecial(String text, int i) {
        for (int len : specialLengths.descendingSet())
            if (i + len <= text.length() && special.containsKey(text.substring(i, i + len))) return len;
        return 0;
    }

    private void encodeChunk(String chunk, SentencePieceModel.IntList out) {
        if (chunk.isEmpty()) return;
        for (int id : sp.encode(chunk)) out.add(id);
    }

    private boolean isSpecial(int id) {
        return id >= sp.size() || specialIds.contains(id);
    }

    /**
     * As HF: special and unknown ids dropped, then the Metaspace decoder: U+2581 becomes a space,
     * except in the first remaining token, where it is dropped.
     */
    @Override
    public String decode(int[] ids) {
        StringBuilder sb = new StringBuilder();
        boolean first = true;
        for (int id : ids) {
            if (id < 0 || id >= vocabSize() || isSpecial(id)) continue;
            String piece = sp.piece(id);
            sb.append(first ? piece.replace(SPACE, "") : piece.replace(SPACE, " "));
            first = false;
        }
        return sb.toString();
    }

    @Override
    public int padId() {
        return padId;
    }

    @Override
    public int eosId() {
        return eosId;
    }

    @Override
    public int unkId() {
        return unkId;
    }

    @Override
    public int vocabSize() {
        return sp.size() + extraIds;
    }

    @Override
    public int sentinelId(int n) {
        if (n < 0 || n >= extraIds) throw new IllegalArgumentException("no sentinel <extra_id_" + n + "> (" + extraIds + " sentinels)");
        return sp.size() + extraIds - 1 - n;
    }

    @Override
    public String source() {
        return source + " (SentencePiece unigram in Java, " + sp.size() + " pieces + " + extraIds + " sentinels)";
    }
}
