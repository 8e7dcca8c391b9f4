#!/usr/bin/env python3
"""PyTorch eager reference of the default tornado-switch model, for throughput comparisons.

The same model and routing as the Java implementation (labml's Switch Transformer): character
embedding, pre-LayerNorm blocks with causal multi-head attention (biased Q/K/V/O), a Switch FFN
(router linear + softmax, top-1, capacity = floor(cf * T / E), overflow chosen by a random
permutation and passed through, output scaled by the route probability), load-balancing loss,
final LayerNorm, untied head, Adam with the Noam schedule and global-norm clipping.

Two forms of the Switch FFN, the same routing and arithmetic:
  --dispatch dynamic (default): per-expert index lists and Python-level gathers, as labml writes it;
  --dispatch static: capacity-padded dispatch with static shapes (each expert a fixed [capacity x d]
    slab, dropped tokens sent to a spare row; the random drop order is a random priority per token),
    and the experts as one batched matmul, so that torch.compile (inductor) can take the whole step;
  --compile: the static form under torch.compile: the forward with the loss (and through AOTAutograd
    the backward) and the optimizer step with clipping.

Prints one JSON object: tokens_per_s, step_ms (mean over the timed steps), fwd_bwd_ms, optimizer_ms,
threads, torch version, mode, compile_s (time of the first, compiling steps), loss.
PyTorch 2.13 for CPU: python3 -m venv V && V/bin/pip install torch==2.13.0+cpu; V/bin/python scripts/torch_reference.py
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, s, d = x.shape
        hd = d // self.h
        q = self.q(x).view(b, s, self.h, hd).transpose(1, 2)
        k = self.k(x).view(b, s, self.h, hd).transpose(1, 2)
        v = self.v(x).view(b, s, self.h, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, s, d))


class SwitchFFN(nn.Module):
    def __init__(self, d, d_ff, experts, cf):
        super().__init__()
        self.e, self.cf = experts, cf
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d)) for _ in range(experts))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        t = x.shape[0]
        prob = self.router(x).softmax(-1)
        p_max, route = prob.max(-1)
        idx = [torch.eq(route, i).nonzero(as_tuple=True)[0] for i in range(self.e)]
        counts = torch.tensor([len(i) for i in idx], dtype=x.dtype, device=x.device)
        capacity = int(self.cf * t / self.e)
        dropped = []
        for i in range(self.e):
            if len(idx[i]) > capacity:
                perm = idx[i][torch.randperm(len(idx[i]), device=x.device)]
                idx[i], over = perm[:capacity], perm[capacity:]
                dropped.append(over)
        out = x.new_zeros(x.shape)
        for i in range(self.e):
            out[idx[i]] = self.experts[i](x[idx[i]])
        if dropped:
            d = torch.cat(dropped)
            out[d] = x[d]
        out = out * p_max.unsqueeze(-1)
        lb = self.e * ((counts / t) * prob.mean(0)).sum()
        return out.view(shape), lb


class StaticSwitchFFN(nn.Module):
    """SwitchFFN with static shapes: the same routing (top-1, capacity floor(cf * T / E), overflow
    chosen at random and passed through, output scaled by the route probability), the tokens of each
    expert in a [capacity x d] slab, all experts as one batched matmul."""

    def __init__(self, d, d_ff, experts, cf):
        super().__init__()
        self.e, self.cf = experts, cf
        self.router = nn.Linear(d, experts)
        # nn.Linear's initialization, U(+-1/sqrt(fan_in)) for weights and biases, stored [in x out] per expert
        def u(fan_in, *shape):
            return nn.Parameter(torch.empty(*shape).uniform_(-fan_in ** -0.5, fan_in ** -0.5))
        self.w1, self.b1 = u(d, experts, d, d_ff), u(d, experts, 1, d_ff)
        self.w2, self.b2 = u(d_ff, experts, d_ff, d), u(d_ff, experts, 1, d)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        t, d = x.shape
        e = self.e
        cap = int(self.cf * t / e)
        prob = self.router(x).softmax(-1)
        p_max, route = prob.max(-1)
        one_hot = F.one_hot(route, e).to(x.dtype)
        # position of each token among its expert's tokens, in a random order (labml drops a random subset)
        order = torch.argsort(torch.rand(t, device=x.device))
        pos_sorted = ((one_hot[order].cumsum(0) - 1) * one_hot[order]).sum(-1)
        pos = torch.empty_like(pos_sorted).scatter_(0, order, pos_sorted).long()
        kept = pos < cap
        slot = torch.where(kept, route * cap + pos, torch.full_like(pos, e * cap))  # dropped -> spare row
        xe = x.new_zeros(e * cap + 1, d).index_copy(0, slot, x)[: e * cap].view(e, cap, d)
        h = torch.relu(torch.baddbmm(self.b1, xe, self.w1))
        ye = torch.baddbmm(self.b2, h, self.w2).reshape(e * cap, d)
        ye = torch.cat([ye, ye.new_zeros(1, d)])
        out = torch.where(kept.unsqueeze(-1), ye[slot], x) * p_max.unsqueeze(-1)
        counts = one_hot.sum(0)
        lb = e * ((counts / t) * prob.mean(0)).sum()
        return out.view(shape), lb


class Block(nn.Module):
    def __init__(self, d, heads, d_ff, experts, cf, static=False):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ffn = (StaticSwitchFFN if static else SwitchFFN)(d, d_ff, experts, cf)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        y, lb = self.ffn(self.ln2(x))
        return x + y, lb


class Model(nn.Module):
    def __init__(self, vocab, d, heads, layers, d_ff, experts, cf, static=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, d_ff, experts, cf, static) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.emb(x)
        lb = 0
        for b in self.blocks:
            h, l = b(h)
            lb = lb + l
        return self.head(self.ln_f(h)), lb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-ff", type=int, default=256)
    ap.add_argument("--capacity-factor", type=float, default=1.2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dispatch", choices=["dynamic", "static"], default="dynamic",
                    help="expert dispatch: per-expert index lists (labml) or capacity-padded static shapes")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step (implies --dispatch static)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    a = ap.parse_args()
    static = a.compile or a.dispatch == "static"
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text[:200_000]], dtype=torch.long)
    model = Model(len(chars), a.d_model, a.heads, a.layers, a.d_ff, a.experts, a.capacity_factor, static).to(a.device)
    # timings on a GPU need its queue drained
    sync = (lambda: torch.cuda.synchronize(a.device)) if a.device.startswith("cuda") else (lambda: None)
    # a tensor learning rate lets the compiled optimizer step follow the schedule without recompiling
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(1.0) if a.compile else 1.0, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: a.d_model ** -0.5 * min((s + 1) ** -0.5, (s + 1) * 2000 ** -1.5))

    def objective(x, y):
        logits, lb = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        return loss, loss + 0.01 * lb

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    if a.compile:
        objective = torch.compile(objective)
        update = torch.compile(update)
    fb = op = 0.0
    loss = None
    compile_s = 0.0
    t_run = time.perf_counter()
    for step in range(a.warmup_steps + a.steps):
        if step == a.warmup_steps:
            fb = op = 0.0
            sync()
            t_start = time.perf_counter()
        if step == 2:
            compile_s = time.perf_counter() - t_run  # the first two steps compile (both graphs, then the recompile for step > 0)
        off = torch.randint(0, len(ids) - a.seq_len - 1, (a.batch_size,))
        x = torch.stack([ids[o:o + a.seq_len] for o in off]).to(a.device)
        y = torch.stack([ids[o + 1:o + a.seq_len + 1] for o in off]).to(a.device)
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, total = objective(x, y)
        total.backward()
        sync()
        t1 = time.perf_counter()
        update()
        sched.step()
        sync()
        t2 = time.perf_counter()
        fb += t1 - t0
        op += t2 - t1
    sec = time.perf_counter() - t_start
    mode = "compile" if a.compile else "eager-static" if static else "eager"
    print(json.dumps({
        "backend": "pytorch-" + mode + "-" + a.device.split(":")[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "cpu",
        "mode": mode, "experts": a.experts, "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": a.steps * a.batch_size * a.seq_len / sec, "step_ms": 1000 * sec / a.steps,
        "fwd_bwd_ms": 1000 * fb / a.steps, "optimizer_ms": 1000 * op / a.steps, "compile_s": compile_s if a.compile else 0.0,
        "loss": loss.item(), "steps": a.warmup_steps + a.steps}))


if __name__ == "__main__":
    main()
