"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Every output file of ``depthaccel compare`` and ``depthaccel reproduce`` is written
through this module: the bytes go to a temporary file *in the same directory* (so the
final rename never crosses a file system), the file is flushed and ``fsync``-ed, and
``os.replace`` puts it in place in one step; the directory is then ``fsync``-ed so the
rename survives a power cut. A kill, a full disk or an exception while writing leaves
the previous file (if any) untouched and removes the temporary file (a ``kill -9``
can leave one behind: :func:`remove_stale_temps` clears it).

A temporary file names its owner: ``TEMP_PREFIX + <final name> + "." + <pid> + "." +
<random hex>``. Only a file of exactly that form is ever removed by
:func:`remove_stale_temps`, and only when it is provably stale: its writer process is
gone, or it is this process's and no longer being written. A user's file that merely
starts with the prefix, or the in-flight temporary file of another command writing to
the same folder, is left alone.

:class:`StagedWrites` does this for a *set* of files: all are written to temporary
files first and renamed only when every one of them was written, so a failure while
producing any file of the set leaves the whole previous set intact.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_PREFIX",
    "StagedWrites",
    "atomic_open",
    "fsync_dir",
    "is_temp_name",
    "remove_stale_temps",
    "save_figure",
    "write_atomic",
]

#: Temporary files are named ``TEMP_PREFIX + <final name> + "." + <pid> + "." + <12 hex>``.
TEMP_PREFIX = ".depthaccel-tmp."
_TEMP_RE = re.compile(re.escape(TEMP_PREFIX) + r".+\.(?P<pid>[0-9]+)\.[0-9a-f]{12}")

# This process's temporary files that are being written now (absolute paths).
_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


def is_temp_name(name: str) -> bool:
    """True for the name of one of this module's temporary files (the exact form
    ``TEMP_PREFIX<name>.<pid>.<12 hex>``; any other name is not ours)."""
    return _TEMP_RE.fullmatch(name) is not None


def _temp_path(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(6)}")


def _pid_alive(pid: int) -> bool:
    """True unless process ``pid`` provably does not exist (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError, ValueError):
        return True  # someone else's process, or cannot tell: not provably gone
    return True


def _is_stale(path: Path) -> bool:
    """A temporary file whose writer is gone: its pid is not running, or it is this
    process's pid and this process is not writing it (a leftover of an earlier process
    with the same pid)."""
    m = _TEMP_RE.fullmatch(path.name)
    if m is None:
        return False
    pid = int(m.group("pid"))
    if pid == os.getpid():
        with _in_flight_lock:
            return os.path.abspath(path) not in _in_flight
    return not _pid_alive(pid)


def fsync_dir(directory: str | os.PathLike) -> None:
    """``fsync`` a directory so that renames in it are durable (no-op where the OS
    cannot open directories, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(
    path: Path, binary: bool, newline: str | None, encoding: str | None
) -> tuple[Path, IO[Any]]:
    tmp = _temp_path(path)
    key = os.path.abspath(tmp)
    with _in_flight_lock:
        _in_flight.add(key)
    # O_EXCL: never reuse a file; mode 0o666 is reduced by the umask like a plain open().
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except BaseException:
        _forget(tmp)
        raise
    try:
        if binary:
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", newline=newline, encoding=encoding or "utf-8")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        _forget(tmp)
        raise
    return tmp, fh


def _forget(tmp: Path) -> None:
    """``tmp`` was renamed or removed: it is no longer this process's in-flight file."""
    with _in_flight_lock:
        _in_flight.discard(os.path.abspath(tmp))


def _finish(fh: IO[Any]) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    newline: str | None = None,
    encoding: str | None = None,
) -> Iterator[IO[Any]]:
    """``with atomic_open(path, "w") as fh: ...``: ``fh`` writes a temporary file that
    replaces ``path`` only when the block ends without an exception (``mode`` "w" or
    "wb"). On an exception the temporary file is removed and ``path`` is untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    tmp, fh = _create_temp(path, mode == "wb", newline, encoding)
    try:
        yield fh
        _finish(fh)
        os.replace(tmp, path)
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _forget(tmp)
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(data.encode(encoding) if isinstance(data, str) else data)
    return path


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` (a matplotlib figure) to ``path`` atomically; the format is taken
    from the suffix (default png)."""
    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or (path.suffix.lstrip(".") or "png")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)
    return path


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a killed writer left in ``directory`` (not
    recursive): only files named exactly as this module names them whose writer is
    provably gone (see the module docstring); returns what was removed."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        if is_temp_name(p.name) and p.is_file() and not p.is_symlink() and _is_stale(p):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


class StagedWrites:
    """Write a set of files all-or-nothing (as far as a file system allows).

    Usage::

        with StagedWrites() as stage:
            with stage.open(out / "a.csv", "w", newline="") as fh:
                ...
            stage.write(out / "b.md", text)
            stage.write_with(out / "c.png", lambda fh: fig.savefig(fh, format="png"))
        # here every file is in place; after an exception in the block, none was changed

    Each file is written and ``fsync``-ed to a temporary file beside its destination;
    :meth:`commit` (called when the ``with`` block ends normally) renames them all, then
    ``fsync``-s their directories. ``before_commit`` (if given) runs after every file was
    staged and before the first rename, with the list of destinations (e.g. to record
    them in a manifest). An exception before the renames removes every temporary file.
    """

    def __init__(self, before_commit: Callable[[list[Path]], None] | None = None):
        self._staged: list[tuple[Path, Path]] = []  # (temporary, destination)
        self._before_commit = before_commit
        self._done = False

    @property
    def destinations(self) -> list[Path]:
        return [dest for _, dest in self._staged]

    def temp_of(self, path: str | os.PathLike) -> Path:
        """The staged temporary file of destination ``path`` (to hash or read it back)."""
        for tmp, dest in self._staged:
            if dest == Path(path):
                return tmp
        raise KeyError(f"{path} is not staged")

    @contextlib.contextmanager
    def open(
        self,
        path: str | os.PathLike,
        mode: str = "w",
        *,
        newline: str | None = None,
        encoding: str | None = None,
    ) -> Iterator[IO[Any]]:
        """A file handle on the temporary file of destination ``path``."""
        if self._done:
            raise RuntimeError("this StagedWrites was already committed or discarded")
        if mode not in ("w", "wb"):
            raise ValueError(f"StagedWrites.open supports modes 'w' and 'wb', got {mode!r}")
        path = Path(path)
        if path in self.destinations:
            raise ValueError(f"{path} is staged twice")
        tmp, fh = _create_temp(path, mode == "wb", newline, encoding)
        self._staged.append((tmp, path))
        try:
            yield fh
            _finish(fh)
        except BaseException:
            fh.close()
            raise

    def write(self, path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8") -> None:
        """Stage ``data`` (bytes, or text encoded with ``encoding``) for ``path``."""
        with self.open(path, "wb") as fh:
            fh.write(data.encode(encoding) if isinstance(data, str) else data)

    def write_with(self, path: str | os.PathLike, writer: Callable[[IO[bytes]], Any]) -> None:
        """Stage what ``writer(binary file handle)`` writes for ``path``."""
        with self.open(path, "wb") as fh:
            writer(fh)

    def commit(self) -> list[Path]:
        """Rename every staged file onto its destination; returns the destinations."""
        if self._done:
            raise RuntimeError("this StagedWrites was already committed or discarded")
        try:
            if self._before_commit is not None:
                self._before_commit(self.destinations)
        except BaseException:
            self.discard()
            raise
        self._done = True
        try:
            for tmp, dest in self._staged:
                os.replace(tmp, dest)
        except BaseException:
            for tmp, _ in self._staged:  # the ones not renamed yet
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise
        finally:
            for tmp, _ in self._staged:
                _forget(tmp)
        for d in dict.fromkeys(dest.parent for _, dest in self._staged):
            fsync_dir(d)
        return self.destinations

    def discard(self) -> None:
        """Remove every temporary file; the destinations are left as they were."""
        self._done = True
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
            _forget(tmp)

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        elif not self._done:
            self.discard()
