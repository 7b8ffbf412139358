"""Shared pieces of the data loaders: the data directory, the Dataset record,
checksums and standardisation."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ENV_DATA_DIR = "DEPTHACCEL_DATA_DIR"
ENV_DOWNLOAD = "DEPTHACCEL_DOWNLOAD"


def _repo_root() -> Path | None:
    """The source checkout holding this file (a folder with pyproject.toml), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "depthaccel").is_dir():
            return parent
    return None


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory, chosen in this order:

    1. ``path`` when given;
    2. the environment variable ``DEPTHACCEL_DATA_DIR`` when set and non-empty;
    3. ``<repo>/../shared/data`` when this package runs from a source checkout and that
       folder exists (the project's shared data folder);
    4. ``$XDG_CACHE_HOME/depthaccel`` (default ``~/.cache/depthaccel``), where downloads go.

    The directory is not created here and need not exist; loaders say what is missing.
    Layout inside it: ``gas_sensor_drift/`` and ``mnist/``.
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    root = _repo_root()
    if root is not None:
        shared = root.parent / "shared" / "data"
        if shared.is_dir():
            return shared
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache") / "depthaccel"


def download_allowed(download: bool | None) -> bool:
    """Resolve a loader's ``download`` argument.

    ``True``/``False`` are taken as given. ``None`` (the default) means "download missing
    files unless the environment variable ``DEPTHACCEL_DOWNLOAD`` is 0/false/no/off".
    """
    if download is not None:
        return bool(download)
    return os.environ.get(ENV_DOWNLOAD, "1").strip().lower() not in {"0", "false", "no", "off"}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ChecksumError(ValueError):
    """A file's checksum differs from the expected one (corrupt, truncated or foreign)."""


def verify_sha256(path: Path, expected: str) -> str:
    """Check ``path`` against ``expected`` (hex sha256); return the digest or raise ChecksumError."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {path} ({path.stat().st_size} bytes): expected sha256 "
            f"{expected}, got {actual}. The file is corrupt, truncated or not the official "
            "one; delete it (it will be downloaded again when online) or replace it."
        )
    return actual


def missing_message(what: str, directory: Path, missing: Sequence[str], extra: str = "") -> str:
    """Error text for files that are missing: which ones, where we looked, how to fix it."""
    listed = ", ".join(missing)
    msg = (
        f"{what}: missing file(s) {listed} in {directory}. Run `depthaccel data fetch` "
        f"(when online), put them there, point {ENV_DATA_DIR} (or the data_dir argument) "
        "at a folder that holds them, or allow a download (download=True)."
    )
    return msg + (" " + extra if extra else "")


@dataclass
class Dataset:
    """A regression table.

    Attributes:
        X: float64 features, shape (m, d) (standardised when ``standardization`` is set).
        y: float64 target, shape (m,) or (m, k).
        feature_names: one name per column of X.
        target_name: name of the target (for (m, k) targets, names joined by ",").
        standardization: None for raw values, else the dict returned by ``standardize``
            (``X_mean``, ``X_std``, ``y_mean``, ``y_std``) so results can be mapped back:
            raw = standardised * std + mean.
        source: what was read (paths and sha256s), for reports.
        meta: extra per-row arrays (e.g. Ethanol's ``batch``), row-aligned with X.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_name: str
    standardization: dict | None
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape  # type: ignore[return-value]


def standardize(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str] | None = None,
    target_name: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Z-score every feature column and the target.

    Xs[:, j] = (X[:, j] - mu_j) / s_j,   ys = (y - nu) / t

    where:
        mu_j, s_j  mean and population standard deviation (ddof=0) of column j of X,
        nu, t      the same for y (per column when y is (m, k)).

    Returns ``(Xs, ys, info)`` with ``info = {"X_mean", "X_std", "y_mean", "y_std"}``
    (float64 arrays). A constant column (s_j = 0) cannot be scaled: ValueError naming it.

    Extreme values (e.g. 1e200, whose squares overflow float64, or 1e-160, whose squares
    underflow): for a column whose largest |value| is beyond 2**+-400, or whose plain
    mean or std is not finite, they are recomputed on the column divided by a power of two
    c just above its largest |value| (``mu = c * mean(x / c)``, ``s = c * std(x / c)``),
    so the scale of the data does not matter; otherwise the plain formulas are used
    unchanged.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (m, d), got shape {X.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape (m,) or (m, k) with m = {X.shape[0]}, got {y.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"standardize needs at least 2 rows, got {X.shape[0]}")
    x_mean, x_std = _mean_std(X)
    y_mean, y_std = _mean_std(y)
    names = (
        list(feature_names) if feature_names is not None else [f"x{j}" for j in range(X.shape[1])]
    )
    const = [names[j] for j in np.flatnonzero(~(x_std > 0))]
    if const:
        raise ValueError(
            f"constant feature column(s) {const}: standard deviation 0, cannot standardise; "
            "drop them or pass standardize=False"
        )
    if np.any(~(np.atleast_1d(y_std) > 0)):
        raise ValueError(
            f"target {target_name or 'y'} is constant: standard deviation 0, cannot standardise"
        )
    info = {"X_mean": x_mean, "X_std": x_std, "y_mean": y_mean, "y_std": y_std}
    return (X - x_mean) / x_std, (y - y_mean) / y_std, info


#: Columns whose largest |value| lies outside [2**-400, 2**400] (about 4e-121 .. 3e120)
#: get their mean and std computed on the column scaled by a power of two: the squares of
#: such values (or of their deviations) underflow to subnormal numbers or overflow.
_SAFE_EXPONENT = 400


def _mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population std; scaled recomputation for columns of extreme
    magnitude (tiny ones, whose squares lose digits or underflow, and huge ones, whose
    squares overflow): ``mu = c * mean(x / c)``, ``s = c * std(x / c)`` with ``c`` the
    power of two nearest above max |x| (dividing by it is exact). Columns of ordinary
    magnitude use the plain formulas, bit for bit."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        mean, std = a.mean(axis=0), a.std(axis=0)
        amax = np.max(np.abs(a), axis=0)
        _, expo = np.frexp(amax)  # amax = f * 2**expo, 0.5 <= f < 1
        extreme = (amax > 0) & (np.abs(expo) > _SAFE_EXPONENT)
        bad = ~(np.isfinite(mean) & np.isfinite(std)) | extreme
        if not np.any(bad):
            return mean, std
        c = np.where((amax > 0) & np.isfinite(amax), np.ldexp(1.0, expo), 1.0)
        scaled = a / c
        mean = np.where(bad, c * scaled.mean(axis=0), mean)[()]  # [()]: 0-d -> scalar
        std = np.where(bad, c * scaled.std(axis=0), std)[()]
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ValueError(
            "mean or standard deviation overflows float64 even after scaling; rescale the data"
        )
    return mean, std


def unstandardize_y(ys: np.ndarray, info: dict) -> np.ndarray:
    """Map a standardised target (or prediction) back to raw units: ys * y_std + y_mean."""
    return np.asarray(ys, dtype=np.float64) * info["y_std"] + info["y_mean"]
