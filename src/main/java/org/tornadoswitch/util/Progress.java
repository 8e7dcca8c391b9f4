package org.tornadoswitch.util;

import java.io.PrintWriter;
import java.time.Duration;
import java.util.function.Consumer;
import me.tongfei.progressbar.DelegatingProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * Progress of a long command (me.tongfei:progressbar renders it). In a terminal it is the usual
 * bar redrawn in place; when the output is not a terminal (a log file, CI) the same rendering is
 * written as one plain line every {@code everySeconds} or every tenth of the work (optional), and at the end,
 * instead of a carriage-return frame every second. {@code TORNADO_SWITCH_PROGRESS=plain|bar}
 * overrides the detection.
 */
public final class Progress implements AutoCloseable {
    private final ProgressBar bar;
    private final long max;
    private final double everyNanos;
    private volatile long current, lastPrintedAt, lastPrintedStep = Long.MIN_VALUE;
    private volatile String lastLine;
    private final PrintWriter plain;
    private final boolean tenths;

    /** Whether progress is drawn as a bar: stdout and stdin a terminal, unless overridden. */
    public static boolean interactive() {
        String o = System.getenv("TORNADO_SWITCH_PROGRESS");
        if ("plain".equals(o)) return false;
        if ("bar".equals(o)) return true;
        java.io.Console c = System.console();
        return c != null && c.isTerminal();
    }

    /**
     * A bar (terminal) or plain lines into {@code log} (otherwise), counting {@code unit}s from
     * {@code initial} to {@code max}.
     */
    public Progress(String task, long max, long initial, String unit, PrintWriter log, double everySeconds) {
        this(task, max, initial, unit, log, everySeconds, true, interactive());
    }

    /** As above; {@code tenths} false: plain lines only by time (and at the end), not at each tenth of the work. */
    public Progress(String task, long max, long initial, String unit, PrintWriter log, double everySeconds, boolean tenths) {
        this(task, max, initial, unit, log, everySeconds, tenths, interactive());
    }

    Progress(String task, long max, long initial, String unit, PrintWriter log, double everySeconds, boolean tenths, boolean terminal) {
        this.max = max;
        this.tenths = tenths;
        this.everyNanos = everySeconds * 1e9;
        this.current = initial;
        this.lastPrintedAt = System.nanoTime();
        this.plain = terminal ? null : log;
        ProgressBarBuilder b = new ProgressBarBuilder().setTaskName(task).setInitialMax(max).setStyle(ProgressBarStyle.ASCII)
                .setMaxRenderedLength(150).setUpdateIntervalMillis(terminal ? 1000 : 250).showSpeed().setUnit(unit, 1)
                .startsFrom(initial, Duration.ZERO);
        if (!terminal) b.setConsumer(new DelegatingProgressBarConsumer(onRender(), 150));
        bar = b.build();
    }

    /** Plain mode: remembers each rendering, writes it when a line is due. */
    private Consumer<String> onRender() {
        return line -> {
            lastLine = line.strip();
            long now = System.nanoTime(), step = current;
            long tenth = Math.max(1, max / 10);
            boolean due = now - lastPrintedAt >= everyNanos || tenths && step / tenth != lastPrintedStep / tenth || step >= max;
            if (due && step != lastPrintedStep) print(now, step);
        };
    }

    private synchronized void print(long now, long step) {
        if (step == lastPrintedStep || lastLine == null) return;
        plain.println(lastLine);
        plain.flush();
        lastPrintedAt = now;
        lastPrintedStep = step;
    }

    public void stepTo(long n) {
        current = n;
        bar.stepTo(n);
    }

    public void setExtraMessage(String msg) {
        bar.setExtraMessage(msg);
    }

    /** Stops redrawing (a terminal bar) while other lines are printed. */
    public void pause() {
        bar.pause();
    }

    public void resume() {
        bar.resume();
    }

    @Override
    public void close() {
        bar.close(); // renders the final state once more
        if (plain != null && lastLine != null && current != lastPrintedStep) print(System.nanoTime(), current);
    }
}
