"""Tests of depthaccel.executors.driver (through ``sweep(..., executor=...)``): shards,
the store written by the driver only, checkpoints, resubmission and its bound."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from depthaccel.executors import LocalExecutor, ShardFailedError
from depthaccel.executors.base import Checkpoint, Done, Started
from depthaccel.executors.worker import run_shard
from depthaccel.store import Store
from depthaccel.sweep import sweep
from depthaccel.train import Run
from executor_fixtures import THRESHOLDS, assert_same, grid, lstar, max_rel_diff, problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ITERS, K = 400, 50


def run_sweep(store, executor, runs=None, **kw):
    X, y = problem()
    return sweep(
        X, y, 4, runs or grid(), ITERS, store=store, thresholds=THRESHOLDS, log_points=60,
        checkpoint_every=K, executor=executor, **kw,
    )  # fmt: skip


def test_the_shards_and_the_numbers_do_not_depend_on_the_executor(tmp_path):
    """--jobs 2 == --jobs 1: for the same ``shard_runs`` the in-process sweep and local
    executors of any worker count train the same batches, bit for bit; the in-process
    path stores the same group sizes."""
    ref = run_sweep(tmp_path / "none.sqlite", None, shard_runs=3)
    one = run_sweep(tmp_path / "one.sqlite", LocalExecutor(1), shard_runs=3)
    three = run_sweep(tmp_path / "three.sqlite", LocalExecutor(3), shard_runs=3)
    assert_same(one.results, ref.results)
    assert_same(three.results, ref.results)
    sizes = {}
    for name in ("none", "three"):
        with Store(tmp_path / f"{name}.sqlite") as st:
            stored = st.get_runs(three.keys)
            assert not st.checkpoints()  # every shard finished: its checkpoint deleted
        sizes[name] = [stored[k].extra["group_size"] for k in three.keys]
    # 7 width-1 gd runs -> 3 + 2 + 2, e2e and adam pairs: 2 each (none of 11)
    assert sizes["none"] == sizes["three"] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2]
    assert {s.extra["executor"] for s in stored.values()} == {"local"}
    assert {s.extra["writer_pid"] for s in stored.values()} == {os.getpid()}
    assert three.computed == len(grid()) and three.reused == 0
    again = run_sweep(tmp_path / "three.sqlite", LocalExecutor(3), shard_runs=3)
    assert again.reused == len(grid()) and again.computed == 0
    assert_same(again.results, three.results)
    # another shard size batches other runs together: round-off of the loss only
    # (measured up to ~2e-15 of L; relative to a gap of 1e-5 L that is ~1e-10 of the gap)
    other = run_sweep(tmp_path / "other.sqlite", None, shard_runs=100)
    assert max_rel_diff(other.results, ref.results, lstar()) <= 1e-12


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3"])
def test_bad_shard_runs_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="runs per shard must be an integer >= 1"):
        run_sweep(tmp_path / "s.sqlite", None, shard_runs=bad)
    assert not (tmp_path / "s.sqlite").exists()


class Crash(Exception):
    pass


def test_crash_mid_shard_resumes_from_the_stored_checkpoint(tmp_path):
    store = tmp_path / "s.sqlite"
    seen: list[tuple[int, object]] = []

    def crash_at_second_checkpoint_of_shard_1(shard, event):
        seen.append((shard.index, event))
        if shard.index == 1 and isinstance(event, Checkpoint) and event.iteration == 2 * K:
            raise Crash

    ex = LocalExecutor(observer=crash_at_second_checkpoint_of_shard_1)
    with pytest.raises(Crash):
        run_sweep(store, ex, shard_runs=3)
    done0 = [e for i, e in seen if i == 0 and isinstance(e, Done)]
    assert len(done0) == 1  # shard 0 finished and was stored before the crash
    with Store(store) as st:
        assert st.count_runs() == len(done0[0].results)
        ((gk, it),) = st.checkpoints()
        assert it == 2 * K
    seen.clear()
    ex.observer = lambda shard, event: seen.append((shard.index, event))
    res = run_sweep(store, ex, shard_runs=3)
    assert res.reused == len(done0[0].results)  # shard 0 is not trained again
    assert list(res.resumed.values()) == [2 * K]
    starts = [e.iteration for _, e in seen if isinstance(e, Started)]
    assert starts[0] == 2 * K and set(starts[1:]) == {0}  # shard 1 resumed, the rest new
    ref = run_sweep(tmp_path / "ref.sqlite", None, shard_runs=3)
    by_run = {r.run: r for r in ref.results}
    resumed_runs = [e.results for i, e in seen if isinstance(e, Done)][0]
    # the resumed shard kept its composition and the never-started runs were split as
    # before (the plan depends on the runs only): bit for bit
    assert_same(resumed_runs, [by_run[r.run] for r in resumed_runs])
    assert_same(done0[0].results, [by_run[r.run] for r in done0[0].results])
    assert_same(res.results, ref.results)


class LosingExecutor(LocalExecutor):
    """Trains in this process but 'loses' shard 0's task right after each checkpoint the
    driver stored, ``losses`` times in all, and resubmits through ``sink.retry``."""

    def __init__(self, workers, losses):
        super().__init__(workers)
        self.losses = losses
        self.starts: list[tuple[int, int]] = []

    def train_shards(self, spec, shards, sink):
        todo = list(shards)
        while todo:
            shard = todo.pop(0)
            try:
                run_shard(spec, shard, lambda ev, s=shard: self._deliver(sink, s, ev))
            except ConnectionError as e:
                todo.insert(0, sink.retry(shard, e))

    def _deliver(self, sink, shard, event):
        if isinstance(event, Started):
            self.starts.append((shard.index, event.iteration))
        sink.event(shard, event)
        if shard.index == 0 and isinstance(event, Checkpoint) and self.losses > 0:
            self.losses -= 1
            raise ConnectionError("worker died")


def test_lost_task_is_resubmitted_from_its_checkpoint(tmp_path):
    ex = LosingExecutor(2, losses=2)
    logs: list[str] = []
    res = run_sweep(tmp_path / "s.sqlite", ex, log=logs.append, shard_runs=4)
    # shards: 4 + 3 width-1 gd runs, the e2e pair, the adam pair
    assert ex.starts == [(0, 0), (0, K), (0, 2 * K), (1, 0), (2, 0), (3, 0)]
    assert sum("resubmitting" in m and "checkpoint at iteration" in m for m in logs) == 2
    ref = run_sweep(tmp_path / "ref.sqlite", None, shard_runs=4)
    assert_same(res.results, ref.results)


def test_too_many_losses_stop_with_a_clear_error_and_keep_what_finished(tmp_path):
    store = tmp_path / "s.sqlite"
    ex = LosingExecutor(2, losses=10)
    ex.max_retries = 2
    # shard 1 first: it finishes before shard 0 fails for good
    ex.train_shards = _reversed(ex.train_shards)
    with pytest.raises(ShardFailedError, match=r"shard 1 \(\d+ runs\) was lost 3 times .*resumes"):
        run_sweep(store, ex, shard_runs=4)
    with Store(store) as st:
        assert st.count_runs() == len(grid()) - 4  # shards 2-4's runs
        assert [it for _, it in st.checkpoints()] == [3 * K]  # shard 0: its latest state


def _reversed(train_shards):
    return lambda spec, shards, sink: train_shards(spec, list(shards)[::-1], sink)


def test_one_bar_for_the_whole_sweep(tmp_path, capsys):
    run_sweep(tmp_path / "s.sqlite", LocalExecutor(3), progress=True, shard_runs=2)
    err = capsys.readouterr().err
    assert "sweep on local (6 shards)" in err
    assert f"{len(grid())}/{len(grid())} runs" in err
    assert "| , " not in err and f"| {len(grid())}/{len(grid())} runs [" in err
    assert "training 11 runs" not in err  # no per-shard trainer bars


def test_the_bar_reaches_the_total_after_losses_and_resumes(tmp_path, capsys):
    """Reused runs, a resumed shard and lost tasks: the bar ends at 100%, never beyond."""
    store = tmp_path / "s.sqlite"
    run_sweep(store, LocalExecutor(1), runs=grid()[:2])  # two runs reused
    ex = LocalExecutor(2, observer=_crash_at(1, 2 * K))
    with pytest.raises(Crash):
        run_sweep(store, ex, progress=True, shard_runs=3)  # shard 1 crashes after a checkpoint
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm warns when its bar goes past the total
        run_sweep(store, LosingExecutor(2, losses=2), progress=True, shard_runs=3)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last and f"{len(grid())}/{len(grid())} runs" in last


def _crash_at(index, iteration):
    def observer(shard, event):
        if shard.index == index and isinstance(event, Checkpoint) and event.iteration == iteration:
            raise Crash

    return observer


def test_in_process_equals_executor_for_fortran_order_data(tmp_path):
    """The workers get C-order arrays; the in-process path trains on the same layout (the
    layout picks the GEMM kernel, hence the last bits: Ethanol's X is Fortran-order)."""
    X, y = problem(m=200, d=24)
    runs = [Run("gd", lr, depth=dp) for dp in (1, 2, 3) for lr in (1e-2, 3e-2)]
    kw = dict(thresholds=THRESHOLDS, log_points=60, checkpoint_every=K)
    F = np.asfortranarray(X)
    here = sweep(F, y, 2, runs, ITERS, store=tmp_path / "a.sqlite", **kw)
    there = sweep(F, y, 2, runs, ITERS, store=tmp_path / "b.sqlite", executor=LocalExecutor(), **kw)
    assert_same(here.results, there.results)
