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
import time
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


def test_finish_group_is_one_transaction(tmp_path):
    """A fault between storing a group's runs and deleting its checkpoint leaves both as
    they were: never runs stored twice over (or a checkpoint deleted without its runs)."""
    runs = [make_run(i) for i in range(3)]
    keys = [r.key for r in runs]
    g = group_key(keys)

    class Fault(Exception):
        pass

    class FaultOnDelete:  # the connection, with a crash at the checkpoint's deletion
        def __init__(self, conn):
            self.conn = conn

        def __getattr__(self, name):
            return getattr(self.conn, name)

        def execute(self, sql, *args):
            if sql.startswith("DELETE FROM checkpoints"):
                raise Fault
            return self.conn.execute(sql, *args)

    with Store(tmp_path) as s:
        s.save_checkpoint(g, keys, 100, b"state-100")
        real = s._conn
        s._conn = FaultOnDelete(real)
        with pytest.raises(Fault):
            s.finish_group(g, runs)
        s._conn = real
        assert s.count_runs() == 0 and s.checkpoints() == [(g, 100)]
        s.finish_group(g, runs)
        assert s.count_runs() == 3 and s.checkpoints() == []


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
    import os, sys, time, types
    # Load the store's modules alone (numpy + sqlite3): the package's __init__ would
    # import torch, which costs seconds per process on a loaded machine.
    pkg = types.ModuleType("depthaccel")
    pkg.__path__ = [{package!r}]
    sys.modules["depthaccel"] = pkg
    import depthaccel.store as store
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
            deadline = time.monotonic() + 60
            while i == 0 and s.count_runs() < 2:  # make sure the two really overlap
                if time.monotonic() > deadline:  # the other writer failed: say so, end
                    sys.exit("the other writer never wrote its first run")
                time.sleep(0.001)
    """
)


def test_concurrent_writers_do_not_corrupt(tmp_path):
    """Two processes create and write one store at the same moment."""
    path = tmp_path / "s.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(
        WRITER.format(tests=str(Path(__file__).parent), package=str(REPO / "src/depthaccel"))
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
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = [err for p, (_out, err) in zip(procs, outs, strict=True) if p.returncode != 0]
    assert not errors, "\n".join(errors)
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


# ---------------------------------------------------------------- integrity (bit rot)


def flip_byte(path: Path, table: str, column: str, where: str, args: tuple, index: int = 3):
    """Flip one bit of one byte inside a stored BLOB/TEXT value, through sqlite."""
    con = sqlite3.connect(path)
    (value,) = con.execute(f"SELECT {column} FROM {table} WHERE {where}", args).fetchone()
    data = bytearray(value if isinstance(value, bytes) else value.encode())
    data[index] ^= 0x10
    new = bytes(data) if isinstance(value, bytes) else data.decode()
    con.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (new, *args))
    con.commit()
    con.close()


def test_row_checksum_is_sha256_of_tagged_values():
    """Independent reference: the documented encoding written out by hand."""
    import struct

    vals = ["k", 3, 1.5, b"\x00\x01", None, True]
    h = hashlib.sha256()
    h.update(b"T" + struct.pack("<Q", 1) + b"k")
    h.update(b"I" + struct.pack("<Q", 1) + b"3")
    h.update(b"R" + struct.pack("<Q", 8) + struct.pack("<d", 1.5))
    h.update(b"B" + struct.pack("<Q", 2) + b"\x00\x01")
    h.update(b"N")
    h.update(b"I" + struct.pack("<Q", 1) + b"1")
    assert store_module.row_checksum(vals) == h.hexdigest()
    # one ulp, one byte or a type change all change it
    assert store_module.row_checksum(["k", 3, math.nextafter(1.5, 2)]) != store_module.row_checksum(
        ["k", 3, 1.5]
    )
    assert store_module.row_checksum(["3"]) != store_module.row_checksum([3])


@pytest.mark.parametrize(
    "column, index", [("gap", 13), ("iters", 9), ("config", 5), ("label", 1), ("first_hit", 2)]
)
def test_flipped_byte_in_a_run_is_reported_and_never_used(tmp_path, column, index):
    runs = [make_run(i) for i in range(3)]
    with Store(tmp_path) as s:
        s.put_runs(runs)
    f = tmp_path / DEFAULT_FILENAME
    bad = runs[1].key
    flip_byte(f, "runs", column, "key = ?", (bad,), index)
    with Store(f) as s:
        with pytest.warns(
            store_module.StoreIntegrityWarning, match=f"run {bad} failed its checksum"
        ):
            got = s.get_runs([r.key for r in runs])
        assert sorted(got) == sorted([runs[0].key, runs[2].key])
        assert np.array_equal(got[runs[0].key].gap, runs[0].gap)
        with pytest.warns(store_module.StoreIntegrityWarning, match=bad):
            assert s.get_run(bad) is None
        s.put_runs([runs[1]])  # a recomputed run replaces the bad row
        assert np.array_equal(s.get_run(bad).gap, runs[1].gap)


def test_flipped_real_column_is_detected(tmp_path):
    with Store(tmp_path) as s:
        s.put_runs([make_run(0)])
    con = sqlite3.connect(tmp_path / DEFAULT_FILENAME)
    con.execute("UPDATE runs SET final_gap = final_gap * 2, wall_time = wall_time")
    con.commit()
    con.close()
    with Store(tmp_path) as s, pytest.warns(store_module.StoreIntegrityWarning):
        assert s.get_runs([make_run(0).key]) == {}


def test_flipped_byte_in_a_checkpoint_is_reported_and_ignored(tmp_path):
    keys = [make_run(i).key for i in range(2)]
    g = group_key(keys)
    with Store(tmp_path) as s:
        s.save_checkpoint(g, keys, 100, bytes(range(200)))
        assert s.load_checkpoint(g).state == bytes(range(200))
    flip_byte(tmp_path / DEFAULT_FILENAME, "checkpoints", "state", "group_key = ?", (g,), 77)
    with Store(tmp_path) as s:
        with pytest.warns(store_module.StoreIntegrityWarning, match=f"checkpoint {g} failed"):
            assert s.load_checkpoint(g) is None
    con = sqlite3.connect(tmp_path / DEFAULT_FILENAME)
    con.execute("UPDATE checkpoints SET iteration = 101")  # a flipped INTEGER as well
    con.commit()
    con.close()
    with Store(tmp_path) as s, pytest.warns(store_module.StoreIntegrityWarning):
        assert s.load_checkpoint(g) is None


_V1_SCHEMA = """
CREATE TABLE runs (key TEXT PRIMARY KEY, config TEXT NOT NULL, data_fingerprint TEXT NOT NULL,
  math_version TEXT NOT NULL, label TEXT NOT NULL, iters BLOB NOT NULL, gap BLOB NOT NULL,
  first_hit TEXT NOT NULL, final_gap REAL, diverged INTEGER NOT NULL, diverged_at INTEGER,
  wall_time REAL NOT NULL, extra TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE checkpoints (group_key TEXT PRIMARY KEY, run_keys TEXT NOT NULL,
  iteration INTEGER NOT NULL, state BLOB NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def make_v1_store(path: Path) -> StoredRun:
    """A schema-1 file as depthaccel 0.1 wrote it (no checksum columns), holding one run."""
    r = make_run(4)
    con = sqlite3.connect(path)
    con.executescript(_V1_SCHEMA)
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (r.key, json.dumps(r.config), r.data_fingerprint, r.math_version, r.label,
         r.iters.astype("<i8").tobytes(), r.gap.astype("<f8").tobytes(), "[[0.001, 21]]",
         r.final_gap, 0, None, r.wall_time, "{}", 1.0),
    )  # fmt: skip
    con.execute("INSERT INTO checkpoints VALUES ('g', '[]', 5, x'00', 1.0)")
    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    return r


def test_v1_store_is_upgraded_in_place_and_old_rows_are_unverified(tmp_path):
    f = tmp_path / DEFAULT_FILENAME
    old = make_v1_store(f)
    with Store(f) as s:
        assert s.count_runs() == 1
        with pytest.warns(
            store_module.StoreIntegrityWarning, match=f"run {old.key} has no checksum"
        ):
            assert s.get_runs([old.key]) == {}
        with pytest.warns(store_module.StoreIntegrityWarning, match="checkpoint g has no checksum"):
            assert s.load_checkpoint("g") is None
        s.put_runs([old])  # recomputed: now verified
        assert np.array_equal(s.get_run(old.key).gap, old.gap)
    con = sqlite3.connect(f)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    assert cols[-1] == "checksum"
    con.close()


def test_read_only_v1_store_is_refused_untouched(tmp_path):
    f = tmp_path / DEFAULT_FILENAME
    make_v1_store(f)
    before = sha(f)
    f.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        if os.access(f, os.W_OK):
            pytest.skip("running as a user who can write read-only files")
        with pytest.raises(StoreError, match="schema-1.*upgrade"):
            Store(f)
    finally:
        tmp_path.chmod(0o755)
        f.chmod(0o644)
    assert sha(f) == before


def test_task_results_round_trip_and_are_verified(tmp_path):
    """Task results (e.g. one MNIST net) live in a ``tasks`` table created on the first
    one; a flipped byte is reported and the result treated as absent."""
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        assert st.get_task("k1") is None  # no table yet: nothing stored
        tables = {r[0] for r in st._conn.execute("SELECT name FROM sqlite_master")}
        assert "tasks" not in tables
        value = json.dumps({"loss": [0.1, 1 / 3], "done": 7})
        st.put_task("k1", "net a", value)
        assert st.get_task("k1") == value and st.get_task("k2") is None
        with pytest.raises(ValueError):
            st.put_task("k3", "bad", "{not json")
        st._conn.execute("UPDATE tasks SET value = ? WHERE key = 'k1'", (value.replace("7", "8"),))
        with pytest.warns(store_module.StoreIntegrityWarning, match="task k1"):
            assert st.get_task("k1") is None
    # the store stays a valid schema-2 store for code that does not know the table
    with Store(path) as st:
        assert st.count_runs() == 0


def test_task_keys_name_kind_config_and_math_version():
    from depthaccel.store import task_key

    k = task_key("net", {"a": 1, "b": [1.0, 2.0]}, "2")
    assert k == task_key("net", {"b": [1.0, 2.0], "a": 1}, "2")  # canonical
    assert (
        len(
            {
                k,
                task_key("other", {"a": 1, "b": [1.0, 2.0]}, "2"),
                task_key("net", {"a": 1, "b": [1.0, 2.5]}, "2"),
                task_key("net", {"a": 1, "b": [1.0, 2.0]}, "3"),
            }
        )
        == 4
    )


def test_a_store_created_while_another_opener_reads_its_identity_is_not_foreign(
    tmp_path, monkeypatch
):
    """Race (found under load): opener B reads application_id, user_version and the table
    list; opener A creates the store in between. B must read all three in one snapshot,
    never "tables present, application_id 0" (which it would call a foreign database)."""
    import sqlite3
    import threading

    path = tmp_path / "s.sqlite"
    real_connect = sqlite3.connect
    created = []

    class Interleaving(sqlite3.Connection):
        hooked = False

        def execute(self, sql, *args):
            cur = super().execute(sql, *args)
            if sql == "PRAGMA application_id" and not Interleaving.hooked:
                Interleaving.hooked = True  # A creates the store right after B's first read
                t = threading.Thread(target=lambda: created.append(Store(path, timeout=30)))
                t.start()
                t.join(timeout=2.0)  # done at once unless B's snapshot holds it off
            return cur

    def connect(*args, **kwargs):
        monkeypatch.setattr(store_module.sqlite3, "connect", real_connect)  # only B's
        return real_connect(*args, factory=Interleaving, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    with Store(path) as b:  # StoreError "not a depthaccel store" before the fix
        assert b.count_runs() == 0
    for _ in range(100):
        if created:
            break
        time.sleep(0.05)
    assert created and Interleaving.hooked
    created[0].close()
    with Store(path) as s:
        assert s._identity()[:2] == (APPLICATION_ID, SCHEMA_VERSION)


def test_checkpoints_of_runs_leave_out_task_checkpoints(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        s.save_checkpoint("group", ["k1", "k2"], 10, b"runs")
        s.save_checkpoint("task", [], 500, b"net")
        assert sorted(s.checkpoints()) == [("group", 10), ("task", 500)]
        assert s.checkpoints(of_runs=True) == [("group", 10)]


def _rolled_back_reads(monkeypatch, fails: int):
    """Openers whose first ``fails`` reads of the schema version meet lock contention as
    SQLite reports it inside a read transaction: the transaction is rolled back and the
    read raises "database is locked" (SQLITE_BUSY)."""
    import sqlite3

    real_connect = sqlite3.connect
    left = [fails]

    class Contended(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql == "PRAGMA user_version" and left[0] > 0 and self.in_transaction:
                left[0] -= 1
                super().execute("ROLLBACK")
                err = sqlite3.OperationalError("database is locked")
                err.sqlite_errorcode = sqlite3.SQLITE_BUSY
                raise err
            return super().execute(sql, *args)

    def connect(*args, **kwargs):
        return real_connect(*args, factory=Contended, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    monkeypatch.setattr(store_module, "_OPEN_RETRY_WAITS", (0.01, 0.01, 0.01), raising=False)
    monkeypatch.setattr(store_module.time, "sleep", lambda s: None)
    return left


def test_opening_waits_out_lock_contention(tmp_path, monkeypatch):
    """Found in a long reproduce run: a new connection met lock contention while reading
    the store's identity; SQLite rolled the read back, the COMMIT after it failed with
    "cannot commit - no transaction is active", and the experiment stopped with "not a
    usable depthaccel store". Now the opener tries again."""
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        s.put_run(make_run(1))
    left = _rolled_back_reads(monkeypatch, fails=2)
    with Store(path) as s:
        assert s.count_runs() == 1
    assert left == [0]


def test_opening_reports_lasting_contention_as_a_lock_not_as_damage(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    _rolled_back_reads(monkeypatch, fails=99)
    with pytest.raises(StoreError, match="cannot open the store .*database is locked") as info:
        Store(path)
    assert "not a usable" not in str(info.value) and "no transaction" not in str(info.value)


def test_opening_a_second_store_keeps_the_first_ones_locks(tmp_path):
    """Found in a long reproduce run (several experiments in threads, writers in other
    processes): opening a store read the file's header with Python's open(), and its
    close() dropped every POSIX lock this process held on the file, the open
    connections' included. Another process closing its store then took itself for the
    last connection and deleted the WAL and its index under them ('disk I/O error')."""
    path = tmp_path / "s.sqlite"
    with Store(path) as a:
        a.count_runs()
        Store(path).close()  # a second opener in this process (another thread's store)
        code = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import depthaccel.store as sm, store_fixtures
            with sm.Store({str(path)!r}) as s:
                s.put_run(store_fixtures.make_run(sm, 1, 7, False))
            """
        )
        subprocess.run([sys.executable, "-c", code], check=True)
        assert (tmp_path / "s.sqlite-shm").exists()  # a is open: the index stays
        assert a.count_runs() == 1
