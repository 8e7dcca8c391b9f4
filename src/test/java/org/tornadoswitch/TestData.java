package org.tornadoswitch;

import java.nio.file.Files;
import java.nio.file.Path;

/** Where the tests find Tiny Shakespeare: ../shared/data, never committed. */
public final class TestData {
    private TestData() {}

    public static Path tinyShakespeare() {
        Path p = Path.of(System.getProperty("tinyshakespeare.path", "../shared/data/tinyshakespeare.txt"));
        if (!Files.isRegularFile(p))
            throw new IllegalStateException("Tiny Shakespeare not found at " + p.toAbsolutePath()
                    + ": the tests expect ../shared/data/tinyshakespeare.txt beside the repository");
        return p;
    }

    /** A small model on the real data, quick to train in tests. */
    public static Config small(int experts, boolean dense) {
        return new Config(32, 2, 2, 64, experts, dense, 1.2, true, true, 0.01, false, 8, 32,
                1.0, 100, 0.9, 0.999, 1e-8, 1.0, 11).validate();
    }
}
