"""Fair starts: every model of an Ethanol experiment starts near zero in function space.

A depth-N net with i.i.d. N(0, s^2) factor entries has an end-to-end matrix of order
s^N, i.e. near zero; a single layer drawn at the same s would not be (at s = 0.05 its
initial l4 gap is ~8x that at w = 0, which caps its stable learning rate and slows it
~7x). So the single layer gets its own scale, ``single_layer_scale``: at most 1e-3
(default 1e-3) or exactly 0, a config field of each experiment; deep nets use the
per-factor scale the experiment states (``init_scale``), or the identity where the
figure says so. Each report states every model's initial gap ``L(w_0) - L*``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from depthaccel.experiments.loss_scale import gap_text
from depthaccel.experiments.seeds import spread

__all__ = [
    "MAX_SINGLE_LAYER_SCALE",
    "FairStartConfig",
    "check_single_layer_scale",
    "fair_run",
    "initial_gaps_note",
    "model_scale",
    "start_note",
]

#: The largest single-layer init scale that still counts as a near-zero start.
MAX_SINGLE_LAYER_SCALE = 1e-3


@dataclass(frozen=True)
class FairStartConfig:
    """The models' starts, seeds and logging shared by the Ethanol experiments' configs
    (fig3, fig4-left, fig4-right extend it)."""

    hidden: int = 1  # hidden width of the deep nets (the paper's l_p experiments: 1)
    init: str = "near_zero"
    init_scale: float = 0.05  # deep nets, per factor ("near-zero"; the paper gives no scale)
    single_layer_scale: float = 1e-3  # depth 1: <= 1e-3 or exactly 0 (fair start)
    seeds: tuple[int, ...] = (0, 1, 2)  # initialisation seeds; a claim must hold for each
    log_points: int = 1000

    @classmethod
    def full(cls) -> Any:
        """The paper's setup: the defaults."""
        return cls()


def check_single_layer_scale(scale: float) -> float:
    """``scale`` if ``0 <= scale <= 1e-3``, else a one-line ValueError."""
    s = float(scale)
    if not (math.isfinite(s) and 0 <= s <= MAX_SINGLE_LAYER_SCALE):
        raise ValueError(
            f"single_layer_scale must be in [0, {MAX_SINGLE_LAYER_SCALE:g}] (a near-zero "
            f"start in function space), got {scale!r}"
        )
    return s


def model_scale(
    depth: int, init: str, *, single_layer_scale: float, init_scale: float, identity_scale=0.0
) -> float:
    """The init scale of one model: the single layer's for depth 1, ``identity_scale``
    for an identity init, else the deep nets' per-factor ``init_scale``."""
    if depth == 1:
        return check_single_layer_scale(single_layer_scale)
    if init == "identity":
        return float(identity_scale)
    return float(init_scale)


def fair_run(
    config: Any,
    method: str,
    lr: float | None,
    *,
    depth: int,
    seed: int,
    init: str | None = None,
    init_scale: float | None = None,
) -> Any:
    """The run of one model with its fair start (:func:`model_scale`): ``config_run`` with
    the config's ``single_layer_scale``, its deep nets' scale (``init_scale`` argument,
    else ``config.init_scale``) and ``identity_scale`` (if it has one), and ``seed``."""
    from depthaccel.experiments.runs import config_run

    init = init or config.init
    scale = model_scale(
        depth,
        init,
        single_layer_scale=config.single_layer_scale,
        init_scale=config.init_scale if init_scale is None else init_scale,
        identity_scale=getattr(config, "identity_scale", 0.0),
    )
    return config_run(config, method, lr, depth=depth, init=init, init_scale=scale, seed=seed)


def start_note(single_layer_scale: float, init_scale: float) -> str:
    """The report's sentence on the starts."""
    single = (
        "exactly 0" if single_layer_scale == 0 else f"i.i.d. N(0, {single_layer_scale:g}^2) entries"
    )
    return (
        f"Starts (near zero in function space for every model): the single layer at "
        f"{single} (config single_layer_scale; at most 1e-3 or exactly 0), deep nets with "
        f"i.i.d. N(0, {init_scale:g}^2) factor entries (end-to-end matrix of order "
        f"{init_scale:g}^N). The paper says only 'near-zero'."
    )


def initial_gaps_note(gaps: Mapping[str, Sequence[float]], p: float) -> str:
    """``Initial gaps L(w_0) - L* (l4; min..max over seeds): depth 1: ..., ...``."""
    parts = []
    for name, vals in gaps.items():
        s = spread(vals)
        if s.n == 1 or s.min == s.max:
            parts.append(f"{name}: {gap_text(s.min, p, '.4g')}")
        else:
            parts.append(f"{name}: {gap_text(s.min, p, '.4g')} .. {gap_text(s.max, p, '.4g')}")
    return f"Initial gaps L(w_0) - L* (l{p:g}; min..max over seeds): " + "; ".join(parts) + "."
