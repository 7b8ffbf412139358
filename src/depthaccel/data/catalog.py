"""What data the project needs, where it is looked for, what is there, and fetching it.

The catalog lists every official file (name, folder, size in bytes, sha256, where it is
downloaded from) of the two data sets the experiments use:

* ``ethanol``: UCI-270 "Gas Sensor Array Drift at Different Concentrations", the ten
  files ``gas_sensor_drift/batch1.dat .. batch10.dat``, extracted from the official
  archive. The project's prepared table ``gas_sensor_drift/ethanol_2565.csv.gz`` (not
  downloadable) is an accepted alternative: the data set is usable when all ten batch
  files verify, or when the prepared table does.
* ``mnist``: the four official IDX files ``mnist/*-ubyte.gz``; usable when all four
  verify (sha256 of the .gz, or the md5 of the uncompressed file for a recompressed copy).

:func:`check_data` says, per data set, which files are there, missing or corrupt, and
whether the data set is usable; it never downloads. :func:`fetch_data` downloads the
missing official files (a progress bar per transfer when ``progress``) and verifies them
before they are put in place. :func:`data_locations` lists the folders in the order
:func:`depthaccel.data.data_dir` tries them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from depthaccel.data import _common
from depthaccel.data import download as _dl
from depthaccel.data import ethanol as _eth
from depthaccel.data import mnist as _mn

DATASETS = ("ethanol", "mnist")
FETCH_COMMAND = "depthaccel data fetch"

# Sizes in bytes of the official files (the sha256 is the authority; a size mismatch is
# reported as corrupt without reading the file).
_BATCH_SIZES = {
    "batch1.dat": 757889,
    "batch2.dat": 2134300,
    "batch3.dat": 2725224,
    "batch4.dat": 278400,
    "batch5.dat": 341379,
    "batch6.dat": 3928247,
    "batch7.dat": None,  # not known to this project (never obtained); sha256 is
    "batch8.dat": 495298,
    "batch9.dat": 791293,
    "batch10.dat": None,
}
_MNIST_SIZES = {
    "train-images-idx3-ubyte.gz": 9912422,
    "train-labels-idx1-ubyte.gz": 28881,
    "t10k-images-idx3-ubyte.gz": 1648877,
    "t10k-labels-idx1-ubyte.gz": 4542,
}
_CSV_SIZE = 1573808


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: where it lives under the data folder and how it verifies."""

    dataset: str
    path: str  # relative to the data folder, e.g. "mnist/t10k-labels-idx1-ubyte.gz"
    sha256: str
    size: int | None
    urls: tuple[str, ...]  # direct URLs of this file, or () when it comes from an archive
    archive_urls: tuple[str, ...] = ()  # a zip holding it (Ethanol)
    downloadable: bool = True
    note: str = ""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def catalog(dataset: str) -> list[DataFile]:
    """The files of ``dataset`` ("ethanol" or "mnist"); the official ones first."""
    if dataset == "ethanol":
        files = [
            DataFile(
                "ethanol",
                f"{_eth.SUBDIR}/{n}",
                _eth.BATCH_SHA256[n],
                _BATCH_SIZES[n],
                (),
                tuple(_eth.UCI_URLS),
            )
            for n in _eth.BATCH_NAMES
        ]
        files.append(
            DataFile(
                "ethanol",
                f"{_eth.SUBDIR}/{_eth.CSV_NAME}",
                _eth.CSV_SHA256,
                _CSV_SIZE,
                (),
                downloadable=False,
                note="this project's prepared table (an alternative to the ten batch files; "
                "not downloadable)",
            )
        )
        return files
    if dataset == "mnist":
        return [
            DataFile(
                "mnist",
                f"{_mn.SUBDIR}/{n}",
                _mn.GZ_SHA256[n],
                _MNIST_SIZES[n],
                tuple(m + n for m in _mn.MIRRORS),
            )
            for n in _mn.FILES.values()
        ]
    raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")


# ------------------------------------------------------------------------------ where


@dataclass(frozen=True)
class Location:
    """One place the data folder may be: how it is chosen, the path, and its state."""

    how: str
    path: Path | None
    exists: bool
    chosen: bool


def data_locations(path: str | os.PathLike | None = None) -> list[Location]:
    """The candidates of :func:`depthaccel.data.data_dir`, in its order, the chosen one
    marked (the first that applies; see that function)."""
    chosen = _common.data_dir(path)
    env = os.environ.get(_common.ENV_DATA_DIR, "").strip()
    root = _common._repo_root()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    cands: list[tuple[str, Path | None]] = [
        ("--data-dir / data_dir argument", Path(path).expanduser() if path is not None else None),
        (f"${_common.ENV_DATA_DIR}", Path(env).expanduser() if env else None),
        (
            "../shared/data beside this source checkout",
            root.parent / "shared" / "data" if root is not None else None,
        ),
        ("the cache folder (downloads go here)", (Path(cache) if cache else Path.home() / ".cache") / "depthaccel"),
    ]  # fmt: skip
    out, done = [], False
    for how, p in cands:
        is_chosen = not done and p is not None and p == chosen
        # ../shared/data only counts when it exists; the others count when set
        if is_chosen and how.startswith("../shared") and not p.is_dir():
            is_chosen = False
        done = done or is_chosen
        out.append(Location(how, p, bool(p is not None and p.is_dir()), is_chosen))
    return out


# ------------------------------------------------------------------------------ check


@dataclass(frozen=True)
class FileStatus:
    file: DataFile
    status: str  # "ok", "missing" or "corrupt"
    detail: str = ""
    size: int | None = None  # bytes on disk


@dataclass
class DatasetStatus:
    name: str
    folder: Path
    files: list[FileStatus]
    usable: bool
    how: str  # which files make it usable, or why not

    @property
    def missing(self) -> list[FileStatus]:
        return [f for f in self.files if f.status == "missing" and f.file.downloadable]

    @property
    def corrupt(self) -> list[FileStatus]:
        return [f for f in self.files if f.status == "corrupt"]


@dataclass
class DataReport:
    """Result of :func:`check_data`: one :class:`DatasetStatus` per data set asked for."""

    data_dir: Path
    datasets: dict[str, DatasetStatus] = field(default_factory=dict)
    requested_dir: Path | None = None  # the data_dir argument (None: the default search)
    download: str = ""  # whether a download was tried and what came of it (ensure_data)

    @property
    def ok(self) -> bool:
        return all(d.usable for d in self.datasets.values())

    @property
    def unusable(self) -> list[str]:
        return [n for n, d in self.datasets.items() if not d.usable]

    def format(self) -> str:
        """A table of every file: status, size, sha256 (for ``depthaccel data check``)."""
        lines = [f"data folder: {self.data_dir}"]
        for d in self.datasets.values():
            lines.append(f"{d.name}: {'OK' if d.usable else 'NOT USABLE'} ({d.how})")
            for fs in d.files:
                size = "?" if fs.file.size is None else f"{fs.file.size:,} B"
                lines.append(
                    f"  {fs.status.upper():<8} {fs.file.path:<44} {size:>13}  "
                    f"sha256 {fs.file.sha256[:16]}..." + (f"  {fs.detail}" if fs.detail else "")
                )
        return "\n".join(lines)

    def advice(self, experiments: dict[str, list[str]] | None = None) -> str:
        """What is missing and what to do, over several lines (empty when all is usable):
        every missing or corrupt file group, whether a download was tried (and why not),
        the data folders searched, and a command that runs as typed.

        ``experiments`` maps a data set to the experiments that need it (named in the text).
        """
        if self.ok:
            return ""
        lines = ["data not available:"]
        for name in self.unusable:
            d = self.datasets[name]
            who = ""
            if experiments and experiments.get(name):
                who = f" (needed by {', '.join(experiments[name])})"
            bad = [f.file.name for f in d.corrupt]
            miss = [f.file.name for f in d.missing]
            what = []
            if miss:
                what.append("missing " + _short(miss))
            if bad:
                what.append("corrupt " + _short(bad))
            lines.append(f"  {name}{who}: {'; '.join(what) or d.how} in {d.folder}")
        if self.download:
            lines.append(f"download: {self.download}")
        lines.append("data folders searched, in order:")
        for loc in data_locations(self.requested_dir):
            if loc.path is None:
                continue
            mark = "  <- used" if loc.chosen else ("" if loc.exists else "  (does not exist)")
            lines.append(f"  {loc.how}: {loc.path}{mark}")
        lines.append("to get it (downloads and verifies the official files):")
        for command in fetch_commands(self.unusable):
            lines.append(f"  {command}")
        lines.append(
            f"or set {_common.ENV_DATA_DIR} (or --data-dir) to a folder that already holds "
            "gas_sensor_drift/ and mnist/; `data check` lists every file."
        )
        return "\n".join(lines)


def fetch_commands(datasets: Sequence[str]) -> list[str]:
    """Commands that fetch ``datasets`` and run as typed from the current folder:
    ``make data`` in a source checkout (its Makefile has that target), and
    ``depthaccel data fetch ...`` with the path of the running program when
    ``depthaccel`` is not on PATH (e.g. ``.venv/bin/depthaccel`` after ``make``)."""
    import shutil
    import sys

    program = "depthaccel"
    here = Path(sys.executable).parent / "depthaccel"
    on_path = shutil.which("depthaccel")
    if here.is_file() and (on_path is None or Path(on_path).resolve() != here.resolve()):
        try:
            program = os.path.relpath(here)
        except ValueError:
            program = str(here)
        if not program.startswith((".", "/")):
            program = "./" + program
    out = []
    root = _common._repo_root()
    if (
        root is not None
        and (root / "Makefile").is_file()
        and Path.cwd().resolve() == root.resolve()
    ):
        out.append("make data")
    out.append(f"{program} data fetch {' '.join(datasets)}")
    return out


def _short(names: Sequence[str]) -> str:
    return (
        ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])} and {len(names) - 3} more"
    )


def _check_file(folder: Path, f: DataFile) -> FileStatus:
    path = folder / f.path
    if not path.is_file():
        return FileStatus(f, "missing")
    size = path.stat().st_size
    if f.dataset == "mnist":  # sha256 of the .gz, or md5 of the content when recompressed
        try:
            _, how = _mn._verify(path.read_bytes(), f.name, str(path))
        except (ValueError, OSError) as exc:
            return FileStatus(f, "corrupt", _first_sentence(exc), size)
        return FileStatus(f, "ok", "" if how.startswith("sha256") else how, size)
    if f.size is not None and size != f.size:
        return FileStatus(f, "corrupt", f"{size:,} bytes, expected {f.size:,}", size)
    try:
        _common.verify_sha256(path, f.sha256)
    except (ValueError, OSError) as exc:
        return FileStatus(f, "corrupt", _first_sentence(exc), size)
    return FileStatus(f, "ok", "", size)


def _first_sentence(exc: BaseException) -> str:
    text = str(exc)
    return text.split(". ")[0]


def _dataset_status(name: str, folder: Path) -> DatasetStatus:
    statuses = [_check_file(folder, f) for f in catalog(name)]
    if name == "ethanol":
        batches = [s for s in statuses if s.file.downloadable]
        table = [s for s in statuses if not s.file.downloadable][0]
        if all(s.status == "ok" for s in batches):
            usable, how = True, "the ten official batch files"
        elif table.status == "ok":
            n_ok = sum(s.status == "ok" for s in batches)
            usable, how = True, f"the prepared table; {n_ok} of 10 official batch files"
        else:
            usable = False
            how = "needs the ten official batch files (or the prepared table)"
    else:
        usable = all(s.status == "ok" for s in statuses)
        how = "all four files" if usable else "needs all four official files"
    return DatasetStatus(name, folder, statuses, usable, how)


def check_data(
    names: Iterable[str] = DATASETS, data_dir: str | os.PathLike | None = None
) -> DataReport:
    """Check the data sets ``names`` in the data folder (``depthaccel.data.data_dir``);
    never downloads. Unknown names are a ValueError."""
    names = list(dict.fromkeys(names))
    for n in names:
        if n not in DATASETS:
            raise ValueError(f"unknown data set {n!r}; known: {', '.join(DATASETS)}")
    root = _common.data_dir(data_dir)
    report = DataReport(root, requested_dir=None if data_dir is None else Path(data_dir))
    for n in names:
        report.datasets[n] = _dataset_status(n, root)
    return report


# ------------------------------------------------------------------------------ fetch


def _tqdm_progress(enabled: bool) -> Callable[[str, int | None], Callable[[int], None]] | None:
    """A factory of per-download progress callbacks drawing a tqdm bar (stderr)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    def start(label: str, total: int | None) -> Callable[[int], None]:
        bar = tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False
        )

        def update(n: int) -> None:
            if n < 0:
                bar.close()
            else:
                bar.update(n)

        return update

    return start


def offline_instructions(report: DataReport) -> str:
    """Exact manual steps for the missing official files (when downloading failed)."""
    lines = []
    for name in report.unusable or list(report.datasets):
        d = report.datasets[name]
        todo = d.missing + d.corrupt
        if not todo:
            continue
        folder = d.folder
        if name == "ethanol":
            urls = todo[0].file.archive_urls
            lines.append(
                f"ethanol: download the official UCI-270 archive {urls[0]} and extract "
                f"{', '.join(f.file.name for f in todo)} (from its nested batch zip) into "
                f"{folder / _eth.SUBDIR}/; expected sha256:"
            )
        else:
            lines.append(f"{name}: download into {folder / _mn.SUBDIR}/ (any one mirror per file):")
        for fs in todo:
            f = fs.file
            size = "" if f.size is None else f", {f.size:,} bytes"
            src = f"  {f.urls[0]}" if f.urls else ""
            lines.append(f"  {f.name}{size}, sha256 {f.sha256}{src}")
    lines.append(
        f"Or copy a folder that holds gas_sensor_drift/ and mnist/ and set {_common.ENV_DATA_DIR} "
        "to it. Then run `depthaccel data check`."
    )
    return "\n".join(lines)


@dataclass
class FetchResult:
    report: DataReport  # after fetching
    fetched: list[str]  # relative paths written
    errors: list[str]  # one line per data set that could not be fetched


def fetch_data(
    names: Iterable[str] = DATASETS,
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> FetchResult:
    """Download the missing (or corrupt) official files of ``names`` into the data folder.

    Every file is verified (sha256) before it is moved into place (a temporary file and
    a rename), so an interrupted transfer leaves nothing a later run would trust; a
    corrupt file is replaced only by a verified download. Returns the report after
    fetching; failures (offline, HTTP errors, a read-only folder) are listed in
    ``errors``, never raised.
    """
    names = list(dict.fromkeys(names))
    before = check_data(names, data_dir)
    bar = _tqdm_progress(progress)
    fetched: list[str] = []
    errors: list[str] = []
    for name in names:
        d = before.datasets[name]
        todo = [fs.file for fs in d.missing + d.corrupt if fs.file.downloadable]
        if not todo:
            continue
        folder = d.folder
        try:
            if name == "ethanol":
                sub = folder / _eth.SUBDIR
                log(
                    f"ethanol: downloading the UCI-270 archive for {', '.join(f.name for f in todo)}"
                )
                _dl.download_zip_members(
                    list(todo[0].archive_urls),
                    sub,
                    {f.name: f.sha256 for f in todo},
                    progress=bar,
                )
                fetched += [f.path for f in todo]
            else:
                for f in todo:
                    log(f"{name}: downloading {f.name}")
                    _dl.download_file(
                        list(f.urls),
                        folder / f.path,
                        _mn._check(f.name),
                        progress=bar,
                    )
                    fetched.append(f.path)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    return FetchResult(check_data(names, data_dir), fetched, errors)


def ensure_data(
    names: Iterable[str],
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> DataReport:
    """The pre-flight of ``depthaccel reproduce``: check the data sets ``names`` once and,
    when one is not usable and downloading is allowed (``download``, default
    ``$DEPTHACCEL_DOWNLOAD`` unless 0/false/no/off), fetch its missing official files
    once. Returns the final report; the caller skips what is still unusable and tells
    the user :meth:`DataReport.advice` (one message)."""
    names = list(dict.fromkeys(names))
    report = check_data(names, data_dir)
    if report.ok:
        return report
    if not _common.download_allowed(download):
        report.download = (
            f"not tried ({_common.ENV_DOWNLOAD}=0)"
            if download is None
            else "not tried (downloads are off)"
        )
        return report
    log(f"data: {', '.join(report.unusable)} not found in {report.data_dir}; trying a download")
    res = fetch_data(report.unusable, data_dir, progress=progress, log=log)
    for e in res.errors:
        log(f"data: download failed: {e}")
    after = check_data(names, data_dir)
    if not after.ok:
        after.download = "tried and failed" + (
            f" ({res.errors[0]})" if res.errors else " (offline, or the files did not verify)"
        )
    return after
