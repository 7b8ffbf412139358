"""Tests of the embedded results store (depthaccel.store)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import depthaccel.store as store_module
import store_fixtures
from depthaccel.store import (
    APPLICATION_ID,
    DEFAULT_FILENAME,
    SCHEMA_VERSION,
    Store,
    StoredRun,
    StoreError,
    group_key,
    run_key,
)

REPO = Path(__file__).resolve().parents[1]


def make_run(i: int, n: int = 7, diverged: bool = False) -> StoredRun:
    return store_fixtures.make_run(store_module, i, n, diverged)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_keys_are_canonical_and_discriminating():
    a = run_key({"lr": 1e-3, "method": "gd"}, "fp", "1")
    assert a == run_key({"method": "gd", "lr": 1e-3}, "fp", "1")  # key order irrelevant
    assert (
        a
        == hashlib.sha256(
            b'{"config":{"lr":0.001,"method":"gd"},"data":"fp","math":"1"}'
        ).hexdigest()
    )
    assert a != run_key({"lr": 1.0000000000000002e-3, "method": "gd"}, "fp", "1")
    assert a != run_key({"lr": 1e-3, "method": "gd"}, "fp2", "1")
    assert a != run_key({"lr": 1e-3, "method": "gd"}, "fp", "2")
    assert group_key(["a", "b"]) != group_key(["b", "a"])
    with pytest.raises(ValueError):
        run_key({"lr": math.nan}, "fp", "1")


def test_round_trip_runs_and_pragmas(tmp_path):
    runs = [make_run(i) for i in range(5)] + [make_run(9, diverged=True)]
    with Store(tmp_path) as s:  # a directory: the file is DEFAULT_FILENAME inside it
        assert s.path == tmp_path / DEFAULT_FILENAME
        assert s.count_runs() == 0
        s.put_runs(runs)
    with Store(tmp_path / DEFAULT_FILENAME) as s:
        assert s.count_runs() == len(runs)
        got = s.get_runs([r.key for r in runs] + ["missing"])
        assert "missing" not in got and s.get_run("missing") is None
        for r in runs:
            g = got[r.key]
            assert g.config == r.config and g.label == r.label
            assert g.iters.dtype == np.int64 and np.array_equal(g.iters, r.iters)
            assert g.gap.dtype == np.float64
            assert np.array_equal(g.gap, r.gap)  # bit-exact float64, inf included
            assert g.first_hit == r.first_hit
            assert g.diverged == r.diverged and g.diverged_at == r.diverged_at
            assert g.wall_time == r.wall_time and g.extra == r.extra
            if math.isfinite(r.final_gap):
                assert g.final_gap == r.final_gap
            else:
                assert math.isnan(g.final_gap)
    con = sqlite3.connect(tmp_path / DEFAULT_FILENAME)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_bad_curves_rejected(tmp_path):
    r = make_run(0)
    bad = StoredRun(**{**r.__dict__, "gap": r.gap[:-1]})
    with Store(tmp_path) as s:
        with pytest.raises(ValueError, match="equal length"):
            s.put_runs([make_run(1), bad])
        assert s.count_runs() == 0  # the transaction was all-or-nothing


def test_checkpoints_and_atomic_finish(tmp_path):
    runs = [make_run(i) for i in range(3)]
    keys = [r.key for r in runs]
    g = group_key(keys)
    with Store(tmp_path) as s:
        assert s.load_checkpoint(g) is None
        s.save_checkpoint(g, keys, 100, b"state-100")
        s.save_checkpoint(g, keys, 200, b"\x00state-200\xff")
        ck = s.load_checkpoint(g)
        assert ck.iteration == 200 and ck.state == b"\x00state-200\xff" and ck.run_keys == keys
        assert s.checkpoints() == [(g, 200)]
        s.finish_group(g, runs)
        assert s.load_checkpoint(g) is None and s.count_runs() == 3
        s.save_checkpoint("other", [], 5, b"x")
        s.delete_checkpoint("other")
        assert s.checkpoints() == []


def test_corrupt_file_is_refused_and_untouched(tmp_path):
    f = tmp_path / DEFAULT_FILENAME
    f.write_bytes(np.random.default_rng(0).bytes(8192))
    before = sha(f)
    with pytest.raises(StoreError, match="not an SQLite database.*left untouched"):
        Store(tmp_path)
    assert sha(f) == before
    # A valid header followed by garbage: SQLite itself refuses it.
    f.write_bytes(b"SQLite format 3\x00" + np.random.default_rng(1).bytes(8192))
    before = sha(f)
    with pytest.raises(StoreError, match="left untouched"):
        Store(f)
    assert sha(f) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEFAULT_FILENAME]


def test_truncated_store_is_refused(tmp_path):
    with Store(tmp_path) as s:
        s.put_runs([make_run(i) for i in range(3)])
    f = tmp_path / DEFAULT_FILENAME
    f.write_bytes(f.read_bytes()[:10])
    before = sha(f)
    with pytest.raises(StoreError):
        Store(f)
    assert sha(f) == before


@pytest.mark.parametrize("kind", ["other_tables", "other_app_id", "newer_schema"])
def test_foreign_sqlite_is_refused_and_untouched(tmp_path, kind):
    f = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(f)
    if kind == "other_tables":
        con.execute("CREATE TABLE photos(id INTEGER, path TEXT)")
        con.execute("INSERT INTO photos VALUES (1, 'a.jpg')")
        match = "not a depthaccel store"
    elif kind == "other_app_id":
        con.execute("PRAGMA application_id = 1234")
        con.execute("CREATE TABLE runs(x)")
        match = "application_id 0x4d2"
    else:
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        con.execute("CREATE TABLE runs(x)")
        match = "newer depthaccel"
    con.commit()
    con.close()
    before = sha(f)
    with pytest.raises(StoreError, match=match):
        Store(f)
    assert sha(f) == before
    assert not (tmp_path / "foreign.sqlite-wal").exists()


def test_empty_file_is_initialised(tmp_path):
    f = tmp_path / "s.sqlite"
    f.touch()
    with Store(f) as s:
        s.put_run(make_run(0))
    with Store(f) as s:
        assert s.count_runs() == 1


def test_missing_directory_and_no_create(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        Store(tmp_path / "nope" / "s.sqlite")
    with pytest.raises(FileNotFoundError, match="no depthaccel store"):
        Store(tmp_path / "s.sqlite", create=False)


WRITER = textwrap.dedent(
    """
    import importlib.util, os, sys, time
    # Load store.py alone (numpy + sqlite3): importing the package would import torch,
    # which costs seconds per process on a loaded machine.
    spec = importlib.util.spec_from_file_location("dstore", {store!r})
    store = importlib.util.module_from_spec(spec)
    sys.modules["dstore"] = store
    spec.loader.exec_module(store)
    sys.path.insert(0, {tests!r})
    import store_fixtures
    path, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    while not os.path.exists(path + ".go"):
        time.sleep(0.001)
    with store.Store(path, timeout=30) as s:
        for i in range(n):
            r = store_fixtures.make_run(store, wid * 10_000 + i, n=50)
            g = store.group_key([r.key])
            s.save_checkpoint(g, [r.key], i, bytes(2000))
            s.finish_group(g, [r])
            s.save_checkpoint("shared", [], i, bytes([wid]) * 3000)
            while i == 0 and s.count_runs() < 2:  # make sure the two really overlap
                time.sleep(0.001)
    """
)


def test_concurrent_writers_do_not_corrupt(tmp_path):
    """Two processes create and write one store at the same moment."""
    path = tmp_path / "s.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(
        WRITER.format(tests=str(Path(__file__).parent), store=str(REPO / "src/depthaccel/store.py"))
    )
    n = 80
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), str(w), str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (1, 2)
    ]
    Path(str(path) + ".go").touch()  # both start as close together as possible
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    with Store(path) as s:
        assert s.count_runs() == 2 * n
        expected = [make_run(w * 10_000 + i, n=50) for w in (1, 2) for i in range(n)]
        got = s.get_runs(r.key for r in expected)
        for r in expected:
            assert np.array_equal(got[r.key].gap, r.gap)
        assert s.checkpoints() == [("shared", n - 1)]
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The two writers really overlapped in time.
        spans = [
            (min(got[r.key].created_at for r in rs), max(got[r.key].created_at for r in rs))
            for rs in (expected[:n], expected[n:])
        ]
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]


def test_meta_records_creator(tmp_path):
    with Store(tmp_path) as s:
        rows = dict(s._conn.execute("SELECT name, value FROM meta").fetchall())
    assert rows["created_by"] == "depthaccel"
    assert json.loads(rows["created_at"]) > 0


def test_write_failure_is_a_store_error(tmp_path):
    """A writer that cannot get the lock within its timeout gets a StoreError, and the
    transaction of the holder is unaffected."""
    with Store(tmp_path) as s:
        s.put_run(make_run(0))
    holder = sqlite3.connect(tmp_path / DEFAULT_FILENAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Store(tmp_path, timeout=0.05) as s:
            with pytest.raises(StoreError, match="cannot write to the store.*locked"):
                s.put_run(make_run(1))
            assert s.count_runs() == 1  # readers are not blocked (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Store(tmp_path) as s:
        s.put_run(make_run(1))
        assert s.count_runs() == 2
