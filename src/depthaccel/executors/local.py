"""The in-process executor: shards one after another, tasks in a plain loop (no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from depthaccel.executors.base import ClosesOnExit, Shard, ShardEvent, ShardSink, SweepSpec
from depthaccel.executors.tasks import TaskFn, TaskHooks
from depthaccel.executors.worker import run_shard
from depthaccel.validation import COUNT, check

__all__ = ["LocalExecutor"]


class LocalExecutor(ClosesOnExit):
    """Train shards in this process, one after another (``sweep``'s default executor).

    The shards are those of any Ray executor (the driver's plan depends on the runs
    only: ``shards.split_runs``), so all give bit-identical float64 results (same torch
    thread count assumed). ``workers`` (default 1) is what this
    executor reports as its capacity (``Executor.workers``); it trains one shard at a
    time whatever it is, and it never changes the shards. Nothing is retried: an
    exception here is a bug or bad input, not a lost worker.
    """

    name = "local"
    max_retries = 3  # used only by subclasses that lose tasks (tests): nothing is lost here

    def __init__(
        self,
        workers: int = 1,
        *,
        observer: Callable[[Shard, ShardEvent], None] | None = None,
    ):
        self._workers = check("workers", workers, COUNT)
        self.observer = observer

    @property
    def workers(self) -> int:
        return self._workers

    def train_shards(self, spec: SweepSpec, shards: Sequence[Shard], sink: ShardSink) -> None:
        for shard in shards:
            run_shard(spec, shard, lambda event, shard=shard: sink.event(shard, event))

    def map(
        self, fn: TaskFn, items: Sequence[Any], *, gpu: bool = False, hooks: TaskHooks | None = None
    ) -> list:
        hooks = hooks or TaskHooks()
        return [hooks.run(fn, i, item) for i, item in enumerate(items)]

    def settings(self) -> dict[str, Any]:
        return {"executor": "local", "workers": self._workers}

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self._workers})"
