"""Output folders: write only where depthaccel's own files are, never over the input.

An output folder (``compare --out``, ``reproduce --out``) holds a small manifest,
``.depthaccel-outputs.json``, listing every file depthaccel wrote there with its sha256
(and the sub-folders it created for itself, e.g. one per experiment). Before a command
writes anything, :meth:`OutputFolder.check` walks the folder and refuses it
(:class:`OutputFolderError`, a one-line message naming a few of the files) when it holds
a file that is

* not in the manifest (the user's own file, or outputs of an older version), or
* in the manifest but changed since (a file the user edited),

unless ``force`` is set. Always allowed: the manifest itself, temporary files of
:mod:`depthaccel.atomic` (a killed writer's leftovers; removed by :meth:`prepare`), the
names in ``allowed`` (the results store and its SQLite side files) and anything inside a
sub-folder recorded as created by depthaccel. An empty or missing folder is fine.

The check also refuses an output that is the input (``os.path.samefile``, so links and
other spellings of the same path count) and an ``--out`` that is a file or cannot be
created or written.

Writes (:meth:`OutputFolder.write`, :meth:`OutputFolder.staged`) are atomic
(:mod:`depthaccel.atomic`). For a staged set the manifest is first updated to accept the
old *and* the new hash of each file, then the files are renamed, then only the new hashes
are kept: a kill at any point leaves a folder that the next run accepts as its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from depthaccel.atomic import StagedWrites, is_temp_name, remove_stale_temps, write_atomic

__all__ = ["MANIFEST_NAME", "OutputFolder", "OutputFolderError", "sha256_file"]

MANIFEST_NAME = ".depthaccel-outputs.json"
#: Output folders have had a manifest since 2026-11-30: a file modified later than this
#: (POSIX time of 2026-12-01 00:00 UTC) cannot be an unedited output of an older version.
LEGACY_BEFORE = 1796083200.0
_FORMAT = "depthaccel-outputs/1"
_SHOW = 5  # foreign files named in the error message
_LIMIT = 100  # the check stops walking after this many foreign files


class OutputFolderError(ValueError):
    """The output folder cannot be used (foreign files, input = output, not writable)."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return os.path.abspath(a) == os.path.abspath(b)


class OutputFolder:
    """An output folder guarded by a manifest of what depthaccel wrote (see module doc).

    Args:
        root: the folder (created by :meth:`prepare` if missing).
        force: accept foreign files (they are left alone unless they carry an output's name).
        allowed: names relative to ``root`` that are always fine (e.g. the results store).
        flag: the option that sets ``force``, for the error message.
        adopt: ``adopt(relative path, path) -> bool`` recognises files of an output
            folder written before the manifest existed (only used when there is no
            manifest, and only for files last modified before ``LEGACY_BEFORE``: a file
            written or edited since is never adopted, so deleting the manifest disowns
            the folder's files, as its note says).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        force: bool = False,
        allowed: Iterable[str] = (),
        flag: str = "--force",
        adopt: Callable[[str, Path], bool] | None = None,
    ):
        self.root = Path(root)
        self.force = force
        self.allowed = {Path(a).as_posix() for a in allowed}
        self.flag = flag
        self.adopt = adopt

    # ------------------------------------------------------------------ manifest

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _read_manifest(self) -> dict:
        empty = {"format": _FORMAT, "files": {}, "dirs": []}
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return empty
        except (OSError, ValueError):
            return empty  # unreadable: everything in the folder counts as foreign
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return empty
        files = data.get("files")
        dirs = data.get("dirs")
        if not isinstance(files, dict) or not isinstance(dirs, list):
            return empty
        return {
            "format": _FORMAT,
            "files": {str(k): [str(h) for h in v] for k, v in files.items() if isinstance(v, list)},
            "dirs": [str(d) for d in dirs],
        }

    def _write_manifest(self, data: dict) -> None:
        data = {
            "format": _FORMAT,
            "note": "files written by depthaccel (sha256); delete this file to disown them",
            "files": dict(sorted(data["files"].items())),
            "dirs": sorted(set(data["dirs"])),
        }
        write_atomic(self.manifest_path, json.dumps(data, indent=1) + "\n")

    def _rel(self, path: str | os.PathLike) -> str:
        p = Path(path)
        with contextlib.suppress(ValueError):
            return p.relative_to(self.root).as_posix()
        return p.as_posix()

    def _abs(self, rel: str | os.PathLike) -> Path:
        p = Path(rel)
        try:
            p.relative_to(self.root)
            return p
        except ValueError:
            return self.root / p

    # --------------------------------------------------------------------- checks

    def foreign_files(self, limit: int | None = None) -> list[str]:
        """Files in the folder that depthaccel did not write (relative paths, sorted);
        the walk stops after ``limit`` of them (a mistaken ``--out ~`` is refused at once)."""
        if not self.root.is_dir():
            return []
        man = self._read_manifest()
        adopt = None if self.manifest_path.exists() else self.adopt
        owned_dirs = [d.rstrip("/") + "/" for d in man["dirs"]]
        foreign = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath)
            for dn in list(dirnames):
                if (base / dn).is_symlink():  # never descend; a link is not ours
                    foreign.append((base / dn).relative_to(self.root).as_posix())
                    dirnames.remove(dn)
            for fn in filenames:
                full = base / fn
                rel = full.relative_to(self.root).as_posix()
                if rel == MANIFEST_NAME or is_temp_name(fn) or rel in self.allowed:
                    continue
                if full.is_symlink() or not full.is_file():
                    foreign.append(rel)
                    continue
                if any(rel.startswith(d) for d in owned_dirs):
                    continue
                hashes = man["files"].get(rel)
                if hashes and sha256_file(full) in hashes:
                    continue
                if adopt is not None and self._adoptable(rel, full):
                    continue
                foreign.append(rel)
            if limit is not None and len(foreign) >= limit:
                break
        return sorted(foreign)

    def check(
        self,
        *,
        outputs: Sequence[str | os.PathLike] = (),
        inputs: Sequence[str | os.PathLike] = (),
    ) -> None:
        """Raise :class:`OutputFolderError` (nothing written) when the folder cannot be
        used: ``root`` is a file or cannot be created/written, an input is one of
        ``outputs`` (relative to ``root``) or the manifest, or (without ``force``) the
        folder holds files depthaccel did not write."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise OutputFolderError(f"output folder {str(root)!r} is a file, not a folder")
        man = self.manifest_path
        if man.is_symlink() or (man.exists() and not man.is_file()):
            raise OutputFolderError(
                f"{str(man)!r} is not depthaccel's manifest file (a folder, link or other "
                "non-file has its name); move it away"
            )
        targets = [self._abs(o) for o in outputs] + [self.manifest_path]
        for inp in inputs:
            for t in targets:
                if _same_file(Path(inp), t):
                    raise OutputFolderError(
                        f"the input {str(inp)!r} is also an output ({t.name} in {str(root)!r}) "
                        "and would be overwritten; choose another output folder"
                    )
        self._check_writable()
        if self.force:
            return
        foreign = self.foreign_files(limit=_LIMIT)
        if foreign:
            shown = ", ".join(foreign[:_SHOW]) + (
                f" and {len(foreign) - _SHOW} more" if len(foreign) > _SHOW else ""
            )
            count = f"{len(foreign)}" if len(foreign) < _LIMIT else f"{_LIMIT} or more"
            raise OutputFolderError(
                f"output folder {str(root)!r} holds {count} file(s) depthaccel did not "
                f"write ({shown}); choose an empty or new folder, or pass {self.flag} to "
                "write there anyway (files with an output's name are then replaced)"
            )

    def _check_writable(self) -> None:
        # The nearest existing ancestor must be a writable folder; the probe below also
        # catches read-only file systems and ACLs that os.access does not see.
        probe = self.root
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if not probe.is_dir():
            raise OutputFolderError(
                f"cannot create output folder {str(self.root)!r}: {str(probe)!r} is a file"
            )
        if not os.access(probe, os.W_OK | os.X_OK):
            raise OutputFolderError(
                f"cannot write to output folder {str(self.root)!r}: {str(probe)!r} is not writable"
            )
        try:
            with tempfile.TemporaryFile(dir=probe, prefix=".depthaccel-tmp.probe."):
                pass
        except OSError as e:
            raise OutputFolderError(
                f"cannot write to output folder {str(self.root)!r}: {e.strerror or e}"
            ) from None

    # --------------------------------------------------------------------- writing

    def prepare(self) -> None:
        """Create the folder (after :meth:`check`) and remove a killed writer's
        temporary files."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputFolderError(
                f"cannot create output folder {str(self.root)!r}: {e.strerror or e}"
            ) from None
        remove_stale_temps(self.root)
        if self.adopt is not None and not self.manifest_path.exists():
            self._record_adopted()

    def _adoptable(self, rel: str, full: Path) -> bool:
        """An unedited output of a version without the manifest (see ``adopt``)."""
        try:
            if full.stat().st_mtime >= LEGACY_BEFORE:
                return False
        except OSError:
            return False
        return self.adopt is not None and bool(self.adopt(rel, full))

    def _record_adopted(self) -> None:
        # Files of an older version's output folder (``adopt``) go into the new
        # manifest, so that they stay ours once the manifest exists.
        man = self._read_manifest()
        for dirpath, _, filenames in os.walk(self.root):
            for fn in filenames:
                full = Path(dirpath) / fn
                rel = full.relative_to(self.root).as_posix()
                if rel == MANIFEST_NAME or is_temp_name(fn) or rel in self.allowed:
                    continue
                if full.is_file() and not full.is_symlink() and self._adoptable(rel, full):
                    man["files"][rel] = [sha256_file(full)]
        if man["files"]:
            self._write_manifest(man)

    def own_dir(self, rel: str | os.PathLike) -> Path:
        """Record sub-folder ``rel`` as depthaccel's (everything in it counts as ours)
        and create it."""
        man = self._read_manifest()
        r = self._rel(rel).rstrip("/")
        if r not in man["dirs"]:
            man["dirs"].append(r)
            self._write_manifest(man)
        path = self._abs(rel)
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        return path

    def write(self, rel: str | os.PathLike, data: bytes | str) -> Path:
        """Write one file atomically and record it in the manifest."""
        with self.staged() as stage:
            stage.write(self._abs(rel), data)
        return self._abs(rel)

    @contextlib.contextmanager
    def staged(self) -> Iterator[StagedWrites]:
        """``with folder.staged() as stage: stage.write(path, ...)``: the whole set is
        written all-or-nothing (:class:`depthaccel.atomic.StagedWrites`) and recorded in
        the manifest (see the module docstring for the order)."""
        new: dict[str, str] = {}

        def before_commit(dests: list[Path]) -> None:
            man = self._read_manifest()
            for d in dests:
                rel = self._rel(d)
                new[rel] = sha256_file(stage.temp_of(d))
                old = man["files"].get(rel, [])
                man["files"][rel] = list(dict.fromkeys([*old, new[rel]]))
            self._write_manifest(man)

        stage = StagedWrites(before_commit=before_commit)
        with stage:
            yield stage
        man = self._read_manifest()
        for rel, h in new.items():
            man["files"][rel] = [h]
        self._write_manifest(man)
