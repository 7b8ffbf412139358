"""Strict numeric CSV/NPZ reading and user regression tables (``load_table``).

Formats accepted by ``load_table``:

* CSV (``.csv``, ``.csv.gz``, ``.tsv``/``.txt`` with tabs or commas): a header row of
  column names, then one row per example, every value numeric. The target is the
  column named ``target`` (default: the last column); all other columns are features.
  A UTF-8 byte-order mark (as Excel writes) is skipped. Header decision: a first row
  whose fields are ALL numbers is taken for a data row of a headerless file and refused
  (``header=None``, the default) rather than silently turned into column names; pass
  ``header=False`` for a headerless file (columns are then named ``c1 .. cn``, the target
  defaults to the last) or ``header=True`` to use an all-numeric first row as names.
* NPZ (``.npz``): either arrays ``X`` (m, d) and ``y`` (m,) or (m, k) (optional
  ``feature_names``/``target_name`` string arrays), or one 1-D array per column of
  equal length m, the target chosen by name as for CSV (default: the last array in
  file order).

Checks, each a ValueError that names the problem and where it is: an empty file, a
duplicate or empty column name, a row with the wrong number of fields, a non-numeric
or empty value (column and row; row 1 is the first data row, on line 2), NaN or inf
(column and rows), a missing target column (lists the available ones), no feature
column, fewer than ``MIN_ROWS`` = 2 rows (a mean, a standard deviation and a loss gap
need two), constant feature columns or a constant target when standardising (named),
values too large for float64 arithmetic (with ``standardize=False``, ``max|v|^2 * m``
must not overflow; with standardisation the mean and std are computed in a scaled way,
so e.g. 1e200 works), an NPZ that is not a zip of arrays (a ``.npy``, a text file, an
empty file: each named) or holds 0 rows, an unknown file extension, and
(FileNotFoundError) a missing file. Fewer rows than
features is allowed: the least-squares problem is then underdetermined but the
optimisers still run on it.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from depthaccel.data._common import Dataset, sha256_file, standardize

MIN_ROWS = 2


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: a leading byte-order mark is dropped, not glued to the first column name
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_text(path: Path) -> str:
    """The whole text of a (gzipped) CSV file; ValueError, naming the file, when it cannot
    be read as UTF-8 text or holds NUL bytes (a binary file)."""
    try:
        with _open_text(path) as f:
            text = f.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if "\x00" in text:
        raise ValueError(f"{path}: not a text table (it holds NUL bytes: a binary file?)")
    return text


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_numeric_csv(
    path: str | os.PathLike, header: bool | None = None
) -> tuple[list[str], np.ndarray]:
    """Read a CSV with a header row and numeric values into (column names, float64 (m, n)).

    The delimiter is a comma, or a tab when the first row holds tabs and no commas.
    ``header``: None (default) = the first row holds the column names, and a first row
    of numbers only is refused as a probable headerless file; True = the first row is the
    header, whatever it holds; False = there is no header, every row is data and the
    columns are named ``c1 .. cn``. Errors name the column and the data row (1-based;
    line = row + 1, or = row without a header).
    """
    path = Path(path)
    text = _read_text(path)
    try:
        return _parse_numeric_csv(path, text, header)
    except csv.Error as exc:  # e.g. a field longer than the csv module's limit
        raise ValueError(f"{path}: cannot parse as CSV ({exc})") from None


def read_labeled_csv(
    path: str | os.PathLike, label: str | None, header: bool | None = None
) -> tuple[list[str], np.ndarray, str, list[str]]:
    """A CSV (as :func:`read_numeric_csv`) whose column ``label`` (default: the last)
    holds class labels, read as text: ``(feature names, float64 (m, d) features, the
    label column's name, one label string per row, stripped)``; the other columns must
    be numeric, with the same checks and messages as :func:`read_numeric_csv`."""
    path = Path(path)
    text = _read_text(path)
    try:
        lines = [ln for ln in text.splitlines()]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines or not lines[0].strip():
            raise ValueError(f"{path}: empty file (no header row)")
        delim = "\t" if ("\t" in lines[0] and "," not in lines[0]) else ","
        rows = list(csv.reader(lines, delimiter=delim))
        names = (
            [f"c{j + 1}" for j in range(len(rows[0]))]
            if header is False
            else [h.strip() for h in rows[0]]
        )
        label = names[-1] if label is None else label
        if label not in names:
            raise ValueError(f"{path}: no target column {label!r}; available columns: {names}")
        j = names.index(label)
        data = rows if header is False else rows[1:]
        labels = [r[j].strip() if j < len(r) else "" for r in data]
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=delim, lineterminator="\n")
        if header is not False:
            w.writerow(rows[0])
        for r in data:
            w.writerow([*r[:j], "0", *r[j + 1 :]] if j < len(r) else r)
        cols, values = _parse_numeric_csv(path, buf.getvalue(), header)
    except csv.Error as exc:
        raise ValueError(f"{path}: cannot parse as CSV ({exc})") from None
    feats = [c for i, c in enumerate(cols) if i != j]
    return feats, np.delete(values, j, axis=1), label, labels


def _parse_numeric_csv(path: Path, text: str, header: bool | None) -> tuple[list[str], np.ndarray]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: empty file (no header row)")
    delim = "\t" if ("\t" in lines[0] and "," not in lines[0]) else ","
    if header is False:
        first = next(csv.reader(lines[:1], delimiter=delim))
        lines = [delim.join(f"c{j + 1}" for j in range(len(first)))] + lines
    off = 1 if header is False else 0  # line number offset of the data rows
    reader = csv.reader(lines, delimiter=delim)
    names = [h.strip() for h in next(reader)]
    if header is None and names and all(_is_number(h) for h in names):
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ValueError(
            f"{path}: the first row ({shown}) is all numbers, so the file seems to have no "
            "header row of column names; add one, or read it with header=False (columns "
            "c1 .. cn; `depthaccel compare --no-header`)"
        )
    header = names
    if any(not h for h in header):
        raise ValueError(
            f"{path}: empty column name in header at position(s) "
            f"{[i + 1 for i, h in enumerate(header) if not h]}"
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ValueError(f"{path}: duplicate column name(s) {dup} in header")
    n = len(header)
    if len(lines) < 2:
        raise ValueError(f"{path}: no data rows after the header")
    try:  # fast path (C parser); any problem is located by the strict loop below
        values = np.loadtxt(lines[1:], delimiter=delim, dtype=np.float64, ndmin=2, comments=None)
        if values.shape[1] == n:
            return header, values
    except ValueError:
        pass
    rows: list[list[float]] = []
    for r, fields in enumerate(reader, start=1):
        if len(fields) != n:
            raise ValueError(
                f"{path}: row {r} (line {r + 1 - off}) has {len(fields)} fields, "
                f"{'header' if not off else 'row 1'} has {n}"
            )
        vals = []
        for j, s in enumerate(fields):
            try:
                vals.append(float(s))
            except ValueError:
                raise ValueError(
                    f"{path}: non-numeric value {s.strip()!r} in column {header[j]!r}, "
                    f"row {r} (line {r + 1 - off})"
                ) from None
        rows.append(vals)
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    return header, np.asarray(rows, dtype=np.float64)


def check_finite(values: np.ndarray, names: Sequence[str], where: str) -> None:
    """ValueError naming every column holding NaN/inf and the first rows (1-based)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    parts = []
    for j in np.flatnonzero(bad.any(axis=0)):
        rows = np.flatnonzero(bad[:, j]) + 1
        shown = ", ".join(str(int(r)) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        parts.append(f"column {names[j]!r} rows {shown}")
    raise ValueError(f"{where}: NaN or inf values in " + "; ".join(parts))


def _split_target(
    columns: list[str], values: np.ndarray, target: str | None, where: str
) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Features and target; ``target`` may name several columns, comma-separated
    (``"a,b,c"``: y is (m, k), in that order)."""
    if target is None:
        target = columns[-1]
    names = [target] if target in columns else [t.strip() for t in target.split(",")]
    for t in names:
        if t not in columns:
            raise ValueError(f"{where}: no target column {t!r}; available columns: {columns}")
    twice = sorted({t for t in names if names.count(t) > 1})
    if twice:
        raise ValueError(f"{where}: target column(s) {twice} named more than once")
    if len(columns) <= len(names):
        raise ValueError(f"{where}: needs at least one feature column besides target {target!r}")
    idx = [columns.index(t) for t in names]
    feats = [c for i, c in enumerate(columns) if i not in idx]
    X = np.delete(values, idx, axis=1)
    y = values[:, idx[0]].copy() if len(idx) == 1 else values[:, idx].copy()
    return X, y, feats, ",".join(names)


_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"


def _check_npz_magic(path: Path) -> None:
    """Name what the file is when it is not an .npz (a zip archive of .npy arrays)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        return
    if not head:
        raise ValueError(f"{path}: empty file (0 bytes), not an .npz archive")
    if head.startswith(_NPY_MAGIC):
        raise ValueError(
            f"{path}: this is a single .npy array saved under an .npz name, not an .npz "
            "archive; save it with np.savez(path, X=X, y=y) (or rename it .npy and build X, y)"
        )
    try:
        head.decode("ascii")
        kind = "a text file (CSV? then name it .csv)"
    except UnicodeDecodeError:
        kind = "not a zip archive"
    raise ValueError(f"{path}: not an .npz archive: it is {kind}")


def _load_npz(path: Path, target: str | None) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    _check_npz_magic(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile / format errors come in many types
        raise ValueError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc})") from exc
    if not arrays:
        raise ValueError(f"{path}: empty .npz (no arrays)")
    odd = [k for k, a in arrays.items() if not isinstance(a, np.ndarray)]
    if odd:
        raise ValueError(f"{path}: cannot read as .npz (member(s) {odd} are not .npy arrays)")
    where = str(path)
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf" and k not in ("feature_names", "target_name"):
            raise ValueError(f"{where}: array {k!r} is not numeric (dtype {a.dtype})")
    if "X" in arrays and "y" in arrays:
        if target is not None and target != "y":
            raise ValueError(
                f"{where}: holds arrays X and y; target must be None or 'y', got {target!r}"
            )
        X = np.asarray(arrays["X"], dtype=np.float64)
        y = np.asarray(arrays["y"], dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"{where}: X must be 2-D (m, d), got shape {X.shape}")
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"{where}: y must be (m,) or (m, k) with m = {X.shape[0]}, got {y.shape}"
            )
        if X.shape[0] < MIN_ROWS:
            raise ValueError(
                f"{where}: X has {X.shape[0]} row(s) (shape {X.shape}); at least {MIN_ROWS} "
                "are needed"
            )
        feats = (
            [str(s) for s in arrays["feature_names"]]
            if "feature_names" in arrays
            else [f"x{j + 1}" for j in range(X.shape[1])]
        )
        if len(feats) != X.shape[1]:
            raise ValueError(f"{where}: {len(feats)} feature_names for {X.shape[1]} columns of X")
        tname = str(arrays["target_name"]) if "target_name" in arrays else "y"
        check_finite(X, feats, where + " (X)")
        ycols = y.reshape(len(y), -1)
        check_finite(ycols, [tname] * ycols.shape[1], where + " (y)")
        return X, y, feats, tname
    cols = [k for k in arrays if k not in ("feature_names", "target_name")]
    shapes = {k: arrays[k].shape for k in cols}
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise ValueError(
            f"{where}: expected arrays 'X' and 'y', or 1-D column arrays of equal length; "
            f"got shapes {shapes}"
        )
    values = np.column_stack([np.asarray(arrays[k], dtype=np.float64) for k in cols])
    check_finite(values, cols, where)
    return _split_target(cols, values, target, where)


def load_table(
    path: str | os.PathLike,
    target: str | None = None,
    *,
    standardize: bool = True,
    header: bool | None = None,
) -> Dataset:
    """Load a user's regression table (CSV or NPZ, see the module docstring).

    ``target`` names the target column (default: the last column). With
    ``standardize=True`` (default) features and target are z-scored by
    ``depthaccel.data.standardize`` and the means/stds are kept in
    ``Dataset.standardization``; ``standardize=False`` returns the raw values.
    ``header`` (CSV only): None = a header row, an all-numeric first row is refused;
    True = the first row is the header anyway; False = no header (columns ``c1 .. cn``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a table file")
    if not path.is_file():
        raise ValueError(
            f"{path}: not a regular file (a pipe, device or socket); give a table file"
        )
    name = path.name.lower()
    if name.endswith(".npz"):
        X, y, feats, tname = _load_npz(path, target)
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        columns, values = read_numeric_csv(path, header=header)
        check_finite(values, columns, str(path))
        X, y, feats, tname = _split_target(columns, values, target, str(path))
    else:
        raise ValueError(
            f"{path}: unknown table format {path.suffix!r}; use .csv, .csv.gz, .tsv, .txt or .npz"
        )
    if X.shape[0] < MIN_ROWS:
        raise ValueError(f"{path}: {X.shape[0]} row(s); at least {MIN_ROWS} are needed")
    if X.shape[1] < 1:
        raise ValueError(f"{path}: no feature columns")
    info = None
    if standardize:
        X, y, info = _standardize_named(X, y, feats, tname, path)
    else:
        _check_raw_scale(X, y, feats, tname, path)
    return Dataset(
        X=X,
        y=y,
        feature_names=feats,
        target_name=tname,
        standardization=info,
        source=f"table {path} sha256={sha256_file(path)}",
    )


def _check_raw_scale(X, y, feats, tname, path) -> None:
    """Raw values whose squares summed over the rows overflow float64 are refused: the
    loss, its gradient and X^T X would be inf (and the optimum "rank deficient")."""
    m = X.shape[0]
    limit = float(np.sqrt(np.finfo(np.float64).max / max(m, 1)))
    cols = [*feats, tname]
    maxes = np.concatenate([np.abs(X).max(axis=0), np.abs(y.reshape(m, -1)).max(axis=0)])
    big = [(cols[min(j, len(cols) - 1)], maxes[j]) for j in np.flatnonzero(maxes > limit)]
    if big:
        shown = ", ".join(f"{c!r} (max |value| {v:.3g})" for c, v in big[:4])
        raise ValueError(
            f"{path}: values too large for float64 without standardisation: {shown}; with "
            f"{m} rows, sums of squares overflow above {limit:.3g} (the loss and X^T X would "
            "be inf). Standardise (the default) or rescale the data."
        )


def _standardize_named(X, y, feats, tname, path):
    try:
        names = tname.split(",") if y.ndim == 2 else tname
        return standardize(X, y, feature_names=feats, target_name=names)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
