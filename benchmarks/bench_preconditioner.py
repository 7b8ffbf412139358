"""Time one EndToEndSGD step against torch.optim.SGD and against GD on an explicit deep factorisation.

For each weight shape k x d and depth N, all in one process (so the ratios compare like
with like, even on a loaded machine), the median over ``--repeats`` runs of:

- ``sgd``:  one ``torch.optim.SGD`` step on the k x d matrix (the plain baseline);
- ``e2e``:  one ``EndToEndSGD(depth=N)`` step on the same matrix (one SVD + Claim 1);
- ``deep``: one gradient-descent step on a balanced depth-N factorisation of the same
  matrix (hidden width ``min(k, d)``: the narrowest that can hold any k x d matrix, so
  the cheapest net with this end-to-end matrix): form ``W_e = W_N ... W_1``, backpropagate
  the same gradient ``G = dL/dW_e`` through the chain, and take the SGD step on every
  factor. By Theorem 1 this moves ``W_e`` as the ``e2e`` step does, to first order in lr.

The gradient G is fixed (a random matrix), so only the optimizer's own work is timed,
not a loss. Run ``python benchmarks/bench_preconditioner.py`` (``--quick`` for a tiny run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from depthaccel.nets import balanced_factors
from depthaccel.optim import EndToEndSGD

SHAPES = [(64, 64), (256, 256), (1024, 1024), (64, 1024), (1024, 64), (256, 1024)]
QUICK_SHAPES = [(16, 16), (8, 32)]
DEPTHS = [2, 3, 8]
LR = 1e-6  # small, so repeated steps leave the matrix (and its SVD's cost) unchanged


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(
    fns: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each function; the functions take turns (round robin), so a
    change in the machine's load hits them alike."""
    for fn in fns.values():
        fn()  # warm-up
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_one(
    k: int, d: int, depth: int, repeats: int, dtype: torch.dtype, device: torch.device
) -> dict[str, float]:
    g = torch.Generator().manual_seed(k * 10007 + d * 101 + depth)
    W0 = torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5
    G = (torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5).to(device, dtype)

    w_sgd = torch.nn.Parameter(W0.to(device, dtype))
    w_sgd.grad = G.clone()
    sgd = torch.optim.SGD([w_sgd], lr=LR)

    w_e2e = torch.nn.Parameter(W0.to(device, dtype))
    w_e2e.grad = G.clone()
    e2e = EndToEndSGD([w_e2e], lr=LR, depth=depth)

    factors = [
        torch.nn.Parameter(f.to(device, dtype)) for f in balanced_factors(W0, depth, min(k, d))
    ]
    deep = torch.optim.SGD(factors, lr=LR)

    def deep_step() -> None:
        deep.zero_grad(set_to_none=True)
        W = factors[0]
        for f in factors[1:]:
            W = f @ W
        W.backward(G)
        deep.step()

    return median_times({"sgd": sgd.step, "e2e": e2e.step, "deep": deep_step}, repeats, device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 3 repeats (seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per cell (default 7)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = args.repeats or (3 if args.quick else 7)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"# torch {torch.__version__}, {args.dtype}, device {device}, "
        f"{torch.get_num_threads()} threads, median of {repeats} runs; times in ms"
    )
    head = (
        f"| {'k x d':>11} | {'N':>2} | {'SGD':>9} | {'EndToEndSGD':>11} | "
        f"{'deep GD':>9} | {'E2E / SGD':>9} | {'deep / E2E':>10} |"
    )
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for k, d in shapes:
        for depth in DEPTHS:
            t = bench_one(k, d, depth, repeats, dtype, device)
            ms = {name: 1e3 * v for name, v in t.items()}
            print(
                f"| {f'{k} x {d}':>11} | {depth:>2} | {ms['sgd']:>9.3f} | {ms['e2e']:>11.3f} | "
                f"{ms['deep']:>9.3f} | {t['e2e'] / t['sgd']:>9.1f} | "
                f"{t['deep'] / t['e2e']:>10.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
