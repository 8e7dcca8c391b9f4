package org.tornadoswitch.util;

/**
 * A small seeded generator (SplitMix64) whose whole state is one long, so a checkpoint can save it
 * and a resumed run continues the same stream.
 */
public final class Rng {
    /**
     * The noise sites of {@link #streamKey}, shared by the backends so that each draws the same
     * masks: router jitter, attention weights, the attention and FFN residual branches, the FFN
     * hidden layer.
     */
    public static final int SITE_JITTER = 1, SITE_ATTN = 2, SITE_ATTN_RES = 3, SITE_FFN_RES = 4, SITE_HIDDEN = 5;

    private long state;

    public Rng(long seed) {
        this.state = seed;
    }

    public long state() {
        return state;
    }

    public void setState(long state) {
        this.state = state;
    }

    public long nextLong() {
        long z = (state += 0x9E3779B97F4A7C15L);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Uniform in [0, bound). */
    public int nextInt(int bound) {
        return (int) Math.floorMod(nextLong(), (long) bound);
    }

    /** Uniform in [0, 1). */
    public double nextDouble() {
        return (nextLong() >>> 11) * 0x1.0p-53;
    }

    /** SplitMix64's finalizer: a bijective mix of 64 bits. */
    public static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /**
     * The key of one noise stream (jitter, a dropout mask) of one training step: derived from the
     * seed, step, layer and site alone, so a resumed run redraws the same noise with no state saved.
     */
    public static long streamKey(long seed, long step, int layer, int site) {
        return mix(mix(mix(seed ^ 0x6A09E667F3BCC909L) + step) + ((long) layer << 8 | site));
    }

    /**
     * Counter-based uniform in [0, 1) with 24 bits: element {@code index} of the stream {@code key},
     * the same whichever thread asks and in whatever order.
     */
    public static float uniform(long key, long index) {
        return (mix(key + index * 0x9E3779B97F4A7C15L) >>> 40) * 0x1.0p-24f;
    }

    public double nextGaussian() {
        double u1 = nextDouble(), u2 = nextDouble();
        return Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
    }
}
