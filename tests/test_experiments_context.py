"""ExperimentContext: the one training path, its caches, its checks, map."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from depthaccel.experiments.context import ExperimentContext


def _small_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(40)
    return X, y


def test_the_context_routes_training_through_its_store(tmp_path):
    """ctx.train trains directly without a store and through the store with one (a
    second context on the same store reuses the run: nothing global links them)."""
    from depthaccel.train import Run, train

    X, y = _small_problem()
    run = [Run("gd", 1e-2)]
    plain = ExperimentContext(tmp_path / "a")
    first = ExperimentContext(tmp_path / "b", store=tmp_path / "s.sqlite")
    second = ExperimentContext(tmp_path / "c", store=tmp_path / "s.sqlite")
    ref = train(X, y, 2, run, 20, log_points=5)[0].final_gap
    assert plain.train(X, y, 2, run, 20, log_points=5)[0].final_gap == ref
    assert plain.store_summary() is None and not (tmp_path / "s.sqlite").exists()
    assert first.train(X, y, 2, run, 20, log_points=5)[0].final_gap == pytest.approx(ref)
    assert (first.stats.reused, first.stats.trained) == (0, 1)
    assert second.train(X, y, 2, run, 20, log_points=5)[0].final_gap == pytest.approx(ref)
    assert (second.stats.reused, second.stats.trained) == (1, 0)
    assert (first.stats.reused, first.stats.trained) == (0, 1)  # untouched by the second
    assert second.store_summary()["training_seconds"] == first.stats.training_seconds > 0


def test_the_context_caches_optima_in_its_cache_only():
    from depthaccel.experiments.context import ContextCache
    from depthaccel.losses import lp_optimum

    X, y = _small_problem()
    shared = ContextCache()
    a, b = ExperimentContext(Path("a"), cache=shared), ExperimentContext(Path("b"), cache=shared)
    opt = a.optimum(X, y, 4)
    assert opt.loss == pytest.approx(lp_optimum(X, y, 4).loss, rel=1e-12)
    assert b.optimum(X, y, 4) is opt  # shared cache
    assert ExperimentContext(Path("c")).optimum(X, y, 4) is not opt  # a fresh context
    assert a.optimum(X, y, 2) is not opt


def test_context_arguments_are_checked():
    import torch

    assert ExperimentContext(Path("x"), dtype="float64").dtype is torch.float64
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        ExperimentContext(Path("x"), dtype="float16")
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        ExperimentContext(Path("x"), checkpoint_every=0)


def test_context_map_is_a_loop_or_the_executor():
    calls = []

    class Recorder:
        name = "recorder"

        def map(self, fn, items, *, gpu=False):
            calls.append(gpu)
            return [fn(i) for i in items]

    assert ExperimentContext(Path("x")).map(lambda v: v * 2, [1, 2]) == [2, 4]
    ctx = ExperimentContext(Path("x"), executor=Recorder())
    assert ctx.map(lambda v: v + 1, (1, 2), gpu=True) == [2, 3] and calls == [True]


def _stored(kind="square", keep=lambda r: True):
    from depthaccel.experiments.context import StoredTasks

    return StoredTasks(
        kind=kind,
        config=lambda item: {"item": item},
        encode=lambda r: {"value": r},
        decode=lambda d: d["value"],
        keep=keep,
    )


def test_context_map_keeps_task_results_in_the_store(tmp_path):
    """With a store, finished tasks are read back, never rerun; each new result is stored
    as soon as its task ends (a failure later loses only the running task)."""
    calls = []

    def square(v):
        calls.append(v)
        if v == 99:
            raise RuntimeError("boom")
        return v * v

    ctx = ExperimentContext(tmp_path, store=tmp_path / "s.sqlite", log=lambda m: None)
    assert ctx.map(square, [1, 2, 3], stored=_stored()) == [1, 4, 9] and calls == [1, 2, 3]
    assert ctx.stats.tasks_run == 3 and ctx.stats.tasks_reused == 0
    with pytest.raises(RuntimeError, match="boom"):
        ctx.map(square, [2, 4, 99, 5], stored=_stored())
    assert calls == [1, 2, 3, 4, 99]  # 2 was reused; 4 ran and was stored before 99 failed
    again = ExperimentContext(tmp_path, store=tmp_path / "s.sqlite", log=lambda m: None)
    assert again.map(square, [4, 2, 5], stored=_stored()) == [16, 4, 25]
    assert calls == [1, 2, 3, 4, 99, 5] and again.stats.tasks_reused == 2
    # another kind is another key; without a store nothing is stored
    assert ctx.map(square, [2], stored=_stored("other")) == [4] and calls[-1] == 2
    assert ExperimentContext(tmp_path).map(square, [3], stored=_stored()) == [9]
    assert calls[-1] == 3


def test_context_map_stores_only_what_keep_allows_and_through_the_executor(tmp_path):
    from depthaccel.executors import LocalExecutor

    seen = []
    ctx = ExperimentContext(
        tmp_path, store=tmp_path / "s.sqlite", executor=LocalExecutor(1), log=seen.append
    )
    stored = _stored(keep=lambda r: r % 2 == 0)
    assert ctx.map(lambda v: v + 1, [1, 2, 3], stored=stored) == [2, 3, 4]
    assert ctx.map(lambda v: -v, [1, 2, 3], stored=stored) == [2, -2, 4]  # 2 was not kept
    assert "reused 2 of 3 square tasks, 1 to run" in seen[-1]


def _counting_task(limit_at=None):
    """A resumable task: counts to the item's value, a checkpoint (bytes) every 2 steps;
    raises at step ``limit_at`` (a killed worker)."""

    def task(n, start, emit):
        i = 0 if start is None else int(start.decode())
        trace = [i]
        while i < n:
            i += 1
            if i == limit_at:
                raise RuntimeError("killed")
            if i % 2 == 0 and i < n:
                emit(i, str(i).encode())
        trace.append(i)
        return trace

    return task


@pytest.mark.parametrize("through_executor", [False, True])
def test_a_resumable_task_continues_from_its_stored_checkpoint(tmp_path, through_executor):
    """``StoredTasks(resumable=True)``: the task's checkpoints are stored while it runs;
    after a failure the same map resumes it from its latest one; once its result is
    stored the checkpoint is gone."""
    from depthaccel.executors import LocalExecutor
    from depthaccel.store import Store

    stored = dataclasses.replace(_stored("count"), resumable=True)
    logs = []
    ex = LocalExecutor(1) if through_executor else None
    ctx = ExperimentContext(tmp_path, store=tmp_path / "s.sqlite", executor=ex, log=logs.append)
    with pytest.raises(RuntimeError, match="killed"):
        ctx.map(_counting_task(limit_at=7), [9], stored=stored)
    with Store(tmp_path / "s.sqlite") as st:
        assert [it for _, it in st.checkpoints()] == [6]
    assert ctx.map(_counting_task(), [9], stored=stored) == [[6, 9]]  # resumed at 6
    assert "resuming 9 from step 6" in logs[-1]
    with Store(tmp_path / "s.sqlite") as st:
        assert st.checkpoints() == []
    assert ctx.map(_counting_task(limit_at=1), [9], stored=stored) == [[6, 9]]  # stored
    # a checkpoint left beside a stored result (killed between the two writes) is dropped
    from depthaccel.store import task_key
    from depthaccel.sweep import MATH_VERSION

    with Store(tmp_path / "s.sqlite") as st:
        st.save_checkpoint(task_key("count", {"item": 9}, MATH_VERSION), [], 8, b"8")
    assert ctx.map(_counting_task(limit_at=1), [9], stored=stored) == [[6, 9]]
    with Store(tmp_path / "s.sqlite") as st:
        assert st.checkpoints() == []
