package org.tornadoswitch.backend;

/**
 * What a device backend has done since it was made: task-graph executions, kernel launches, bytes
 * sent to and read back from the device, host synchronisations (each blocking execution or on-demand
 * read), and the time the host spent waiting in them. {@code bench} takes the difference over its timed steps for the per-step counts.
 */
public final class DeviceCounters {
    public long executions, launches, bytesToDevice, bytesToHost, syncs;
    /** Wall time spent inside the device runtime's execute calls (kernels, transfers and the runtime's own work). */
    public long executeNanos;

    public DeviceCounters copy() {
        DeviceCounters c = new DeviceCounters();
        c.executions = executions;
        c.launches = launches;
        c.bytesToDevice = bytesToDevice;
        c.bytesToHost = bytesToHost;
        c.syncs = syncs;
        c.executeNanos = executeNanos;
        return c;
    }

    /** this - earlier. */
    public DeviceCounters since(DeviceCounters earlier) {
        DeviceCounters c = copy();
        c.executions -= earlier.executions;
        c.launches -= earlier.launches;
        c.bytesToDevice -= earlier.bytesToDevice;
        c.bytesToHost -= earlier.bytesToHost;
        c.syncs -= earlier.syncs;
        c.executeNanos -= earlier.executeNanos;
        return c;
    }

    /** One kernel kind in a device profile: launches, device time, nominal FLOPs and bytes over them. */
    public record KernelTime(String kind, long launches, long deviceNanos, double flops, double bytes) {
        /** Whether this kind is reported by FLOP rate (GEMMs, attention) rather than by memory rate. */
        public boolean computeBound() {
            return flops > 4 * bytes;
        }
    }
}
