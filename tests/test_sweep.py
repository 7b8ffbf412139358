"""Tests of depthaccel.sweep: reuse through the store, checkpoints, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import depthaccel.executors.worker as worker_mod
import depthaccel.sweep as sweep_mod
from depthaccel.store import Store
from depthaccel.sweep import MATH_VERSION, data_fingerprint, dumps_state, loads_state, sweep
from depthaccel.train import Run, train

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (1e-2, 1e-4)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: torch's intra-op threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def problem(m: int = 40, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(m)
    return X, y


def grid(lrs=(3e-2, 1e-1), depths=(1, 2)) -> list[Run]:
    return [Run("gd", lr, depth=dp) for dp in depths for lr in lrs] + [
        Run("e2e", lrs[0], depth=2),
        Run("adam", 1e-2, depth=2),
        Run("gd", 10.0, depth=1),  # diverges
    ]


def train_by_group(X, y, p, runs, iters, **kw):
    """The reference of a sweep of fewer than 49 runs per engine group: one ``train``
    call per engine group (the batches the sweep must use, whatever trains them),
    results back in the given order."""
    from depthaccel.executors.shards import engine_group

    k = 1 if np.ndim(y) == 1 else np.shape(y)[1]
    groups: dict[object, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(engine_group(r, np.shape(X)[1], k), []).append(i)
    assert all(len(idx) <= 48 for idx in groups.values())
    out: list = [None] * len(runs)
    for idx in groups.values():
        for i, r in zip(idx, train(X, y, p, [runs[i] for i in idx], iters, **kw), strict=True):
            out[i] = r
    return out


def assert_same(a, b):
    """Two lists of RunResult are equal, bit for bit in float64."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.run == rb.run
        assert np.array_equal(ra.iters, rb.iters)
        assert np.array_equal(ra.gap, rb.gap, equal_nan=True)
        assert ra.first_hit == rb.first_hit
        assert ra.diverged == rb.diverged and ra.diverged_at == rb.diverged_at
        assert np.array_equal(ra.final_gap, rb.final_gap, equal_nan=True)


def test_fingerprint_covers_data_and_settings():
    X, y = problem()
    base = dict(log_points=100, dtype="float64")
    f = data_fingerprint(X, y, 4, 1000, **base)
    assert f == data_fingerprint(torch.from_numpy(X), list(y), 4.0, 1000, **base)
    X2 = X.copy()
    X2[3, 2] = np.nextafter(X2[3, 2], np.inf)  # one ulp
    others = {
        data_fingerprint(X2, y, 4, 1000, **base),
        data_fingerprint(X, y[::-1].copy(), 4, 1000, **base),
        data_fingerprint(X.T.copy().reshape(X.shape), y, 4, 1000, **base),
        data_fingerprint(X, y, 2, 1000, **base),
        data_fingerprint(X, y, 4, 1001, **base),
        data_fingerprint(X, y, 4, 1000, log_points=101, dtype="float64"),
        data_fingerprint(X, y, 4, 1000, log_points=100, dtype="float32"),
        data_fingerprint(X, y, 4, 1000, **base, optimum=0.5),
    }
    assert f not in others and len(others) == 8


def test_state_round_trip_is_exact_and_safe():
    state = {
        "t": 7,
        "x": 0.1,
        "names": ["a", "b"],
        "log_iters": np.arange(5, dtype=np.int64),
        "nested": [{"w": torch.randn(3, 2, dtype=torch.float64)}, (np.float64(1.5), np.int64(3))],
        "arr": np.random.default_rng(0).standard_normal(4),
    }
    back = loads_state(dumps_state(state))
    assert back["t"] == 7 and back["x"] == 0.1 and back["names"] == ["a", "b"]
    assert isinstance(back["log_iters"], np.ndarray) and back["log_iters"].dtype == np.int64
    assert np.array_equal(back["log_iters"], state["log_iters"])
    assert np.array_equal(back["arr"], state["arr"])
    assert torch.equal(back["nested"][0]["w"], state["nested"][0]["w"])
    assert back["nested"][1] == (1.5, 3)


def test_sweep_equals_train_and_reuses(tmp_path, monkeypatch):
    X, y = problem()
    runs = grid()
    kw = dict(thresholds=THRESHOLDS, log_points=50)
    direct = train_by_group(X, y, 4, runs, 400, **kw)
    logs: list[str] = []
    first = sweep(X, y, 4, runs, 400, store=tmp_path, log=logs.append, **kw)
    assert (first.reused, first.computed) == (0, len(runs))
    assert_same(first.results, direct)
    assert first.results[-1].diverged  # the divergent rate is stored and reused too

    def boom(*a, **k):
        raise AssertionError("train must not be called: everything is stored")

    monkeypatch.setattr(worker_mod, "train", boom)
    again = sweep(X, y, 4, runs, 400, store=tmp_path, log=logs.append, **kw)
    assert (again.reused, again.computed) == (len(runs), 0)
    assert_same(again.results, direct)
    assert any(f"reused {len(runs)} of {len(runs)} runs" in m for m in logs)
    # Duplicates share one result; a subset of thresholds is served from the store.
    dup = sweep(
        X, y, 4, runs[:2] + runs[:1], 400, store=tmp_path, thresholds=(1e-2,), log_points=50
    )
    assert dup.reused == 2 and len(dup.results) == 3
    assert dup.results[0].first_hit == {1e-2: direct[0].first_hit[1e-2]}
    monkeypatch.undo()

    # One more run: only it is trained.
    more = runs + [Run("gd", 3e-2, depth=3)]
    calls = []
    real = worker_mod.train

    def counting(X, y, p, rs, *a, **k):
        calls.append(len(rs))
        return real(X, y, p, rs, *a, **k)

    monkeypatch.setattr(worker_mod, "train", counting)
    res = sweep(X, y, 4, more, 400, store=tmp_path, **kw)
    assert calls == [1] and (res.reused, res.computed) == (len(runs), 1)
    assert_same(res.results[:-1], direct)
    assert_same(res.results[-1:], train(X, y, 4, more[-1:], 400, **kw))  # trained alone
    # Other data, iterations or a new threshold: nothing is reused.
    calls.clear()
    assert sweep(X, y + 1e-9, 4, runs, 400, store=tmp_path, **kw).reused == 0
    assert sweep(X, y, 4, runs, 401, store=tmp_path, **kw).reused == 0
    new_thr = sweep(X, y, 4, runs, 400, store=tmp_path, thresholds=(1e-3,), log_points=50)
    # three sweeps of three shards each: the width-1 gd runs, the e2e run, the adam run
    assert new_thr.reused == 0 and calls == [len(runs) - 2, 1, 1] * 3
    # ... and the retrained runs keep the thresholds they had, so both sets are served now.
    both = sweep(X, y, 4, runs, 400, store=tmp_path, thresholds=(1e-3, 1e-2, 1e-4), log_points=50)
    assert both.reused == len(runs) and calls == [len(runs) - 2, 1, 1] * 3


def test_keys_include_math_version(tmp_path, monkeypatch):
    X, y = problem()
    runs = grid()[:2]
    sweep(X, y, 4, runs, 50, store=tmp_path, log_points=10)
    monkeypatch.setattr(sweep_mod, "MATH_VERSION", MATH_VERSION + "-changed")
    assert sweep(X, y, 4, runs, 50, store=tmp_path, log_points=10).reused == 0


class Crash(Exception):
    pass


def test_in_process_crash_resumes_from_checkpoint(tmp_path, monkeypatch):
    X, y = problem()
    runs = grid()
    kw = dict(thresholds=THRESHOLDS, log_points=37)
    T, K = 1000, 90
    saved = []
    real_save = Store.save_checkpoint

    def crash_on_fourth(self, group, keys, iteration, state):
        if len(saved) == 3:
            raise Crash  # dies after 3 checkpoints, before the 4th is written
        saved.append(iteration)
        real_save(self, group, keys, iteration, state)

    monkeypatch.setattr(Store, "save_checkpoint", crash_on_fourth)
    with pytest.raises(Crash):
        sweep(X, y, 4, runs, T, store=tmp_path, checkpoint_every=K, **kw)
    monkeypatch.undo()
    assert saved == [K, 2 * K, 3 * K]
    with Store(tmp_path) as s:
        assert s.count_runs() == 0 and [it for _, it in s.checkpoints()] == [3 * K]

    started = []
    real_train = worker_mod.train

    def spy(*a, **k):
        started.append(k.get("resume", {}).get("t", 0) if k.get("resume") else 0)
        return real_train(*a, **k)

    monkeypatch.setattr(worker_mod, "train", spy)
    res = sweep(X, y, 4, runs, T, store=tmp_path, checkpoint_every=K, **kw)
    # the first shard (the width-1 gd runs) resumes, the e2e and adam shards start anew
    assert started == [3 * K, 0, 0] and list(res.resumed.values()) == [3 * K]
    assert res.computed == len(runs)
    assert_same(res.results, train_by_group(X, y, 4, runs, T, **kw))
    with Store(tmp_path) as s:
        assert s.checkpoints() == [] and s.count_runs() == len(runs)


def test_checkpoint_of_a_subset_is_resumed_and_rest_trained(tmp_path):
    """A crashed sweep re-run with more runs: the checkpointed group resumes, the new runs
    train on their own, and everything equals uninterrupted training."""
    X, y = problem()
    runs = grid()
    kw = dict(thresholds=THRESHOLDS, log_points=20)
    T, K = 300, 100
    with Store(tmp_path) as s:
        real = s.save_checkpoint
        n = [0]

        def crash(*a):
            n[0] += 1
            if n[0] == 2:
                raise Crash
            real(*a)

        s.save_checkpoint = crash
        with pytest.raises(Crash):
            sweep(X, y, 4, runs, T, store=s, checkpoint_every=K, **kw)
    more = runs + [Run("gd", 3e-2, depth=3)]
    res = sweep(X, y, 4, more, T, store=tmp_path, checkpoint_every=K, **kw)
    assert list(res.resumed.values()) == [K] and res.computed == len(more)
    # Each group equals its uninterrupted training (the trainer's results may differ at
    # round-off between batch compositions, so the reference uses the same groups).
    assert_same(res.results[:-1], train_by_group(X, y, 4, runs, T, **kw))
    assert_same(res.results[-1:], train(X, y, 4, more[-1:], T, **kw))


def test_unusable_checkpoint_is_ignored(tmp_path):
    X, y = problem()
    runs = grid()[:3]
    kw = dict(thresholds=THRESHOLDS, log_points=20)
    fresh = sweep(X, y, 4, runs, 200, store=tmp_path / "a.sqlite", **kw)
    with Store(tmp_path / "b.sqlite") as s:
        keys = fresh.keys
        from depthaccel.store import group_key

        s.save_checkpoint(group_key(keys), keys, 100, b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        res = sweep(X, y, 4, runs, 200, store=tmp_path / "b.sqlite", **kw)
    assert res.resumed == {}
    assert_same(res.results, fresh.results)


def test_bad_arguments(tmp_path):
    X, y = problem()
    with pytest.raises(ValueError, match="at least one run"):
        sweep(X, y, 4, [], 10, store=tmp_path)
    with pytest.raises(ValueError, match="Run instances"):
        sweep(X, y, 4, [{"method": "gd"}], 10, store=tmp_path)
    with pytest.raises(ValueError, match="checkpoint_every"):
        sweep(X, y, 4, grid()[:1], 10, store=tmp_path, checkpoint_every=0)


# ----------------------------------------------------------------- kill -9 in a subprocess

DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_sweep import problem, grid, THRESHOLDS
    from depthaccel.store import Store
    from depthaccel.sweep import sweep
    from depthaccel.train import Run

    store, phase = sys.argv[1], sys.argv[2]
    X, y = problem()
    first = grid()
    second = first + [Run("gd", lr, depth=3) for lr in (1e-2, 3e-2)]
    kw = dict(thresholds=THRESHOLDS, log_points=100, checkpoint_every={K})
    if phase == "killme":
        res = sweep(X, y, 4, first, {T}, store=store, **kw)
        print("FIRST " + json.dumps([res.reused, res.computed]), flush=True)
        # Then tell the test once two checkpoints of the second sweep are stored.
        real = Store.save_checkpoint
        n = [0]
        def signal_after_two(self, *a):
            real(self, *a)
            n[0] += 1
            if n[0] == 2:
                open(store + ".ready", "w").close()
            if n[0] >= 2:  # leave the test time to kill us before the sweep ends
                time.sleep(0.02)
        Store.save_checkpoint = signal_after_two
    res = sweep(X, y, 4, second, {T}, store=store, log=print, **kw)
    print("RESULT " + json.dumps({{"reused": res.reused, "computed": res.computed,
                                   "resumed": list(res.resumed.values())}}))
    """
)


def test_kill_minus_9_mid_sweep_and_restart(tmp_path):
    T, K = 3000, 150
    store = tmp_path / "store.sqlite"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent), T=T, K=K))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}

    def run(phase: str) -> dict:
        out = subprocess.run(
            [sys.executable, str(script), str(store), phase],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT ") :])

    n_first = len(grid())
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), "killme"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready = Path(str(store) + ".ready")
    deadline = time.time() + 120
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert ready.exists(), proc.communicate()[1]
    os.kill(proc.pid, signal.SIGKILL)  # somewhere between checkpoints 2 and 3, or inside one
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    assert f"FIRST [0, {n_first}]" in out  # the first sweep finished before the kill
    con = sqlite3.connect(store)
    before = dict(con.execute("SELECT key, created_at FROM runs").fetchall())
    con.close()
    with Store(store) as s:
        (ck,) = s.checkpoints()
        assert s.count_runs() == n_first
    assert ck[1] >= 2 * K

    out = run("restart")
    assert out["reused"] == n_first and out["computed"] == 2  # no finished run recomputed
    assert out["resumed"] == [ck[1]]  # redid at most K iterations
    con = sqlite3.connect(store)
    after = dict(con.execute("SELECT key, created_at FROM runs").fetchall())
    assert con.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == 0
    con.close()
    assert {k: after[k] for k in before} == before  # finished rows were never rewritten

    # The results equal those of the same two sweeps uninterrupted, bit for bit.
    X, y = problem()
    first = grid()
    second = first + [Run("gd", lr, depth=3) for lr in (1e-2, 3e-2)]
    kw = dict(thresholds=THRESHOLDS, log_points=100)
    ref_store = tmp_path / "ref.sqlite"
    sweep(X, y, 4, first, T, store=ref_store, **kw)
    ref = sweep(X, y, 4, second, T, store=ref_store, **kw)
    assert (ref.reused, ref.computed) == (n_first, 2)
    got = sweep(X, y, 4, second, T, store=store, **kw)
    assert got.reused == len(second)
    assert_same(got.results, ref.results)


def test_store_trainer_is_a_drop_in_for_train(tmp_path):
    from depthaccel.sweep import StoreTrainer

    X, y = problem()
    runs = grid()[:3]
    kw = dict(thresholds=THRESHOLDS, log_points=20, log_scale=True)
    tr = StoreTrainer(tmp_path, checkpoint_every=50)
    assert_same(tr(X, y, 4, runs, 200, **kw), train(X, y, 4, runs, 200, **kw))
    assert_same(tr(X, y, 4, runs, 200, **kw), train(X, y, 4, runs, 200, **kw))
    assert (tr.reused, tr.computed) == (3, 3)
    # log_scale is part of the fingerprint: the evenly logged curves are new runs.
    tr(X, y, 4, runs, 200, thresholds=THRESHOLDS, log_points=20)
    assert (tr.reused, tr.computed) == (3, 6)
    with pytest.raises(ValueError, match="checkpoints itself"):
        tr(X, y, 4, runs, 200, resume={})
    with pytest.raises(ValueError, match="unknown train option"):
        sweep(X, y, 4, runs, 200, store=tmp_path, warp_speed=True)


def _flip(path: Path, sql_select: str, sql_update: str, args: tuple, index: int) -> None:
    con = sqlite3.connect(path)
    (blob,) = con.execute(sql_select, args).fetchone()
    data = bytearray(blob)
    data[index] ^= 0x40
    con.execute(sql_update, (bytes(data), *args))
    con.commit()
    con.close()


def test_bit_rot_in_a_stored_run_is_reported_and_retrained(tmp_path, monkeypatch):
    from depthaccel.store import DEFAULT_FILENAME, StoreIntegrityWarning

    X, y = problem()
    runs = grid()[:4]
    kw = dict(thresholds=THRESHOLDS, log_points=30)
    first = sweep(X, y, 4, runs, 200, store=tmp_path, **kw)
    bad = first.keys[2]
    _flip(
        tmp_path / DEFAULT_FILENAME,
        "SELECT gap FROM runs WHERE key = ?",
        "UPDATE runs SET gap = ? WHERE key = ?",
        (bad,),
        8 * 5 + 7,  # the exponent byte of the 6th logged gap
    )
    trained = []
    real = worker_mod.train

    def spy(X, y, p, rs, *a, **k):
        trained.append(list(rs))
        return real(X, y, p, rs, *a, **k)

    monkeypatch.setattr(worker_mod, "train", spy)
    logs: list[str] = []
    with pytest.warns(StoreIntegrityWarning, match=f"run {bad} failed its checksum"):
        again = sweep(X, y, 4, runs, 200, store=tmp_path, log=logs.append, **kw)
    assert (again.reused, again.computed) == (3, 1) and trained == [[runs[2]]]
    assert any("reused 3 of 4 runs, 1 to train" in m for m in logs)
    # the curves are the true ones again (the retrained run alone; round-off may differ
    # from its first, batched training, so the reference trains it alone too)
    assert_same([again.results[i] for i in (0, 1, 3)], [first.results[i] for i in (0, 1, 3)])
    assert_same(again.results[2:3], train(X, y, 4, runs[2:3], 200, **kw))
    assert np.allclose(again.results[2].gap, first.results[2].gap, rtol=1e-9, atol=0)
    # The replaced row verifies: a third sweep reuses everything, without warnings.
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")
        assert sweep(X, y, 4, runs, 200, store=tmp_path, **kw).reused == 4


def test_bit_rot_in_a_checkpoint_is_not_resumed_from(tmp_path, monkeypatch):
    from depthaccel.store import DEFAULT_FILENAME, StoreIntegrityWarning

    X, y = problem()
    runs = grid()[:3]
    kw = dict(thresholds=THRESHOLDS, log_points=20)
    T, K = 300, 100
    with Store(tmp_path) as s:
        real = s.save_checkpoint
        n = [0]

        def crash(*a):
            n[0] += 1
            if n[0] == 2:
                raise Crash
            real(*a)

        s.save_checkpoint = crash
        with pytest.raises(Crash):
            sweep(X, y, 4, runs, T, store=s, checkpoint_every=K, **kw)
        ((gk, it),) = s.checkpoints()
        assert it == K
    f = tmp_path / DEFAULT_FILENAME
    con = sqlite3.connect(f)
    size = con.execute("SELECT length(state) FROM checkpoints").fetchone()[0]
    con.close()
    # a byte in the middle of the torch.save blob: inside the saved tensors' data
    _flip(
        f,
        "SELECT state FROM checkpoints WHERE group_key = ?",
        "UPDATE checkpoints SET state = ? WHERE group_key = ?",
        (gk,),
        size // 2,
    )
    started = []
    real_train = worker_mod.train

    def spy(*a, **k):
        started.append(k["resume"]["t"] if k.get("resume") else 0)
        return real_train(*a, **k)

    monkeypatch.setattr(worker_mod, "train", spy)
    with pytest.warns(StoreIntegrityWarning, match=f"checkpoint {gk} failed its checksum"):
        res = sweep(X, y, 4, runs, T, store=tmp_path, checkpoint_every=K, **kw)
    assert started == [0] and res.resumed == {}
    assert_same(res.results, train(X, y, 4, runs, T, **kw))
    with Store(tmp_path) as s:
        assert s.checkpoints() == [] and s.count_runs() == len(runs)


def test_a_checkpoint_without_a_new_threshold_is_not_resumed(tmp_path, monkeypatch):
    """Killed after a checkpoint, re-run with an extra threshold: the checkpoint tracked
    only the old thresholds (a hit of the new one before the checkpoint was never
    recorded), so the runs start over and every first hit equals uninterrupted training."""
    X, y = problem()
    runs = grid()
    T, K = 600, 200
    old, new = (1e-2,), (1e-2, 0.5)
    saved = []
    real_save = Store.save_checkpoint

    def crash_on_second(self, group, keys, iteration, state):
        if saved:
            raise Crash
        saved.append(iteration)
        real_save(self, group, keys, iteration, state)

    monkeypatch.setattr(Store, "save_checkpoint", crash_on_second)
    with pytest.raises(Crash):
        sweep(X, y, 4, runs, T, store=tmp_path, checkpoint_every=K, thresholds=old, log_points=20)
    monkeypatch.undo()
    with Store(tmp_path) as s:
        assert [it for _, it in s.checkpoints()] == [K]
    res = sweep(X, y, 4, runs, T, store=tmp_path, checkpoint_every=K, thresholds=new, log_points=20)
    assert res.resumed == {}
    ref = train_by_group(X, y, 4, runs, T, thresholds=new, log_points=20)
    assert_same(res.results, ref)
    # the new, loose threshold is reached early, before the checkpoint's iteration
    assert any(0 < (r.first_hit[0.5] or T) < K for r in ref)
