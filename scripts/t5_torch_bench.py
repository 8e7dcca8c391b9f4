#!/usr/bin/env python3
"""transformers' SwitchTransformersForConditionalGeneration on torch (CPU): the reference of scripts/bench-t5.

    /work/venv/bin/python scripts/t5_torch_bench.py --model DIR --mode generate|finetune [--threads 2] ...

generate: batch 1, greedy, exactly --new-tokens new tokens (min_new_tokens = max_new_tokens), the decoder
key/value cache (HF's default); finetune: one step of forward(labels, output_router_logits=True) in train mode
(the config's dropout and jitter), backward, clip_grad_norm_(1.0) and transformers' Adafactor with its defaults.
Both after --warmup untimed runs; prints one JSON object like `t5 bench` (median seconds, every run, the load
time, the peak resident memory of the process).
"""
import argparse
import json
import resource
import statistics
import time

import torch
import transformers
from transformers import SwitchTransformersForConditionalGeneration
from transformers.optimization import Adafactor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", default="generate", choices=["generate", "finetune"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input-tokens", type=int)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--target-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    model = SwitchTransformersForConditionalGeneration.from_pretrained(a.model)
    load_s = time.perf_counter() - t0
    cfg = model.config
    n_in = a.input_tokens or (32 if a.mode == "generate" else 64)
    out = {"mode": a.mode, "threads": a.threads, "backend": f"transformers {transformers.__version__}, torch {torch.__version__}",
           "parameters": sum(p.numel() for p in model.parameters()), "load_s": load_s}
    times, cpu = [], []
    if a.mode == "generate":
        model.eval()
        ids = torch.randint(2, cfg.vocab_size, (1, n_in))
        ids[0, -1] = cfg.eos_token_id
        with torch.no_grad():
            for r in range(a.warmup + a.repeats):
                s, c0 = time.perf_counter(), time.process_time()
                g = model.generate(input_ids=ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
                                   num_beams=1)
                dt = time.perf_counter() - s
                assert g.shape[1] == a.new_tokens + 1, g.shape
                if r >= a.warmup:
                    times.append(dt)
                    cpu.append(time.process_time() - c0)
        med = statistics.median(times)
        out.update(input_tokens=n_in, new_tokens=a.new_tokens, tokens_per_s=a.new_tokens / med, seconds_median=med)
    else:
        model.train()
        b = a.batch_size
        ids = torch.randint(2, cfg.vocab_size, (b, n_in))
        ids[:, -1] = cfg.eos_token_id
        labels = torch.randint(2, cfg.vocab_size, (b, a.target_tokens))
        labels[:, -1] = cfg.eos_token_id
        mask = torch.ones_like(ids)
        opt = Adafactor(model.parameters())
        for r in range(a.warmup + a.repeats):
            s, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad()
            o = model(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
            o.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            dt = time.perf_counter() - s
            if r >= a.warmup:
                times.append(dt)
                cpu.append(time.process_time() - c0)
        med = statistics.median(times)
        out.update(batch_size=b, input_tokens=n_in, target_tokens=a.target_tokens, step_s_median=med,
                   tokens_per_s=b * (n_in + a.target_tokens) / med)
    out["seconds"] = times
    out["seconds_min"] = min(times)
    out["cpu_seconds"] = cpu  # CPU seconds of the process (all threads) per run
    out["cpu_s_median"] = statistics.median(cpu)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
