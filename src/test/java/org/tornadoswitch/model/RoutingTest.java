package org.tornadoswitch.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.tornadoswitch.Config;
import org.tornadoswitch.util.Rng;

/** The capacity, dropping and load-balancing rules on hand-made router probabilities. */
class RoutingTest {
    /** probs[t] puts 0.7 on expert choice[t] and spreads the rest evenly. */
    static float[] probs(int e, int... choice) {
        float[] p = new float[choice.length * e];
        for (int t = 0; t < choice.length; t++)
            for (int x = 0; x < e; x++) p[t * e + x] = x == choice[t] ? 0.7f : 0.3f / (e - 1);
        return p;
    }

    @Test
    void capacityIsFloorOfFactorTimesTokensOverExperts() {
        Config c = Config.defaults();
        assertEquals(614, c.capacity(2048)); // floor(1.2 * 2048 / 4)
        Config one = new Config(8, 2, 1, 8, 3, false, 1.0, true, true, 0.01, false, 1, 8, 1, 1, 0.9, 0.99, 1e-8, 1, 1);
        assertEquals(2, one.capacity(8)); // floor(8 / 3)
        Config nodrop = new Config(8, 2, 1, 8, 3, false, 1.0, false, true, 0.01, false, 1, 8, 1, 1, 0.9, 0.99, 1e-8, 1, 1);
        assertEquals(8, nodrop.capacity(8));
    }

    @Test
    void tokensAtExactlyCapacityAreAllKept() {
        Routing r = new Routing(6, 3);
        r.route(probs(3, 0, 0, 1, 1, 2, 2), 6, 2, true, new Rng(1));
        assertEquals(0, r.dropped);
        assertArrayEquals(new int[] {2, 2, 2}, r.kept);
        assertArrayEquals(new int[] {0, 2, 4, 6}, r.offset);
        for (int t = 0; t < 6; t++) assertTrue(r.slot[t] >= 0);
    }

    @Test
    void overflowIsDroppedAndCountsAreTakenBeforeDropping() {
        Routing r = new Routing(8, 2);
        // expert 0 gets 6 tokens, expert 1 gets 2; capacity 4
        r.route(probs(2, 0, 0, 1, 0, 0, 1, 0, 0), 8, 4, true, new Rng(5));
        assertArrayEquals(new int[] {6, 2}, r.counts);
        assertArrayEquals(new int[] {4, 2}, r.kept);
        assertEquals(2, r.dropped);
        int droppedOfExpert0 = 0, keptSlots = 0;
        for (int t = 0; t < 8; t++) {
            if (r.slot[t] < 0) {
                assertEquals(0, r.expertOf[t], "only the full expert drops");
                droppedOfExpert0++;
            } else {
                keptSlots++;
                assertTrue(r.slot[t] < 4);
                assertEquals(t, r.order[r.offset[r.expertOf[t]] + r.slot[t]]);
            }
        }
        assertEquals(2, droppedOfExpert0);
        assertEquals(6, keptSlots);
        // tokens 2 and 5 (expert 1) always keep their slot
        assertTrue(r.slot[2] >= 0 && r.slot[5] >= 0);
    }

    @Test
    void whichTokensDropDependsOnTheSeedOnly() {
        float[] p = probs(2, 0, 0, 0, 0, 0, 0, 1, 1);
        Routing a = new Routing(8, 2), b = new Routing(8, 2);
        a.route(p, 8, 3, true, new Rng(42));
        b.route(p, 8, 3, true, new Rng(42));
        assertArrayEquals(a.slot, b.slot);
        boolean differs = false;
        for (long seed = 0; seed < 20 && !differs; seed++) {
            b.route(p, 8, 3, true, new Rng(seed));
            differs = !java.util.Arrays.equals(a.slot, b.slot);
        }
        assertTrue(differs, "the random policy should choose different tokens for other seeds");
    }

    @Test
    void noDroppingProcessesEveryToken() {
        Routing r = new Routing(8, 2);
        r.route(probs(2, 0, 0, 0, 0, 0, 0, 0, 1), 8, 1, false, new Rng(5));
        assertEquals(0, r.dropped);
        assertArrayEquals(new int[] {7, 1}, r.kept);
    }

    @Test
    void loadBalancingLossValue() {
        Routing r = new Routing(4, 2);
        float[] p = {0.9f, 0.1f, 0.8f, 0.2f, 0.6f, 0.4f, 0.3f, 0.7f};
        r.route(p, 4, 4, true, new Rng(1));
        // f = (3/4, 1/4); P = (2.6/4, 1.4/4); LB = 2 * (0.75 * 0.65 + 0.25 * 0.35) = 1.15
        assertEquals(1.15, r.loadBalancingLoss(), 1e-6);
        float[] g = new float[2];
        r.loadBalancingGrad(0.01, g);
        assertEquals(0.01 * 2 * 0.75 / 4, g[0], 1e-7);
        assertEquals(0.01 * 2 * 0.25 / 4, g[1], 1e-7);
        // perfectly balanced uniform routing gives the minimum, 1
        Routing u = new Routing(2, 2);
        u.route(new float[] {0.5f, 0.5f, 0.5f, 0.5f}, 2, 2, true, new Rng(1));
        assertEquals(1.0, u.loadBalancingLoss(), 1e-6);
    }
}
