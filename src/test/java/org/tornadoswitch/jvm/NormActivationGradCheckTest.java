package org.tornadoswitch.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.tornadoswitch.jvm.OpsGradCheckTest.POOL;
import static org.tornadoswitch.jvm.OpsGradCheckTest.check;
import static org.tornadoswitch.jvm.OpsGradCheckTest.dot;
import static org.tornadoswitch.jvm.OpsGradCheckTest.random;

import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Finite-difference checks of T5's ops: the RMS norm and the FFN activations. */
class NormActivationGradCheckTest {
    @Test
    void rmsNormValuesAndGradients() {
        int rows = 4, d = 19; // d not a multiple of the vector length: the scalar tails too
        float eps = 1e-6f;
        float[] x = random(rows * d, 21, 2), g = random(d, 22, 1), r = random(rows * d, 23, 1);
        float[] y = new float[rows * d], rstd = new float[rows];
        Supplier<Double> loss = () -> {
            Ops.rmsNorm(POOL, x, 0, g, 0, y, 0, rstd, 0, rows, d, eps);
            return dot(y, r);
        };
        loss.get();
        for (int t = 0; t < rows; t++) { // y = x / sqrt(mean(x²) + eps) · g, in double
            double ms = 0;
            for (int j = 0; j < d; j++) ms += (double) x[t * d + j] * x[t * d + j];
            double inv = 1 / Math.sqrt(ms / d + eps);
            for (int j = 0; j < d; j++) assertEquals(x[t * d + j] * inv * g[j], y[t * d + j], 1e-5);
        }
        float[] dx = new float[rows * d], dg = new float[d];
        Ops.rmsNormBackward(POOL, x, 0, g, 0, rstd, 0, r, 0, dx, 0, dg, 0, rows, d, false);
        check("dx", x, dx, loss);
        check("dg", g, dg, loss);
        // accumulating dx adds to what is there
        float[] acc = dx.clone();
        Ops.rmsNormBackward(POOL, x, 0, g, 0, rstd, 0, r, 0, acc, 0, null, 0, rows, d, true);
        for (int i = 0; i < acc.length; i++) assertEquals(2 * dx[i], acc[i], 1e-6);
    }

    @ParameterizedTest
    @EnumSource(Ops.Activation.class)
    void activationGradients(Ops.Activation a) {
        int n = 37;
        float[] x = random(n, 31, 3), r = random(n, 32, 1), y = new float[n];
        for (int i = 0; i < n; i++) if (Math.abs(x[i]) < 0.05f) x[i] += 0.2f; // keep ReLU's kink out of the differences
        Supplier<Double> loss = () -> {
            Ops.activate(POOL, a, x, y, 0, n);
            return dot(y, r);
        };
        loss.get();
        for (int i = 0; i < n; i++) assertEquals(reference(a, x[i]), y[i], 1e-6 * Math.max(1, Math.abs(x[i])), a + "(" + x[i] + ")");
        float[] dx = r.clone();
        Ops.activationBackward(POOL, a, x, dx, 0, n);
        check(a.name(), x, dx, loss);
    }

    /** The activations in double from their definitions (erf by its series, accurate here). */
    static double reference(Ops.Activation a, double x) {
        return switch (a) {
            case RELU -> Math.max(0, x);
            case GELU -> 0.5 * x * (1 + erfSeries(x / Math.sqrt(2)));
            case GELU_TANH -> 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
            case SILU -> x / (1 + Math.exp(-x));
        };
    }

    static double erfSeries(double z) {
        double sum = 0, term = z;
        for (int n = 0; n < 200; n++) {
            sum += term / (2 * n + 1);
            term *= -z * z / (n + 1);
        }
        return 2 / Math.sqrt(Math.PI) * sum;
    }
}
