"""The embedded results store: one SQLite file holding finished runs and checkpoints.

A sweep (``depthaccel.sweep``) keys every run by a hash of its full configuration, the
data's fingerprint and the code's version of the math (``run_key``); a finished run is
written once with its whole curve and read back instead of being recomputed. Long groups
of runs save their latest state here every K iterations, so a killed process resumes
where it left off.

Schema: see :mod:`depthaccel.store_schema` (the tables, ``StoredRun``, ``Checkpoint`` and
the rows' checksums); keys: :mod:`depthaccel.store_keys` (``run_key``, ``task_key``,
``group_key``). Both are re-exported here.

Concurrency: the file is opened in WAL mode with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction, so several processes may read and write one store at
once (on a local file system; SQLite's WAL mode does not work over network file systems).
A finished group's runs are inserted and its checkpoint deleted in the same transaction.
Nothing but SQLite opens the file: a plain open() and close() of a database file in a
process drops that process's POSIX locks on it, its live connections' included (see
``_check_path``).

Safety: a file that is not an SQLite database, or an SQLite database that is not a
depthaccel store (another ``application_id``, or tables of its own), or a store written by
a newer schema, raises ``StoreError`` and is never written to.

Integrity (bit rot): every run and checkpoint row carries ``checksum``, the sha256 of all
its other columns exactly as stored (:func:`row_checksum`), computed on write and verified
on every read. A run whose checksum does not match (or that cannot be decoded) is reported
with a :class:`StoreIntegrityWarning` naming its key and treated as absent, so a sweep
retrains it (and the new row replaces the bad one); a bad checkpoint is reported the same
way and ignored, so its group starts over. A bad row is never used.

Migration: a schema-1 store (no checksum columns) is upgraded in place on open (one
transaction adds the two columns and sets ``user_version = 2``). Its old rows keep
``checksum = NULL``: they cannot be verified, so they count as *unverified* and are not
used (each read of one is reported with a warning naming its key); a sweep recomputes them. (Schema-1 rows were
written under ``MATH_VERSION`` 1, which no current run key matches anyway.) A read-only
schema-1 file cannot be upgraded and raises ``StoreError``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from depthaccel.store_keys import canonical_json, group_key, run_key, task_key
from depthaccel.store_schema import (
    APPLICATION_ID,
    CHECKPOINT_COLUMNS,
    DEFAULT_FILENAME,
    RUN_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    SQLITE_HEADER,
    TABLES,
    TASK_COLUMNS,
    TASK_TABLE,
    Checkpoint,
    StoredRun,
    row_checksum,
    row_to_run,
    run_to_row,
)

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_FILENAME",
    "SCHEMA_VERSION",
    "SQLITE_HEADER",
    "Checkpoint",
    "Store",
    "StoreError",
    "StoreIntegrityWarning",
    "StoredRun",
    "canonical_json",
    "group_key",
    "row_checksum",
    "run_key",
    "task_key",
]


class StoreError(Exception):
    """The store file is corrupt, foreign, from an incompatible version, or cannot be
    read or written (disk full, locked, read-only). Not a ``ValueError``: code that
    treats a ``ValueError`` as bad input (e.g. a checkpoint another trainer version
    wrote, retrained from the start) must not swallow a store failure."""


#: SQLite result codes that say nothing about the file's content: the disk, the
#: permissions or another process (the store itself may be healthy).
_ENVIRONMENT_CODES = {
    getattr(sqlite3, name)
    for name in (
        "SQLITE_FULL",
        "SQLITE_IOERR",
        "SQLITE_READONLY",
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_CANTOPEN",
        "SQLITE_PERM",
        "SQLITE_NOMEM",
    )
    if hasattr(sqlite3, name)
}
_ENVIRONMENT_WORDS = (
    "disk is full",
    "disk i/o",
    "readonly",
    "read-only",
    "locked",
    "unable to open",
)


def _is_environment_error(e: sqlite3.Error) -> bool:
    """True when SQLite's error is about the disk, permissions or locking, not a damaged
    file (extended result codes carry the primary code in their low byte)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) in _ENVIRONMENT_CODES
    return any(w in str(e).lower() for w in _ENVIRONMENT_WORDS)


_SQLITE_NOTADB = getattr(sqlite3, "SQLITE_NOTADB", 26)

#: Lock contention that passes: an opener that meets it tries again after these waits
#: (seconds), beyond the busy timeout that SQLite itself waits for a lock.
_OPEN_RETRY_WAITS = (0.1, 0.3, 1.0, 3.0)
_TRANSIENT_CODES = {
    getattr(sqlite3, name)
    for name in ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PROTOCOL")
    if hasattr(sqlite3, name)
}


def _is_transient(e: sqlite3.Error) -> bool:
    """True for SQLite's lock-contention errors (busy, locked, WAL locking protocol)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) in _TRANSIENT_CODES
    return "locked" in str(e).lower() or "locking protocol" in str(e).lower()


#: Errors SQLite raises for a damaged file ("database disk image is malformed", text
#: that does not decode); not their subclasses for misuse (IntegrityError, ...).
_FILE_ERRORS = (sqlite3.DatabaseError, sqlite3.OperationalError, sqlite3.InternalError)


def _damaged(path: Path, e: BaseException) -> StoreError:
    return StoreError(
        f"the store {path} is damaged (SQLite says: {e}); none of its finished runs are "
        "reused. Move the file away (a new store is then created) or restore it from a copy."
    )


class StoreIntegrityWarning(UserWarning):
    """A stored run or checkpoint failed its checksum (or is unverified): it is not used."""


class Store:
    """A depthaccel results store in one SQLite file (see the module docstring).

    ``Store(path)`` opens an existing store or creates a new one; ``path`` may be a
    directory, in which case the file is ``path / DEFAULT_FILENAME``. Use it as a
    context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0, create: bool = True):
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / DEFAULT_FILENAME
        self.path = p
        _check_path(p)
        if not p.exists():
            if not create:
                raise FileNotFoundError(f"no depthaccel store at {p}")
            if not p.parent.is_dir():
                raise FileNotFoundError(f"cannot create a store in {p.parent}: no such directory")
        try:
            self._conn = sqlite3.connect(
                str(p), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:  # pragma: no cover - e.g. permissions
            raise StoreError(f"cannot open store {p}: {e}") from e
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            for wait in (*_OPEN_RETRY_WAITS, None):
                try:
                    self._validate_or_init()
                    break
                except sqlite3.OperationalError as e:
                    if wait is None or not _is_transient(e):
                        raise
                    time.sleep(wait)  # another process holds the file for a moment
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as e:
            self._conn.close()
            if _is_environment_error(e):
                raise StoreError(f"cannot open the store {p}: {e}") from e
            if (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF == _SQLITE_NOTADB or (
                "file is not a database" in str(e)
            ):
                raise _not_a_database(p) from e
            raise StoreError(
                f"{p} is not a usable depthaccel store (SQLite says: {e}); "
                "it was left untouched. Choose another output directory or move the file away."
            ) from e
        except BaseException:
            self._conn.close()
            raise

    # -- opening -----------------------------------------------------------------

    def _validate_or_init(self) -> None:
        c = self._conn
        app_id, version, tables = self._identity()
        if app_id == APPLICATION_ID and version == SCHEMA_VERSION and TABLES <= tables:
            return
        if app_id == APPLICATION_ID and version == 1 and TABLES <= tables:
            self._migrate_from_v1()
            return
        self._raise_if_foreign(app_id, version, tables)
        # An empty database (new or zero-length file): create the schema, unless a
        # concurrent opener got there first (checked again under the write lock).
        c.execute("BEGIN IMMEDIATE")
        try:
            app_id, version, tables = self._identity()
            if not tables and app_id == 0 and version == 0:
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.executemany(
                    "INSERT INTO meta(name, value) VALUES (?, ?)",
                    [("created_by", "depthaccel"), ("created_at", repr(time.time()))],
                )
                c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        app_id, version, tables = self._identity()
        self._raise_if_foreign(app_id, version, tables)
        if not (app_id == APPLICATION_ID and version == SCHEMA_VERSION and TABLES <= tables):
            raise StoreError(f"{self.path}: could not initialise the store schema")

    def _migrate_from_v1(self) -> None:
        """Schema 1 -> 2 in place: add the checksum columns (old rows stay NULL = unverified)."""
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(
                f"{self.path} is a schema-1 depthaccel store and cannot be upgraded to schema "
                f"{SCHEMA_VERSION} ({e}); make it writable or choose another store"
            ) from e
        try:
            if c.execute("PRAGMA user_version").fetchone()[0] == 1:  # not done by another opener
                c.execute("ALTER TABLE runs ADD COLUMN checksum TEXT")
                c.execute("ALTER TABLE checkpoints ADD COLUMN checksum TEXT")
                c.execute(
                    "INSERT OR REPLACE INTO meta(name, value) VALUES ('migrated_from_v1', ?)",
                    (repr(time.time()),),
                )
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise StoreError(f"cannot upgrade the schema-1 store {self.path}: {e}") from e
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def _verified_run(self, row: sqlite3.Row) -> StoredRun | None:
        """The row as a StoredRun if its checksum matches, else None (with a warning)."""
        key = row["key"]
        stored = row["checksum"]
        if stored is None:
            self._warn(f"run {key} has no checksum (written by store schema 1): unverified")
            return None
        values = [row[c] for c in RUN_COLUMNS]
        try:
            ok = row_checksum(values) == stored
            run = row_to_run(row) if ok else None
        except (TypeError, ValueError) as e:  # undecodable: same treatment as a mismatch
            ok, run = False, None
            detail = f" ({e})"
        else:
            detail = ""
        if not ok or run is None:
            self._warn(f"run {key} failed its checksum{detail} (bit rot?)")
            return None
        return run

    def _warn(self, what: str) -> None:
        warnings.warn(
            f"store {self.path}: {what}; it is ignored and will be recomputed",
            StoreIntegrityWarning,
            stacklevel=4,
        )

    def _identity(self) -> tuple[int, int, set[str]]:
        """(application_id, user_version, table names), read in one transaction: read one
        by one, a concurrent creator's commit could fall between them and a half-read
        store look foreign (tables present, application_id still 0)."""
        c = self._conn
        own = not c.in_transaction
        if own:
            c.execute("BEGIN")
        try:
            app_id = c.execute("PRAGMA application_id").fetchone()[0]
            version = c.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0]
                for r in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            }
        finally:
            # SQLite may have rolled the read back itself (an error on the way): commit
            # only a transaction that is still open, so that the error is the one raised
            if own and c.in_transaction:
                c.execute("COMMIT")
        return app_id, version, tables

    def _raise_if_foreign(self, app_id: int, version: int, tables: set[str]) -> None:
        p = self.path
        if app_id == 0 and version == 0 and not tables:
            return  # empty: ours to initialise
        if app_id != APPLICATION_ID:
            raise StoreError(
                f"{p} is an SQLite database but not a depthaccel store "
                f"(application_id {app_id:#x}, expected {APPLICATION_ID:#x}; tables: "
                f"{', '.join(sorted(tables)) or 'none'}); it was left untouched. "
                "Choose another output directory or move the file away."
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{p} was written by a newer depthaccel (store schema {version}, this version "
                f"reads {SCHEMA_VERSION}); it was left untouched. Upgrade depthaccel."
            )
        if version != SCHEMA_VERSION or not TABLES <= tables:
            raise StoreError(
                f"{p} is a damaged or incompatible depthaccel store (schema {version}, "
                f"tables: {', '.join(sorted(tables)) or 'none'}); it was left untouched."
            )

    # -- plumbing ------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run the statements as one IMMEDIATE transaction (all or nothing)."""
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._mapped("write to", e) from e

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """All rows of one query; an SQLite error is a one-line :class:`StoreError`
        naming the file (a damaged file, or the disk/lock problem SQLite reports)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._mapped("read", e) from e

    def _mapped(self, action: str, e: sqlite3.Error) -> BaseException:
        """The one-line :class:`StoreError` for an SQLite error of the file or the disk
        (``e`` itself for errors of the calling code, e.g. a bad parameter)."""
        if _is_environment_error(e):  # locked past the timeout, read-only, disk full
            return StoreError(f"cannot {action} the store {self.path}: {e}")
        if type(e) in _FILE_ERRORS:  # malformed pages, undecodable text
            return _damaged(self.path, e)
        return e

    # -- runs ----------------------------------------------------------------------

    def put_runs(self, runs: Iterable[StoredRun]) -> None:
        """Insert (or replace) finished runs in one transaction."""
        self.finish_group(None, runs)

    def put_run(self, run: StoredRun) -> None:
        self.put_runs([run])

    def get_run(self, key: str) -> StoredRun | None:
        """The verified run stored under ``key``, or None (absent, or failed its checksum)."""
        rows = self._read("SELECT * FROM runs WHERE key = ?", (key,))
        return None if not rows else self._verified_run(rows[0])

    def get_runs(self, keys: Iterable[str]) -> dict[str, StoredRun]:
        """The stored runs among ``keys``, by key (missing keys are absent; so are runs that
        fail their checksum, each reported with a :class:`StoreIntegrityWarning`)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, StoredRun] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT * FROM runs WHERE key IN ({','.join('?' * len(chunk))})"
            for row in self._read(q, chunk):
                run = self._verified_run(row)
                if run is not None:
                    out[row["key"]] = run
        return out

    def run_keys(self) -> list[str]:
        return [r[0] for r in self._read("SELECT key FROM runs ORDER BY created_at, key")]

    def count_runs(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM runs")[0][0])

    def delete_runs(self, keys: Iterable[str]) -> None:
        self._write(("DELETE FROM runs WHERE key = ?", (k,)) for k in keys)

    # -- checkpoints ---------------------------------------------------------------

    def save_checkpoint(
        self, group: str, run_keys: Sequence[str], iteration: int, state: bytes
    ) -> None:
        """Replace the group's checkpoint with ``state`` taken after ``iteration`` iterations."""
        values = (str(group), json.dumps(list(run_keys)), int(iteration), bytes(state), time.time())
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO checkpoints(group_key, run_keys, iteration, state, "
                    "updated_at, checksum) VALUES (?, ?, ?, ?, ?, ?)",
                    (*values, row_checksum(values)),
                )
            ]
        )

    def load_checkpoint(self, group: str) -> Checkpoint | None:
        """The group's verified checkpoint, or None (none saved, or it failed its checksum:
        reported with a :class:`StoreIntegrityWarning`, and the group starts over)."""
        rows = self._read("SELECT * FROM checkpoints WHERE group_key = ?", (group,))
        if not rows:
            return None
        row = rows[0]
        if row["checksum"] is None:
            self._warn(f"checkpoint {group} has no checksum (written by store schema 1)")
            return None
        try:
            ok = row_checksum([row[c] for c in CHECKPOINT_COLUMNS]) == row["checksum"]
            run_keys = json.loads(row["run_keys"]) if ok else None
        except (TypeError, ValueError):
            ok = False
        if not ok:
            self._warn(f"checkpoint {group} failed its checksum (bit rot?)")
            return None
        return Checkpoint(
            group_key=row["group_key"],
            run_keys=run_keys,
            iteration=int(row["iteration"]),
            state=bytes(row["state"]),
            updated_at=float(row["updated_at"]),
        )

    def checkpoints(self, *, of_runs: bool = False) -> list[tuple[str, int]]:
        """(group_key, iteration) of every saved checkpoint; ``of_runs``: only those of
        groups of runs, not of tasks (whose ``run_keys`` list is empty). Reads no state."""
        where = " WHERE run_keys != '[]'" if of_runs else ""
        return [
            (r[0], int(r[1]))
            for r in self._read(f"SELECT group_key, iteration FROM checkpoints{where}")
        ]

    def delete_checkpoint(self, group: str) -> None:
        self._write([("DELETE FROM checkpoints WHERE group_key = ?", (group,))])

    def finish_group(self, group: str | None, runs: Iterable[StoredRun]) -> None:
        """Insert the group's finished runs and delete its checkpoint, atomically."""
        now = time.time()
        rows = [run_to_row(r, now) for r in runs]
        stmts: list[tuple[str, Sequence[Any]]] = [
            (
                f"INSERT OR REPLACE INTO runs({', '.join(RUN_COLUMNS)}, checksum) "
                f"VALUES ({', '.join('?' * (len(RUN_COLUMNS) + 1))})",
                (*row, row_checksum(row)),
            )
            for row in rows
        ]
        if group is not None:
            stmts.append(("DELETE FROM checkpoints WHERE group_key = ?", (group,)))
        self._write(stmts)

    # -- task results --------------------------------------------------------------

    def put_task(self, key: str, label: str, value: str) -> None:
        """Insert (or replace) a task's result ``value`` (a JSON text) under ``key``."""
        json.loads(value)  # refuse what could not be read back
        values = (str(key), str(label), str(value), time.time())
        self._write(
            [
                (TASK_TABLE, ()),
                (
                    f"INSERT OR REPLACE INTO tasks({', '.join(TASK_COLUMNS)}, checksum) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (*values, row_checksum(values)),
                ),
            ]
        )

    def get_task(self, key: str) -> str | None:
        """The verified JSON result of the task ``key``, or None (absent, or failed its
        checksum: reported with a :class:`StoreIntegrityWarning`, and it is recomputed)."""
        try:
            rows = self._conn.execute("SELECT * FROM tasks WHERE key = ?", (key,)).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None  # a store that has never held a task result
            rows = self._read("SELECT * FROM tasks WHERE key = ?", (key,))  # raises StoreError
        except sqlite3.Error:
            rows = self._read("SELECT * FROM tasks WHERE key = ?", (key,))  # raises StoreError
        if not rows:
            return None
        row = rows[0]
        try:
            ok = row_checksum([row[c] for c in TASK_COLUMNS]) == row["checksum"]
        except TypeError:
            ok = False
        if not ok:
            self._warn(f"task {key} failed its checksum (bit rot?)")
            return None
        return str(row["value"])


def _check_path(p: Path) -> None:
    """Refuse a directory in place of the store file.

    Nothing here opens the file: closing any descriptor of a database file in a process
    drops every POSIX lock that process holds on it, including the locks of its open
    SQLite connections (another thread's store), and another process then takes itself
    for the last connection and deletes the WAL and its index under them. A file that
    is not an SQLite database is refused by SQLite itself (:func:`_not_a_database`)."""
    if p.is_dir():
        raise StoreError(f"{p} is a directory, not a store file")


def _not_a_database(p: Path) -> StoreError:
    return StoreError(
        f"{p} is not a depthaccel store (not an SQLite database: it may be corrupt or "
        "another kind of file); it was left untouched. Choose another output directory "
        "or move the file away."
    )
