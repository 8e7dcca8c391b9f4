package org.tornadoswitch.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `chart curves`: runs under one name become their mean with a standard deviation; --x picks the x field. */
class ChartCommandTest {
    @Test
    void runsOfOneNameAreAveragedPointByPoint() {
        List<List<double[]>> runs = List.of(
                List.of(new double[] {10, 2.0}, new double[] {20, 1.0}, new double[] {30, 0.5}),
                List.of(new double[] {12, 4.0}, new double[] {22, 3.0}));
        double[][] m = ChartCommand.meanAndSd(runs);
        assertArrayEquals(new double[] {11, 21}, m[0], 1e-12);       // up to the shorter run
        assertArrayEquals(new double[] {3.0, 2.0}, m[1], 1e-12);
        assertArrayEquals(new double[] {Math.sqrt(2), Math.sqrt(2)}, m[2], 1e-12); // sample sd of {2, 4} and {1, 3}
        double[][] one = ChartCommand.meanAndSd(List.of(runs.get(0)));
        assertArrayEquals(new double[] {0, 0, 0}, one[2], 0);
    }

    @Test
    void curvesAgainstAnotherFieldWithRepeatedNamesWriteAPng(@TempDir Path dir) throws Exception {
        Path a = dir.resolve("a.jsonl"), b = dir.resolve("b.jsonl"), c = dir.resolve("c.jsonl"), out = dir.resolve("x.png");
        Files.writeString(a, "{\"step\":1,\"train_s\":0.5,\"valid_loss\":3.0}\n{\"step\":2,\"train_s\":1.0}\n{\"step\":3,\"train_s\":1.5,\"valid_loss\":2.0}\n");
        Files.writeString(b, "{\"step\":1,\"train_s\":0.6,\"valid_loss\":3.2}\n{\"step\":3,\"train_s\":1.7,\"valid_loss\":2.2}\n");
        Files.writeString(c, "{\"step\":1,\"train_s\":0.4,\"valid_loss\":3.1}\n{\"step\":3,\"train_s\":1.2,\"valid_loss\":2.5}\n");
        CliTest.Result r = CliTest.run("chart", "curves", a.toString(), b.toString(), c.toString(), "--names", "switch,switch,dense",
                "--x", "train_s", "--y-min", "1.5", "--y-max", "3.5", "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(ImageIO.read(out.toFile()).getWidth() > 0);
    }
}
