#!/usr/bin/env python3
"""Checkpoint-format fixtures of the Java readers (org.tornadoswitch.hf), written with torch and
safetensors: one tiny state dict with T5-like names in every layout the hub uses, its fp16/bf16
variants, and files a reader must refuse.

    /work/venv/bin/python scripts/hf_format_fixtures.py [OUT]   # OUT = src/test/resources/hf/formats
    /work/venv/bin/python scripts/hf_format_fixtures.py --check-writer
        # after a build (target/tornado-switch.jar): SafeTensorsWriter's file, read by the safetensors
        # library, has the names, shapes, values and {"format": "pt"} metadata the Java side wrote

Layouts (each directory opens with HfCheckpoint.open):
  single/       model.safetensors                                  (safetensors' own writer)
  sharded/      model.safetensors.index.json + 2 shards
  bin/          pytorch_model.bin: state_dict()-like OrderedDict with _metadata, a tied tensor,
                strided views into a larger storage (protocol 2, torch's default)
  bin_dict/     pytorch_model.bin: a plain dict (as transformers' shards are), pickle protocol 4
  bin_param/    pytorch_model.bin: nn.Parameter values (_rebuild_parameter)
  bin_sharded/  pytorch_model.bin.index.json + 2 .bin shards
  bin_zip64/    bin_dict's archive rewritten with zip64 records (what torch writes past 4 GiB)
  f16/, bf16/   model.safetensors and pytorch_model.bin in that dtype, expected_f32.safetensors
                (the same values widened to fp32 by torch)
expected.json: per tensor of the F32 layouts, its shape, sum (float64) and first values.
bad/: pickles that are not state dicts (os.system global, builtins.eval, a list, a dict of ints,
a nested dict, an object of a user class), the legacy non-zip format, unsupported dtypes.
The Java tests make truncated, corrupt-header and missing-shard cases from these at run time.
torch.save writes a random serialization id, so a rerun changes the .bin bytes, not their content.
"""
import collections
import glob
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile

import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else os.path.join(ROOT, "src/test/resources/hf/formats")

WRITER_CHECK_JAVA = r"""
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.tornadoswitch.hf.SafeTensorsWriter;
import org.tornadoswitch.hf.SafeTensorsWriter.NamedTensor;

public class WriterCheck {
    public static void main(String[] a) throws Exception {
        float[] w = new float[12 * 8 + 3];
        for (int i = 0; i < w.length; i++) w[i] = (float) Math.sin(0.1 * i) * 3;
        SafeTensorsWriter.write(Path.of(a[0]), List.of(
                new NamedTensor("encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight", new long[] {12, 8}, w, 3),
                new NamedTensor("shared.weight", new long[] {4, 2}, new float[] {1, -2, 3.5f, 0, -0f, 1e-30f, 65504, -7}),
                new NamedTensor("scalar", new long[0], new float[] {42}),
                new NamedTensor("empty", new long[] {0, 5}, new float[0])), Map.of("format", "pt"));
    }
}
"""


def check_writer():
    """SafeTensorsWriter (Java) -> safetensors (Python): same names, shapes, values, metadata."""
    import subprocess
    import numpy as np
    from safetensors import safe_open
    jar = os.path.join(ROOT, "target", "tornado-switch.jar")
    if not os.path.isfile(jar):
        raise SystemExit(f"{jar} is missing: build first (mvn package -DskipTests)")
    java = None
    for home in [os.environ.get("JAVA_HOME", "")] + sorted(glob.glob("/usr/lib/jvm/*25*")):
        if home and os.path.isfile(os.path.join(home, "bin", "java")):
            java = os.path.join(home, "bin", "java")
            break
    work = tempfile.mkdtemp()
    try:
        src = os.path.join(work, "WriterCheck.java")
        with open(src, "w") as f:
            f.write(WRITER_CHECK_JAVA)
        out = os.path.join(work, "model.safetensors")
        subprocess.run([java, "-cp", jar, src, out], check=True)
        w = (np.sin(0.1 * np.arange(12 * 8 + 3)) * 3).astype(np.float32)[3:].reshape(12, 8)
        want = {"encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight": w,
                "shared.weight": np.array([1, -2, 3.5, 0, -0.0, 1e-30, 65504, -7], dtype=np.float32).reshape(4, 2),
                "scalar": np.array(42, dtype=np.float32), "empty": np.zeros((0, 5), dtype=np.float32)}
        with safe_open(out, framework="np") as f:
            assert f.metadata() == {"format": "pt"}, f.metadata()
            assert sorted(f.keys()) == sorted(want), f.keys()
            for k, v in want.items():
                got = f.get_tensor(k)
                assert got.dtype == np.float32 and got.shape == v.shape, (k, got.dtype, got.shape)
                # Java's (float) Math.sin(...) * 3 and numpy's float32 cast may differ in the last bit
                assert np.allclose(got, v, rtol=1e-6, atol=0), (k, got, v)
        import torch
        from safetensors.torch import load_file
        t = load_file(out)
        assert t["shared.weight"].dtype == torch.float32 and float(t["scalar"]) == 42.0
        print(f"SafeTensorsWriter -> safetensors {__import__('safetensors').__version__}: {len(want)} tensors, metadata and values as written")
    finally:
        shutil.rmtree(work)


def tiny_state_dict():
    g = torch.Generator().manual_seed(1234)
    r = lambda *s: torch.randn(*s, generator=g)
    sd = collections.OrderedDict()
    sd["shared.weight"] = r(16, 8)
    sd["encoder.block.0.layer.0.SelfAttention.q.weight"] = r(8, 8)
    sd["encoder.block.1.layer.1.mlp.router.classifier.weight"] = r(4, 8)
    sd["encoder.block.1.layer.1.mlp.experts.expert_3.wi.weight"] = r(12, 8)
    sd["encoder.final_layer_norm.weight"] = r(8)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 8)
    sd["lm_head.weight"] = sd["shared.weight"]  # tied: one storage in .bin, a copy in safetensors
    big = r(6, 5)
    sd["view.weight"] = big[1:, 1:4]  # storage offset 6, strides (5, 1): rows of a larger tensor
    sd["transposed.weight"] = r(3, 4).t()  # strides (1, 4)
    # what Module.state_dict() attaches (pickled with BUILD)
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("encoder", {"version": 1})])
    return sd


def contiguous_copy(sd):
    return collections.OrderedDict((k, v.contiguous().clone()) for k, v in sd.items())


def write_sharded_safetensors(d, sd, metadata):
    names = list(sd)
    parts = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map, total = {}, 0
    for i, part in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file({k: sd[k] for k in part}, os.path.join(d, fn), metadata=metadata)
        for k in part:
            weight_map[k] = fn
            total += sd[k].numel() * sd[k].element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_sharded_bin(d, sd):
    names = list(sd)
    parts = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(parts):
        fn = f"pytorch_model-{i + 1:05d}-of-{len(parts):05d}.bin"
        torch.save({k: sd[k] for k in part}, os.path.join(d, fn))
        for k in part:
            weight_map[k] = fn
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)


def torch_zip(path, pickle_bytes):
    """A zip laid out as torch.save lays it out, around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


class EvalGlobal:
    def __reduce__(self):
        return (eval, ("1+1",))


class UserObject:
    def __init__(self):
        self.weights = [1.0, 2.0]


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    sd = tiny_state_dict()
    flat = contiguous_copy(sd)
    meta = {"format": "pt"}

    def sub(name):
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        return d

    save_file(flat, os.path.join(sub("single"), "model.safetensors"), metadata=meta)
    write_sharded_safetensors(sub("sharded"), flat, meta)
    torch.save(sd, os.path.join(sub("bin"), "pytorch_model.bin"))
    torch.save(dict(sd), os.path.join(sub("bin_dict"), "pytorch_model.bin"), pickle_protocol=4)
    torch.save(collections.OrderedDict((k, torch.nn.Parameter(v.contiguous())) for k, v in flat.items()),
               os.path.join(sub("bin_param"), "pytorch_model.bin"))
    write_sharded_bin(sub("bin_sharded"), flat)
    with zipfile.ZipFile(os.path.join(OUT, "bin_dict", "pytorch_model.bin")) as src, \
            zipfile.ZipFile(os.path.join(sub("bin_zip64"), "pytorch_model.bin"), "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            with src.open(info) as r, dst.open(zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0)), "w",
                                               force_zip64=True) as w:
                w.write(r.read())

    for dt, name in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
        d = sub(name)
        low = collections.OrderedDict((k, v.to(dt)) for k, v in flat.items())
        save_file(low, os.path.join(d, "model.safetensors"), metadata=meta)
        low_bin = collections.OrderedDict((k, v.to(dt)) for k, v in sd.items() if k not in ("lm_head.weight",))
        low_bin["lm_head.weight"] = low_bin["shared.weight"]
        low_bin["view.weight"] = sd["view.weight"].to(dt)
        torch.save(low_bin, os.path.join(d, "pytorch_model.bin"))
        save_file(collections.OrderedDict((k, v.to(dt).float()) for k, v in flat.items()),
                  os.path.join(d, "expected_f32.safetensors"))

    expected = {k: {"shape": list(v.shape), "sum": float(v.double().sum()),
                    "first": [float(x) for x in v.reshape(-1)[:4]]} for k, v in flat.items()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)

    bad = sub("bad")
    torch_zip(os.path.join(bad, "os_system.bin"), pickle.dumps(Evil(), protocol=2))
    torch_zip(os.path.join(bad, "eval.bin"), pickle.dumps({"x": EvalGlobal()}, protocol=2))
    torch_zip(os.path.join(bad, "object.bin"), pickle.dumps(UserObject(), protocol=2))
    torch.save([flat["scalar"], flat["encoder.final_layer_norm.weight"]], os.path.join(bad, "list.bin"))
    torch.save({"a": 1, "b": 2}, os.path.join(bad, "dict_of_ints.bin"))
    torch.save({"model": dict(flat), "step": 3}, os.path.join(bad, "nested.bin"))
    torch.save(dict(flat), os.path.join(bad, "legacy.bin"), _use_new_zipfile_serialization=False)
    torch.save({"x": torch.arange(4)}, os.path.join(bad, "int64.bin"))
    save_file({"x": torch.arange(4)}, os.path.join(bad, "int64.safetensors"))
    save_file({"x": torch.zeros(2, dtype=torch.float64)}, os.path.join(bad, "f64.safetensors"))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    if "--check-writer" in sys.argv:
        check_writer()
    else:
        main()
