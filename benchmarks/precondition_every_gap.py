"""How far amortised preconditioning (``EndToEndSGD(precondition_every=K)``) is from exact Eq. 10.

With ``precondition_every=K`` the SVD of each weight is recomputed every K steps and the
steps in between apply the operator of the cached matrix to the current gradient (see
``EndToEndSGD``). This script trains the same problem with K = 1 (exact) and larger K,
all in one process, and prints the gap:

1. the paper's l4 regression on the Ethanol task with ``nn.Linear(128, 1)`` (one output:
   Eq. 12, no SVD, so K has no effect -- checked, the trajectories must be identical);
2. an l4 regression with k > 1 outputs: the Ethanol inputs (2565 x 128, standardised)
   with k generated targets ``Y = X A^T + 0.1 * noise`` (A ~ N(0, 1/128), seed 0), full
   batch, ``EndToEndSGD(depth=N)`` without momentum from a small init;
3. (``--mnist-steps``) the MNIST tutorial net with ``EndToEndSGD(depth=2, momentum=0.9)``
   on its dense layers, the tutorial's schedule (see the ``mnist-e2e`` experiment), the
   same batches and dropout masks for every K.

For 2 it reports the loss at checkpoints and ``||W_K - W_1|| / ||W_1 - W_0||`` (how far
the amortised weight is from the exact one, relative to how far the exact one moved);
for 3 the moving-average batch loss and the same relative distance of the dense weights.
``--bf16`` adds rows to 2: K > 1 with ``precondition_dtype=torch.bfloat16`` (the cache and
the direction's products in bfloat16; the weights stay float64).

Run: ``DEPTHACCEL_DATA_DIR=... python benchmarks/precondition_every_gap.py --threads 1``.
"""

from __future__ import annotations

import argparse
import time

import torch

from depthaccel.optim import EndToEndSGD


def l4_loss(W: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_j (x_i W^T - y_i)_j^4 / 4`` (the paper's l4 loss per output)."""
    return ((X @ W.T - Y) ** 4).sum(1).mean() / 4


def train_l4(
    X: torch.Tensor,
    Y: torch.Tensor,
    W0: torch.Tensor,
    *,
    depth: float,
    lr: float,
    iters: int,
    every: int,
    record: list[int],
    cache_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[int, float]]:
    W = torch.nn.Parameter(W0.clone())
    opt = EndToEndSGD(
        [W], lr=lr, depth=depth, precondition_every=every, precondition_dtype=cache_dtype
    )
    losses = {}
    for t in range(1, iters + 1):
        opt.zero_grad()
        loss = l4_loss(W, X, Y)
        loss.backward()
        opt.step()
        if t in record:
            losses[t] = l4_loss(W.detach(), X, Y).item()
    return W.detach(), losses


def part_single_output(X: torch.Tensor, y: torch.Tensor, ks: list[int], iters: int) -> None:
    Y = y.reshape(-1, 1)
    W0 = torch.full((1, X.shape[1]), 1e-3, dtype=X.dtype)
    ref, _ = train_l4(X, Y, W0, depth=3, lr=1e-3, iters=iters, every=1, record=[])
    for k in ks[1:]:
        W, _ = train_l4(X, Y, W0, depth=3, lr=1e-3, iters=iters, every=k, record=[])
        print(
            f"- Linear(128, 1), depth 3, {iters} its: K={k} identical to K=1: {torch.equal(W, ref)}"
        )


def part_multi_output(
    X: torch.Tensor,
    ks: list[int],
    depths: list[float],
    k_out: int,
    iters: int,
    lr: float,
    bf16: bool = False,
) -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(k_out, X.shape[1], generator=g, dtype=X.dtype) / X.shape[1] ** 0.5
    Y = X @ A.T + 0.1 * torch.randn(X.shape[0], k_out, generator=g, dtype=X.dtype)
    W0 = 0.05 * torch.randn(k_out, X.shape[1], generator=g, dtype=X.dtype) / X.shape[1] ** 0.5
    record = sorted({max(1, iters // 100), iters // 10, iters // 2, iters})
    print(
        f"\nl4 regression, Ethanol inputs, {k_out} generated outputs, W0 = 0.05 N(0, 1/128), "
        f"lr {lr}, {iters} full-batch iterations, initial loss {l4_loss(W0, X, Y).item():.4g}\n"
    )
    head = "| N | K | " + " | ".join(f"loss @ {t}" for t in record) + " | rel. dist. to K=1 | s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    runs = [(k, None) for k in ks] + [(k, torch.bfloat16) for k in ks[1:] if bf16]
    for depth in depths:
        ref = None
        for k, cache in runs:
            t0 = time.perf_counter()
            W, losses = train_l4(
                X, Y, W0, depth=depth, lr=lr, iters=iters, every=k, record=record, cache_dtype=cache
            )
            sec = time.perf_counter() - t0
            if ref is None:
                ref = W
                dist = 0.0
            else:
                dist = (torch.linalg.norm(W - ref) / torch.linalg.norm(ref - W0)).item()
            cells = " | ".join(f"{losses[t]:.4g}" for t in record)
            name = f"{k}" if cache is None else f"{k}, bf16"
            print(f"| {depth:g} | {name} | {cells} | {dist:.2e} | {sec:.1f} |", flush=True)


def part_mnist(ks: list[int], steps: int, data_dir: str | None) -> None:
    from depthaccel.experiments import mnist_e2e

    print(f"\nMNIST tutorial net, EndToEndSGD(depth=2, momentum=0.9) on fc1/fc2, {steps} steps\n")
    print(mnist_e2e.precondition_every_table(ks, steps, data_dir=data_dir))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--data-dir", default=None, help="data folder (default: depthaccel's)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--depths", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--outputs", type=int, default=10, help="outputs of the generated task")
    ap.add_argument("--iters", type=int, default=2000, help="l4 iterations")
    ap.add_argument("--lr", type=float, default=1e-2, help="l4 learning rate")
    ap.add_argument("--mnist-steps", type=int, default=0, help="MNIST steps (0: skip)")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="l4 part: also K > 1 with precondition_dtype=torch.bfloat16",
    )
    args = ap.parse_args(argv)
    if args.ks[0] != 1:
        ap.error("--ks must start with 1 (the exact rule, the reference)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from depthaccel.data import load_ethanol

    data = load_ethanol(args.data_dir)
    X = torch.as_tensor(data.X, dtype=torch.float64)
    y = torch.as_tensor(data.y, dtype=torch.float64)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, float64 (l4)")
    part_single_output(X, y, args.ks, min(args.iters, 500))
    part_multi_output(X, args.ks, args.depths, args.outputs, args.iters, args.lr, args.bf16)
    if args.mnist_steps:
        part_mnist(args.ks, args.mnist_steps, args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
