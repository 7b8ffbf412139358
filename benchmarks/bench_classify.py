"""Speed of the batched trainer on a classification grid (softmax cross-entropy).

A 10-class, 64-feature table (synthetic: ``--rows`` rows, 2000 by default, of Gaussian
class clusters, z-scored),
a 20-rate learning-rate grid, ``SoftmaxCE(10, l2=1e-3)``:

- **batched GD**: the 20 depth-1 GD runs as one ``depthaccel.train.train`` call (loss,
  first hits and divergence checked at every iteration, as ``compare`` runs them);
- **plain loop**: the same 20 runs one after the other, each a plain torch loop of
  ``W -= lr * grad`` with the gradient written out by hand and the loss evaluated every
  iteration (the strongest per-run baseline: no autograd, no optimizer object);
- **torch.optim loop**: the same 20 runs as most users write them: a bias-free
  ``nn.Linear``, ``F.cross_entropy`` plus the L2 term, ``backward()`` and
  ``torch.optim.SGD``, the loss read every iteration;
- **batched e2e**: the Eq. 10 scheme (depth 2) on the 10 x 64 matrix, the same 20 rates,
  one batched SVD per run per step: its cost per run-iteration as a ratio to batched GD's;
- two floors, for what batching could reach at best: **kernel only**, the batched loss
  and gradient (``ce_loss_grad`` on the 20 runs' stacked matrices) and the update, with no
  bookkeeping; **GEMMs only**, the two GEMMs of that step (logits, gradient) and nothing
  else: arithmetic every GD program has to do. The plain loop's time over a floor's is the
  largest speed-up over the plain loop that any batched program could show.

Each is timed ``--repeats`` times, taking turns (so load changes hit them alike); the
median is reported, in run-iterations per second.

    .venv/bin/python benchmarks/bench_classify.py            # T = 300 (about a minute)
    .venv/bin/python benchmarks/bench_classify.py --quick    # T = 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from depthaccel.losses import SoftmaxCE, ce_loss_grad
from depthaccel.train import Run, train
from depthaccel.train.grid import log_grid


def table(m: int = 2000, d: int = 64, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, m)
    X = rng.standard_normal((k, d))[y] * 0.6 + rng.standard_normal((m, d))
    return (X - X.mean(0)) / X.std(0), y


def plain_loop(X: torch.Tensor, y: torch.Tensor, lam: float, lrs, T: int) -> list[float]:
    """Each run on its own: the textbook loop, no batching."""
    m = X.shape[0]
    k = int(y.max()) + 1
    onehot = torch.nn.functional.one_hot(y, k).to(X.dtype)
    finals = []
    for lr in lrs:
        W = torch.zeros(k, X.shape[1], dtype=X.dtype)
        for _ in range(T + 1):
            Z = X @ W.T  # (m, k)
            lse = torch.logsumexp(Z, dim=1)
            loss = (lse - Z.gather(1, y[:, None])[:, 0]).mean() + 0.5 * lam * (W * W).sum()
            float(loss)  # the loss of every iteration, as the batched trainer checks it
            G = (torch.softmax(Z, dim=1) - onehot).T @ X / m + lam * W
            W = W - lr * G
        finals.append(float(loss))
    return finals


def torch_optim_loop(X: torch.Tensor, y: torch.Tensor, lam: float, lrs, T: int) -> list[float]:
    """Each run on its own, with autograd and torch.optim (the usual PyTorch loop)."""
    k = int(y.max()) + 1
    finals = []
    for lr in lrs:
        lin = torch.nn.Linear(X.shape[1], k, bias=False, dtype=X.dtype)
        torch.nn.init.zeros_(lin.weight)
        opt = torch.optim.SGD(lin.parameters(), lr=lr)
        for t in range(T + 1):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(X), y)
            loss = loss + 0.5 * lam * lin.weight.square().sum()
            value = float(loss.detach())
            if t < T:
                loss.backward()
                opt.step()
        finals.append(value)
    return finals


def kernel_only(X: torch.Tensor, y: torch.Tensor, lam: float, lrs, T: int) -> None:
    """The batched step with nothing around it: loss, gradient and update of all runs."""
    k = int(y.max()) + 1
    W = torch.zeros(len(lrs), k, X.shape[1], dtype=X.dtype)
    G = torch.empty_like(W)
    rate = -torch.tensor(lrs, dtype=X.dtype).view(-1, 1, 1)
    for t in range(T + 1):
        loss, _ = ce_loss_grad(W, X, y, lam, out=G)
        float(loss[0])
        if t < T:
            W.addcmul_(rate, G)


def gemms_only(X: torch.Tensor, y: torch.Tensor, lrs, T: int) -> None:
    """Only the two GEMMs of each batched step: logits (R k x m) and gradient (R k x d)."""
    k = int(y.max()) + 1
    W = torch.zeros(len(lrs) * k, X.shape[1], dtype=X.dtype)
    Z = torch.empty(len(lrs) * k, X.shape[0], dtype=X.dtype)
    G = torch.empty_like(W)
    for _ in range(T + 1):
        torch.mm(W, X.T, out=Z)
        torch.mm(Z, X, out=G)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=2000, help="rows of the table (default 2000)")
    ap.add_argument("--quick", action="store_true", help="T = 30, one repeat")
    args = ap.parse_args()
    T = 30 if args.quick else args.iters
    reps = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    X, y = table(m=args.rows)
    lam = 1e-3
    ce = SoftmaxCE(10, lam)
    lrs = log_grid(1e-3, 10.0, 5)[:20]
    assert len(lrs) == 20, lrs
    gd = [Run("gd", lr, init_scale=0.0) for lr in lrs]
    e2e = [Run("e2e", lr, depth=2, hidden=10, init_scale=1e-3) for lr in lrs]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    names = [
        "batched GD",
        "plain loop",
        "torch.optim loop",
        "batched e2e",
        "kernel only",
        "GEMMs only",
    ]
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(reps):
        t0 = time.perf_counter()
        res = train(X, y.astype(float), ce, gd, T, optimum=0.0, log_points=T + 1)
        times["batched GD"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        finals = plain_loop(Xt, yt, lam, lrs, T)
        times["plain loop"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        finals_optim = torch_optim_loop(Xt, yt, lam, lrs, T)
        times["torch.optim loop"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        train(X, y.astype(float), ce, e2e, T, optimum=0.0, log_points=T + 1)
        times["batched e2e"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kernel_only(Xt, yt, lam, lrs, T)
        times["kernel only"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gemms_only(Xt, yt, lrs, T)
        times["GEMMs only"].append(time.perf_counter() - t0)
    # the two GD programs compute the same runs (W = 0 start)
    ok = [r for r in res if not r.diverged]
    same = max(
        abs(r.final_gap - f) / f
        for r, *fs in zip(res, finals, finals_optim, strict=True)
        for f in fs
        if not r.diverged
    )
    n = len(lrs) * T
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"10 classes x 64 features, {args.rows} rows, 20 rates (1e-3..10), T = {T}, "
        f"{args.threads} thread(s), median of {reps}; {len(ok)} of 20 GD runs converge; "
        f"batched vs the loops' final losses agree to {same:.1e} (relative)"
    )
    print(f"{'program':<18} {'seconds':>9} {'run-iters/s':>12}")
    for name, t in med.items():
        print(f"{name:<18} {t:9.3f} {n / t:12.0f}")
    for base in ("plain loop", "torch.optim loop"):
        print(f"batched GD vs {base}: {med[base] / med['batched GD']:.1f}x faster")
    print(f"e2e cost per run-iteration / GD's: {med['batched e2e'] / med['batched GD']:.1f}x")
    for floor in ("kernel only", "GEMMs only"):
        print(
            f"largest speed-up over the plain loop with {floor}: "
            f"{med['plain loop'] / med[floor]:.1f}x"
        )


if __name__ == "__main__":
    main()
