"""What the sweep and its executors share: the ``SweepSpec``, the work, the events, the protocol.

``depthaccel.sweep.sweep`` turns its arguments into one :class:`SweepSpec` (the data and
every trainer setting, identical for all of the sweep's shards), splits its new runs
into :class:`Shard` s (runs trained together as one ``depthaccel.train.train`` call) and
hands both to an ``Executor`` (``LocalExecutor`` in this process by default, or
``RayExecutor``) through the driver (``depthaccel.executors.driver``). Wherever a shard
runs, ``depthaccel.executors.worker.run_shard`` trains it and reports
:data:`ShardEvent` s to the driver: ``Started`` (who runs it, from which iteration),
``Progress``, ``Checkpoint`` (the serialised state every ``checkpoint_every``
iterations), ``Note`` (a message), and finally ``Done`` (the results). The driver is
the only code that touches the results store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from depthaccel.executors.shards import SHARD_RUNS, check_max_runs, engine_group
from depthaccel.executors.tasks import TaskFn, TaskHooks
from depthaccel.losses import LpOptimum, SoftmaxCE, optimum_loss
from depthaccel.train import Run, RunResult

__all__ = [
    "TRAIN_OPTIONS",
    "Checkpoint",
    "ClosesOnExit",
    "Done",
    "Executor",
    "ExecutorError",
    "Note",
    "Progress",
    "Shard",
    "ShardEvent",
    "ShardSink",
    "ShardFailedError",
    "Started",
    "SweepSpec",
]

#: Keyword arguments of ``depthaccel.train.train`` that a sweep passes on (they change
#: numbers, so they are part of the data fingerprint): ``SweepSpec.options``.
TRAIN_OPTIONS = frozenset({"log_scale", "diverge_factor", "gram", "fast_width1"})


class ExecutorError(RuntimeError):
    """An executor cannot be set up (e.g. Ray missing, a cluster address unreachable)."""


class ShardFailedError(RuntimeError):
    """A shard failed more often than the executor retries; finished runs stay stored."""


_Self = TypeVar("_Self", bound="ClosesOnExit")


class ClosesOnExit:
    """An executor as a context manager: ``with executor:`` calls its ``close`` on the
    way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, eq=False)  # eq: arrays have no truth value; compared by identity
class SweepSpec:
    """One sweep's data and trainer settings: everything but its runs, its store and
    where it trains. ``depthaccel.sweep.sweep`` builds it from its arguments; the driver
    and every executor and worker receive it (an executor sends it once, e.g. into
    Ray's object store); all of the sweep's shards share it.

    Construction normalises and checks the fields, so that every path (the sweep's
    fingerprint, the driver, each worker) sees the same values.

    Attributes:
        X: the design matrix (m x d), stored as a float64 C-order numpy array (the
            memory layout picks the GEMM kernel, hence the last bits: every path trains
            on this one copy).
        y: targets (m,) or (m, k), float64 C-order (class indices for a ``SoftmaxCE``).
        p: the l_p exponent as a float, or a :class:`depthaccel.losses.SoftmaxCE`.
        iters: T, the number of updates of every run.
        optimum: L* as the caller fixed it (a float; an ``LpOptimum`` gives its
            ``loss``), or None: computed from the data (``losses.optimum_loss``). The data
            fingerprint hashes it as given. The driver computes a None once, when there
            is something to train, and hands the executors a spec with it filled in
            (``with_optimum``); a worker given None leaves it to ``train``.
        thresholds: the first-hit thresholds the caller asked for, sorted, without
            duplicates (a shard may track more: ``Shard.thresholds``).
        log_points: about this many logged iterations per run (``train``).
        device: the torch device of the computation, as a string.
        dtype: the compute dtype (None: ``train``'s default, float64).
        options: the other trainer options that change numbers (a subset of
            ``TRAIN_OPTIONS``: ``log_scale``, ``diverge_factor``, ``gram``,
            ``fast_width1``), values as given (they are fingerprinted as given).
        checkpoint_every: K, a checkpoint every K iterations (None: none).
        shard_runs: most runs per shard (``shards.split_runs``; default ``SHARD_RUNS``).
        progress: show one progress bar for the whole sweep (the driver's).

    Raises:
        ValueError: ``checkpoint_every`` or ``shard_runs`` below 1 (or not whole), an
            option outside ``TRAIN_OPTIONS``, data that are not numbers.
    """

    X: np.ndarray
    y: np.ndarray
    p: float | SoftmaxCE
    iters: int
    optimum: float | None = None
    thresholds: tuple[float, ...] = ()
    log_points: int = 1000
    device: str = "cpu"
    dtype: torch.dtype | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_every: int | None = None
    shard_runs: int = SHARD_RUNS
    progress: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_every is not None and not int(self.checkpoint_every) >= 1:
            raise ValueError(
                f"checkpoint_every must be >= 1 or None, got {self.checkpoint_every!r}"
            )
        shard_runs = check_max_runs(self.shard_runs)
        unknown = set(self.options) - TRAIN_OPTIONS
        if unknown:
            raise ValueError(
                f"unknown train option(s) {sorted(unknown)}; "
                f"sweep passes on {sorted(TRAIN_OPTIONS)}"
            )
        optimum = self.optimum.loss if isinstance(self.optimum, LpOptimum) else self.optimum
        fields = {
            "X": _float64(self.X),
            "y": _float64(self.y),
            "p": self.p if isinstance(self.p, SoftmaxCE) else float(self.p),
            "iters": int(self.iters),
            "optimum": None if optimum is None else float(optimum),
            "thresholds": _sorted_floats(self.thresholds),
            "log_points": int(self.log_points),
            "device": str(self.device),
            "options": dict(self.options),
            "checkpoint_every": None
            if self.checkpoint_every is None
            else int(self.checkpoint_every),
            "shard_runs": shard_runs,
            "progress": bool(self.progress),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def dtype_name(self) -> str:
        """The compute dtype's name as stored runs and the fingerprint spell it
        (``"float64"``, ``"float32"``; ``"default"`` for None)."""
        if self.dtype is None:
            return "default"
        if isinstance(self.dtype, torch.dtype):
            return str(self.dtype).removeprefix("torch.")
        return str(self.dtype)

    def engine_group(self, run: Run) -> Any:
        """The key by which ``shards.split_runs`` partitions the runs: the trainer's
        batching group (``shards.engine_group``) on d features and k = y's columns (1
        for a vector y, class labels included: the shard plan has always used that k)."""
        k = 1 if self.y.ndim == 1 else int(self.y.shape[1])
        fast = bool(self.options.get("fast_width1", True))
        return engine_group(run, int(self.X.shape[1]), k, fast)

    def with_optimum(self) -> SweepSpec:
        """This spec with L* filled in: ``optimum`` as fixed, else computed from the data
        in float64 (as ``train`` computes it: the same float64 tensors)."""
        if self.optimum is not None:
            return self
        lstar = optimum_loss(torch.as_tensor(self.X), torch.as_tensor(self.y), self.p)
        return replace(self, optimum=float(lstar))


def _float64(a: Any) -> np.ndarray:
    """``a`` (numpy, torch, nested lists) as a float64 C-order numpy array."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def _sorted_floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(sorted({float(v) for v in values}))


@dataclass(frozen=True)
class Shard:
    """Runs trained together as one tensor program (one ``train`` call).

    ``keys`` are the runs' store keys (same order as ``runs``; the checkpoint's group key
    is ``store.group_key(keys)``), ``thresholds`` the first-hit thresholds tracked,
    ``resume`` a checkpoint blob (``depthaccel.records.checkpoint_blob``) to continue from,
    or None to start at iteration 0. ``index`` numbers the shards of one sweep.
    """

    index: int
    runs: tuple[Run, ...]
    keys: tuple[str, ...]
    thresholds: tuple[float, ...] = ()
    resume: bytes | None = None

    def __len__(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class Started:
    """The shard started in process ``pid`` on host ``node`` at ``iteration``."""

    pid: int
    node: str
    iteration: int

    @classmethod
    def here(cls, iteration: int) -> Started:
        """This process on this host, at ``iteration``."""
        return cls(os.getpid(), socket.gethostname(), iteration)


@dataclass(frozen=True)
class Progress:
    """The shard has done ``iteration`` iterations."""

    iteration: int


@dataclass(frozen=True)
class Checkpoint:
    """The shard's state after ``iteration`` iterations (``checkpoint_blob`` bytes)."""

    iteration: int
    blob: bytes


@dataclass(frozen=True)
class Note:
    """A one-line message for the driver's log (e.g. a checkpoint that could not resume)."""

    message: str


@dataclass(frozen=True)
class Done:
    """The shard finished: one result per run, in the shard's order."""

    results: list[RunResult]


ShardEvent = Started | Progress | Checkpoint | Note | Done


class ShardSink(Protocol):
    """The driver side of ``Executor.train_shards``."""

    def event(self, shard: Shard, event: ShardEvent) -> None:
        """Handle one event of ``shard`` (store checkpoints and results, progress)."""

    def retry(self, shard: Shard, error: BaseException) -> Shard:
        """The shard's task was lost (worker or node died): the shard to submit again,
        resuming from its latest stored checkpoint; raises ``ShardFailedError`` when it
        has failed too often."""


@runtime_checkable
class Executor(Protocol):
    """Where a sweep's shards and an experiment's independent tasks run.

    Attributes:
        name: ``"local"`` or ``"ray"`` (written into reports and stored runs).
        workers: how many shards can train at once; never how the runs are split into
            shards (``shards.split_runs`` depends on the runs only, so every executor
            and worker count trains the same batches).
        max_retries: how often the driver resubmits one shard whose task was lost
            before it stops the sweep with ``ShardFailedError``.
        observer: None, or a callable ``(shard, event)`` called by the driver after it
            handled each event (for tests and diagnostics).
    """

    name: str
    max_retries: int
    observer: Callable[[Shard, ShardEvent], None] | None

    @property
    def workers(self) -> int: ...

    def train_shards(self, spec: SweepSpec, shards: Sequence[Shard], sink: ShardSink) -> None:
        """Train every shard; report each one's events to ``sink`` (in the caller's
        process and thread); return when all are done. Exceptions of the training code
        propagate; a lost task is resubmitted via ``sink.retry``."""

    def map(
        self, fn: TaskFn, items: Sequence[Any], *, gpu: bool = False, hooks: TaskHooks | None = None
    ) -> list:
        """``[fn(item) for item in items]``, each item an independent task (``gpu``: each
        task needs one GPU); ``hooks`` report each task's result (and checkpoints) to the
        caller while the others run (:class:`TaskHooks`)."""

    def settings(self) -> dict[str, Any]:
        """What a report should say about this executor (JSON-able)."""

    def close(self) -> None:
        """Release what the executor started (a Ray cluster it launched)."""
