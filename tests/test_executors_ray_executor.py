"""Tests of depthaccel.executors.ray_executor on one shared local 2-CPU Ray cluster.

The cluster's workers cannot open SQLite (see the ``ray_cluster`` fixture): every sweep
here that finishes shows that only the driver touched the store."""

from __future__ import annotations

import os
import signal

import pytest

from executor_fixtures import THRESHOLDS, assert_same, grid, problem

pytest.importorskip("ray")

from depthaccel.executors import (  # noqa: E402
    Executor,
    LocalExecutor,
    ShardFailedError,
    TaskHooks,
)
from depthaccel.executors.base import Checkpoint, Done, Started  # noqa: E402
from depthaccel.executors.ray_executor import RayExecutor  # noqa: E402
from depthaccel.store import Store  # noqa: E402
from depthaccel.sweep import sweep  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "ray_cluster")


def run_sweep(store, executor, iters=300, K=50, runs=None, **kw):
    X, y = problem()
    return sweep(
        X, y, 4, runs or grid(), iters, store=store, thresholds=THRESHOLDS, log_points=60,
        checkpoint_every=K, executor=executor, **kw,
    )  # fmt: skip


def test_ray_equals_local_and_in_process_bit_for_bit_and_only_the_driver_writes(tmp_path):
    ex = RayExecutor()
    assert isinstance(ex, Executor)
    assert ex.mode == "existing" and ex.workers == 2
    assert ex.settings()["executor"] == "ray" and ex.settings()["cluster_cpus"] == 2
    starts = []
    ex.observer = lambda shard, ev: starts.append(ev) if isinstance(ev, Started) else None
    on_ray = run_sweep(tmp_path / "ray.sqlite", ex, shard_runs=4)
    local = run_sweep(tmp_path / "local.sqlite", LocalExecutor(), shard_runs=4)
    here = run_sweep(tmp_path / "here.sqlite", None, shard_runs=4)
    assert_same(on_ray.results, local.results)  # float64, same shards: bit for bit
    assert_same(on_ray.results, here.results)  # --jobs 2 == --jobs 1
    worker_pids = {e.pid for e in starts}
    assert len(starts) == 4 and os.getpid() not in worker_pids  # 4 + 3 gd, e2e, adam
    with Store(tmp_path / "ray.sqlite") as st:
        stored = st.get_runs(on_ray.keys).values()
    assert {s.extra["executor"] for s in stored} == {"ray"}
    assert {s.extra["writer_pid"] for s in stored} == {os.getpid()}
    assert {int(s.extra["worker"].rsplit(":", 1)[1]) for s in stored} == worker_pids
    ex.close()  # joined an existing Ray: leaves it running
    import ray

    assert ray.is_initialized()


def test_workers_cannot_open_the_store(tmp_path):
    """The guard the other tests rely on is live: a task that opens a store fails."""
    ex = RayExecutor()
    path = str(tmp_path / "s.sqlite")

    def open_store(p):
        from depthaccel.store import Store

        Store(p)

    with pytest.raises(RuntimeError, match="SQLite"):
        ex.map(open_store, [path])
    assert not os.path.exists(path)
    assert ex.map(lambda x: (x * x, os.getpid()), [3])[0][0] == 9


def test_map_reports_each_result_in_the_driver_as_it_ends(tmp_path):
    """``on_result(i, result)`` runs in the driver's thread for every task, in order of
    completion, and the list keeps the item order. The first task ends last by events,
    not by a sleep: it waits until the driver has reported the second one's result."""
    import threading
    import time

    ex = RayExecutor()
    got, threads = [], set()
    reported = tmp_path / "second-reported"

    def on_result(i, r):
        got.append((i, r))
        threads.add(threading.get_ident())
        if i == 1:
            reported.touch()

    def square(x, flag=str(reported)):
        if x == 3:  # the first task: ends after the driver reported the second
            deadline = time.monotonic() + 120
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.01)
        return x * x

    assert ex.map(square, [3, 4], hooks=TaskHooks(on_result=on_result)) == [9, 16]
    assert got == [(1, 16), (0, 9)] and threads == {threading.get_ident()}


def test_worker_killed_mid_shard_is_resubmitted_and_nothing_finished_is_redone(tmp_path):
    store = tmp_path / "ray.sqlite"
    runs = grid()
    iters, K = 4000, 400
    # two runs finished before: never sent to a worker
    run_sweep(store, LocalExecutor(1), iters=iters, K=K, runs=runs[:2])
    events: list[tuple[int, object]] = []
    killed: list[int] = []
    pids: dict[int, int] = {}

    def kill_shard_0_at_its_first_checkpoint(shard, ev):
        events.append((shard.index, ev))
        if isinstance(ev, Started):
            pids[shard.index] = ev.pid
        if shard.index == 0 and isinstance(ev, Checkpoint) and not killed:
            killed.append(ev.iteration)
            os.kill(pids[0], signal.SIGKILL)

    logs: list[str] = []
    ex = RayExecutor(observer=kill_shard_0_at_its_first_checkpoint)
    res = run_sweep(store, ex, iters=iters, K=K, runs=runs, log=logs.append)
    assert killed == [K]
    assert res.reused == 2 and res.computed == len(runs) - 2
    starts = sorted((i, ev.iteration) for i, ev in events if isinstance(ev, Started))
    # shard 0 resumed from its latest stored checkpoint (K, or a later one that was
    # already on its way when the kill landed); shards 1 and 2 ran once
    assert starts[0] == (0, 0) and starts[2:] == [(1, 0), (2, 0)] and len(starts) == 4
    assert starts[1][0] == 0 and starts[1][1] >= K and starts[1][1] % K == 0
    assert any("resubmitting from its checkpoint at iteration" in m for m in logs)
    done = [ev for _, ev in events if isinstance(ev, Done)]
    trained = [r.run for ev in done for r in ev.results]
    assert sorted(map(repr, trained)) == sorted(map(repr, runs[2:]))  # stored runs not redone
    ref_store = tmp_path / "local.sqlite"
    run_sweep(ref_store, None, iters=iters, K=K, runs=runs[:2])
    ref = run_sweep(ref_store, None, iters=iters, K=K, runs=runs)
    assert_same(res.results, ref.results)  # equal curves, bit for bit
    with Store(store) as st:
        assert not st.checkpoints() and st.count_runs() == len(runs)


def test_a_shard_lost_too_often_stops_the_sweep_and_a_rerun_resumes(tmp_path):
    store = tmp_path / "ray.sqlite"
    iters, K = 4000, 400
    pids: dict[int, int] = {}

    def kill_shard_0_at_each_checkpoint(shard, ev):
        if isinstance(ev, Started):
            pids[shard.index] = ev.pid
        if shard.index == 0 and isinstance(ev, Checkpoint):
            os.kill(pids[0], signal.SIGKILL)

    ex = RayExecutor(max_retries=1, observer=kill_shard_0_at_each_checkpoint)
    with pytest.raises(ShardFailedError, match=r"shard 1 \(\d+ runs\) was lost 2 times"):
        run_sweep(store, ex, iters=iters, K=K)
    with Store(store) as st:
        its = dict(st.checkpoints())
    assert len(its) >= 1 and min(its.values()) >= K  # the latest states stay stored
    res = run_sweep(store, RayExecutor(), iters=iters, K=K)
    assert sorted(res.resumed.values()) == sorted(its.values())
    ref = run_sweep(tmp_path / "local.sqlite", None, iters=iters, K=K)
    assert_same(res.results, ref.results)  # resumed and finished shards: same batches


def test_checkpointed_tasks_stream_their_checkpoints_to_the_driver():
    """``map(..., hooks=TaskHooks(on_checkpoint=, resume=))``: each task is called as ``fn(item, start,
    emit)`` in a worker; every ``emit`` reaches the driver's thread while the task runs,
    before its result; ``resume[i]`` is the task's ``start``; a task's exception stops
    the map and propagates."""
    import threading

    ex = RayExecutor()
    events, threads = [], set()

    def count(n, start, emit):
        i = start or 0
        while i < n:
            i += 1
            if i % 2 == 0 and i < n:
                emit(i, f"state {i}".encode())
        return (start, i)

    def on_checkpoint(i, step, state):
        events.append(("ckpt", i, step, state))
        threads.add(threading.get_ident())

    def on_result(i, r):
        events.append(("result", i, r))

    hooks = TaskHooks(on_result=on_result, on_checkpoint=on_checkpoint, resume=[None, 1])
    out = ex.map(count, [5, 4], hooks=hooks)
    assert out == [(None, 5), (1, 4)]
    for i, steps in ((0, [2, 4]), (1, [2])):
        mine = [e for e in events if e[1] == i]
        assert [e[2] for e in mine[:-1]] == steps and mine[-1][0] == "result"
        assert all(e[3] == f"state {e[2]}".encode() for e in mine[:-1])
    assert threads == {threading.get_ident()}

    def boom(n, start, emit):
        emit(1, b"x")
        raise ValueError("bad task")

    with pytest.raises(ValueError, match="bad task"):
        ex.map(boom, [1], hooks=TaskHooks(on_checkpoint=lambda *a: None))
