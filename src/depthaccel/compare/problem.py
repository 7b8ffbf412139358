"""The problem ``depthaccel compare`` trains on: the table read, the loss, its optimum L*
(float64, with its certificate), the initial gap and the round-off floor of the gap."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from depthaccel.compare.classes import ClassTable, load_class_table
from depthaccel.compare.config import CompareConfig
from depthaccel.compare.floor import ce_roundoff_floor, initial_gap, roundoff_floor
from depthaccel.data import Dataset, load_table
from depthaccel.losses import SoftmaxCE, ce_optimum, lp_optimum
from depthaccel.reporting import format_lr

__all__ = ["Problem", "prepare"]


@dataclass
class Problem:
    """What the comparison trains on.

    Attributes:
        data: the table read (a ``Dataset`` for l_p losses, a ``ClassTable`` for ce).
        X, y: the trainer's inputs (y: targets, or class indices as floats for ce).
        loss: the exponent p, or a ``SoftmaxCE``.
        k: outputs (targets, or classes).
        optimum, certificate: L* and the gradient norm at the computed minimiser.
        initial_gap: L(0) - L*.
        floor: round-off floor of the gap.
        bounded: False for ce with l2 = 0 on separable data (no minimiser: L* = 0 is the
            infimum and the "gap" is the loss itself).
        notes: sentences the verdict adds to its caveats.
    """

    data: Dataset | ClassTable
    X: np.ndarray
    y: np.ndarray
    loss: float | SoftmaxCE
    k: int
    optimum: float
    certificate: float
    initial_gap: float
    floor: float
    bounded: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def is_ce(self) -> bool:
        return isinstance(self.loss, SoftmaxCE)

    @property
    def gap_word(self) -> str:
        """``gap`` (L - L*), or ``loss`` when there is no minimiser."""
        return "gap" if self.bounded else "loss"

    @property
    def loss_words(self) -> str:
        if isinstance(self.loss, SoftmaxCE):
            return f"softmax cross-entropy ({self.k} classes, l2 {format_lr(self.loss.l2)})"
        return f"l{self.loss:g} loss"

    @property
    def outputs_words(self) -> str:
        if self.is_ce or self.k == 1:
            return ""
        return f" x {self.k} outputs"


def prepare(cfg: CompareConfig, dtype: torch.dtype) -> Problem:
    """Read ``cfg.data`` and compute L*, the initial gap and the floor (``ValueError`` for
    a table that cannot be used)."""
    eps = float(torch.finfo(dtype).eps)
    if cfg.is_ce:
        return _prepare_ce(cfg, eps)
    ds = load_table(cfg.data, cfg.target, standardize=cfg.standardize, header=cfg.header)
    p = cfg.p
    X, y = cfg.setup.apply(ds.X, ds.y, p)  # k X and the loss scale (defaults: unchanged)
    opt = lp_optimum(X, y, p)
    return Problem(
        data=ds,
        X=X,
        y=y,
        loss=p,
        k=y.reshape(len(y), -1).shape[1],
        optimum=opt.loss,
        certificate=opt.grad_norm,
        initial_gap=initial_gap(y, p, opt.loss),
        floor=roundoff_floor(X, y, p, opt.w, eps=eps),
    )


def _prepare_ce(cfg: CompareConfig, eps: float) -> Problem:
    ct = load_class_table(
        cfg.data, cfg.target, standardize_features=cfg.standardize, header=cfg.header
    )
    ct.X = ct.X * cfg.setup.factors(ct.X, 2.0)[0] if cfg.feature_scale != "zscore" else ct.X
    loss = SoftmaxCE(ct.k, cfg.ce_l2)
    opt = ce_optimum(ct.X, ct.labels, ct.k, loss.l2)
    notes: list[str] = []
    if opt.bounded:
        floor = ce_roundoff_floor(ct.X, ct.labels, opt.W, loss.l2, eps=eps)
    else:
        floor = 0.0
        notes.append(
            "With --l2 0 the classes are linearly separable: the loss has no minimiser (it "
            "goes to 0 as the weights grow), so the numbers are the loss itself, not a gap."
        )
    g0 = math.log(ct.k) - opt.loss  # W = 0: uniform probabilities, no L2 term
    return Problem(
        data=ct,
        X=ct.X,
        y=ct.labels.astype(np.float64),
        loss=loss,
        k=ct.k,
        optimum=opt.loss,
        certificate=opt.grad_norm,
        initial_gap=g0,
        floor=floor,
        bounded=opt.bounded,
        notes=notes,
    )
