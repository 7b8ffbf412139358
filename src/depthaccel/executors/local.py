"""The in-process executor: shards one after another, tasks in a plain loop (no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from depthaccel.executors.base import Shard, ShardEvent, ShardSink, SweepSpec
from depthaccel.executors.worker import run_shard
from depthaccel.validation import COUNT, check

__all__ = ["LocalExecutor"]


class LocalExecutor:
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
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        gpu: bool = False,
        on_result: Callable[[int, Any], None] | None = None,
        resume: Sequence[Any] | None = None,
        on_checkpoint: Callable[[int, int, Any], None] | None = None,
    ) -> list:
        out = []
        for i, item in enumerate(items):
            if on_checkpoint is None:
                out.append(fn(item))
            else:
                start = None if resume is None else resume[i]
                out.append(fn(item, start, lambda step, state, i=i: on_checkpoint(i, step, state)))
            if on_result is not None:
                on_result(i, out[-1])
        return out

    def settings(self) -> dict[str, Any]:
        return {"executor": "local", "workers": self._workers}

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self._workers})"
