"""The in-process executor: shards one after another, tasks in a plain loop (no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from depthaccel.executors.base import Shard, ShardEvent, ShardSink, TrainSpec
from depthaccel.executors.worker import run_shard

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Train shards in this process, one after another (the default, today's path).

    ``workers`` (default 1) is only the number of shards a sweep's new runs are split
    into: ``LocalExecutor(workers=n)`` trains exactly the shards a Ray executor with ``n``
    workers trains, in this process, so the two give bit-identical float64 results (same
    torch thread count assumed). Nothing is retried: an exception here is a bug or bad
    input, not a lost worker.
    """

    name = "local"
    max_retries = 3  # used only by subclasses that lose tasks (tests): nothing is lost here

    def __init__(
        self,
        workers: int = 1,
        *,
        observer: Callable[[Shard, ShardEvent], None] | None = None,
    ):
        if isinstance(workers, bool) or int(workers) != workers or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self._workers = int(workers)
        self.observer = observer

    @property
    def workers(self) -> int:
        return self._workers

    def train_shards(self, spec: TrainSpec, shards: Sequence[Shard], sink: ShardSink) -> None:
        for shard in shards:
            run_shard(spec, shard, lambda event, shard=shard: sink.event(shard, event))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, gpu: bool = False) -> list:
        return [fn(item) for item in items]

    def settings(self) -> dict[str, Any]:
        return {"executor": "local", "shards_per_sweep": self._workers}

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self._workers})"
