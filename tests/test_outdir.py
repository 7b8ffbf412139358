"""Tests of depthaccel.outdir: the manifest-guarded output folder."""

from __future__ import annotations

import json
import os

import pytest

from depthaccel import atomic
from depthaccel.outdir import MANIFEST_NAME, OutputFolder, OutputFolderError, sha256_file


def test_missing_and_empty_folders_are_fine(tmp_path):
    OutputFolder(tmp_path / "new" / "deeper").check(outputs=["a.csv"])
    assert not (tmp_path / "new").exists()  # check writes nothing
    OutputFolder(tmp_path).check(outputs=["a.csv"])
    assert list(tmp_path.iterdir()) == []


def test_foreign_files_are_refused_unless_forced(tmp_path):
    (tmp_path / "REPORT.md").write_text("my own notes")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.csv").write_text("1,2\n")
    with pytest.raises(OutputFolderError) as e:
        OutputFolder(tmp_path).check(outputs=["REPORT.md"])
    msg = str(e.value)
    assert "holds 2 file(s) depthaccel did not write (REPORT.md, sub/data.csv)" in msg
    assert "--force" in msg and "\n" not in msg
    OutputFolder(tmp_path, force=True).check(outputs=["REPORT.md"])  # no error
    assert (tmp_path / "REPORT.md").read_text() == "my own notes"


def test_own_outputs_are_accepted_and_edited_ones_refused(tmp_path):
    f = OutputFolder(tmp_path, allowed=["store.sqlite"])
    f.prepare()
    f.write("a.csv", "1\n")
    with f.staged() as st:
        st.write(tmp_path / "b.md", "report")
    (tmp_path / "store.sqlite").write_bytes(b"db")
    (tmp_path / f"{atomic.TEMP_PREFIX}a.csv.{os.getpid()}.0123456789ab").write_text(
        "left by a kill"
    )
    man = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert man["files"] == {
        "a.csv": [sha256_file(tmp_path / "a.csv")],
        "b.md": [sha256_file(tmp_path / "b.md")],
    }
    assert f.foreign_files() == []
    f.check(outputs=["a.csv", "b.md"])
    f.prepare()  # removes the dead temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        MANIFEST_NAME,
        "a.csv",
        "b.md",
        "store.sqlite",
    ]
    (tmp_path / "b.md").write_text("report, edited by hand")
    assert f.foreign_files() == ["b.md"]
    # A corrupt manifest disowns everything (never the other way round).
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    assert f.foreign_files() == ["a.csv", "b.md"]


def test_symlinks_are_foreign(tmp_path):
    target = tmp_path.parent / (tmp_path.name + "-elsewhere.txt")
    target.write_text("precious")
    out = tmp_path / "out"
    f = OutputFolder(out)
    f.prepare()
    f.write("a.csv", "1")
    (out / "b.csv").symlink_to(target)
    assert f.foreign_files() == ["b.csv"]


def test_owned_sub_folders(tmp_path):
    f = OutputFolder(tmp_path)
    f.prepare()
    d = f.own_dir("fig2")
    (d / "anything.png").write_bytes(b"png")
    (tmp_path / "fig3").mkdir()
    (tmp_path / "fig3" / "x.png").write_bytes(b"png")
    assert f.foreign_files() == ["fig3/x.png"]


def test_input_is_never_an_output(tmp_path):
    out = tmp_path / "out"
    f = OutputFolder(out)
    f.prepare()
    f.write("curves.csv", "run,iteration,gap\n")
    before = (out / "curves.csv").read_bytes()
    for spelling in (out / "curves.csv", tmp_path / "out" / ".." / "out" / "curves.csv"):
        with pytest.raises(OutputFolderError, match="is also an output"):
            f.check(outputs=["curves.csv"], inputs=[spelling])
    os.link(out / "curves.csv", tmp_path / "hardlink.csv")
    with pytest.raises(OutputFolderError, match="is also an output"):
        OutputFolder(out, force=True).check(
            outputs=["curves.csv"], inputs=[tmp_path / "hardlink.csv"]
        )
    assert (out / "curves.csv").read_bytes() == before
    f.check(outputs=["summary.csv"], inputs=[out / "curves.csv"])  # not an output: fine


def test_unusable_roots(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "file").check()
    with pytest.raises(OutputFolderError, match="cannot create output folder .* is a file"):
        OutputFolder(tmp_path / "file" / "sub").check()
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    with pytest.raises(OutputFolderError, match="is not writable"):
        OutputFolder(ro / "out").check()


def test_kill_between_renames_leaves_a_folder_we_accept(tmp_path, monkeypatch):
    f = OutputFolder(tmp_path)
    f.prepare()
    with f.staged() as st:
        st.write(tmp_path / "a", "old a")
        st.write(tmp_path / "b", "old b")
    real = os.replace
    calls = []

    def replace(src, dst):
        if str(dst).endswith(MANIFEST_NAME) or is_manifest_tmp(src):
            return real(src, dst)
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first rename
        return real(src, dst)

    def is_manifest_tmp(src):
        return MANIFEST_NAME in os.path.basename(str(src))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with f.staged() as st:
            st.write(tmp_path / "a", "new a")
            st.write(tmp_path / "b", "new b")
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "a").read_text() == "new a" and (tmp_path / "b").read_text() == "old b"
    assert f.foreign_files() == []  # the next run accepts the mix of old and new


def test_a_huge_foreign_folder_is_refused_without_walking_all_of_it(tmp_path):
    for i in range(3):
        d = tmp_path / f"d{i}"
        d.mkdir()
        for j in range(60):
            (d / f"f{j}").write_text("x")
    f = OutputFolder(tmp_path)
    assert len(f.foreign_files()) == 180
    assert len(f.foreign_files(limit=100)) == 120  # stops after the folder that passed 100
    with pytest.raises(OutputFolderError, match="holds 100 or more file"):
        f.check()
