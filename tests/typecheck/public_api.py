"""A user's script over depthaccel's public API, checked with ``mypy --strict`` by
tests/test_packaging.py (it is type-checked, not run)."""

from __future__ import annotations

import numpy as np
import torch
from typing_extensions import assert_type

import depthaccel
from depthaccel import (
    DeepLinear,
    EndToEndSGD,
    LpOptimum,
    Run,
    RunResult,
    balancedness,
    claim1_eigenvalues,
    collapse,
    end_to_end_direction,
    grid_search,
    lp_hessian,
    lp_loss,
    lp_optimum,
    overparameterize,
    preconditioner_matrix,
    single_output_direction,
    stability_edge,
)


def train_one(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    opt = EndToEndSGD(model.parameters(), lr=0.01, depth=2, momentum=0.9, foreach=False)
    tensor_lr = EndToEndSGD(model.parameters(), lr=torch.tensor(0.01), depth=1.5)
    assert isinstance(tensor_lr, torch.optim.Optimizer)

    def closure() -> float:
        opt.zero_grad()
        loss = lp_loss(model(x), y, 4.0)
        torch.autograd.backward(loss)
        return float(loss)

    assert_type(opt.step(closure), float)
    opt.zero_grad()
    torch.autograd.backward(lp_loss(model(x), y, 2.0))
    opt.step()
    compiled = torch.compile(opt.step)
    compiled()
    return closure()


def the_math(W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    D: torch.Tensor = end_to_end_direction(W, G, 2.0)
    K: torch.Tensor = claim1_eigenvalues(W.new_ones(3), W.new_zeros(3), 3.0)
    P: torch.Tensor = preconditioner_matrix(W, 2)
    d: torch.Tensor = single_output_direction(W[0], G[0], 2.0)
    return D.sum() + K.sum() + P.sum() + d.sum()


def models() -> str:
    net = DeepLinear(5, 1, depth=3, hidden=4, seed=0)
    b: float = balancedness(net)
    model, summary = overparameterize(torch.nn.Linear(5, 2), depth=2)
    flat: torch.nn.Module = collapse(model)
    return f"{b} {summary} {flat} {depthaccel.__version__}"


def regression(X: np.ndarray, y: np.ndarray) -> float:
    opt: LpOptimum = lp_optimum(X, y, 4.0)
    H: np.ndarray = lp_hessian(X, y, opt.w, 4.0)
    edge: float = stability_edge(H, opt.w, 2.0)
    runs = [Run("gd", 0.01), Run("e2e", 0.01, depth=2)]
    found = grid_search(X, y, 4.0, runs, 10)
    results: list[RunResult] = [r for s in found for r in s.results]
    best: RunResult | None = found[0].best
    return edge + opt.loss + len(results) + (best.final_gap if best else 0.0)
