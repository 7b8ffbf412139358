"""Classification tables for ``depthaccel compare --loss ce``: numeric features and a
column of class labels (integers or strings), the classes taken from the data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthaccel.data import standardize
from depthaccel.data.tables import MIN_ROWS, _load_npz, check_finite, read_labeled_csv

__all__ = ["ClassTable", "load_class_table", "parse_labels"]


@dataclass
class ClassTable:
    """Features and class labels.

    Attributes:
        X: float64 features (m, d), z-scored when ``standardized``.
        labels: int64 class index of each row, 0..k-1 (into ``classes``).
        classes: the class labels as written in the table, in index order (numbers in
            increasing order, strings in lexicographic order).
        counts: rows per class.
        feature_names, target_name: column names.
        standardized: whether X was z-scored.
    """

    X: np.ndarray
    labels: np.ndarray
    classes: list[str]
    counts: list[int]
    feature_names: list[str]
    target_name: str
    standardized: bool

    @property
    def k(self) -> int:
        return len(self.classes)


def _rows(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i) + 1) for i in idx[:5])
    return shown + (", ..." if len(idx) > 5 else "")


def parse_labels(raw: list[str], column: str, where: str) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names from the label strings of a column. Numbers must be
    integers (a fractional value means a regression target: use an l_p loss); empty and
    NaN labels are refused; at least two classes, each with at least two rows."""
    m = len(raw)
    low = np.array([s.strip().lower() for s in raw])
    missing = np.flatnonzero(np.isin(low, ["", "nan", "na", "null", "none"]))
    if missing.size:
        raise ValueError(
            f"{where}: missing (NaN or empty) labels in column {column!r}, rows {_rows(missing)}"
        )
    try:
        nums = np.array([float(s) for s in raw])
    except ValueError:
        nums = None
    if nums is not None:
        bad = np.flatnonzero(~np.isfinite(nums) | (nums != np.round(nums)))
        if bad.size:
            raise ValueError(
                f"{where}: labels in column {column!r} are not integers (e.g. {raw[bad[0]].strip()!r}, "
                f"rows {_rows(bad)}): --loss ce needs class labels; for a numeric target use an "
                "l_p loss (e.g. --loss l2)"
            )
        values, codes = np.unique(nums.astype(np.int64), return_inverse=True)
        classes = [str(int(v)) for v in values]
    else:
        values, codes = np.unique(np.array([s.strip() for s in raw]), return_inverse=True)
        classes = [str(v) for v in values]
    k = len(classes)
    if k < 2:
        raise ValueError(
            f"{where}: column {column!r} holds a single class {classes[0]!r}: nothing to classify"
        )
    if 2 * k > m:
        raise ValueError(
            f"{where}: {k} classes for {m} rows in column {column!r}: every class needs at least 2 rows"
        )
    counts = np.bincount(codes, minlength=k)
    lone = [classes[c] for c in np.flatnonzero(counts < 2)]
    if lone:
        raise ValueError(
            f"{where}: class(es) {lone[:5]} of column {column!r} have a single row: every class "
            "needs at least 2 rows"
        )
    return codes.astype(np.int64), classes


def load_class_table(
    path: str | Path,
    target: str | None,
    *,
    standardize_features: bool = True,
    header: bool | None = None,
) -> ClassTable:
    """Read a classification table: CSV (labels may be text) or NPZ (numeric labels);
    ``target`` names the label column (default: the last). Features are z-scored unless
    ``standardize_features`` is False; the labels never are."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; give a table file")
    where = str(path)
    if path.name.lower().endswith(".npz"):
        X, y, feats, tname = _load_npz(path, target)
        if y.ndim != 1:
            raise ValueError(
                f"{where}: the ce loss takes one label column, got y of shape {y.shape}"
            )
        raw = ["nan" if not math.isfinite(v) else repr(float(v)) for v in y]
    else:
        feats, X, tname, raw = read_labeled_csv(path, target, header)
        check_finite(X, feats, where)
    if X.shape[0] < MIN_ROWS:
        raise ValueError(f"{where}: {X.shape[0]} row(s); at least {MIN_ROWS} are needed")
    if X.shape[1] < 1:
        raise ValueError(f"{where}: no feature columns")
    labels, classes = parse_labels(raw, tname, where)
    if standardize_features:
        try:
            X, _, _ = standardize(
                X, labels.astype(np.float64), feature_names=feats, target_name=tname
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    return ClassTable(
        X=np.asarray(X, dtype=np.float64),
        labels=labels,
        classes=classes,
        counts=[int(c) for c in counts],
        feature_names=list(feats),
        target_name=tname,
        standardized=standardize_features,
    )
