"""Scale-out: one process (1 thread) vs a local Ray cluster with 2 workers, same sweep.

Workload: the fig3-style l4 grid on Ethanol (2565 x 128, standardised; a random problem
of the same shape when the data is missing): R = 64 gradient-descent runs on width-1
nets of depths 1, 2, 3 over a log-spaced learning-rate grid (bench_train's grid: none
diverges, every row does useful work), float64 (the experiments' dtype), L* given,
``iters`` iterations at the trainer's full rate (losses computed every iteration, 1000
logged points), through ``depthaccel.sweep.sweep`` into a fresh results store each time
(store writes and checkpoints every ``iters // 4`` iterations included):

* local: ``executor=None`` (the in-process path: one batch of 64 runs), 1 torch thread;
* ray: ``RayExecutor(num_cpus=2)``: two shards of 32 runs on two worker processes, each
  with 1 torch thread; the driver only receives events and writes the store.

The two take turns (local, ray, local, ray, ...; ``--repeats`` each, after one warm-up
of each that is not counted: the Ray workers import torch on their first task), so a
change of load on the shared machine hits both alike; reported: the medians of
run-iterations per second and the median of the per-turn ratios. The speed-up on 2
cores can be at most ~2x, and only when both cores are free: each turn also measures
the machine's *parallel capacity*, the throughput of two plain processes running the
same float64 GEMM loop at once over that of one (no Ray, no depthaccel; 2.0 on an
idle 2-core machine), and ``ray_efficiency`` = speed-up / capacity says how much of
what the machine offered Ray used. The load average before and after is stored too.

Usage:
    python benchmarks/bench_scale.py [--iters T] [--repeats K] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from depthaccel.losses import lp_optimum
from depthaccel.sweep import sweep
from depthaccel.train import Run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import load_data  # noqa: E402 - the same data as bench_train, one loader

R = 64


def grid_runs() -> list[Run]:
    lrs = np.geomspace(1e-5, 1e-3, 22)  # all stable: no frozen rows
    return [Run("gd", float(lr), depth=N) for N in (1, 2, 3) for lr in lrs][:R]


def timed_sweep(X, y, opt, runs, iters, executor) -> float:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = sweep(
            X, y, 4, runs, iters, store=Path(d) / "s.sqlite", optimum=opt,
            checkpoint_every=max(1, iters // 4), executor=executor,
        )  # fmt: skip
        took = time.perf_counter() - t
    assert res.computed == len(runs) and not any(r.diverged for r in res.results)
    return took


_GEMM_LOOP = """
import sys, time, torch
torch.set_num_threads(1)
A = torch.randn(2565, 128, dtype=torch.float64)
B = torch.randn(128, 32, dtype=torch.float64)
for _ in range(20):
    A @ B
t = time.perf_counter()
for _ in range(int(sys.argv[1])):
    A @ B
print(time.perf_counter() - t)
"""


def parallel_capacity(calls: int) -> float:
    """Throughput of two concurrent one-thread GEMM processes over one such process
    (timed inside the processes, so their start-up does not count)."""
    import subprocess

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", _GEMM_LOOP, str(calls)], stdout=subprocess.PIPE, text=True
        )

    solo = start()
    t1 = float(solo.communicate()[0])
    pair = [start(), start()]
    t2 = max(float(p.communicate()[0]) for p in pair)
    return 2 * t1 / t2


def measure(args) -> dict:
    from depthaccel.executors.ray_executor import RayExecutor

    torch.set_num_threads(1)
    X, y, source = load_data()
    opt = lp_optimum(X, y, 4).loss
    runs = grid_runs()
    T = args.iters
    load_before = os.getloadavg()
    ex = RayExecutor(num_cpus=2, threads=1, log=lambda m: print(m, file=sys.stderr))
    try:
        assert ex.workers == 2
        timed_sweep(X, y, opt, runs, max(10, T // 20), None)  # warm-up
        timed_sweep(X, y, opt, runs, max(10, T // 20), ex)  # warm-up: workers import torch
        local, ray_, cap = [], [], []
        for rep in range(args.repeats):
            local.append(R * T / timed_sweep(X, y, opt, runs, T, None))
            ray_.append(R * T / timed_sweep(X, y, opt, runs, T, ex))
            cap.append(parallel_capacity(args.capacity_calls))
            print(
                f"  turn {rep + 1}/{args.repeats}: local {local[-1]:,.0f} run-it/s, "
                f"ray (2 workers) {ray_[-1]:,.0f} run-it/s, ratio {ray_[-1] / local[-1]:.2f}; "
                f"machine's parallel capacity {cap[-1]:.2f}",
                flush=True,
            )
    finally:
        ex.close()
    load_after = os.getloadavg()
    return {
        "data": source,
        "shape": list(X.shape),
        "runs": R,
        "iters": T,
        "repeats": args.repeats,
        "dtype": "float64",
        "local_run_it_per_s": statistics.median(local),
        "ray_run_it_per_s": statistics.median(ray_),
        "ray_speedup_2_workers": statistics.median(b / a for a, b in zip(local, ray_, strict=True)),
        "parallel_capacity_2_procs": statistics.median(cap),
        "ray_efficiency": statistics.median(
            b / a / c for a, b, c in zip(local, ray_, cap, strict=True)
        ),
        "local_samples": local,
        "ray_samples": ray_,
        "capacity_samples": cap,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=2000, help="iterations per sweep (default 2000)")
    ap.add_argument("--repeats", type=int, default=5, help="turns of each (default 5)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument(
        "--capacity-calls", type=int, default=1500, help="GEMMs per capacity probe (~1 s)"
    )
    args = ap.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("bench_scale needs Ray: pip install 'depthaccel[ray]'", file=sys.stderr)
        return 2
    out = measure(args)
    print(f"data: {out['data']} {out['shape']}, R = {R} runs, {out['iters']} iterations, float64")
    print(f"local, 1 process x 1 thread:  {out['local_run_it_per_s']:>10,.0f} run-it/s")
    print(
        f"ray, 2 workers x 1 thread:    {out['ray_run_it_per_s']:>10,.0f} run-it/s"
        f"  = {out['ray_speedup_2_workers']:.2f}x (goal on 2 cores: >= 1.7x)"
    )
    print(
        f"parallel capacity of the machine meanwhile (2 plain processes / 1): "
        f"{out['parallel_capacity_2_procs']:.2f}x; Ray used {100 * out['ray_efficiency']:.0f}% of it"
    )
    print(
        "load average (1/5/15 min) before: "
        + " ".join(f"{x:.1f}" for x in out["load_average_before"])
        + ", after: "
        + " ".join(f"{x:.1f}" for x in out["load_average_after"])
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
