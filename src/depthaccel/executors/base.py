"""What executors share: the ``Executor`` protocol, the work they receive, the events they send.

A sweep (``depthaccel.sweep.sweep``) hands an executor a :class:`TrainSpec` (the data and
every trainer setting, identical for all of the sweep's shards) and a list of
:class:`Shard` s (runs trained together as one ``depthaccel.train.train`` call). Wherever
a shard runs, ``depthaccel.executors.worker.run_shard`` trains it and reports
:data:`ShardEvent` s to the driver: ``Started`` (who runs it, from which iteration),
``Progress``, ``Checkpoint`` (the serialised state every ``checkpoint_every``
iterations), ``Note`` (a message), and finally ``Done`` (the results). The driver
(``depthaccel.executors.driver``) is the only process that touches the results store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from depthaccel.losses import SoftmaxCE
from depthaccel.train import Run, RunResult

__all__ = [
    "Checkpoint",
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
    "TrainSpec",
]


class ExecutorError(RuntimeError):
    """An executor cannot be set up (e.g. Ray missing, a cluster address unreachable)."""


class ShardFailedError(RuntimeError):
    """A shard failed more often than the executor retries; finished runs stay stored."""


@dataclass(frozen=True)
class TrainSpec:
    """The part of a training call that every shard of a sweep shares.

    ``X`` (m x d) and ``y`` ((m,) or (m, k)) are float64 numpy arrays (an executor sends
    them once, e.g. into Ray's object store); ``optimum`` is L* (computed once by the
    driver); ``options`` are the trainer options that change numbers (``log_scale``,
    ``diverge_factor``, ``gram``, ``fast_width1``); ``checkpoint_every`` is K (None: no
    checkpoints).
    """

    X: np.ndarray
    y: np.ndarray
    p: float | SoftmaxCE  # the l_p exponent, or the softmax cross-entropy (y: classes)
    iters: int
    optimum: float
    log_points: int = 1000
    device: str = "cpu"
    dtype: torch.dtype | None = None
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int | None = None


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

    def train_shards(self, spec: TrainSpec, shards: Sequence[Shard], sink: ShardSink) -> None:
        """Train every shard; report each one's events to ``sink`` (in the caller's
        process and thread); return when all are done. Exceptions of the training code
        propagate; a lost task is resubmitted via ``sink.retry``."""

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        gpu: bool = False,
        on_result: Callable[[int, Any], None] | None = None,
        resume: Sequence[Any] | None = None,
        on_checkpoint: Callable[[int, int, Any], None] | None = None,
    ) -> list:
        """``[fn(item) for item in items]``, each item an independent task (``gpu``: each
        task needs one GPU). ``on_result(i, result)`` is called in the caller's process and
        thread as soon as item ``i`` is done (so a driver can store it before the others
        end).

        Checkpointed tasks: with ``on_checkpoint``, each task is called as
        ``fn(item, start, emit)`` with ``start = resume[i]`` (None without ``resume``), and
        every ``emit(step, state)`` of the task reaches ``on_checkpoint(i, step, state)``
        in the caller's process and thread while the task runs."""

    def settings(self) -> dict[str, Any]:
        """What a report should say about this executor (JSON-able)."""

    def close(self) -> None:
        """Release what the executor started (a Ray cluster it launched)."""
