"""Run configurations and results of the batched trainer.

A :class:`Run` is one training curve: a method (GD on a depth-N linear network, the
end-to-end scheme of Eq. 10/12, or an adaptive optimizer on the factors), its learning
rate, architecture, initialisation, seed and hyperparameters. It is a small frozen
dataclass: hashable, comparable, and ``config_dict()`` gives the full config as a JSON-able
dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from depthaccel import nets
from depthaccel.validation import COUNT, SEED, Interval, Real, check

__all__ = [
    "check_runs",
    "ADAPTIVE_METHODS",
    "CONVENTIONS",
    "DEFAULT_HPARAMS",
    "INITS",
    "METHOD_NAMES",
    "METHODS",
    "NET_METHODS",
    "Run",
    "RunResult",
]

METHODS = ("gd", "e2e", "adagrad", "adadelta", "adam")
#: One display name per method, used by every label and report ("e2e" is the end-to-end
#: update of Eq. 10 on a single layer; Eq. 12 is its form for a single output).
METHOD_NAMES = {
    "gd": "GD",
    "e2e": "Eq. 10/12 scheme",
    "adagrad": "AdaGrad",
    "adadelta": "AdaDelta",
    "adam": "Adam",
}
NET_METHODS = ("gd", "adagrad", "adadelta", "adam")  # trained on the factors of a net
ADAPTIVE_METHODS = ("adagrad", "adadelta", "adam")
# the inits of DeepLinear, plus the trainer's fig2 control: balanced factors of the
# near-zero net's own end-to-end matrix (train.groups.initial_factors)
INITS = (*nets.INITS, "near_zero_balanced")
CONVENTIONS = ("tf", "torch")
_FINITE = Interval(Real)

#: The deepest net a Run may ask for (a bound against typos such as depth 1e9, whose
#: list of layer widths alone would not fit in memory).
MAX_DEPTH = 10_000

# Defaults of the adaptive optimizers, "lr" included (used when
# Run.lr is None). TF1: tf.compat.v1.train.{Adam,Adagrad,Adadelta}Optimizer; torch:
# torch.optim.{Adam,Adagrad,Adadelta}. TF1's AdagradOptimizer has no default lr: we
# use torch's 0.01 for it.
DEFAULT_HPARAMS: dict[tuple[str, str], dict[str, float]] = {
    ("adam", "tf"): {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    ("adam", "torch"): {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    ("adagrad", "tf"): {"lr": 1e-2, "initial_accumulator": 0.1, "eps": 0.0},
    ("adagrad", "torch"): {"lr": 1e-2, "initial_accumulator": 0.0, "eps": 1e-10},
    ("adadelta", "tf"): {"lr": 1e-3, "rho": 0.95, "eps": 1e-8},
    ("adadelta", "torch"): {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
    ("gd", "tf"): {},
    ("gd", "torch"): {},
    ("e2e", "tf"): {},
    ("e2e", "torch"): {},
}


def _finite_number(name: str, v: Any) -> float:
    return check(name, v, _FINITE)


@dataclass(frozen=True)
class Run:
    """One training run of the batched trainer.

    Attributes:
        method: ``gd`` (gradient descent on the factors of a depth-N linear net, Eq. 4),
            ``e2e`` (the end-to-end scheme on a single layer: Eq. 12 for one output,
            Eq. 10 otherwise), ``adagrad``, ``adadelta`` or ``adam`` (applied to each
            factor of a depth-N net; depth 1 = a single layer).
        lr: learning rate (> 0). ``None`` takes the convention's default lr for the
            adaptive optimizers (``DEFAULT_HPARAMS``); required for gd and e2e.
        depth: N, an integer >= 1 for the nets; any real >= 1 for e2e.
        hidden: hidden width(s) of the net (one int, or N - 1 ints). For e2e it only
            shapes the initial point (see ``init``).
        init: ``near_zero`` (i.i.d. N(0, init_scale^2) entries), ``identity`` (rectangular
            identity + N(0, init_scale^2) noise) or ``balanced`` (balanced factors of a
            Gaussian end-to-end matrix), as in :class:`depthaccel.nets.DeepLinear`, or
            ``near_zero_balanced`` (balanced factors of the end-to-end matrix the
            ``near_zero`` net of the same hidden/init_scale/seed starts from). e2e
            starts from ``W_e`` = the product of the factors the depth-ceil(N) net with
            the same hidden/init/init_scale/seed starts from, so the scheme emulates
            that net (paper, Fig. 2).
        init_scale: std of the Gaussian draws; ``None`` = DeepLinear's default
            (1e-3 for near_zero and balanced, 0 for identity). The paper only says
            "near-zero"; 1e-3 is our choice.
        seed: seed of the initialisation (drawn on the CPU in float64: the same start on
            every device and dtype).
        convention: ``tf`` or ``torch``: which library's defaults the adaptive
            optimizers use (and, for Adam, where epsilon goes: see ``engine``).
        hparams: overrides of the optimizer's hyperparameters, e.g.
            ``(("beta2", 0.99),)``; names per method in ``DEFAULT_HPARAMS``.
        weight_decay: lambda of Eq. 4 (``W_j <- (1 - lr*lambda) W_j - lr*dL/dW_j``;
            ``1 - lr*lambda*N`` on W_e for e2e; an L2 term ``lambda*W`` added to the
            gradient for the adaptive optimizers, as torch's ``weight_decay``).
    """

    method: str
    lr: float | None
    depth: float = 1
    hidden: int | tuple[int, ...] = 1
    init: str = "near_zero"
    init_scale: float | None = None
    seed: int = 0
    convention: str = "tf"
    hparams: tuple[tuple[str, float], ...] = ()
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.convention not in CONVENTIONS:
            raise ValueError(
                f"unknown convention {self.convention!r}; expected one of {CONVENTIONS}"
            )
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; expected one of {INITS}")
        if self.lr is None:
            if self.method not in ADAPTIVE_METHODS:
                raise ValueError(f"method {self.method!r} needs an explicit lr")
        else:
            lr = _finite_number("lr", self.lr)
            if lr <= 0:
                raise ValueError(f"lr must be > 0, got {self.lr!r}")
            object.__setattr__(self, "lr", lr)
        depth = _finite_number("depth", self.depth)
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in [1, {MAX_DEPTH}], got {self.depth!r}")
        if self.method != "e2e":
            if depth != int(depth):
                raise ValueError(
                    f"depth of a {self.method!r} net must be an integer, got {self.depth!r} "
                    "(fractional depth is for method 'e2e')"
                )
            object.__setattr__(self, "depth", int(depth))
        else:
            object.__setattr__(self, "depth", int(depth) if depth == int(depth) else depth)
        hidden = self.hidden
        if isinstance(hidden, (list, tuple)):
            hidden = tuple(int(h) for h in hidden)
            if any(h < 1 for h in hidden):
                raise ValueError(f"hidden widths must be >= 1, got {self.hidden!r}")
            if len(hidden) != self.net_depth - 1:
                raise ValueError(
                    f"hidden must be an int or {self.net_depth - 1} widths, got {self.hidden!r}"
                )
        else:
            hidden = check("hidden", hidden, COUNT)
        object.__setattr__(self, "hidden", hidden)
        if self.init_scale is not None:
            s = _finite_number("init_scale", self.init_scale)
            if s < 0:
                raise ValueError(f"init_scale must be >= 0, got {self.init_scale!r}")
            object.__setattr__(self, "init_scale", s)
        object.__setattr__(self, "seed", check("seed", self.seed, SEED))
        wd = _finite_number("weight_decay", self.weight_decay)
        if wd < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "weight_decay", wd)
        allowed = DEFAULT_HPARAMS[(self.method, self.convention)]
        hp = dict(self.hparams) if not isinstance(self.hparams, dict) else self.hparams
        clean = []
        for name, v in sorted(hp.items()):
            if name not in allowed or name == "lr":
                names = sorted(n for n in allowed if n != "lr")
                raise ValueError(
                    f"unknown hyperparameter {name!r} for method {self.method!r}; "
                    f"expected one of {names} (the learning rate is Run.lr)"
                )
            v = _finite_number(f"hparams[{name!r}]", v)
            if v < 0 or (name.startswith("beta") or name == "rho") and v >= 1:
                raise ValueError(f"hyperparameter {name}={v!r} out of range")
            clean.append((name, v))
        object.__setattr__(self, "hparams", tuple(clean))

    @property
    def net_depth(self) -> int:
        """Number of factors: depth for the nets, ceil(depth) for e2e (its initial net)."""
        return int(math.ceil(self.depth))

    @property
    def effective_lr(self) -> float:
        """``lr``, or the convention's default for an adaptive method when lr is None."""
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_HPARAMS[(self.method, self.convention)]["lr"]

    def optimizer_hparams(self) -> dict[str, float]:
        """The method's hyperparameters: convention defaults updated by ``hparams`` (no lr)."""
        hp = {k: v for k, v in DEFAULT_HPARAMS[(self.method, self.convention)].items() if k != "lr"}
        hp.update(dict(self.hparams))
        return hp

    def label(self) -> str:
        """A short human name, e.g. ``depth-3 GD (width 1)``."""
        name = METHOD_NAMES[self.method]
        depth = f"{self.depth:g}"
        if self.method == "e2e":
            s = f"{name}, N={depth}"
        else:
            s = f"depth-{depth} {name}"
            if self.depth > 1:
                s += (
                    f" (width {self.hidden if isinstance(self.hidden, int) else list(self.hidden)})"
                )
            if self.method in ADAPTIVE_METHODS:
                s += f" [{self.convention}]"
        if self.init != "near_zero":
            s += f", {self.init} init"
        return s

    def config_dict(self) -> dict[str, Any]:
        """The full configuration as a JSON-able dict (defaults resolved)."""
        return {
            "method": self.method,
            "lr": self.effective_lr,
            "depth": self.depth,
            "hidden": list(self.hidden) if isinstance(self.hidden, tuple) else self.hidden,
            "init": self.init,
            "init_scale": self.init_scale,
            "seed": self.seed,
            "convention": self.convention,
            "hparams": self.optimizer_hparams(),
            "weight_decay": self.weight_decay,
        }


@dataclass
class RunResult:
    """The record of one run.

    Attributes:
        run: the configuration.
        iters: logged iterations (int64, increasing, includes 0 and T).
        gap: ``L - L*`` at those iterations, evaluated in float64; NaN from the
            iteration of divergence on.
        first_hit: threshold -> first iteration t (0..T) with ``L_t - L* < threshold``,
            checked at every iteration (None if never).
        final_gap: the gap at iteration T (NaN if the run diverged).
        diverged: whether the run diverged (then it was frozen at ``diverged_at``).
        diverged_at: the first iteration whose loss was non-finite or above the
            divergence limit.
        wall_time: seconds of the batched call that produced the run (shared by all
            the runs trained together).
        accuracy: train accuracy at the logged iterations (softmax cross-entropy only;
            NaN from the iteration of divergence on; None for l_p losses).
    """

    run: Run
    iters: np.ndarray
    gap: np.ndarray
    first_hit: dict[float, int | None] = field(default_factory=dict)
    final_gap: float = float("nan")
    diverged: bool = False
    diverged_at: int | None = None
    wall_time: float = 0.0
    accuracy: np.ndarray | None = None


def check_runs(runs: Any) -> list[Run]:
    """``runs`` as a non-empty list of :class:`Run` (``ValueError`` naming what is wrong)."""
    runs = list(runs)
    if not runs:
        raise ValueError("no runs given: need at least one run")
    for r in runs:
        if not isinstance(r, Run):
            raise ValueError(f"runs must be depthaccel.train.Run instances, got {type(r).__name__}")
    return runs
