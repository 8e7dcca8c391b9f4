#!/usr/bin/env python3
"""torch.mm at the same GEMM cases as `tornado-switch bench gemm`, timed the same way.

A case is FORM:MxKxN or FORM:MxKxN/G (G groups of M/G rows, each with its own weight), in the
project's convention:
  nn   C[m x n] = A[m x k] B[k x n] + bias         (forward linear)       torch.addmm(bias, A, B, out=C)
  nt   D[m x k] = S[m x n] W[k x n]^T              (input gradient)       torch.mm(S, W.t(), out=D)
  tn   G[k x n] += A[m x k]^T B[m x n]             (weight gradient)      G.addmm_(A.t(), B)
  gnn, gnt, gtn: the same per group, a loop of torch calls over the groups' row slices.

Each case: warm-up, then SAMPLES samples of enough back-to-back calls to last --sample-ms; the
figure is the median sample's GFLOP/s (2 m k n per call). One JSON object per case on stdout.
--cpu-time (with --threads 1) times by the thread's CPU time, for a per-core figure on a shared machine.
Usage: gemm_torch.py --threads 2 --cases nn:2048x128x256,gtn:2048x128x256/4
"""
import argparse
import json
import statistics
import sys
import time

import torch


def parse(case):
    try:
        form, dims = case.split(":")
        groups = 1
        if "/" in dims:
            dims, g = dims.split("/")
            groups = int(g)
        m, k, n = (int(x) for x in dims.split("x"))
    except ValueError:
        sys.exit(f"error: bad case {case!r} (want FORM:MxKxN or FORM:MxKxN/G)")
    base = form[1:] if form.startswith("g") else form
    if base not in ("nn", "nt", "tn") or min(m, k, n, groups) < 1 or m % groups:
        sys.exit(f"error: bad case {case!r}: form nn/nt/tn/gnn/gnt/gtn, positive sizes, groups dividing m")
    return form, base, m, k, n, groups


def make(base, m, k, n, groups):
    """A zero-argument function doing one call of the case (all groups)."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.rand(*s, generator=g) - 0.5
    rows = m // groups
    sl = [slice(x * rows, (x + 1) * rows) for x in range(groups)]
    if base == "nn":
        a, w, bias, c = r(m, k), r(groups, k, n), r(groups, n), torch.empty(m, n)
        if groups == 1:
            return lambda: torch.addmm(bias[0], a, w[0], out=c)
        return lambda: [torch.addmm(bias[x], a[s], w[x], out=c[s]) for x, s in enumerate(sl)]
    if base == "nt":
        src, w, d = r(m, n), r(groups, k, n), torch.empty(m, k)
        if groups == 1:
            return lambda: torch.mm(src, w[0].t(), out=d)
        return lambda: [torch.mm(src[s], w[x].t(), out=d[s]) for x, s in enumerate(sl)]
    a, b, gw = r(m, k), r(m, n), torch.zeros(groups, k, n)
    if groups == 1:
        return lambda: gw[0].addmm_(a.t(), b)
    return lambda: [gw[x].addmm_(a[s].t(), b[s]) for x, s in enumerate(sl)]


def measure(fn, flops, warmup_s, sample_s, samples, clock=time.perf_counter):
    t_end = time.perf_counter() + warmup_s
    calls = 0
    while time.perf_counter() < t_end or calls < 3:
        fn()
        calls += 1
    t0 = clock()
    fn()
    per = max(clock() - t0, 1e-7)
    reps = max(1, int(sample_s / per))
    rates = []
    for _ in range(samples):
        t0 = clock()
        for _ in range(reps):
            fn()
        rates.append(flops * reps / max(clock() - t0, 1e-9) / 1e9)
    return statistics.median(rates), rates, reps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", required=True, help="comma-separated FORM:MxKxN[/G]")
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--sample-ms", type=float, default=40)
    ap.add_argument("--warmup-ms", type=float, default=200)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by the thread's CPU time (only with --threads 1: MKL then runs on the calling thread)")
    args = ap.parse_args()
    if args.cpu_time and args.threads != 1:
        sys.exit(f"error: --cpu-time needs --threads 1, got {args.threads}")
    if args.threads < 1 or args.samples < 1 or args.sample_ms <= 0 or args.warmup_ms < 0:
        sys.exit("error: --threads and --samples must be >= 1, --sample-ms > 0, --warmup-ms >= 0")
    cases = [parse(c) for c in args.cases.split(",") if c]
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        for form, base, m, k, n, groups in cases:
            fn = make(base, m, k, n, groups)
            med, rates, reps = measure(fn, 2.0 * m * k * n, args.warmup_ms / 1e3, args.sample_ms / 1e3, args.samples,
                                       time.thread_time if args.cpu_time else time.perf_counter)
            print(json.dumps({"impl": "torch", "torch": torch.__version__, "threads": args.threads,
                              "clock": "cpu" if args.cpu_time else "wall", "form": form,
                              "m": m, "k": k, "n": n, "groups": groups, "gflops": round(med, 3),
                              "samples": [round(x, 3) for x in rates], "calls_per_sample": reps}), flush=True)


if __name__ == "__main__":
    main()
