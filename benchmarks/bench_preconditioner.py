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

``--every`` times amortised preconditioning (``EndToEndSGD(precondition_every=K)``) at
512x512, 1024x1024, 512x3136 (the MNIST tutorial's fc1) and 3136x512, depth 2: the exact step
(K = 1), a *refresh* step (SVD + direction) and a *cached* step (the direction from the
cached SVD), each the median of ``--repeats`` single steps; the mean step of K = 10 and
K = 100 is ``(refresh + (K - 1) * cached) / K`` (every K-th step refreshes), and a block
of 10 consecutive K = 10 steps is also timed directly as a check.

With ``--every`` also: the kernels of a refresh and of a cached step, the previous ones
(``thresholded_svd`` + ``claim1_parts``; ``direction_from_svd``, the exact path's
kernels) against the amortised ones now (``amortised_svd`` + ``amortised_parts``;
``amortised_direction``), at the same shapes, depths 2 and 3, interleaved.

``--mnist`` times one training step (forward + backward + optimizer + reading the loss)
of the MNIST tutorial net, batch 64, float32: the original net with SGD + momentum; the
overparameterized net (dense weights products of two) with L2 on the factors and on the
product; the original net with ``EndToEndSGD(depth=2, momentum=0.9)`` on its dense
layers for K = 1, 10, 100 (K = 10 and 100 from refresh and cached steps as above), and
for K = 10, 100 with ``precondition_dtype=torch.bfloat16`` on the dense layers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from depthaccel.nets import balanced_factors
from depthaccel.optim import EndToEndSGD
from depthaccel.preconditioner import (
    amortised_direction,
    amortised_parts,
    amortised_svd,
    claim1_parts,
    direction_from_svd,
    thresholded_svd,
)

SHAPES = [(64, 64), (256, 256), (1024, 1024), (64, 1024), (1024, 64), (256, 1024)]
QUICK_SHAPES = [(16, 16), (8, 32)]
DEPTHS = [2, 3, 8]
EVERY_SHAPES = [(512, 512), (1024, 1024), (512, 3136), (3136, 512)]
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


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _set_counters(opt: EndToEndSGD, value: int) -> None:
    """Make the next step a refresh (``value=0``) or a cached step (``value=1``)."""
    for st in opt.state.values():
        if "precond_step" in st:
            st["precond_step"] = value


def amortised_times(
    step: Callable[[], None],
    opt: EndToEndSGD,
    exact_step: Callable[[], None],
    repeats: int,
    device: torch.device,
    others: dict[str, Callable[[], None]] | None = None,
    variants: dict[str, tuple[Callable[[], None], EndToEndSGD]] | None = None,
) -> dict[str, float]:
    """Median seconds of an exact step, a refresh step, a cached step and each of
    ``others`` (all taking turns, so load changes hit them alike), a directly timed block
    of 10 steps of K = 10 (per step), and the derived mean step of K = 10 and K = 100.
    ``opt`` has a huge ``precondition_every``; its counters decide. Each of ``variants``
    (another amortised optimizer) gets ``"<name> refresh"``, ``"<name> cached"``,
    ``"<name> K10"`` and ``"<name> K100"`` the same way (no block)."""
    others = others or {}
    amortised = {"": (step, opt)} | {f"{name} ": v for name, v in (variants or {}).items()}
    for fn in (exact_step, *others.values(), *(f for f, _ in amortised.values())):
        fn()  # warm-up; creates the caches
    t: dict[str, list[float]] = {"exact": [], "block10": []}
    t |= {name: [] for name in others}
    t |= {f"{name}{kind}": [] for name in amortised for kind in ("refresh", "cached")}
    for _ in range(repeats):
        for name, fn in others.items():
            t[name].append(_timed(fn, device))
        t["exact"].append(_timed(exact_step, device))
        for name, (fn, o) in amortised.items():
            _set_counters(o, 0)
            t[f"{name}refresh"].append(_timed(fn, device))
            _set_counters(o, 1)
            t[f"{name}cached"].append(_timed(fn, device))
    for g in opt.param_groups:
        g["precondition_every"] = 10
    for _ in range(max(1, repeats // 3)):
        _set_counters(opt, 0)
        t["block10"].append(_timed(lambda: [step() for _ in range(10)], device) / 10)
    out = {k: statistics.median(v) for k, v in t.items()}
    for name in amortised:
        for K in (10, 100):
            out[f"{name}K{K}"] = (out[f"{name}refresh"] + (K - 1) * out[f"{name}cached"]) / K
    return out


def bench_every(
    k: int, d: int, depth: int, repeats: int, dtype: torch.dtype, device: torch.device
) -> dict[str, float]:
    g = torch.Generator().manual_seed(k * 7 + d)
    W0 = torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5
    G = (torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5).to(device, dtype)
    ws = [torch.nn.Parameter(W0.to(device, dtype)) for _ in range(3)]
    for w in ws:
        w.grad = G.clone()
    sgd = torch.optim.SGD([ws[0]], lr=LR)
    exact = EndToEndSGD([ws[1]], lr=LR, depth=depth)
    amort = EndToEndSGD([ws[2]], lr=LR, depth=depth, precondition_every=10**9)
    return amortised_times(amort.step, amort, exact.step, repeats, device, {"sgd": sgd.step})


def print_every_table(shapes: list[tuple[int, int]], repeats: int, dtype, device) -> None:
    print("\n## precondition_every (depth 2), times in ms\n")
    head = (
        "|       k x d |   SGD | K=1 (exact) | refresh | cached | K=10 | K=10 block | K=100 "
        "| K=1 / K=10 | K=1 / K=100 |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for k, d in shapes:
        t = bench_every(k, d, 2, repeats, dtype, device)
        ms = {n: 1e3 * v for n, v in t.items()}
        print(
            f"| {f'{k} x {d}':>11} | {ms['sgd']:>5.2f} | {ms['exact']:>11.1f} | "
            f"{ms['refresh']:>7.1f} | {ms['cached']:>6.1f} | {ms['K10']:>4.1f} | "
            f"{ms['block10']:>10.1f} | {ms['K100']:>5.1f} | {t['exact'] / t['K10']:>10.1f} | "
            f"{t['exact'] / t['K100']:>11.1f} |",
            flush=True,
        )


def bench_kernels(
    k: int, d: int, depth: int, repeats: int, dtype: torch.dtype, device: torch.device
) -> dict[str, float]:
    """Median seconds of the previous and the present refresh and cached-step kernels."""
    g = torch.Generator().manual_seed(k * 7 + d)
    W = (torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5).to(device, dtype)
    G = (torch.randn(k, d, generator=g, dtype=torch.float64) / d**0.5).to(device, dtype)
    old_svd, new_svd = thresholded_svd(W), amortised_svd(W)[:3]
    old_parts, new_parts = claim1_parts(*old_svd, depth), amortised_parts(*new_svd, depth)
    fns = {
        "refresh before": lambda: claim1_parts(*thresholded_svd(W), depth),
        "refresh now": lambda: amortised_parts(*amortised_svd(W)[:3], depth),
        "cached before": lambda: direction_from_svd(*old_svd, G, depth, parts=old_parts),
        "cached now": lambda: amortised_direction(*new_svd, G, depth, parts=new_parts),
    }
    return median_times(fns, repeats, device) | {"gram": float(amortised_svd(W)[3])}


def print_kernel_table(shapes: list[tuple[int, int]], repeats: int, dtype, device) -> None:
    print("\n## refresh and cached-step kernels, before vs now, times in ms\n")
    head = (
        "|       k x d | N | route | refresh before | refresh now | ratio "
        "| cached before | cached now | ratio |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for k, d in shapes:
        for depth in (2, 3):
            t = bench_kernels(k, d, depth, repeats, dtype, device)
            ms = {n: 1e3 * v for n, v in t.items()}
            route = "Gram" if t["gram"] else "SVD"
            print(
                f"| {f'{k} x {d}':>11} | {depth} | {route:>5} | {ms['refresh before']:>14.1f} | "
                f"{ms['refresh now']:>11.1f} | {t['refresh before'] / t['refresh now']:>5.1f} | "
                f"{ms['cached before']:>13.1f} | {ms['cached now']:>10.1f} | "
                f"{t['cached before'] / t['cached now']:>5.2f} |",
                flush=True,
            )


def bench_mnist(repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per training step of the MNIST tutorial net, per configuration."""
    from torch.nn import functional as F

    from depthaccel.experiments.mnist_e2e import e2e_optimizer
    from depthaccel.models import mnist_tutorial as mt

    seed = 66478
    sched = mt.Schedule(steps=1, train_size=55000)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 28, 28, generator=g) - 0.5).to(device)
    y = torch.randint(0, 10, (64,), generator=g).to(device)

    def stepper(net: torch.nn.Module, opt: torch.optim.Optimizer, l2_on: str):
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y) + sched.l2_weight * mt.l2_penalty(net, l2_on)
            loss.backward()
            opt.step()
            loss.item()

        return step

    def sgd(net: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    kw = dict(channels_last=True, device=device)
    fns = {}
    net = mt.tutorial_net(seed, **kw)
    fns["original"] = stepper(net, sgd(net), "factors")
    for l2 in ("factors", "product"):
        net, _ = mt.overparameterized_tutorial_net(seed, depth=2, **kw)
        fns[f"overparam. (L2 on {l2})"] = stepper(net, sgd(net), l2)
    net_exact, net_amort = mt.tutorial_net(seed, **kw), mt.tutorial_net(seed, **kw)
    net_bf16 = mt.tutorial_net(seed, **kw)
    opt_exact = e2e_optimizer(net_exact, sched, depth=2, precondition_every=1)
    opt_amort = e2e_optimizer(net_amort, sched, depth=2, precondition_every=10**9)
    opt_bf16 = e2e_optimizer(net_bf16, sched, depth=2, precondition_every=10**9)
    opt_bf16.param_groups[0]["precondition_dtype"] = torch.bfloat16  # the dense layers
    for opt in (opt_exact, opt_amort, opt_bf16):
        for grp in opt.param_groups:
            grp["lr"] = 1e-4
    t = amortised_times(
        stepper(net_amort, opt_amort, "factors"),
        opt_amort,
        stepper(net_exact, opt_exact, "factors"),
        repeats,
        device,
        fns,
        {"bf16": (stepper(net_bf16, opt_bf16, "factors"), opt_bf16)},
    )
    return {k if k in fns else f"e2e {k}": v for k, v in t.items()}


def print_mnist_table(repeats: int, device: torch.device) -> None:
    t = bench_mnist(repeats, device)
    print("\n## one MNIST tutorial training step (batch 64, fwd + bwd + opt), times in ms\n")
    rows = [
        ("original, SGD + momentum", t["original"]),
        ("overparameterized, L2 on factors, SGD + momentum", t["overparam. (L2 on factors)"]),
        ("overparameterized, L2 on product, SGD + momentum", t["overparam. (L2 on product)"]),
        ("original + EndToEndSGD(depth=2), K=1 (exact)", t["e2e exact"]),
        ("original + EndToEndSGD(depth=2), refresh step", t["e2e refresh"]),
        ("original + EndToEndSGD(depth=2), cached step", t["e2e cached"]),
        ("original + EndToEndSGD(depth=2), K=10 (mean step)", t["e2e K10"]),
        ("original + EndToEndSGD(depth=2), K=10, block of 10 measured", t["e2e block10"]),
        ("original + EndToEndSGD(depth=2), K=100 (mean step)", t["e2e K100"]),
        ("... precondition_dtype=bfloat16, refresh step", t["e2e bf16 refresh"]),
        ("... precondition_dtype=bfloat16, cached step", t["e2e bf16 cached"]),
        ("... precondition_dtype=bfloat16, K=10 (mean step)", t["e2e bf16 K10"]),
        ("... precondition_dtype=bfloat16, K=100 (mean step)", t["e2e bf16 K100"]),
    ]
    print("| configuration | ms / step | / original |")
    print("|---|---|---|")
    for name, v in rows:
        print(f"| {name} | {1e3 * v:.1f} | {v / t['original']:.2f} |", flush=True)
    over = min(t["overparam. (L2 on factors)"], t["overparam. (L2 on product)"])
    print(
        f"\ngoal (K=10 e2e step <= the overparameterized net's step): e2e K=10 "
        f"{1e3 * t['e2e K10']:.1f} ms vs overparam. {1e3 * over:.1f} (L2 on factors) / "
        f"{1e3 * t['overparam. (L2 on product)']:.1f} ms (L2 on product); with "
        f"precondition_dtype=bfloat16 {1e3 * t['e2e bf16 K10']:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 3 repeats (seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per cell (default 7)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--every", action="store_true", help="only the precondition_every table (see above)"
    )
    ap.add_argument("--mnist", action="store_true", help="only the MNIST training-step table")
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
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
    if args.every or args.mnist:
        if args.every:
            every_shapes = QUICK_SHAPES if args.quick else EVERY_SHAPES
            print_every_table(every_shapes, repeats, dtype, device)
            print_kernel_table(every_shapes, repeats, dtype, device)
        if args.mnist:
            print_mnist_table(repeats, device)
        return 0
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
