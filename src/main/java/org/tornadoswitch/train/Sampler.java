package org.tornadoswitch.train;

import org.tornadoswitch.data.CharTokenizer;
import org.tornadoswitch.model.SwitchModel;
import org.tornadoswitch.util.Rng;

/** Text generation from a prompt: greedy (temperature 0) or sampling at a temperature. */
public final class Sampler {
    private Sampler() {}

    public static String generate(SwitchModel model, CharTokenizer tok, String prompt, int length, double temperature, long seed) {
        int[] p = tok.encode(prompt.isEmpty() ? "\n" : prompt);
        int seq = model.config().seqLen();
        int[] ids = new int[p.length + length];
        System.arraycopy(p, 0, ids, 0, p.length);
        int n = p.length;
        float[] logits = new float[tok.size()];
        int[] window = new int[seq];
        Rng rng = new Rng(seed), dropRng = new Rng(seed ^ 0x5DEECE66DL);
        for (int i = 0; i < length; i++) {
            int len = Math.min(seq, n), start = n - len;
            System.arraycopy(ids, start, window, 0, len);
            model.forward(window, null, 1, len, dropRng);
            model.backend().logits(len - 1, logits);
            ids[n++] = temperature <= 0 ? argmax(logits) : sample(logits, temperature, rng);
        }
        return tok.decode(ids, 0, n);
    }

    static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    static int sample(float[] logits, double temperature, Rng rng) {
        double max = Double.NEGATIVE_INFINITY;
        for (float l : logits) max = Math.max(max, l);
        double sum = 0;
        double[] pr = new double[logits.length];
        for (int i = 0; i < logits.length; i++) sum += pr[i] = Math.exp((logits[i] - max) / temperature);
        double u = rng.nextDouble() * sum;
        for (int i = 0; i < pr.length; i++) if ((u -= pr[i]) <= 0) return i;
        return pr.length - 1;
    }
}
