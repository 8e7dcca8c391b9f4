package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.TornadoExecutionPlan;
import uk.ac.manchester.tornado.api.common.TornadoDevice;
import uk.ac.manchester.tornado.api.runtime.TornadoRuntimeProvider;

/** Lists and selects TornadoVM devices by TornadoVM's own "backend:device" numbering. */
public final class TornadoDevices {
    private TornadoDevices() {}

    public static void print() {
        var rt = TornadoRuntimeProvider.getTornadoRuntime();
        System.out.println("TornadoVM backends and devices (select one with --device BACKEND:DEVICE):");
        for (int b = 0; b < rt.getNumBackends(); b++) {
            var backend = rt.getBackend(b);
            for (int d = 0; d < backend.getNumDevices(); d++) {
                TornadoDevice dev = backend.getDevice(d);
                System.out.printf("  %d:%d  %-8s %s (%d MiB)%n", b, d, backend.getBackendType(), dev.getPhysicalDevice().getDeviceName(),
                        dev.getPhysicalDevice().getDeviceGlobalMemorySize() >> 20);
            }
        }
    }

    /** The device named "B:D", or TornadoVM's default when spec is null. */
    public static TornadoDevice select(String spec) {
        var rt = TornadoRuntimeProvider.getTornadoRuntime();
        if (spec == null || spec.isBlank()) return rt.getDefaultDevice();
        String[] parts = spec.split(":");
        try {
            if (parts.length != 2) throw new NumberFormatException();
            int b = Integer.parseInt(parts[0].trim()), d = Integer.parseInt(parts[1].trim());
            if (b < 0 || b >= rt.getNumBackends())
                throw new IllegalArgumentException("--device " + spec + ": no TornadoVM backend " + b + " (there are "
                        + rt.getNumBackends() + "; see `devices`)");
            if (d < 0 || d >= rt.getBackend(b).getNumDevices())
                throw new IllegalArgumentException("--device " + spec + ": backend " + b + " has no device " + d
                        + " (it has " + rt.getBackend(b).getNumDevices() + "; see `devices`)");
            return TornadoExecutionPlan.getDevice(b, d);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--device must be BACKEND:DEVICE, e.g. 0:0, got '" + spec + "'");
        }
    }

    public static String describe(TornadoDevice dev) {
        return dev.getPhysicalDevice().getDeviceName() + " [" + dev.getTornadoVMBackend() + "]";
    }
}
