"""Tests of depthaccel.atomic: atomic single writes and all-or-nothing sets."""

from __future__ import annotations

import os

import pytest

from depthaccel import atomic
from depthaccel.atomic import (
    StagedWrites,
    atomic_open,
    is_temp_name,
    remove_stale_temps,
    write_atomic,
)


def listing(d):
    return sorted(p.name for p in d.iterdir())


def test_write_atomic_text_and_bytes(tmp_path):
    p = tmp_path / "a.txt"
    write_atomic(p, "héllo\n")
    assert p.read_bytes() == "héllo\n".encode()
    write_atomic(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert listing(tmp_path) == ["a.txt"]


def test_new_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644


def test_error_while_writing_keeps_the_old_file(tmp_path):
    p = tmp_path / "summary.csv"
    p.write_bytes(b"the good old content\n")
    with pytest.raises(OSError, match="No space"):
        with atomic_open(p, "w") as fh:
            fh.write("half of the new cont")
            raise OSError(28, "No space left on device")
    assert p.read_bytes() == b"the good old content\n"
    assert listing(tmp_path) == ["summary.csv"]  # no temporary file left behind


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="modes"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_staged_set_is_all_or_nothing(tmp_path):
    old = {"a.csv": b"old a\n", "b.csv": b"old b\n", "c.md": b"old c\n"}
    for k, v in old.items():
        (tmp_path / k).write_bytes(v)
    with pytest.raises(RuntimeError, match="plot failed"):
        with StagedWrites() as st:
            st.write(tmp_path / "a.csv", "new a\n")
            with st.open(tmp_path / "b.csv", "w", newline="") as fh:
                fh.write("new b\n")
            st.write_with(
                tmp_path / "c.md", lambda fh: (_ for _ in ()).throw(RuntimeError("plot failed"))
            )
    for k, v in old.items():
        assert (tmp_path / k).read_bytes() == v, k
    assert listing(tmp_path) == sorted(old)
    # The same set without the failure replaces all three.
    with StagedWrites() as st:
        st.write(tmp_path / "a.csv", "new a\n")
        st.write(tmp_path / "b.csv", b"new b\n")
        st.write_with(tmp_path / "c.md", lambda fh: fh.write(b"new c\n"))
        assert (tmp_path / "a.csv").read_bytes() == b"old a\n"  # nothing renamed yet
    assert [(tmp_path / k).read_bytes() for k in sorted(old)] == [
        b"new a\n",
        b"new b\n",
        b"new c\n",
    ]
    assert listing(tmp_path) == sorted(old)


def test_before_commit_sees_the_staged_files_and_can_abort(tmp_path):
    seen = {}

    def hook(dests):
        seen.update({d.name: st.temp_of(d).read_bytes() for d in dests})
        raise OSError("manifest not writable")

    st = StagedWrites(before_commit=hook)
    with pytest.raises(OSError, match="manifest"):
        with st:
            st.write(tmp_path / "x", "1")
    assert seen == {"x": b"1"}
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError, match="already"):
        st.write(tmp_path / "y", "2")


def test_staging_a_file_twice_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="staged twice"):
        with StagedWrites() as st:
            st.write(tmp_path / "x", "1")
            st.write(tmp_path / "x", "2")
    assert listing(tmp_path) == []


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_temps(tmp_path):
    stale = tmp_path / f"{atomic.TEMP_PREFIX}curves.csv.{dead_pid()}.abcdef123456"
    stale.write_text("truncated")
    (tmp_path / "keep.csv").write_text("mine")
    assert is_temp_name(stale.name) and not is_temp_name("keep.csv")
    assert remove_stale_temps(tmp_path) == [stale]
    assert listing(tmp_path) == ["keep.csv"]
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_users_file_with_the_temp_prefix_is_never_removed(tmp_path):
    # Only the exact form <prefix><name>.<pid>.<12 hex> is a temporary file of ours.
    for name in ("notes", "curves.csv.abc123", "x.12.abcdef12345", "x.12.ABCDEF123456"):
        (tmp_path / (atomic.TEMP_PREFIX + name)).write_text("the user's")
    assert not any(is_temp_name(p.name) for p in tmp_path.iterdir())
    assert remove_stale_temps(tmp_path) == []
    assert len(listing(tmp_path)) == 4


def test_temp_files_of_a_live_writer_are_left_alone(tmp_path):
    # Another process writing into the same folder (its pid is alive): not stale.
    other = tmp_path / f"{atomic.TEMP_PREFIX}summary.csv.{os.getppid()}.abcdef123456"
    other.write_text("being written")
    # This process's own file that is being written now: not stale either.
    with atomic_open(tmp_path / "a.csv") as fh:
        fh.write("x")
        (mine,) = [p for p in tmp_path.iterdir() if p.name.startswith(atomic.TEMP_PREFIX + "a.")]
        assert is_temp_name(mine.name) and str(os.getpid()) in mine.name
        assert remove_stale_temps(tmp_path) == []
    # A leftover that names this process's pid but is not being written: stale.
    left = tmp_path / f"{atomic.TEMP_PREFIX}b.csv.{os.getpid()}.0123456789ab"
    left.write_text("left by an earlier process with the same pid")
    assert remove_stale_temps(tmp_path) == [left]
    assert listing(tmp_path) == [other.name, "a.csv"]


def test_staged_temp_files_are_not_removed_while_staged(tmp_path):
    with StagedWrites() as st:
        st.write(tmp_path / "a.csv", "1")
        assert remove_stale_temps(tmp_path) == []
        assert len(listing(tmp_path)) == 1
    assert listing(tmp_path) == ["a.csv"]


def test_save_figure_is_atomic(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    p = atomic.save_figure(fig, tmp_path / "f.png", dpi=50)
    assert p.read_bytes()[:4] == b"\x89PNG"

    class Broken:
        def savefig(self, fh, **kw):
            fh.write(b"\x89PNG half")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic.save_figure(Broken(), p)
    assert p.read_bytes()[:4] == b"\x89PNG" and len(list(tmp_path.iterdir())) == 1
    plt.close(fig)


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    """The rename must never reach the disk before the bytes: fsync(file), then
    os.replace, then fsync(folder) -- for single writes and for staged sets."""
    import stat

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "file" if stat.S_ISREG(os.fstat(fd).st_mode) else "dir"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "a.txt", "x")
    assert events == ["fsync file", "replace", "fsync dir"]
    events.clear()
    with StagedWrites() as st:
        st.write(tmp_path / "b", "1")
        st.write(tmp_path / "c", "2")
    assert events == ["fsync file", "fsync file", "replace", "replace", "fsync dir"]
    assert (tmp_path / "a.txt").read_text() == "x" and (tmp_path / "c").read_text() == "2"
