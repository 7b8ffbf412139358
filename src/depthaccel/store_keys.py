"""The identities of stored results: a run, a task or a checkpointed group is stored
under the sha256 of its description in canonical JSON, so equal descriptions give equal
keys on any machine and in any process (``depthaccel.store`` re-exports these)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal strings.

    Floats are written with Python's shortest round-trip repr, so they are exact.
    Non-finite floats are rejected (they have no portable JSON form).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_key(config: Mapping[str, Any], data_fingerprint: str, math_version: str) -> str:
    """sha256 hex of ``{"config": config, "data": data_fingerprint, "math": math_version}``
    in canonical JSON: the identity of a run's result."""
    payload = canonical_json(
        {"config": config, "data": data_fingerprint, "math": str(math_version)}
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def task_key(kind: str, config: Mapping[str, Any], math_version: str) -> str:
    """sha256 hex of ``{"task": kind, "config": config, "math": math_version}`` in canonical
    JSON: the identity of an independent task's result (``config`` must name everything
    the result depends on, the data's checksums included)."""
    payload = canonical_json({"task": str(kind), "config": config, "math": str(math_version)})
    return hashlib.sha256(payload.encode()).hexdigest()


def group_key(run_keys: Sequence[str]) -> str:
    """sha256 hex of an ordered list of run keys: the identity of a checkpointed group."""
    return hashlib.sha256(canonical_json(list(run_keys)).encode()).hexdigest()
