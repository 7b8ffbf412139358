"""What a depthaccel results store file holds: its tables, its rows as Python objects,
and the checksum each row carries (the file itself is opened by ``depthaccel.store``).

Schema (``SCHEMA_VERSION`` 2; the file carries ``PRAGMA application_id = APPLICATION_ID``
and ``PRAGMA user_version = SCHEMA_VERSION``, both checked on open)::

    runs(
      key              TEXT PRIMARY KEY,  -- run_key(config, data_fingerprint, math_version)
      config           TEXT NOT NULL,     -- JSON of the run's full configuration (Run.config_dict())
      data_fingerprint TEXT NOT NULL,     -- sha256 hex of the data and the trainer settings
      math_version     TEXT NOT NULL,     -- depthaccel.sweep.MATH_VERSION when computed
      label            TEXT NOT NULL,     -- human-readable name of the run
      iters            BLOB NOT NULL,     -- logged iterations, little-endian int64
      gap              BLOB NOT NULL,     -- loss minus optimum at those iterations, little-endian float64
      first_hit        TEXT NOT NULL,     -- JSON list of [threshold, first iteration or null]
      final_gap        REAL,              -- gap after the last iteration (NULL if not finite)
      diverged         INTEGER NOT NULL,  -- 0 or 1
      diverged_at      INTEGER,           -- iteration at which it diverged, or NULL
      wall_time        REAL NOT NULL,     -- seconds of the training call that produced it
      extra            TEXT NOT NULL,     -- JSON object: anything else (device, dtype, ...)
      created_at       REAL NOT NULL,     -- Unix time of the insert
      checksum         TEXT               -- sha256 hex of all the columns above (NULL: from v1)
    )
    checkpoints(
      group_key  TEXT PRIMARY KEY,        -- sha256 hex of the group's ordered run keys
      run_keys   TEXT NOT NULL,           -- JSON list of those run keys, in training order
      iteration  INTEGER NOT NULL,        -- iterations done when the state was taken
      state      BLOB NOT NULL,           -- the trainer's state (bytes; torch.save in sweep)
      updated_at REAL NOT NULL,
      checksum   TEXT                     -- sha256 hex of the columns above (NULL: from v1)
    )
    meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)   -- 'created_by', 'created_at'
    tasks(                                -- results of independent tasks (e.g. one MNIST net)
      key        TEXT PRIMARY KEY,        -- task_key(kind, config, math_version)
      label      TEXT NOT NULL,           -- human-readable name of the task
      value      TEXT NOT NULL,           -- the result as JSON (the experiment's own codec)
      created_at REAL NOT NULL,
      checksum   TEXT NOT NULL            -- sha256 hex of the columns above
    )

``tasks`` was added without a schema bump: it is created on the first task result a store
receives, a store without it simply has no stored tasks, and versions that do not know it
leave it alone (they check only that their own tables exist).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from depthaccel.store_keys import canonical_json

APPLICATION_ID = 0x44414343  # "DACC"
SCHEMA_VERSION = 2
DEFAULT_FILENAME = "depthaccel-store.sqlite"
SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE runs (
  key TEXT PRIMARY KEY,
  config TEXT NOT NULL,
  data_fingerprint TEXT NOT NULL,
  math_version TEXT NOT NULL,
  label TEXT NOT NULL,
  iters BLOB NOT NULL,
  gap BLOB NOT NULL,
  first_hit TEXT NOT NULL,
  final_gap REAL,
  diverged INTEGER NOT NULL,
  diverged_at INTEGER,
  wall_time REAL NOT NULL,
  extra TEXT NOT NULL,
  created_at REAL NOT NULL,
  checksum TEXT
);
CREATE TABLE checkpoints (
  group_key TEXT PRIMARY KEY,
  run_keys TEXT NOT NULL,
  iteration INTEGER NOT NULL,
  state BLOB NOT NULL,
  updated_at REAL NOT NULL,
  checksum TEXT
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
TABLES = {"runs", "checkpoints", "meta"}
RUN_COLUMNS = (
    "key", "config", "data_fingerprint", "math_version", "label", "iters", "gap",
    "first_hit", "final_gap", "diverged", "diverged_at", "wall_time", "extra", "created_at",
)  # fmt: skip
CHECKPOINT_COLUMNS = ("group_key", "run_keys", "iteration", "state", "updated_at")
TASK_TABLE = """CREATE TABLE IF NOT EXISTS tasks (
  key TEXT PRIMARY KEY,
  label TEXT NOT NULL,
  value TEXT NOT NULL,
  created_at REAL NOT NULL,
  checksum TEXT NOT NULL
)"""
TASK_COLUMNS = ("key", "label", "value", "created_at")


def row_checksum(values: Sequence[Any]) -> str:
    """sha256 hex of a row's column values exactly as SQLite stores them.

    Each value is encoded with a type tag and its length: NULL, INTEGER (decimal), REAL
    (IEEE-754 little-endian float64, bit-exact), TEXT (UTF-8) or BLOB (raw bytes), so any
    flipped byte in any column changes the digest.
    """
    h = hashlib.sha256()
    for v in values:
        if v is None:
            h.update(b"N")
            continue
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, int):
            tag, data = b"I", str(v).encode()
        elif isinstance(v, float):
            tag, data = b"R", struct.pack("<d", v)
        elif isinstance(v, str):
            tag, data = b"T", v.encode("utf-8", "surrogatepass")
        elif isinstance(v, bytes | bytearray | memoryview):
            tag, data = b"B", bytes(v)
        else:
            raise TypeError(f"cannot checksum a {type(v).__name__}")
        h.update(tag + struct.pack("<Q", len(data)) + data)
    return h.hexdigest()


@dataclass(frozen=True)
class StoredRun:
    """One finished run as held in the store."""

    key: str
    config: dict[str, Any]
    data_fingerprint: str
    math_version: str
    label: str
    iters: np.ndarray  # int64
    gap: np.ndarray  # float64
    first_hit: dict[float, int | None]
    final_gap: float
    diverged: bool
    diverged_at: int | None
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True)
class Checkpoint:
    """The latest saved state of a group of runs being trained together."""

    group_key: str
    run_keys: list[str]
    iteration: int
    state: bytes
    updated_at: float


def _blob(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(np.asarray(a), dtype=np.dtype(dtype)).tobytes()


def row_to_run(row: sqlite3.Row) -> StoredRun:
    final_gap = row["final_gap"]
    for name, item in (("iters", 8), ("gap", 8)):
        if not isinstance(row[name], bytes) or len(row[name]) % item:
            raise ValueError(f"column {name} is not a whole number of 8-byte values")
    return StoredRun(
        key=row["key"],
        config=json.loads(row["config"]),
        data_fingerprint=row["data_fingerprint"],
        math_version=row["math_version"],
        label=row["label"],
        iters=np.frombuffer(row["iters"], dtype="<i8").astype(np.int64),
        gap=np.frombuffer(row["gap"], dtype="<f8").astype(np.float64),
        first_hit={
            float(t): (None if i is None else int(i)) for t, i in json.loads(row["first_hit"])
        },
        final_gap=math.nan if final_gap is None else float(final_gap),
        diverged=bool(row["diverged"]),
        diverged_at=None if row["diverged_at"] is None else int(row["diverged_at"]),
        wall_time=float(row["wall_time"]),
        extra=json.loads(row["extra"]),
        created_at=float(row["created_at"]),
    )


def run_to_row(run: StoredRun, now: float) -> tuple:
    """The row's column values in ``RUN_COLUMNS`` order, plus its checksum."""
    iters = np.asarray(run.iters)
    gap = np.asarray(run.gap)
    if iters.ndim != 1 or gap.shape != iters.shape:
        raise ValueError(
            f"run {run.label!r}: iters and gap must be 1-D of equal length, "
            f"got shapes {iters.shape} and {gap.shape}"
        )
    final_gap = float(run.final_gap)
    first_hit = [
        [float(t), None if i is None else int(i)] for t, i in sorted(run.first_hit.items())
    ]
    return (
        run.key,
        canonical_json(run.config),
        run.data_fingerprint,
        str(run.math_version),
        run.label,
        _blob(iters, "<i8"),
        _blob(gap, "<f8"),
        json.dumps(first_hit),
        final_gap if math.isfinite(final_gap) else None,
        int(bool(run.diverged)),
        None if run.diverged_at is None else int(run.diverged_at),
        float(run.wall_time),
        canonical_json(run.extra),
        float(now),
    )
