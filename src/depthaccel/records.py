"""Run records and training state as bytes: what the results store holds for a sweep.

``stored_run`` turns a trained run (``RunResult``) into the row the store keeps
(``StoredRun``: its curve, first hits, divergence, data fingerprint and
``MATH_VERSION``), ``run_result`` reads one back for the thresholds a caller asks for.

``dumps_state``/``loads_state`` turn a trainer state (dicts and lists of tensors, numpy
arrays, numbers and strings) into bytes and back: ``torch.save`` of a copy whose numpy
arrays are tagged tensors, read back with ``torch.load(weights_only=True)`` (no
arbitrary code runs on load). ``checkpoint_blob`` wraps a trainer's state with its
iteration and the thresholds it tracks, as a sweep's group checkpoint is stored.

A module of its own so that the sweep (``depthaccel.sweep``) and the executors that
train its shards and store their results (``depthaccel.executors``) share it without
importing each other.

``MATH_VERSION`` names the version of the numbers the code computes: bump it whenever a
change to the trainer, the losses or the optimum can change any run's curve, so stale
results are not reused (it is part of every run's store key).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from depthaccel.store import StoredRun
from depthaccel.train import Run, RunResult

__all__ = [
    "MATH_VERSION",
    "checkpoint_blob",
    "dumps_state",
    "loads_state",
    "run_result",
    "stored_run",
]

#: Version of the math behind every stored number (trainer, losses, optimum, logging).
MATH_VERSION = "2"  # 2: Eq. 12 uses a scaled norm (last-bit changes for k = 1)

_NUMPY_TAG = "__depthaccel_numpy__"


def _to_safe(obj: Any) -> Any:
    """Replace numpy arrays/scalars by tensors/Python numbers so torch.load(weights_only)
    can read the state back; arrays are tagged to come back as arrays."""
    if isinstance(obj, np.ndarray):
        return {_NUMPY_TAG: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_safe(v) for v in obj)
    return obj


def _from_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_NUMPY_TAG}:
            return obj[_NUMPY_TAG].numpy()
        return {k: _from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_safe(v) for v in obj)
    return obj


def dumps_state(state: Any) -> bytes:
    """A trainer state (dict of tensors, numpy arrays, numbers, strings) as bytes."""
    buf = io.BytesIO()
    torch.save(_to_safe(state), buf)
    return buf.getvalue()


def loads_state(blob: bytes, map_location: Any = None) -> Any:
    """Inverse of ``dumps_state``; reads with ``weights_only=True`` (no arbitrary code)."""
    return _from_safe(torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True))


def checkpoint_blob(trainer_state: dict[str, Any], thresholds: Sequence[float]) -> bytes:
    """A group's checkpoint as stored: the trainer's state wrapped with its iteration and
    the thresholds it tracks (``{"trainer", "iteration", "thresholds"}``, ``dumps_state``)."""
    wrapped = {
        "trainer": trainer_state,
        "iteration": int(trainer_state["t"]),
        "thresholds": list(thresholds),
    }
    return dumps_state(wrapped)


def stored_run(key: str, r: RunResult, fingerprint: str, extra: dict[str, Any]) -> StoredRun:
    """The store's row of run ``r`` under store key ``key`` (``store.run_key`` of its
    config, ``fingerprint`` and ``MATH_VERSION``). ``extra``: metadata (device, dtype,
    executor, ...); a run with accuracies (softmax cross-entropy) keeps them there."""
    return StoredRun(
        key=key,
        config=r.run.config_dict(),
        data_fingerprint=fingerprint,
        math_version=MATH_VERSION,
        label=r.run.label(),
        iters=np.asarray(r.iters, dtype=np.int64),
        gap=np.asarray(r.gap, dtype=np.float64),
        first_hit={float(t): i for t, i in r.first_hit.items()},
        final_gap=float(r.final_gap),
        diverged=bool(r.diverged),
        diverged_at=r.diverged_at,
        wall_time=float(r.wall_time),
        extra=extra if r.accuracy is None else {**extra, "accuracy": _json_floats(r.accuracy)},
    )


def run_result(run: Run, s: StoredRun, thresholds: Sequence[float]) -> RunResult:
    """The ``RunResult`` of ``run`` read back from its stored row ``s``, with the first
    hits of ``thresholds`` (each must be in ``s.first_hit``)."""
    acc = s.extra.get("accuracy")
    return RunResult(
        run=run,
        iters=s.iters,
        gap=s.gap,
        first_hit={t: s.first_hit[t] for t in thresholds},
        final_gap=s.final_gap,
        diverged=s.diverged,
        diverged_at=s.diverged_at,
        wall_time=s.wall_time,
        accuracy=None if acc is None else np.array(acc, dtype=np.float64),  # None -> NaN
    )


def _json_floats(a: np.ndarray) -> list[float | None]:
    """Floats for JSON, NaN as None (JSON has no NaN)."""
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=np.float64)]
