package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The same numbers whatever the thread count and run after run: a training-mode step (dropout,
 * jitter: tiny-gelu-untied has both) gives bit-identical losses, gradients and Adafactor updates on
 * 1, 2 and 3 threads.
 */
class T5DeterminismTest {
    record Run(double loss, List<float[]> params, float[] logits) {}

    static Run run(int threads) {
        JsonNode b = T5Fixtures.expected("tiny-gelu-untied").get("batch");
        try (T5Model m = T5Fixtures.model("tiny-gelu-untied", threads)) {
            T5Model.Batch batch = T5ParityTest.batch(m.config(), b);
            T5Optimizer opt = T5Optimizer.adafactor(null);
            double loss = 0;
            for (int t = 1; t <= 2; t++) {
                loss = m.forward(batch, true, t).total();
                m.backward();
                m.backend().optimizerStep(opt, 1f, t, 0);
            }
            List<float[]> p = new ArrayList<>();
            for (float[] a : m.backend().params().arrays()) p.add(a.clone());
            float[] lg = m.logits(new int[] {5, 9, 3, 1}, new int[] {0, 4, 8})[2];
            return new Run(loss, p, lg);
        }
    }

    @Test
    void sameBitsOnAnyThreadCount() {
        Run one = run(1);
        for (int threads : new int[] {2, 3, 2}) {
            Run r = run(threads);
            assertEquals(Double.doubleToLongBits(one.loss()), Double.doubleToLongBits(r.loss()), threads + " threads: loss");
            for (int i = 0; i < one.params().size(); i++) assertArrayEquals(one.params().get(i), r.params().get(i), threads + " threads");
            assertArrayEquals(one.logits(), r.logits(), threads + " threads: logits");
        }
    }
}
