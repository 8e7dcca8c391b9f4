package org.tornadoswitch.hf;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Opens a Hugging Face checkpoint directory as the hub has it. The first of these that exists wins
 * (the order transformers prefers): {@code model.safetensors}, {@code model.safetensors.index.json}
 * (sharded safetensors), {@code pytorch_model.bin}, {@code pytorch_model.bin.index.json} (sharded
 * .bin). A path to one such file opens that file. Everything is memory-mapped and checked at open:
 * headers, offsets and sizes against the file lengths, dtypes (F32, F16, BF16).
 */
public final class HfCheckpoint {
    public static final String SAFETENSORS = "model.safetensors";
    public static final String SAFETENSORS_INDEX = "model.safetensors.index.json";
    public static final String TORCH_BIN = "pytorch_model.bin";
    public static final String TORCH_BIN_INDEX = "pytorch_model.bin.index.json";

    private HfCheckpoint() {}

    public static TensorSource open(Path dir) throws HfFormatException {
        if (Files.isRegularFile(dir)) return openFile(dir);
        if (!Files.isDirectory(dir)) throw new HfFormatException("checkpoint directory " + dir + " does not exist");
        for (String name : new String[] {SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX}) {
            Path p = dir.resolve(name);
            if (Files.exists(p)) return openFile(p);
        }
        throw new HfFormatException(dir + " has no checkpoint (none of " + SAFETENSORS + ", " + SAFETENSORS_INDEX + ", "
                + TORCH_BIN + ", " + TORCH_BIN_INDEX + ")");
    }

    /** One file: by its name's ending, a safetensors file, a PyTorch zip, or a shard index. */
    public static TensorSource openFile(Path file) throws HfFormatException {
        String n = file.getFileName().toString();
        if (!Files.isRegularFile(file)) throw new HfFormatException(file + " is missing");
        if (n.endsWith(".index.json")) return ShardedTensors.open(file, HfCheckpoint::openShard);
        if (n.endsWith(".safetensors")) return SafeTensorsFile.open(file);
        if (n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth")) return TorchZipFile.open(file);
        throw new HfFormatException(file + ": unknown checkpoint file type (expected .safetensors, .bin or .index.json)");
    }

    private static TensorSource openShard(Path file) {
        if (file.getFileName().toString().endsWith(".index.json"))
            throw new HfFormatException(file + ": a shard cannot be another index");
        return openFile(file);
    }
}
