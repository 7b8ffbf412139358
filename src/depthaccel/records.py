"""Training state as bytes: what a checkpoint holds in the results store.

``dumps_state``/``loads_state`` turn a trainer state (dicts and lists of tensors, numpy
arrays, numbers and strings) into bytes and back: ``torch.save`` of a copy whose numpy
arrays are tagged tensors, read back with ``torch.load(weights_only=True)`` (no
arbitrary code runs on load). ``checkpoint_blob`` wraps a trainer's state with its
iteration and the thresholds it tracks, as a sweep's group checkpoint is stored.

A module of its own so that the sweep (``depthaccel.sweep``) and the executors that
train its shards (``depthaccel.executors``) share it without importing each other.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["checkpoint_blob", "dumps_state", "loads_state"]

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
