package org.tornadoswitch.hf;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.Map;
import org.apache.commons.compress.archivers.zip.ZipArchiveEntry;
import org.apache.commons.compress.archivers.zip.ZipFile;

/**
 * A PyTorch checkpoint in the zip format of {@code torch.save} (torch 1.6 and later):
 * {@code PREFIX/data.pkl} (the pickled state dict, read by {@link TorchUnpickler}) and one stored,
 * uncompressed entry {@code PREFIX/data/KEY} per storage, which is memory-mapped in place.
 */
final class TorchZipFile extends MappedTensors {
    private static final long MAX_PICKLE = 1L << 30;

    private TorchZipFile(Arena arena, Path file) {
        super(arena, file.toString());
    }

    static TorchZipFile open(Path file) {
        if (!Files.isRegularFile(file)) throw new HfFormatException(file + " is missing");
        byte[] magic = new byte[4];
        long size;
        try (InputStream in = Files.newInputStream(file)) {
            int n = in.readNBytes(magic, 0, 4);
            size = Files.size(file);
            if (n < 4) throw new HfFormatException(file + " is truncated: " + size + " bytes");
        } catch (IOException e) {
            throw new HfFormatException("cannot read " + file + ": " + e.getMessage());
        }
        if (!(magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)) {
            if ((magic[0] & 0xff) == 0x80 && magic[1] >= 2 && magic[1] <= 5)
                throw new HfFormatException(file + " is in the legacy (pre-1.6, not zip) torch.save format, which is not read: "
                        + "re-save it with a current torch, or as safetensors");
            throw new HfFormatException(file + " is not a PyTorch checkpoint (no zip signature)");
        }
        Arena arena = Arena.ofShared();
        try {
            TorchZipFile t = new TorchZipFile(arena, file);
            t.read(file, size);
            return t;
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private void read(Path file, long size) {
        Map<String, ZipArchiveEntry> byName = new HashMap<>();
        byte[] pickle;
        String prefix = null;
        try (ZipFile zip = ZipFile.builder().setPath(file).get()) {
            for (var en = zip.getEntries(); en.hasMoreElements(); ) {
                ZipArchiveEntry e = en.nextElement();
                byName.put(e.getName(), e);
                if (e.getName().endsWith("/data.pkl") && e.getName().indexOf('/') == e.getName().length() - 9) {
                    if (prefix != null) throw new HfFormatException(file + " holds more than one data.pkl");
                    prefix = e.getName().substring(0, e.getName().length() - 8);
                }
            }
            if (prefix == null) {
                if (byName.keySet().stream().anyMatch(n -> n.endsWith("constants.pkl")))
                    throw new HfFormatException(file + " is a TorchScript archive, not a state dict");
                throw new HfFormatException(file + " is a zip without PREFIX/data.pkl: not a torch.save checkpoint");
            }
            ZipArchiveEntry pk = byName.get(prefix + "data.pkl");
            if (pk.getSize() > MAX_PICKLE) throw new HfFormatException(file + ": data.pkl is implausibly large (" + pk.getSize() + " bytes)");
            try (InputStream in = zip.getInputStream(pk)) {
                pickle = in.readAllBytes();
            }
            ZipArchiveEntry bo = byName.get(prefix + "byteorder");
            if (bo != null) {
                String order;
                try (InputStream in = zip.getInputStream(bo)) {
                    order = new String(in.readAllBytes(), StandardCharsets.US_ASCII).trim();
                }
                if (!order.equals("little")) throw new HfFormatException(file + " stores its tensors " + order + "-endian; only little-endian is read");
            }
        } catch (HfFormatException e) {
            throw e;
        } catch (IOException | RuntimeException e) {
            throw new HfFormatException(file + " is truncated or not a valid zip: " + Json.firstLine(e.getMessage()));
        }

        var dict = TorchUnpickler.stateDict(pickle, file.toString());
        MemorySegment seg;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
        } catch (IOException e) {
            throw new HfFormatException("cannot map " + file + ": " + e.getMessage());
        }
        for (var kv : dict.entrySet()) {
            String name = kv.getKey();
            TorchUnpickler.Tensor t = kv.getValue();
            TorchUnpickler.Storage s = t.storage();
            DType dt = switch (s.type()) {
                case "FloatStorage" -> DType.F32;
                case "HalfStorage" -> DType.F16;
                case "BFloat16Storage" -> DType.BF16;
                default -> throw new HfFormatException(file + ": tensor " + name + " has unsupported dtype " + s.type()
                        + " (supported: FloatStorage, HalfStorage, BFloat16Storage)");
            };
            ZipArchiveEntry e = byName.get(prefix + "data/" + s.key());
            if (e == null) throw new HfFormatException(file + " lacks data/" + s.key() + ", the storage of tensor " + name);
            if (e.getMethod() != ZipArchiveEntry.STORED)
                throw new HfFormatException(file + ": data/" + s.key() + " is compressed; torch.save stores tensors uncompressed");
            long need;
            try {
                need = Math.multiplyExact(s.numel(), (long) dt.bytes);
            } catch (ArithmeticException ex) {
                throw new HfFormatException(file + ": storage " + s.key() + " has an impossible size");
            }
            if (e.getSize() < need)
                throw new HfFormatException(file + ": data/" + s.key() + " has " + e.getSize() + " bytes, its storage needs " + need);
            long at = e.getDataOffset();
            if (at < 0 || at + need > size)
                throw new HfFormatException(file + " is truncated: data/" + s.key() + " ends past the end of the file");
            long numel;
            try {
                numel = numel(t.size());
            } catch (ArithmeticException ex) {
                throw new HfFormatException(file + ": tensor " + name + " has an impossible shape");
            }
            long last = t.offset();
            boolean contiguous = true;
            long expect = 1;
            try {
                for (int d = t.size().length - 1; d >= 0; d--) {
                    if (t.size()[d] != 1 && t.stride()[d] != expect) contiguous = false;
                    expect = Math.multiplyExact(expect, t.size()[d]);
                    if (t.size()[d] > 0) last = Math.addExact(last, Math.multiplyExact(t.size()[d] - 1, t.stride()[d]));
                }
            } catch (ArithmeticException ex) {
                throw new HfFormatException(file + ": tensor " + name + " has an impossible stride");
            }
            if (numel > 0 && last >= s.numel())
                throw new HfFormatException(file + ": tensor " + name + " reaches past the end of its storage " + s.key());
            entries.put(name, new Entry(name, dt, t.size().clone(), numel, seg, at + t.offset() * dt.bytes,
                    contiguous ? null : t.stride().clone()));
        }
    }
}
