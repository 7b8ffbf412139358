"""Batched trainer vs a plain per-run PyTorch loop on the paper's l4 Ethanol task.

R = 64 runs (gradient descent on width-1 linear nets of depths 1, 2, 3 x a log-spaced
learning-rate grid: 22 rates in [1e-5, 1e-3] x 3 depths, the first 64; none diverges
within the measured iterations, so every row does useful work). Measured in one process,
interleaved (plain, batched, GEMM, ... repeated; medians reported) because the machine
is shared:

* plain loop: one run at a time, ``nn.Linear`` stack (no bias), ``torch.optim.SGD``,
  full batch, the loss read (``.item()``) every step; a few runs of each depth;
* batched: ``depthaccel.train.train`` on all 64 runs (l4; and l2 in the Gram form);
* GEMM ceiling: a 2565x128 @ 128x64 float32 (and float64) GEMM in a loop, run right
  after each batched l4 measurement for as many calls as it made (two per step); one
  run-iteration of l_p costs two such products per run, 4 m d FLOP (~1.31 MFLOP), so
  ``gemm_fraction = run-iterations/s * 4 m d / GEMM FLOP/s``.

Logging density of the batched runs is that of a real long run (1000 logged points
over 1e6 iterations): here only iterations 0 and T are logged; the loss itself is
computed at every iteration for first hits and divergence, as always.

``--compaction``: the engine's compaction of frozen runs (``train(compact=...)``) on a
grid where runs diverge early, as fig3's learning-rate searches do: the 9-rate coarse
grid 1e-4 .. 1 (``experiments.search.SearchPolicy``) x depths 1-3 x seeds 0-2 of width-1
GD nets with fig3's fair starts (``experiments.starts``: depth 1 at 1e-3, deep nets at
0.05 per factor), Ethanol l4, float64; the first of the two shards the sweep cuts the
81 runs into (41 runs). The same call with and without compaction, interleaved (which
goes first alternates), median run-iterations per CPU second of the process (``--wall``:
per wall second) over ``--repeats`` (run-iterations delivered: all 41 runs x T, whether
frozen or not); also the same comparison on the stable 64-run grid above (nothing diverges:
compaction must cost nothing), and whether the two give the same results (bit for bit,
else the largest relative difference of a logged gap). "Steady state": the rate of the
runs that never diverge, trained alone, relative to all runs uncompacted (both counted
as all runs' run-iterations): what an iteration of a long call costs once the frozen
runs have left, the speed-up a 1e6-iteration search call approaches. Checkpoints: the
shard's checkpoints every 500 of 2500 iterations with and without compaction compared
byte for byte, and an uncompacted checkpoint with frozen runs resumed with compaction.

Usage:
    python benchmarks/bench_train.py [--threads N] [--iters T] [--repeats K] [--json PATH]
    python benchmarks/bench_train.py --device cuda   # the same on a GPU (timings synchronised)
    python benchmarks/bench_train.py --dtype-check [--check-iters T]   # float32 vs float64
    python benchmarks/bench_train.py --compaction [--compaction-iters T] [--repeats K] [--wall]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depthaccel.train import Run, train

R = 64


def load_data() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from depthaccel.data import load_ethanol

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_ethanol()
        return np.asarray(ds.X), np.asarray(ds.y), "Ethanol (standardised)"
    except Exception as exc:  # noqa: BLE001 - any missing-data error: fall back
        print(f"Ethanol data unavailable ({exc}); using a random problem of the same shape")
        rng = np.random.default_rng(0)
        X = rng.standard_normal((2565, 128))
        y = X @ rng.standard_normal(128) / 11 + 0.3 * rng.standard_normal(2565)
        return X, (y - y.mean()) / y.std(), "random 2565 x 128"


def grid_runs() -> list[Run]:
    lrs = np.geomspace(1e-5, 1e-3, 22)  # all stable for T iterations: no frozen rows
    return [Run("gd", float(lr), depth=N) for N in (1, 2, 3) for lr in lrs][:R]


def plain_loop(X: torch.Tensor, y: torch.Tensor, p: float, run: Run, iters: int) -> float:
    """One run the plain way; returns seconds for ``iters`` iterations (after 3 warm-up)."""
    torch.manual_seed(run.seed)
    widths = [X.shape[1]] + [1] * (run.depth - 1) + [1]
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:], strict=True)]
    for lin in layers:
        nn.init.normal_(lin.weight, std=1e-3)
    model = nn.Sequential(*layers).to(device=X.device, dtype=X.dtype)
    opt = torch.optim.SGD(model.parameters(), lr=run.lr)
    Y = y[:, None]

    def step() -> float:
        opt.zero_grad()
        loss = ((model(X) - Y) ** p).mean() / p  # p even here
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        step()
    _sync(X.device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - t


def _sync(device: torch.device | str) -> None:
    """Wait for queued GPU work before reading the clock (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def gemm_flops(dtype: torch.dtype, calls: int, device: str = "cpu") -> float:
    """FLOP/s of ``calls`` back-to-back 2565x128 @ 128x64 GEMMs (the ceiling's shape)."""
    A = torch.randn(2565, 128, dtype=dtype, device=device)
    B = torch.randn(128, R, dtype=dtype, device=device)
    out = torch.empty(2565, R, dtype=dtype, device=device)
    for _ in range(5):
        torch.mm(A, B, out=out)
    _sync(device)
    t = time.perf_counter()
    for _ in range(calls):
        torch.mm(A, B, out=out)
    _sync(device)
    return 2 * 2565 * 128 * R * calls / (time.perf_counter() - t)


def batched(X, y, p, runs, iters, dtype, device: str = "cpu") -> float:
    t = time.perf_counter()
    train(X, y, p, runs, iters, optimum=0.0, dtype=dtype, log_points=2, device=device)
    _sync(device)  # train returns host arrays, so this is only belt and braces
    return time.perf_counter() - t


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    Xn, yn, source = load_data()
    m, d = Xn.shape
    runs = grid_runs()
    dev = args.device
    X32 = torch.tensor(Xn, dtype=torch.float32, device=dev)
    y32 = torch.tensor(yn, dtype=torch.float32, device=dev)
    plain_runs = [runs[0], runs[22], runs[44]]  # depths 1, 2, 3
    flop_per_run_iter = 4 * m * d
    T, Tg, Tp = args.iters, args.iters * 10, args.plain_iters
    # warm-up (imports, allocator, MKL JIT)
    train(Xn, yn, 4, runs, 3, optimum=0.0, dtype=torch.float32, log_points=2, device=dev)
    train(Xn, yn, 2, runs, 3, optimum=0.0, dtype=torch.float32, log_points=2, device=dev)
    keys = ["plain4", "plain2", "b4_32", "b4_64", "b2_32", "b2_64", "gemm32", "gemm64"]
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for rep in range(args.repeats):
        t4 = sum(plain_loop(X32, y32, 4, r, Tp) for r in plain_runs)
        samples["plain4"].append(len(plain_runs) * Tp / t4)
        t2 = sum(plain_loop(X32, y32, 2, r, Tp) for r in plain_runs)
        samples["plain2"].append(len(plain_runs) * Tp / t2)
        # each batched l4 run is followed by as many ceiling GEMMs as it did (2 per step)
        samples["b4_32"].append(R * T / batched(Xn, yn, 4, runs, T, torch.float32, dev))
        samples["gemm32"].append(gemm_flops(torch.float32, 2 * T, dev))
        samples["b4_64"].append(R * T / batched(Xn, yn, 4, runs, T, torch.float64, dev))
        samples["gemm64"].append(gemm_flops(torch.float64, 2 * T, dev))
        samples["b2_32"].append(R * Tg / batched(Xn, yn, 2, runs, Tg, torch.float32, dev))
        samples["b2_64"].append(R * Tg / batched(Xn, yn, 2, runs, Tg, torch.float64, dev))
        print(
            f"  repeat {rep + 1}/{args.repeats}: plain l4 {samples['plain4'][-1]:,.0f}, "
            f"batched l4 f32 {samples['b4_32'][-1]:,.0f}, f64 {samples['b4_64'][-1]:,.0f}, "
            f"Gram l2 f32 {samples['b2_32'][-1]:,.0f} run-it/s; "
            f"GEMM f32 {samples['gemm32'][-1] / 1e9:.1f} GFLOP/s",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in samples.items()}
    # ratios per repeat (same moment, same load), then their median
    ratio = lambda a, b: statistics.median(
        x / y for x, y in zip(samples[a], samples[b], strict=True)
    )
    gfrac = lambda a, g: statistics.median(
        x * flop_per_run_iter / y for x, y in zip(samples[a], samples[g], strict=True)
    )
    return {
        "data": source,
        "shape": [m, d],
        "runs": R,
        "threads": args.threads,
        "device": str(dev),
        "iters_l4": T,
        "iters_l2": Tg,
        "plain_iters_per_run": Tp,
        "repeats": args.repeats,
        "plain_loop_run_iters_per_s": med["plain4"],
        "plain_loop_l2_run_iters_per_s": med["plain2"],
        "batched_f32_run_iters_per_s": med["b4_32"],
        "batched_f64_run_iters_per_s": med["b4_64"],
        "gram_f32_run_iters_per_s": med["b2_32"],
        "gram_f64_run_iters_per_s": med["b2_64"],
        "gemm_f32_gflops": med["gemm32"] / 1e9,
        "gemm_f64_gflops": med["gemm64"] / 1e9,
        "speedup_vs_plain_loop": ratio("b4_32", "plain4"),
        "speedup_f64_vs_plain_loop": ratio("b4_64", "plain4"),
        "gemm_fraction": gfrac("b4_32", "gemm32"),
        "gemm_fraction_f64": gfrac("b4_64", "gemm64"),
        "gram_speedup_vs_plain_loop": ratio("b2_32", "plain2"),
        "gram_f64_speedup_vs_plain_loop": ratio("b2_64", "plain2"),
        "load_average": list(__import__("os").getloadavg()),
    }


def dtype_check(args) -> dict:
    """float32 (on ``--device``) vs float64 (CPU) curves on Ethanol l4: max |gap32 - gap64|
    / gap64 over logged points."""
    torch.set_num_threads(args.threads)
    Xn, yn, source = load_data()
    from depthaccel.losses import lp_optimum

    opt = lp_optimum(Xn, yn, 4)
    runs = [Run("gd", lr, depth=N) for N in (1, 2, 3) for lr in args.check_lrs]
    if args.check_adam:
        runs += [Run("adam", None, depth=N, convention="tf") for N in (1, 2, 3)]
    T = args.check_iters
    kw = {"optimum": opt, "log_points": 200, "log_scale": True}
    r64 = train(Xn, yn, 4, runs, T, dtype=torch.float64, **kw)
    r32 = train(Xn, yn, 4, runs, T, dtype=torch.float32, device=args.device, **kw)
    rows = []
    worst = 0.0
    for a, b in zip(r64, r32, strict=True):
        if a.diverged or b.diverged:
            rows.append(
                (a.run.label(), a.run.effective_lr, a.diverged, b.diverged, math.nan, math.nan)
            )
            continue
        rel = np.abs(b.gap - a.gap) / np.abs(a.gap)
        worst = max(worst, float(rel.max()))
        rows.append(
            (a.run.label(), a.run.effective_lr, False, False, float(rel.max()), float(a.final_gap))
        )
    for lab, lr, d64, d32, rel, fg in rows:
        print(
            f"  {lab:24s} lr {lr:g}: diverged {d64}/{d32}, max rel dev {rel:.2e}, final gap {fg:.3e}"
        )
    print(f"worst relative deviation of the float32 gap: {worst:.3e} over {T} iterations")
    return {
        "dtype_check_iters": T,
        "dtype_check_worst_rel_dev": worst,
        "data": source,
        "device": args.device,
    }


def search_shard() -> list[Run]:
    """The first sweep shard of fig3's coarse search at depths 1-3, seeds 0-2 (41 runs)."""
    from depthaccel.executors.shards import engine_group, split_runs
    from depthaccel.experiments.search import SearchPolicy
    from depthaccel.experiments.starts import FairStartConfig, fair_run

    cfg = FairStartConfig()
    runs = [
        fair_run(cfg, "gd", lr, depth=N, seed=s)
        for s in cfg.seeds
        for N in (1, 2, 3)
        for lr in SearchPolicy().grid()
    ]
    first = split_runs(runs, lambda r: engine_group(r, 128, 1))[0]
    return [runs[i] for i in first]


def _same(a, b) -> tuple[int, float]:
    """(runs whose results differ in any bit, largest relative gap difference)."""
    differ, worst = 0, 0.0
    for x, z in zip(a, b, strict=True):
        same = (
            np.array_equal(x.gap, z.gap, equal_nan=True)
            and x.first_hit == z.first_hit
            and x.diverged_at == z.diverged_at
        )
        differ += not same
        ok = ~np.isnan(z.gap)
        if ok.any():
            rel = np.abs(x.gap[ok] - z.gap[ok]) / np.abs(z.gap[ok])
            worst = max(worst, float(rel.max()))
    return differ, worst


def compaction(args) -> dict:
    """Compaction on (default) vs off, interleaved, on the search shard and the stable grid."""
    torch.set_num_threads(args.threads)
    Xn, yn, source = load_data()
    Xn = np.ascontiguousarray(Xn)  # as the sweep hands it to the engine
    T = args.compaction_iters
    kw = {"optimum": 0.0, "log_points": 1000, "thresholds": (1e-2,)}
    # CPU seconds of this process (what the full reproduction's core-hours count; less
    # sensitive than wall time to the other jobs of a shared machine), or wall time
    clock = time.perf_counter if args.wall else time.process_time
    out: dict = {
        "data": source,
        "threads": args.threads,
        "iters": T,
        "repeats": args.repeats,
        "clock": "wall" if args.wall else "process CPU time",
    }
    for name, runs in (("search_shard", search_shard()), ("stable_grid", grid_runs())):
        train(Xn, yn, 4, runs, 3, **kw)  # warm-up
        rate: dict[bool, list[float]] = {True: [], False: []}
        steady: list[float] = []
        results = {}
        survivors = None
        for rep in range(args.repeats):
            for on in (True, False) if rep % 2 == 0 else (False, True):  # alternate order
                t = clock()
                results[on] = train(Xn, yn, 4, runs, T, compact=on, **kw)
                rate[on].append(len(runs) * T / (clock() - t))
            if survivors is None:
                survivors = [r.run for r in results[False] if not r.diverged]
            # the steady state of a long call: an iteration of the survivors' program vs
            # one of all runs' (the uncompacted call's rate just measured)
            t = clock()
            if survivors and len(survivors) < len(runs):
                train(Xn, yn, 4, survivors, T, compact=False, **kw)
                steady.append(len(runs) * T / (clock() - t) / rate[False][-1])
            print(
                f"  {name} repeat {rep + 1}/{args.repeats}: compacted {rate[True][-1]:,.0f}, "
                f"not {rate[False][-1]:,.0f} run-it/s"
                + (f"; steady state {steady[-1]:.2f}x" if steady else ""),
                flush=True,
            )
        div = sorted(r.diverged_at for r in results[False] if r.diverged)
        differ, worst = _same(results[True], results[False])
        left = len(runs) - sum(d <= (T - 1) // 1000 * 1000 for d in div)
        out[name] = {
            "runs": len(runs),
            "diverged": len(div),
            "diverged_at": div,
            "runs_left_after_last_check": left,
            "compacted_run_iters_per_s": statistics.median(rate[True]),
            "uncompacted_run_iters_per_s": statistics.median(rate[False]),
            "speedup": statistics.median(
                a / b for a, b in zip(rate[True], rate[False], strict=True)
            ),
            "steady_state_speedup": statistics.median(steady) if steady else 1.0,
            "runs_not_bit_identical": differ,
            "max_rel_gap_difference": worst,
        }
    out["checkpoints"] = checkpoint_check(Xn, yn, kw)
    out["load_average"] = list(__import__("os").getloadavg())
    return out


def checkpoint_check(Xn, yn, kw, T: int = 2500, every: int = 500) -> dict:
    """The search shard with checkpoints every 500 iterations, with and without
    compaction: are the checkpoints byte-identical (elapsed time aside), and does an
    uncompacted checkpoint with frozen runs (t = 1500) resume to the uncompacted results?"""
    from depthaccel.sweep import dumps_state

    runs = search_shard()
    sa: list = []
    sb: list = []
    train(Xn, yn, 4, runs, T, checkpoint_every=every, checkpoint=sa.append, **kw)
    full = train(
        Xn, yn, 4, runs, T, compact=False, checkpoint_every=every, checkpoint=sb.append, **kw
    )
    same = [
        dumps_state({**a, "elapsed": 0.0}) == dumps_state({**b, "elapsed": 0.0})
        for a, b in zip(sa, sb, strict=True)
    ]
    old = sb[1500 // every - 1]
    part = train(Xn, yn, 4, runs, T, resume=old, **kw)
    differ, _ = _same(part, full)
    return {
        "iters": T,
        "checkpoint_iterations": [s["t"] for s in sa],
        "byte_identical": same,
        "frozen_in_t1500_checkpoint": int((old["diverged_at"] < 1500).sum()),
        "resumed_runs_not_bit_identical": differ,
    }


def print_compaction(out: dict) -> None:
    print(
        f"data: {out['data']}, l4, float64, {out['threads']} thread(s), T = {out['iters']}, "
        f"run-it per second of {out['clock']}"
    )
    for name in ("search_shard", "stable_grid"):
        r = out[name]
        print(
            f"{name}: {r['runs']} runs, {r['diverged']} diverged (at {r['diverged_at'][:12]}"
            f"{' ...' if r['diverged'] > 12 else ''}), {r['runs_left_after_last_check']} left"
        )
        print(
            f"  compacted {r['compacted_run_iters_per_s']:,.0f} run-it/s, not compacted "
            f"{r['uncompacted_run_iters_per_s']:,.0f} run-it/s: {r['speedup']:.2f}x (steady "
            f"state, the {r['runs'] - r['diverged']} survivors' program alone: "
            f"{r['steady_state_speedup']:.2f}x); results: "
            f"{r['runs_not_bit_identical']} runs not bit-identical, max rel gap diff "
            f"{r['max_rel_gap_difference']:.1e}"
        )
    c = out["checkpoints"]
    print(
        f"checkpoints every 500 of {c['iters']} iterations: byte-identical "
        f"{sum(c['byte_identical'])}/{len(c['byte_identical'])}; an uncompacted checkpoint "
        f"at t=1500 ({c['frozen_in_t1500_checkpoint']} frozen runs) resumed with compaction: "
        f"{c['resumed_runs_not_bit_identical']} runs not bit-identical"
    )
    print(f"load average {out['load_average']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--iters", type=int, default=300, help="batched l4 iterations (l2: 10x)")
    ap.add_argument("--plain-iters", type=int, default=200, help="plain-loop iterations per run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--dtype-check", action="store_true")
    ap.add_argument("--check-iters", type=int, default=100_000)
    ap.add_argument("--check-lrs", type=float, nargs="+", default=[1e-3, 2e-3])
    ap.add_argument(
        "--check-adam", action="store_true", help="add Adam (TF defaults) at depths 1-3"
    )
    ap.add_argument("--compaction", action="store_true", help="compaction on vs off")
    ap.add_argument("--compaction-iters", type=int, default=5000)
    ap.add_argument("--wall", action="store_true", help="--compaction: wall time, not CPU")
    args = ap.parse_args(argv)
    if args.compaction:
        out = compaction(args)
        print_compaction(out)
    elif args.dtype_check:
        out = dtype_check(args)
    else:
        out = measure(args)
        print(f"data: {out['data']} {out['shape']}, R = {R} runs, {args.threads} thread(s)")
        print(
            f"plain per-run loop (l4, float32):  {out['plain_loop_run_iters_per_s']:>12,.0f} run-it/s"
        )
        print(
            f"batched l4 float32:                {out['batched_f32_run_iters_per_s']:>12,.0f} run-it/s"
            f"  = {out['speedup_vs_plain_loop']:.1f}x plain, {100 * out['gemm_fraction']:.0f}% of GEMM ceiling"
            f" ({out['gemm_f32_gflops']:.1f} GFLOP/s)"
        )
        print(
            f"batched l4 float64:                {out['batched_f64_run_iters_per_s']:>12,.0f} run-it/s"
            f"  = {out['speedup_f64_vs_plain_loop']:.1f}x plain, {100 * out['gemm_fraction_f64']:.0f}% of float64 GEMM"
            f" ({out['gemm_f64_gflops']:.1f} GFLOP/s)"
        )
        print(
            f"plain per-run loop (l2, float32):  {out['plain_loop_l2_run_iters_per_s']:>12,.0f} run-it/s"
        )
        print(
            f"batched l2 Gram float32:           {out['gram_f32_run_iters_per_s']:>12,.0f} run-it/s"
            f"  = {out['gram_speedup_vs_plain_loop']:.1f}x plain"
        )
        print(
            f"batched l2 Gram float64:           {out['gram_f64_run_iters_per_s']:>12,.0f} run-it/s"
            f"  = {out['gram_f64_speedup_vs_plain_loop']:.1f}x plain"
        )
        print("goals: >= 15x plain and >= 50% of GEMM (l4), >= 100x plain (l2 Gram)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
