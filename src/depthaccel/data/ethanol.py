"""The paper's Ethanol task (Section 8): UCI "Gas Sensor Array Drift Dataset at
Different Concentrations" (id 270), class 1 (Ethanol) rows of all ten batches,
target = concentration in ppm, 128 features: 2565 rows x 128 features.

Two sources, both under ``<data_dir>/gas_sensor_drift/``:

* ``batch1.dat`` .. ``batch10.dat``: the official files, one line per measurement
  ``CLASS;CONC 1:v 2:v ... 128:v``; each is checked against its official sha256
  (``BATCH_SHA256``). Rows are taken in batch order, then file order.
* ``ethanol_2565.csv.gz``: the prepared table of this project's shared data
  (columns batch, ppm, f1..f128, exact; see shared/data/README.md: 1316 rows copied
  exactly from batches 1-6, 8, 9 and 1249 rows of batches 7 and 10 rebuilt to 5
  significant digits from a derived public copy). Checked against ``CSV_SHA256``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from depthaccel.data import _common
from depthaccel.data import download as _dl
from depthaccel.data._common import Dataset, download_allowed, missing_message, verify_sha256
from depthaccel.data.tables import read_numeric_csv

SUBDIR = "gas_sensor_drift"
N_FEATURES = 128
N_ROWS = 2565
ETHANOL_CLASS = 1
CSV_NAME = "ethanol_2565.csv.gz"
# sha256 of ethanol_2565.csv.gz as prepared in this project's shared data folder.
CSV_SHA256 = "3cd9dca9e3e11a0bffa1c965fcdc7863730984a9ea06dce3985f90943455b3be"
# Official sha256 of the ten batch files of the UCI-270 archive.
BATCH_SHA256 = {
    "batch1.dat": "6b62f3e71b90f95dd9c2157fa91ffce32571faa7f474dd52f29a4ae769144625",
    "batch2.dat": "4ea9490068457badf9efd0c22f359fbfce12c208cdd440526b97ac91d31b9002",
    "batch3.dat": "aabf06bf8b8200740156235dc59458e06d99aa8faba4d6764a22c6b6c2674ff4",
    "batch4.dat": "ffc87c5146001bbe8ce90c4b2f7dad5b390ca3079f51b559032df53ffe5ff0af",
    "batch5.dat": "dcad4939c300a6c7d9f41b9470a9253eecc0ebc5c2c4e940d8ae20b8fc4240d0",
    "batch6.dat": "297d3a8b594dee4e2f4d7d2c4f5c485939fa708c10b5a11ed5cce95e05049afb",
    "batch7.dat": "eb5801d38a59beaae4a2412195d8ded790175ed1611159e083649ee9fe03d150",
    "batch8.dat": "58146b3e2dd68b125b2d5432cdd4968ec1fff47464ceb04282382181932d49be",
    "batch9.dat": "51f368ae8dee5d285be7f2029770e10eb12f342578830bc40ea852db19d19c9b",
    "batch10.dat": "b8309e8ff205b9d0350761989809f31f8feaefb8582aecb05f1d0f694b91184e",
}
BATCH_NAMES = [f"batch{i}.dat" for i in range(1, 11)]
# The official archive (UCI dataset 270; archive sha256 98fe3a30... as of 2024, but
# only the extracted batch files are verified, so a re-zipped archive still works).
UCI_URLS = [
    "https://archive.ics.uci.edu/static/public/270/"
    "gas+sensor+array+drift+dataset+at+different+concentrations.zip",
]
FEATURE_NAMES = [f"f{k}" for k in range(1, N_FEATURES + 1)]


class IncompleteDataWarning(UserWarning):
    """A preferred source is incomplete and a fallback was used."""


def parse_batch_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse one official batch file: returns (classes int (n,), conc float (n,), X float (n, 128)).

    Each line must be ``CLASS;CONC`` followed by exactly 128 tokens ``k:v`` with
    k = 1..128 in order; anything else is a ValueError naming the file and line.
    """
    path = Path(path)
    classes, concs, rows = [], [], []
    expected_keys = [str(k) for k in range(1, N_FEATURES + 1)]
    with open(path, encoding="ascii", errors="strict") as f:
        for ln, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                head, _, conc = tokens[0].partition(";")
                if not _:
                    raise ValueError("no 'CLASS;CONC' head")
                if len(tokens) != N_FEATURES + 1:
                    raise ValueError(f"{len(tokens) - 1} feature tokens, expected {N_FEATURES}")
                keys, vals = zip(*(t.split(":", 1) for t in tokens[1:]), strict=True)
                if list(keys) != expected_keys:
                    raise ValueError("feature indices are not 1..128 in order")
                classes.append(int(head))
                concs.append(float(conc))
                rows.append([float(v) for v in vals])
            except ValueError as exc:
                raise ValueError(f"{path}: parse error on line {ln}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no data lines")
    return np.asarray(classes), np.asarray(concs), np.asarray(rows, dtype=np.float64)


def _load_batches(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    X_parts, y_parts, b_parts, src = [], [], [], []
    for i, name in enumerate(BATCH_NAMES, start=1):
        path = folder / name
        digest = verify_sha256(path, BATCH_SHA256[name])
        cls, conc, X = parse_batch_file(path)
        keep = cls == ETHANOL_CLASS
        X_parts.append(X[keep])
        y_parts.append(conc[keep])
        b_parts.append(np.full(int(keep.sum()), i))
        src.append(f"{name} sha256={digest}")
    X = np.concatenate(X_parts)
    y = np.concatenate(y_parts)
    source = f"official UCI-270 batch files in {folder}: " + ", ".join(src)
    return X, y, np.concatenate(b_parts), source


def _load_csv(folder: Path) -> tuple[np.ndarray, np.ndarray, dict, str]:
    path = folder / CSV_NAME
    digest = verify_sha256(path, CSV_SHA256)
    cols, values = read_numeric_csv(path)
    needed = ["batch", "ppm", *FEATURE_NAMES]
    missing = [c for c in needed if c not in cols]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    idx = {c: i for i, c in enumerate(cols)}
    X = values[:, [idx[c] for c in FEATURE_NAMES]]
    y = values[:, idx["ppm"]]
    meta = {"batch": values[:, idx["batch"]].astype(int)}
    if "exact" in idx:
        meta["exact"] = values[:, idx["exact"]].astype(bool)
    source = (
        f"prepared table {path} sha256={digest} (this project's shared data: batches "
        "1-6, 8, 9 exact; batches 7 and 10 rebuilt to 5 significant digits, batch=0)"
    )
    return X, y, meta, source


def load_ethanol(
    data_dir: str | os.PathLike | None = None,
    *,
    standardize: bool = True,
    source: str = "auto",
    download: bool | None = None,
) -> Dataset:
    """Load the Ethanol regression task: X (2565, 128) features, y (2565,) ppm.

    Args:
        data_dir: folder holding ``gas_sensor_drift/`` (see ``depthaccel.data.data_dir``).
        standardize: z-score features and target (``depthaccel.data.standardize``);
            False returns raw sensor features and ppm.
        source: ``"batches"`` (the ten official files), ``"csv"`` (the prepared
            ``ethanol_2565.csv.gz``) or ``"auto"``: the batch files when all ten are
            present, else the csv (with an ``IncompleteDataWarning`` naming the
            missing batch files), else a download of the official archive.
        download: fetch missing official batch files from UCI (True), never (False),
            or (None) when allowed by ``DEPTHACCEL_DOWNLOAD`` (default allowed).

    Every file read is checked against its sha256; a mismatch is a ``ChecksumError``
    naming the file and both digests. ``Dataset.source`` says what was read;
    ``Dataset.meta["batch"]`` gives each row's batch (0 = rebuilt row of batch 7/10
    in the csv).
    """
    if source not in ("auto", "batches", "csv"):
        raise ValueError(f"source must be 'auto', 'batches' or 'csv', got {source!r}")
    root = _common.data_dir(data_dir)
    folder = root / SUBDIR
    missing = [n for n in BATCH_NAMES if not (folder / n).is_file()]
    csv_present = (folder / CSV_NAME).is_file()

    use = source
    if source == "auto":
        if not missing:
            use = "batches"
        elif csv_present:
            use = "csv"
            warnings.warn(
                f"Ethanol: official batch files incomplete in {folder} (missing "
                f"{', '.join(missing)}); using the prepared table {CSV_NAME}",
                IncompleteDataWarning,
                stacklevel=2,
            )
        else:
            use = "batches"
    if use == "csv":
        if not csv_present:
            raise FileNotFoundError(
                missing_message(
                    "Ethanol (source='csv')",
                    folder,
                    [CSV_NAME],
                    "It is this project's prepared table and is not downloadable; "
                    "use source='batches' for the official files.",
                )
            )
        X, y, meta, src = _load_csv(folder)
    else:
        if missing:
            _fetch_batches(folder, missing, download)
        X, y, batch, src = _load_batches(folder)
        meta = {"batch": batch}
    if X.shape != (N_ROWS, N_FEATURES):
        raise ValueError(
            f"Ethanol from {src}: got {X.shape[0]} rows x {X.shape[1]} features, "
            f"expected {N_ROWS} x {N_FEATURES}"
        )
    info = None
    if standardize:
        X, y, info = _common.standardize(X, y, feature_names=FEATURE_NAMES, target_name="ppm")
    return Dataset(
        X=X,
        y=y,
        feature_names=list(FEATURE_NAMES),
        target_name="ppm",
        standardization=info,
        source=src,
        meta=meta,
    )


def _fetch_batches(folder: Path, missing: list[str], download: bool | None) -> None:
    hint = f"(the official archive is {UCI_URLS[0]})"
    if not download_allowed(download):
        raise FileNotFoundError(
            missing_message("Ethanol", folder, missing, f"Downloading is disabled {hint}.")
        )
    try:
        _dl.download_zip_members(UCI_URLS, folder, {n: BATCH_SHA256[n] for n in missing})
    except OSError as exc:
        raise FileNotFoundError(
            missing_message("Ethanol", folder, missing, f"Download failed: {exc}")
        ) from exc
