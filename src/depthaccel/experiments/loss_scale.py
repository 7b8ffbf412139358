r"""Which l_p loss the gaps are in: the paper's text or the plain mean.

The paper's text writes the l_p loss with a 1/p factor,
``L(w) = (1/m) sum_i (1/p) |x_i^T w - y_i|^p`` ("paper" scale); without it,
``L_plain(w) = (1/m) sum_i |x_i^T w - y_i|^p = p L(w)`` ("plain" scale). Both have the
same minimiser, but a fixed-rate run on one is not a run on the other (every gradient is
p times larger), so the loss scale is a setup axis of its own
(:class:`depthaccel.data.scaling.SetupAxes`): an experiment *minimises* the loss of its
``loss_scale`` and reports its gaps in it. Tables add the other scale's value (the gap
times or divided by p).
"""

from __future__ import annotations

import math
from numbers import Real

from depthaccel.data.scaling import LOSS_SCALES, check_loss_scale
from depthaccel.validation import Interval, check

__all__ = [
    "LOSS_SCALES",
    "check_loss_scale",
    "data_note",
    "gap_text",
    "plain_factor",
    "scale_factor",
    "scale_label",
]


#: The exponent of an l_p loss: a finite number >= 1.
_P = Interval(Real, 1, None)


def _check_p(p: float) -> float:
    return float(check("p", p, _P))


def plain_factor(p: float) -> float:
    """The factor from the paper's l_p gap to the plain one: ``p`` (the 1/p removed)."""
    return _check_p(p)


def scale_factor(p: float, loss_scale: str) -> float:
    """How much larger a gap in ``loss_scale`` is than in the paper's: 1 or ``p``."""
    p = _check_p(p)
    return p if check_loss_scale(loss_scale) == "plain" else 1.0


def gap_text(gap: float, p: float, fmt: str = ".3e", loss_scale: str = "paper") -> str:
    """A gap in ``loss_scale`` with its value in the other scale:
    ``"1.234e-02 (plain 4.936e-02)"`` or ``"4.936e-02 (paper 1.234e-02)"``."""
    g = float(gap)
    other = "paper" if check_loss_scale(loss_scale) == "plain" else "plain"
    if not math.isfinite(g):
        return f"{g} ({other} {g})"
    factor = plain_factor(p)
    v = g / factor if loss_scale == "plain" else g * factor
    return f"{g:{fmt}} ({other} {v:{fmt}})"


def scale_label(p: float, loss_scale: str) -> str:
    """An axis label naming the scale, e.g. ``l4 gap, (1/m) sum (1/p)|r|^p - L*``."""
    body = "(1/m) sum (1/p)|r|^p" if check_loss_scale(loss_scale) == "paper" else "(1/m) sum |r|^p"
    return f"l{_check_p(p):g} gap, {body} - min"


def data_note(
    data_source: str, p: float, loss_scale: str, *, figures: str = "the figure shows"
) -> str:
    """The report's note on an Ethanol figure's data and loss: where the data came from,
    the l_p loss with its 1/p, and which scale ``figures`` show (the tables give both)."""
    return (
        f"Data: {data_source}; features and target standardised; l{p:g} loss "
        "(1/m) sum (1/p)(x^T w - y)^p, no bias; gaps also in the plain scale (1/m) sum "
        f"|r|^p (= p times); {figures} the {loss_scale} scale."
    )
