package org.tornadoswitch.hf;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.tornadoswitch.util.Rng;

/**
 * Fine-tuning data: a JSON-lines file, one example a line, either {@code {"input": "...", "target":
 * "..."}} (encoded as T5's tokenizer does: SentencePiece ids, then EOS; truncated to the maximum
 * length with the EOS kept, as tokenizer(text, truncation=True, max_length=N)) or, already
 * tokenized, {@code {"input_ids": [...], "labels": [...]}} (taken as they are). Empty lines are
 * skipped. A bad line is refused with one line naming the file and line.
 */
public final class T5Data {
    /** One example: encoder ids and target ids (both ending with EOS when made from text). */
    public record Example(int[] input, int[] labels) {}

    private T5Data() {}

    public static List<Example> read(Path file, T5Tokenizer tok, int eos, int vocab, int maxInput, int maxTarget) {
        List<Example> out = new ArrayList<>();
        var dec = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        try (BufferedReader r = new BufferedReader(new java.io.InputStreamReader(Files.newInputStream(file), dec))) {
            String line;
            for (int no = 1; (line = r.readLine()) != null; no++) {
                if (line.isBlank()) continue;
                String where = file + ":" + no;
                JsonNode o;
                try {
                    o = Json.MAPPER.readTree(line);
                } catch (IOException e) {
                    throw new IllegalArgumentException(where + ": not a JSON object (" + Json.firstLine(e.getMessage()) + ")");
                }
                if (o == null || !o.isObject()) throw new IllegalArgumentException(where + ": not a JSON object");
                int[] in, lab;
                if (o.has("input_ids") || o.has("labels")) {
                    in = ids(o, "input_ids", where, vocab);
                    lab = ids(o, "labels", where, vocab);
                } else {
                    if (tok == null) throw new IllegalArgumentException(where + ": text examples need a tokenizer (spiece.model or tokenizer.json) in the model directory");
                    in = text(o, "input", where, tok, eos, maxInput);
                    lab = text(o, "target", where, tok, eos, maxTarget);
                }
                if (in.length > maxInput) in = truncate(in, maxInput);
                if (lab.length > maxTarget) lab = truncate(lab, maxTarget);
                out.add(new Example(in, lab));
            }
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("data file " + file + " does not exist");
        } catch (CharacterCodingException e) {
            throw new IllegalArgumentException(file + " is not UTF-8 text");
        } catch (java.io.UncheckedIOException e) {
            throw new IllegalArgumentException(file + " is not UTF-8 text");
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read " + file + ": " + e.getMessage());
        }
        if (out.isEmpty()) throw new IllegalArgumentException(file + " holds no examples");
        return out;
    }

    /** The first n-1 ids and the last one (the EOS stays at the end). */
    private static int[] truncate(int[] ids, int n) {
        int[] t = Arrays.copyOf(ids, n);
        t[n - 1] = ids[ids.length - 1];
        return t;
    }

    private static int[] text(JsonNode o, String field, String where, T5Tokenizer tok, int eos, int max) {
        JsonNode n = o.get(field);
        if (n == null || !n.isTextual()) throw new IllegalArgumentException(where + ": \"" + field + "\" must be a string");
        int[] enc = tok.encode(n.textValue());
        int[] ids = Arrays.copyOf(enc, enc.length + 1);
        ids[enc.length] = eos;
        return ids.length > max ? truncate(ids, max) : ids;
    }

    private static int[] ids(JsonNode o, String field, String where, int vocab) {
        JsonNode n = o.get(field);
        if (n == null || !n.isArray() || n.isEmpty()) throw new IllegalArgumentException(where + ": \"" + field + "\" must be a non-empty list of ids");
        int[] ids = new int[n.size()];
        for (int i = 0; i < ids.length; i++) {
            JsonNode x = n.get(i);
            if (!x.canConvertToInt() || !x.isIntegralNumber())
                throw new IllegalArgumentException(where + ": \"" + field + "\" must hold integers, got " + x);
            ids[i] = x.intValue();
            boolean ok = ids[i] >= 0 && ids[i] < vocab || field.equals("labels") && ids[i] == -100;
            if (!ok) throw new IllegalArgumentException(where + ": id " + ids[i] + " in \"" + field + "\" is outside [0, " + vocab + ")");
        }
        return ids;
    }

    /**
     * A padded batch of examples (as DataCollatorForSeq2Seq: inputs right-padded with the pad id and
     * masked, labels padded with -100, decoder inputs the labels shifted right).
     */
    public static T5Model.Batch batch(List<Example> ex, T5Config c) {
        int n = ex.size(), s = 0, t = 0;
        for (Example e : ex) {
            s = Math.max(s, e.input().length);
            t = Math.max(t, e.labels().length);
        }
        int[] enc = new int[n * s], len = new int[n], lab = new int[n * t];
        Arrays.fill(enc, c.padTokenId());
        Arrays.fill(lab, -100);
        for (int b = 0; b < n; b++) {
            Example e = ex.get(b);
            System.arraycopy(e.input(), 0, enc, b * s, e.input().length);
            System.arraycopy(e.labels(), 0, lab, b * t, e.labels().length);
            len[b] = e.input().length;
        }
        int[] decIds = T5Model.shiftRight(lab, n, t, c.decoderStartTokenId(), c.padTokenId());
        return new T5Model.Batch(n, s, enc, len, t, decIds, lab);
    }

    /** Examples in a seeded random order, epoch after epoch; its state is (epoch, position). */
    public static final class Sampler {
        private final List<Example> data;
        private final long seed;
        private int[] perm;
        private int epoch = -1, pos;

        public Sampler(List<Example> data, long seed) {
            this.data = data;
            this.seed = seed;
        }

        public List<Example> next(int n) {
            List<Example> out = new ArrayList<>(n);
            while (out.size() < n) {
                if (perm == null || pos == perm.length) shuffle();
                out.add(data.get(perm[pos++]));
            }
            return out;
        }

        private void shuffle() {
            epoch++;
            pos = 0;
            perm = new int[data.size()];
            for (int i = 0; i < perm.length; i++) perm[i] = i;
            Rng r = new Rng(seed * 1000003L + epoch);
            for (int i = perm.length - 1; i > 0; i--) {
                int j = r.nextInt(i + 1), x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
            }
        }

        public int epoch() {
            return Math.max(epoch, 0);
        }
    }
}
