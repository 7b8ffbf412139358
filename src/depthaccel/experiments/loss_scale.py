r"""Which l_p loss a gap is measured in: the paper's text or the plain mean.

The paper's text writes the l_p loss with a 1/p factor,
``L(w) = (1/m) sum_i (1/p) |x_i^T w - y_i|^p`` (what the trainer minimises, "paper"
scale); its figures do not say whether they plot that or the plain mean
``L_plain(w) = (1/m) sum_i |x_i^T w - y_i|^p`` ("plain" scale). Both have the same
minimiser, and ``L_plain = p * L`` everywhere, so a gap ``L(w) - L*`` in the paper's
scale is ``p * (L(w) - L*)`` in the plain one. Every table of gaps gives both; a plot
shows the one ``depthaccel reproduce --loss-scale`` asks for (default: the paper's text).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "LOSS_SCALES",
    "check_loss_scale",
    "gap_text",
    "plain_factor",
    "scale_curve",
    "scale_factor",
    "scale_label",
]

LOSS_SCALES = ("paper", "plain")


def check_loss_scale(loss_scale: str) -> str:
    """``loss_scale`` if it is one of :data:`LOSS_SCALES`, else a one-line ValueError."""
    if loss_scale not in LOSS_SCALES:
        raise ValueError(f"loss_scale must be one of {LOSS_SCALES}, got {loss_scale!r}")
    return loss_scale


def _check_p(p: float) -> float:
    p = float(p)
    if not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    return p


def plain_factor(p: float) -> float:
    """The factor from the paper's l_p gap to the plain one: ``p`` (the 1/p removed)."""
    return _check_p(p)


def scale_factor(p: float, loss_scale: str) -> float:
    """1 for ``"paper"``, ``p`` for ``"plain"``."""
    p = _check_p(p)
    return p if check_loss_scale(loss_scale) == "plain" else 1.0


def scale_curve(values: Any, p: float, loss_scale: str) -> np.ndarray:
    """Paper-scale gaps (an array) in the requested scale (float64)."""
    return np.asarray(values, dtype=np.float64) * scale_factor(p, loss_scale)


def gap_text(gap: float, p: float, fmt: str = ".3e") -> str:
    """A paper-scale gap with its plain value: ``"1.234e-02 (plain 4.936e-02)"``."""
    g = float(gap)
    if not math.isfinite(g):
        return f"{g} (plain {g})"
    return f"{g:{fmt}} (plain {g * plain_factor(p):{fmt}})"


def scale_label(p: float, loss_scale: str) -> str:
    """An axis label naming the scale, e.g. ``l4 gap, (1/m) sum (1/p)|r|^p - L*``."""
    body = "(1/m) sum (1/p)|r|^p" if check_loss_scale(loss_scale) == "paper" else "(1/m) sum |r|^p"
    return f"l{_check_p(p):g} gap, {body} - min"
