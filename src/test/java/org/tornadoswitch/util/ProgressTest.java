package org.tornadoswitch.util;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import org.junit.jupiter.api.Test;

/** Outside a terminal the progress is a few plain lines, not a carriage-return frame per update. */
class ProgressTest {
    @Test
    void plainLinesInALog() throws Exception {
        StringWriter sw = new StringWriter();
        try (Progress p = new Progress("train", 200, 0, " steps", new PrintWriter(sw), 3600, true, false)) {
            for (int i = 1; i <= 200; i++) {
                p.stepTo(i);
                p.setExtraMessage(" loss " + (5.0 - i / 100.0));
                Thread.sleep(5);
            }
        }
        String log = sw.toString();
        long lines = log.lines().count();
        assertFalse(log.contains("\r"), "no carriage returns");
        assertTrue(lines >= 1 && lines <= 12, lines + " lines:\n" + log);
        assertTrue(log.strip().endsWith("loss 3.0") || log.contains("200/200"), "the last line is the end state:\n" + log);
    }

    @Test
    void byTimeOnlyWhenTenthsAreOff() throws Exception {
        StringWriter sw = new StringWriter();
        try (Progress p = new Progress("generate", 50, 0, " tokens", new PrintWriter(sw), 3600, false, false)) {
            for (int i = 1; i <= 50; i++) {
                p.stepTo(i);
                Thread.sleep(10);
            }
        }
        assertTrue(sw.toString().lines().count() == 1, "only the final line:\n" + sw);
    }
}
