r"""A self-contained demo: depth (or Eq. 10) accelerates an l4 regression.

The problem is generated, not loaded: ``m`` rows of ``d`` features with column scales
spread geometrically over ``[1/sqrt(cond), 1]`` (a badly conditioned design), a single
output ``y = X w* + noise``, and the l_p loss of the paper's Section 8::

    L(w) = (1/m) sum_i (1/p) (x_i^T w - y_i)^p

Three models start from the same end-to-end vector ``w_0`` and run with the same
learning rate:

- ``sgd``: plain gradient descent on a single layer (``torch.optim.SGD``);
- ``net``: gradient descent on a depth-N linear network (``DeepLinear``, hidden width
  ``width``), started balanced at ``w_0``;
- ``e2e``: :class:`~depthaccel.optim.EndToEndSGD` with the same depth on a single layer
  -- Theorem 1 says it should track ``net``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from depthaccel.losses import MAX_P, lp_loss, lp_optimum
from depthaccel.nets import DeepLinear
from depthaccel.optim import EndToEndSGD
from depthaccel.validation import Integral, Interval, check

__all__ = [
    "DemoConfig",
    "DemoResult",
    "estimate_memory",
    "format_table",
    "make_problem",
    "run_demo",
]

MODELS = ("sgd", "net", "e2e")
#: Seeds of torch's generator: a signed 64-bit integer.
SEED_RANGE = (-(2**63), 2**63 - 1)
#: Beyond this condition number the generated design is singular in float64 (its
#: smallest column scale is 1/sqrt(cond)).
MAX_COND = 1e12


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (defaults: about 10 s on a laptop CPU)."""

    dim: int = 30
    samples: int = 500
    cond: float = 1e3
    p: float = 4.0
    depth: int = 3
    width: int = 1
    lr: float = 0.02
    steps: int = 3000
    init_scale: float = 0.1
    seed: int = 0
    report_every: int = 0  # 0: about 8 rows, log-spaced

    def __post_init__(self) -> None:
        for name in ("dim", "samples", "depth", "width", "steps"):
            check(name, getattr(self, name), Interval(Integral, 1, None))
        if self.seed not in Interval(Integral, *SEED_RANGE):
            raise ValueError(
                f"seed must be a 64-bit integer in [-2**63, 2**63 - 1], got {self.seed!r}"
            )
        for name in ("cond", "lr", "init_scale"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if self.samples < 2:
            raise ValueError(
                f"samples must be >= 2 (the target is scaled by its std), got {self.samples}"
            )
        if self.samples < self.dim:
            raise ValueError(
                f"samples ({self.samples}) must be >= dim ({self.dim}): with fewer rows than "
                "features the l_p minimiser is not unique"
            )
        if not 1 <= self.cond <= MAX_COND:
            raise ValueError(
                f"cond must be in [1, {MAX_COND:g}] (beyond, X^T X is singular in float64), "
                f"got {self.cond!r}"
            )
        if not (math.isfinite(self.p) and 2 <= self.p <= MAX_P):
            raise ValueError(
                f"p must be a number in [2, {MAX_P:g}] (beyond, |residual|^p overflows "
                f"float64), got {self.p!r}"
            )


@dataclass
class DemoResult:
    config: DemoConfig
    steps: list[int]  # iterations at which the losses were recorded
    losses: dict[str, list[float]]  # model name -> loss at each recorded iteration
    diverged: dict[str, int | None]  # model name -> first iteration with a non-finite loss
    optimum: float  # min_w L(w) (depthaccel.losses.lp_optimum: Newton, float64)


def estimate_memory(cfg: DemoConfig) -> int:
    """Bytes the demo holds at its peak, as an order of magnitude: the depth-N net's
    parameters (``dim*width + (depth-2)*width**2 + width`` numbers) four times (the
    parameters, their gradients, the balanced start's factors and a product of the
    backward pass) and the problem (X and its products) four times, in float64."""
    w = cfg.width
    net = cfg.dim if cfg.depth == 1 else cfg.dim * w + (cfg.depth - 2) * w * w + w
    return 8 * (4 * net + 4 * cfg.samples * (cfg.dim + 1))


def make_problem(cfg: DemoConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(X, y, w0)`` in float64 from ``cfg.seed``: X is (samples x dim), y (samples,),
    w0 (1 x dim) the common starting end-to-end vector of norm ``init_scale``."""
    g = torch.Generator().manual_seed(cfg.seed)
    f64 = torch.float64
    col_scale = torch.logspace(0, -0.5 * math.log10(cfg.cond), cfg.dim, dtype=f64)
    X = torch.randn(cfg.samples, cfg.dim, generator=g, dtype=f64) * col_scale
    w_star = torch.randn(cfg.dim, generator=g, dtype=f64) / math.sqrt(cfg.dim)
    y = X @ w_star + 0.1 * torch.randn(cfg.samples, generator=g, dtype=f64)
    y = y / y.std()
    w0 = torch.randn(1, cfg.dim, generator=g, dtype=f64)
    w0 = cfg.init_scale * w0 / torch.linalg.vector_norm(w0)
    return X, y, w0


def _record_steps(cfg: DemoConfig) -> list[int]:
    if cfg.report_every > 0:
        pts = set(range(0, cfg.steps + 1, cfg.report_every))
    else:
        pts = {0} | {round(cfg.steps ** (i / 7)) for i in range(1, 8)}
    pts.add(cfg.steps)
    return sorted(p for p in pts if 0 <= p <= cfg.steps)


def _train(
    name: str,
    params: list[torch.nn.Parameter],
    predict: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    X: torch.Tensor,
    y: torch.Tensor,
    cfg: DemoConfig,
    record: list[int],
    quiet: bool,
) -> tuple[list[float], int | None]:
    want = set(record)
    losses: list[float] = []
    diverged: int | None = None
    for it in tqdm(range(cfg.steps + 1), desc=name, disable=quiet, leave=False):
        opt.zero_grad()
        loss = lp_loss(predict(X), y, cfg.p)
        value = loss.item()
        if it in want:
            losses.append(value)
        if not math.isfinite(value):
            diverged = it
            losses.extend([math.nan] * (len(record) - len(losses)))
            break
        if it == cfg.steps:
            break
        loss.backward()
        if not all(torch.isfinite(q.grad).all() for q in params if q.grad is not None):
            diverged = it
            losses.extend([math.nan] * (len(record) - len(losses)))
            break
        opt.step()
    return losses, diverged


def run_demo(cfg: DemoConfig, *, quiet: bool = False) -> DemoResult:
    """Train the three models of the module docstring and record their losses."""
    X, y, w0 = make_problem(cfg)
    record = _record_steps(cfg)
    losses: dict[str, list[float]] = {}
    diverged: dict[str, int | None] = {}

    w_sgd = torch.nn.Parameter(w0.clone())
    losses["sgd"], diverged["sgd"] = _train(
        "sgd",
        [w_sgd],
        lambda X: (X @ w_sgd.T).squeeze(-1),
        torch.optim.SGD([w_sgd], lr=cfg.lr),
        X,
        y,
        cfg,
        record,
        quiet,
    )

    net = DeepLinear(
        cfg.dim,
        1,
        cfg.depth,
        hidden=cfg.width,
        init="balanced",
        target=w0,
        dtype=torch.float64,
    )
    losses["net"], diverged["net"] = _train(
        "net",
        list(net.parameters()),
        lambda X: net(X).squeeze(-1),
        torch.optim.SGD(net.parameters(), lr=cfg.lr),
        X,
        y,
        cfg,
        record,
        quiet,
    )

    w_e2e = torch.nn.Parameter(w0.clone())
    losses["e2e"], diverged["e2e"] = _train(
        "e2e",
        [w_e2e],
        lambda X: (X @ w_e2e.T).squeeze(-1),
        EndToEndSGD([w_e2e], lr=cfg.lr, depth=cfg.depth),
        X,
        y,
        cfg,
        record,
        quiet,
    )
    return DemoResult(cfg, record, losses, diverged, lp_optimum(X, y, cfg.p).loss)


def format_table(result: DemoResult) -> str:
    """A plain-text table: one row per recorded iteration, one column of ``L - L*`` per model."""
    cfg = result.config
    heads = {
        "sgd": "SGD depth 1",
        "net": f"GD depth-{cfg.depth} net",
        "e2e": f"EndToEndSGD N={cfg.depth}",
    }
    w = max(12, *(len(h) for h in heads.values()))
    lines = [
        f"l{cfg.p:g} regression: {cfg.samples} x {cfg.dim}, column scales over "
        f"cond {cfg.cond:g}, lr {cfg.lr:g}, width {cfg.width}, seed {cfg.seed}",
        f"distance from optimum L - L* (L* = {result.optimum:.6g}):",
        f"{'iteration':>10}  " + "  ".join(f"{heads[m]:>{w}}" for m in MODELS),
    ]
    for i, it in enumerate(result.steps):
        lines.append(
            f"{it:>10}  "
            + "  ".join(f"{result.losses[m][i] - result.optimum:>{w}.4e}" for m in MODELS)
        )
    for m in MODELS:
        if result.diverged[m] is not None:
            lines.append(
                f"{heads[m]}: loss became non-finite at iteration {result.diverged[m]} "
                "(learning rate too large)"
            )
    return "\n".join(lines)
