package org.tornadoswitch.hf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.tornadoswitch.util.Rng;

/**
 * Finite differences of the whole model's objective (cross-entropy + z-loss + load-balancing loss)
 * against the backward pass, in training mode: dropout, router jitter, the relative position bias
 * tables, the router (with bias), experts, untied heads. Complements the SGD parity test, which
 * runs without noise. A sample whose perturbed passes route differently (the load-balancing loss
 * counts argmaxes, a step function) is skipped.
 */
class T5ModelGradCheckTest {
    static final String[] TENSORS = {
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "encoder.block.1.layer.1.mlp.router.classifier.weight", "encoder.block.1.layer.1.mlp.router.classifier.bias",
            "decoder.block.1.layer.2.mlp.router.classifier.weight", "encoder.block.1.layer.1.mlp.experts.expert_1.wi.weight",
            "decoder.block.1.layer.2.mlp.experts.expert_0.wo.weight", "decoder.block.0.layer.1.EncDecAttention.k.weight",
            "encoder.block.0.layer.0.SelfAttention.q.weight", "decoder.final_layer_norm.weight", "encoder.final_layer_norm.weight",
            "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight", "shared.weight",
            "decoder.block.1.layer.2.layer_norm.weight", "encoder.block.2.layer.0.layer_norm.weight"};

    @ParameterizedTest
    @CsvSource({"tiny-gelu-untied,true,HF", "tiny-deep,true,PER_LAYER", "tiny-relu,false,HF"})
    void backwardMatchesFiniteDifferences(String name, boolean training, T5Model.AuxLossMode mode) {
        JsonNode b = T5Fixtures.expected(name).get("batch");
        try (T5Model m = T5Fixtures.model(name, 2)) {
            m.setAuxLossMode(mode);
            T5Model.Batch batch = T5ParityTest.batch(m.config(), b);
            m.forward(batch, training, 3);
            long base = m.routeFingerprint();
            m.backward();
            T5Weights w = m.backend().params(), g = m.backend().grads();
            Rng rng = new Rng(5);
            int checked = 0, skipped = 0;
            double eps = 5e-3; // the fp32 forward is noisy at ~1e-6 of the loss: smaller steps drown in it
            for (String tn : TENSORS) {
                T5Weights.Tensor p = w.tensor(tn);
                if (p == null) continue;
                T5Weights.Tensor gt = g.tensor(tn);
                for (int s = 0; s < 3; s++) {
                    int i = p.off() + rng.nextInt(p.numel());
                    float keep = p.data()[i];
                    p.data()[i] = (float) (keep + eps);
                    double lp = m.forward(batch, training, 3).total();
                    long lpRoutes = m.routeFingerprint();
                    p.data()[i] = (float) (keep - eps);
                    double lm = m.forward(batch, training, 3).total();
                    long lmRoutes = m.routeFingerprint();
                    p.data()[i] = keep;
                    double num = (lp - lm) / (2 * eps), an = g.present(gt) ? gt.data()[gt.off() - p.off() + i] : 0;
                    if (lpRoutes != base || lmRoutes != base) { // a route flipped: the objective is not smooth here
                        skipped++;
                        continue;
                    }
                    assertEquals(num, an, 3e-4 + 2e-2 * Math.abs(num), name + " " + tn + "[" + (i - p.off()) + "]");
                    checked++;
                }
            }
            assertTrue(checked >= 24 && skipped <= checked / 4, "checked " + checked + ", skipped " + skipped + " (routes flipped)");
        }
    }
}
