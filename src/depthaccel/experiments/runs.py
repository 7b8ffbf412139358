"""Linear-net runs of the Ethanol experiments, built from their configs."""

from __future__ import annotations

from typing import Any

from depthaccel.train import Run

__all__ = ["config_run"]

_SHARED = ("hidden", "init", "init_scale", "seed", "convention")


def config_run(config: Any, method: str, lr: float | None, **overrides: Any) -> Run:
    """``Run(method, lr, ...)`` with ``hidden``, ``init``, ``init_scale``, ``seed`` and
    ``convention`` taken from ``config`` (those fields it has), ``overrides`` on top."""
    fields = {k: getattr(config, k) for k in _SHARED if hasattr(config, k)}
    return Run(method, lr, **{**fields, **overrides})
