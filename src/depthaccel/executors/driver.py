"""The driver side of a sweep: the only code that writes its results to the store.

Every sweep trains through here, whatever the executor (``LocalExecutor`` in this
process, ``RayExecutor``). ``train_pending(st, executor, spec, groups, ...)`` takes the
sweep's pending groups (a checkpointed group keeps its composition and resumes; the
new runs are split by ``shards.split_runs`` into shards of at most ``spec.shard_runs``
runs: ``plan_shards``, the same plan whatever the executor and its workers), has the
executor train them (``Executor.train_shards``), and handles every event in the
caller's process:

* ``Checkpoint``: ``store.save_checkpoint(group_key(shard.keys), ...)``, so a lost
  worker costs at most ``checkpoint_every`` iterations;
* ``Done``: the shard's runs are stored and its checkpoint deleted in one transaction;
* a lost task (``retry``): the shard is resubmitted from its latest checkpoint in the
  store, at most ``max_retries`` times per shard; then ``ShardFailedError`` (finished
  shards stay stored, running ones keep their checkpoints: the same command resumes);
* one progress bar for the whole sweep: runs done / total and an ETA, advanced by every
  shard's ``Progress`` events.

Each stored run's ``extra`` says which executor trained it, where (``worker``:
host:pid), and which process wrote it (``writer_pid``: always the driver).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from depthaccel.executors.base import (
    Checkpoint,
    Done,
    Executor,
    Note,
    Progress,
    Shard,
    ShardEvent,
    ShardFailedError,
    Started,
    SweepSpec,
)
from depthaccel.executors.shards import split_runs
from depthaccel.records import dumps_state, loads_state, stored_run
from depthaccel.store import Store, group_key
from depthaccel.train import Run, RunResult

__all__ = ["DEFAULT_MAX_RETRIES", "plan_shards", "train_pending"]

#: How often one shard may be resubmitted after its task was lost.
DEFAULT_MAX_RETRIES = 3


@dataclass
class _ShardState:
    shard: Shard
    group: str
    start: int = 0  # iteration this attempt started from
    done_iters: int = 0
    failures: int = 0
    finished: bool = False
    worker: str = ""


class _Driver:
    """Receives the shards' events (``ShardSink``) and keeps the store and the bar."""

    def __init__(
        self,
        st: Store,
        executor: Executor,
        spec: SweepSpec,
        shards: list[Shard],
        *,
        fingerprint: str,
        say: Callable[[str], None],
        reused: int,
        start_iters: dict[int, int],
    ):
        total_runs = reused + sum(len(s) for s in shards)
        self.st = st
        self.executor = executor
        self.spec = spec
        self.state = {s.index: _ShardState(s, group_key(s.keys)) for s in shards}
        for index, it in start_iters.items():  # resumed shards: done up to there
            self.state[index].done_iters = self.state[index].start = int(it)
        self.fingerprint = fingerprint
        self.extra = {"device": spec.device, "dtype": spec.dtype_name, "executor": executor.name}
        self.say = say
        self.max_retries = getattr(executor, "max_retries", DEFAULT_MAX_RETRIES)
        self.results: dict[str, RunResult] = {}
        self.total_runs = total_runs
        self.runs_done = reused
        self.reused = reused
        self.bar = None
        if spec.progress:
            from tqdm.auto import tqdm

            class _Bar(tqdm):
                runs = f"{reused}/{total_runs} runs"

                @property
                def format_dict(self):  # {runs}: tqdm's {postfix} starts with ", "
                    return {**super().format_dict, "runs": self.runs}

            self.bar = _Bar(
                total=float(total_runs),
                initial=self._work_done(),
                desc=f"sweep on {executor.name} ({len(shards)} shards)",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {runs} [{elapsed}<{remaining}]",
                smoothing=0.05,
            )
            self._postfix()

    # -- progress ---------------------------------------------------------------------

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.runs = f"{self.runs_done}/{self.total_runs} runs"

    def _work_done(self) -> float:
        """Runs done, counting a shard's runs by the fraction of iterations it did."""
        iters = max(1, self.spec.iters)
        part = sum(len(x.shard) * min(x.done_iters, iters) / iters for x in self.state.values())
        return min(float(self.total_runs), self.reused + part)

    def _advance(self, s: _ShardState, iteration: int) -> None:
        s.done_iters = iteration
        if self.bar is not None:
            delta = self._work_done() - self.bar.n
            if delta:
                self.bar.update(delta)  # negative when a lost shard restarts further back

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # -- ShardSink ----------------------------------------------------------------------

    def event(self, shard: Shard, event: ShardEvent) -> None:
        s = self.state[shard.index]
        if isinstance(event, Started):
            s.worker = f"{event.node}:{event.pid}"
            s.start = event.iteration
            self._advance(s, event.iteration)
        elif isinstance(event, Progress):
            self._advance(s, event.iteration)
        elif isinstance(event, Checkpoint):
            self.st.save_checkpoint(s.group, list(shard.keys), event.iteration, event.blob)
            self._advance(s, event.iteration)
        elif isinstance(event, Note):
            self.say(f"shard {shard.index + 1}: {event.message}")
        elif isinstance(event, Done):
            self._finish(s, event.results)
        else:  # pragma: no cover - a programming error
            raise TypeError(f"unknown shard event {event!r}")
        if self.executor.observer is not None:
            self.executor.observer(shard, event)

    def _finish(self, s: _ShardState, results: list[RunResult]) -> None:
        shard = s.shard
        if len(results) != len(shard):
            raise RuntimeError(
                f"shard {shard.index + 1} returned {len(results)} results for {len(shard)} runs"
            )
        extra = dict(
            self.extra,
            group_size=len(shard),
            worker=s.worker,
            writer_pid=os.getpid(),
        )
        self.st.finish_group(
            s.group,
            [
                stored_run(k, r, self.fingerprint, extra)
                for k, r in zip(shard.keys, results, strict=True)
            ],
        )
        for k, r in zip(shard.keys, results, strict=True):
            self.results[k] = r
        s.finished = True
        self._advance(s, self.spec.iters)
        self.runs_done += len(shard)
        self._postfix()
        if self.bar is not None:
            self.bar.refresh()

    def retry(self, shard: Shard, error: BaseException) -> Shard:
        s = self.state[shard.index]
        s.failures += 1
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if s.failures > self.max_retries:
            n_done = sum(len(x.shard) for x in self.state.values() if x.finished)
            raise ShardFailedError(
                f"shard {shard.index + 1} ({len(shard)} runs) was lost {s.failures} times "
                f"(last: {type(error).__name__}: {first_line}); stopping the sweep. "
                f"{n_done} finished runs of this sweep and the latest checkpoints are in "
                f"{self.st.path}: the same command resumes from them."
            ) from error
        ck = self.st.load_checkpoint(s.group)
        if ck is not None and list(ck.run_keys) == list(shard.keys):
            new = replace(shard, resume=ck.state)
            where = f"from its checkpoint at iteration {ck.iteration}"
        else:
            new = shard
            where = "from where it started (no newer checkpoint)"
        s.shard = new
        self.say(
            f"shard {shard.index + 1} ({len(shard)} runs) lost its worker ({type(error).__name__}); "
            f"resubmitting {where} (failure {s.failures} of at most {self.max_retries + 1})"
        )
        return new


def plan_shards(
    groups: Sequence[tuple[list[str], dict[str, Any] | None]],
    by_key: dict[str, Run],
    spec: SweepSpec,
    thresholds: Sequence[float],
) -> list[Shard]:
    """Shards of the sweep's pending ``groups`` (run keys, checkpoint state or None): a
    checkpointed group is one shard that resumes from its state (and tracks the
    thresholds it was saved with); the fresh runs are split by ``split_runs`` into
    shards of at most ``spec.shard_runs`` runs by their engine group
    (``SweepSpec.engine_group``) and track ``thresholds``. A function of the runs only,
    never of the executor."""
    shards: list[Shard] = []
    for gkeys, state in groups:
        if state is not None:
            shards.append(
                Shard(
                    index=len(shards),
                    runs=tuple(by_key[k] for k in gkeys),
                    keys=tuple(gkeys),
                    thresholds=tuple(float(t) for t in state["thresholds"]),
                    resume=dumps_state(state),
                )
            )
            continue
        runs = [by_key[k] for k in gkeys]
        for idx in split_runs(runs, spec.engine_group, spec.shard_runs):
            shards.append(
                Shard(
                    index=len(shards),
                    runs=tuple(runs[i] for i in idx),
                    keys=tuple(gkeys[i] for i in idx),
                    thresholds=tuple(thresholds),
                )
            )
    return shards


def train_pending(
    st: Store,
    executor: Executor,
    spec: SweepSpec,
    groups: Sequence[tuple[list[str], dict[str, Any] | None]],
    by_key: dict[str, Run],
    *,
    thresholds: Sequence[float],
    fingerprint: str,
    say: Callable[[str], None],
    reused: int = 0,
) -> tuple[dict[str, RunResult], dict[str, int]]:
    """``depthaccel.sweep.sweep``'s pending ``groups`` trained on ``executor``: plans the
    shards (``plan_shards``; the fresh ones track ``thresholds``), fills in L* once
    (``SweepSpec.with_optimum``), has the executor train them while this process
    handles every event (see the module docstring; stored runs are keyed with
    ``fingerprint``; one progress bar when ``spec.progress``), and returns the results
    by run key and, for each resumed group, the iteration it resumed from (group key ->
    iteration). ``reused``: how many of the sweep's runs came from the store (for the
    progress bar)."""
    shards = plan_shards(groups, by_key, spec, thresholds)
    resumed: dict[str, int] = {}
    if not shards:
        return {}, resumed
    spec = spec.with_optimum()
    start_iters: dict[int, int] = {}
    for s in shards:
        if s.resume is not None:
            it = int(loads_state(s.resume)["iteration"])
            resumed[group_key(s.keys)] = start_iters[s.index] = it
            say(f"resuming {len(s)} runs from iteration {it} of {spec.iters}")
    fresh = sum(len(s) for s in shards if s.resume is None)
    if fresh:
        say(
            f"training {fresh} runs for {spec.iters} iterations on {executor.name} "
            f"({sum(s.resume is None for s in shards)} shards)"
        )
    t0 = time.perf_counter()
    driver = _Driver(
        st, executor, spec, shards,
        fingerprint=fingerprint, say=say, reused=reused, start_iters=start_iters,
    )  # fmt: skip
    try:
        executor.train_shards(spec, shards, driver)
    finally:
        driver.close()
    missing = [s.shard.index + 1 for s in driver.state.values() if not s.finished]
    if missing:  # pragma: no cover - an executor that returned early
        raise RuntimeError(f"executor {executor.name!r} returned before shards {missing} finished")
    say(
        f"{executor.name}: trained {sum(len(s) for s in shards)} runs in {len(shards)} shards "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return driver.results, resumed
