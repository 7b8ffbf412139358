"""``TrainState``: the progress of one ``train`` call, what a checkpoint holds.

A state is everything ``depthaccel.train.train`` needs to continue a call after ``t``
updates: the identity of the call (iterations, p, L*, thresholds, logged iterations,
the runs' configurations, the data's shape, dtype, loss form), the bookkeeping so far
(logged losses, first hits, divergence iterations, the losses at iteration 0) and every
group's parameters and optimizer states. While training, the tensors live on the
compute device; ``to_dict`` gives the checkpoint form: a plain dict of ints, floats,
strings, lists, a numpy array and CPU tensors (``torch.save``-able), and ``from_dict``
reads it back (also format 1, the dicts written before ``TrainState`` existed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = ["TrainState"]

Tensor = torch.Tensor

_FORMAT_1 = "depthaccel.train.state/1"  # same fields, run_configs stored as "run_keys"


@dataclass
class TrainState:
    """The progress of a ``train`` call after ``t`` updates (see the module docstring).

    Attributes:
        t: updates done (0..iters).
        iters: T, the number of updates of the call.
        p: the loss exponent, or the token of a softmax cross-entropy loss
            (``SoftmaxCE.token``).
        optimum: L*.
        thresholds: the first-hit thresholds, in the call's order.
        log_iters: the logged iterations (int64).
        run_configs: each run's configuration as canonical JSON (``Run.config_dict()``).
        shape: (m, d, k) of the data.
        dtype: the compute dtype's name (``str(torch.float64)``).
        gram: whether the losses come from the Gram form.
        log_vals: (len(log_iters), R) float64 losses logged so far (NaN not yet logged).
        first_hit: (R, len(thresholds)) int64 first iteration under each threshold
            (int64 max: not yet).
        diverged_at: (R,) int64 iteration of divergence (int64 max: not diverged).
        loss0: (R,) losses at iteration 0 (None before iteration 0 is evaluated).
        groups: each group's :meth:`~depthaccel.train.groups.Group.tensors` dict.
        elapsed: seconds of training so far (over all resumed calls).
        log_acc: (len(log_iters), R) float64 train accuracies logged so far (softmax
            cross-entropy only; None otherwise).
    """

    FORMAT: ClassVar[str] = "depthaccel.train.state/2"

    t: int
    iters: int
    p: float | str
    optimum: float
    thresholds: list[float]
    log_iters: np.ndarray
    run_configs: list[str]
    shape: tuple[int, int, int]
    dtype: str
    gram: bool
    log_vals: Tensor
    first_hit: Tensor
    diverged_at: Tensor
    loss0: Tensor | None = None
    groups: list[dict[str, Tensor]] = field(default_factory=list)
    elapsed: float = 0.0
    log_acc: Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint form: plain Python values, a numpy array and CPU tensor copies."""
        if self.loss0 is None:
            raise ValueError("a TrainState is saved only after iteration 0 was evaluated")
        return {
            "format": self.FORMAT,
            "t": int(self.t),
            "iters": int(self.iters),
            "p": self.p if isinstance(self.p, str) else float(self.p),
            "optimum": float(self.optimum),
            "thresholds": [float(x) for x in self.thresholds],
            "log_iters": np.array(self.log_iters, dtype=np.int64),
            "run_configs": list(self.run_configs),
            "shape": [int(x) for x in self.shape],
            "dtype": str(self.dtype),
            "gram": bool(self.gram),
            "log_vals": _cpu_copy(self.log_vals),
            "first_hit": _cpu_copy(self.first_hit),
            "diverged_at": _cpu_copy(self.diverged_at),
            "loss0": _cpu_copy(self.loss0),
            "groups": [{n: _cpu_copy(v) for n, v in g.items()} for g in self.groups],
            "elapsed": float(self.elapsed),
            **({} if self.log_acc is None else {"log_acc": _cpu_copy(self.log_acc)}),
        }

    @classmethod
    def from_dict(cls, d: Any) -> TrainState:
        """Read a :meth:`to_dict` dict (format 2, or format 1 of earlier versions) back;
        ValueError when it is not one."""
        fmt = d.get("format") if isinstance(d, dict) else None
        if fmt not in (cls.FORMAT, _FORMAT_1):
            raise ValueError(f"resume state is not a {cls.FORMAT!r} dict")
        try:
            return cls(
                t=int(d["t"]),
                iters=int(d["iters"]),
                p=d["p"] if isinstance(d["p"], str) else float(d["p"]),
                optimum=float(d["optimum"]),
                thresholds=[float(x) for x in d["thresholds"]],
                log_iters=np.asarray(d["log_iters"], dtype=np.int64),
                run_configs=list(d["run_configs" if fmt == cls.FORMAT else "run_keys"]),
                shape=tuple(int(x) for x in d["shape"]),  # type: ignore[arg-type]
                dtype=str(d["dtype"]),
                gram=bool(d["gram"]),
                log_vals=torch.as_tensor(d["log_vals"]),
                first_hit=torch.as_tensor(d["first_hit"]),
                diverged_at=torch.as_tensor(d["diverged_at"]),
                loss0=torch.as_tensor(d["loss0"]),
                groups=[dict(g) for g in d["groups"]],
                elapsed=float(d.get("elapsed", 0.0)),
                log_acc=torch.as_tensor(d["log_acc"]) if "log_acc" in d else None,
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"resume state is incomplete or malformed: {e!r}") from None

    def mismatch(self, call: TrainState) -> str | None:
        """Why this (saved) state cannot continue ``call`` (a fresh state of the call at
        t = 0), or None when it can."""
        checks = {
            "iters": (self.iters, call.iters),
            "p": (self.p, call.p),
            "optimum": (self.optimum, call.optimum),
            "thresholds": (list(self.thresholds), list(call.thresholds)),
            "run_configs": (list(self.run_configs), list(call.run_configs)),
            "shape": (list(self.shape), list(call.shape)),
            "dtype": (self.dtype, call.dtype),
            "gram": (self.gram, call.gram),
        }
        for name, (got, want) in checks.items():
            if got != want:
                return f"{name} is {got!r}, expected {want!r}"
        if not np.array_equal(self.log_iters, call.log_iters):
            return "different logged iterations"
        if len(self.groups) != len(call.groups):
            return "a different grouping of the runs"
        for name, got in (
            ("log_vals", self.log_vals),
            ("first_hit", self.first_hit),
            ("diverged_at", self.diverged_at),
        ):
            want = getattr(call, name)
            if tuple(got.shape) != tuple(want.shape):
                return f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        return None


def _cpu_copy(t: Tensor) -> Tensor:
    return t.detach().cpu().clone()
