"""Tests of depthaccel.data: loaders on small files written here (valid, corrupt,
truncated) and on the shared data folder when present."""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from depthaccel.data import (
    ChecksumError,
    IncompleteDataWarning,
    data_dir,
    load_ethanol,
    standardize,
    unstandardize_y,
)
from depthaccel.data import ethanol as eth

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path | None:
    env = os.environ.get("DEPTHACCEL_DATA_DIR", "").strip()
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "gas_sensor_drift").is_dir() or (cand / "mnist").is_dir():
            return cand
    return None


SHARED = _shared()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared data folder not found")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------- data_dir


def test_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPTHACCEL_DATA_DIR", str(tmp_path / "env"))
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("DEPTHACCEL_DATA_DIR")
    expected = REPO.parent / "shared" / "data"
    if expected.is_dir():
        assert data_dir() == expected
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        assert data_dir() == tmp_path / "cache" / "depthaccel"


# -------------------------------------------------------------------- standardize


def test_standardize_against_loop():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(7, 3))
    y = rng.normal(-1.0, 5.0, size=7)
    Xs, ys, info = standardize(X, y)
    for j in range(3):
        col = X[:, j]
        mu = sum(col) / len(col)
        sd = (sum((c - mu) ** 2 for c in col) / len(col)) ** 0.5
        np.testing.assert_allclose(Xs[:, j], (col - mu) / sd, rtol=1e-13)
        assert info["X_mean"][j] == pytest.approx(mu, rel=1e-14)
        assert info["X_std"][j] == pytest.approx(sd, rel=1e-14)
    np.testing.assert_allclose(unstandardize_y(ys, info), y, rtol=1e-13)
    # (m, k) target: per column
    Y = np.column_stack([y, 2 * y + 1])
    _, Ys, info2 = standardize(X, Y)
    np.testing.assert_allclose(Ys[:, 0], ys, rtol=1e-13)
    np.testing.assert_allclose(Ys[:, 1], ys, rtol=1e-12)


def test_standardize_constant_column_named():
    X = np.array([[1.0, 5.0, 2.0], [2.0, 5.0, 3.0], [4.0, 5.0, 2.0]])
    with pytest.raises(ValueError, match=r"constant feature column\(s\) \['b'\]"):
        standardize(X, np.arange(3.0), feature_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="target .* is constant"):
        standardize(X[:, [0, 2]], np.ones(3))


# ------------------------------------------------------------- Ethanol, small files


def _batch_line(cls: int, conc: float, feats) -> str:
    return f"{cls};{conc:.6f} " + " ".join(f"{k}:{v:.6f}" for k, v in enumerate(feats, 1)) + " \n"


def _write_fake_batches(folder: Path, monkeypatch, rows_per_batch=3, seed=0):
    """Ten small batch files in the official format; the hash table is patched to them.
    Returns the expected Ethanol X, y, batch (class-1 rows in batch order)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    table, Xs, ys, bs = {}, [], [], []
    for b, name in enumerate(eth.BATCH_NAMES, start=1):
        lines = []
        for _ in range(rows_per_batch):
            cls = int(rng.integers(1, 4))
            conc = float(rng.choice([10.0, 20.0, 50.0, 2.5]))
            f = np.round(rng.normal(size=eth.N_FEATURES) * 100, 6)
            lines.append(_batch_line(cls, conc, f))
            if cls == 1:
                Xs.append(f)
                ys.append(conc)
                bs.append(b)
        (folder / name).write_text("".join(lines))
        table[name] = _sha(folder / name)
    monkeypatch.setattr(eth, "BATCH_SHA256", table)
    monkeypatch.setattr(eth, "N_ROWS", len(ys))
    return np.array(Xs), np.array(ys), np.array(bs)


def test_ethanol_from_batch_files(tmp_path, monkeypatch):
    X, y, b = _write_fake_batches(tmp_path / "gas_sensor_drift", monkeypatch)
    d = load_ethanol(tmp_path, standardize=False, download=False)
    np.testing.assert_array_equal(d.X, X)
    np.testing.assert_array_equal(d.y, y)
    np.testing.assert_array_equal(d.meta["batch"], b)
    assert d.standardization is None and d.target_name == "ppm"
    assert "official UCI-270 batch files" in d.source and "batch10.dat sha256=" in d.source
    ds = load_ethanol(tmp_path, download=False)
    np.testing.assert_allclose(ds.X, (X - X.mean(0)) / X.std(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds.y, (y - y.mean()) / y.std(), rtol=1e-12, atol=1e-14)


def test_ethanol_corrupt_batch_names_file_and_hashes(tmp_path, monkeypatch):
    folder = tmp_path / "gas_sensor_drift"
    _write_fake_batches(folder, monkeypatch)
    expected = eth.BATCH_SHA256["batch4.dat"]
    p = folder / "batch4.dat"
    p.write_bytes(p.read_bytes()[:-50])  # truncated
    with pytest.raises(ChecksumError) as ei:
        load_ethanol(tmp_path, download=False)
    msg = str(ei.value)
    assert "batch4.dat" in msg and expected in msg and _sha(p) in msg


def test_ethanol_parse_error_names_line(tmp_path, monkeypatch):
    folder = tmp_path / "gas_sensor_drift"
    _write_fake_batches(folder, monkeypatch)
    p = folder / "batch2.dat"
    lines = p.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(" 7:", " 8:", 1)
    p.write_text("".join(lines))
    monkeypatch.setitem(eth.BATCH_SHA256, "batch2.dat", _sha(p))  # checksum "right"
    with pytest.raises(ValueError, match=r"batch2\.dat: parse error on line 2"):
        load_ethanol(tmp_path, download=False)


def test_ethanol_wrong_row_count(tmp_path, monkeypatch):
    _write_fake_batches(tmp_path / "gas_sensor_drift", monkeypatch)
    monkeypatch.setattr(eth, "N_ROWS", 2565)
    with pytest.raises(ValueError, match="expected 2565 x 128"):
        load_ethanol(tmp_path, download=False)


def test_ethanol_missing_offline_message(tmp_path, monkeypatch):
    folder = tmp_path / "gas_sensor_drift"
    _write_fake_batches(folder, monkeypatch)
    (folder / "batch7.dat").unlink()
    (folder / "batch10.dat").unlink()
    with pytest.raises(FileNotFoundError) as ei:
        load_ethanol(tmp_path, download=False)
    msg = str(ei.value)
    assert "batch7.dat, batch10.dat" in msg and str(folder) in msg
    assert "DEPTHACCEL_DATA_DIR" in msg
    monkeypatch.setenv("DEPTHACCEL_DOWNLOAD", "0")
    with pytest.raises(FileNotFoundError, match="Downloading is disabled"):
        load_ethanol(tmp_path)
    with pytest.raises(FileNotFoundError, match="ethanol_2565.csv.gz"):
        load_ethanol(tmp_path, source="csv")


def _write_fake_csv(folder: Path, monkeypatch, m=6, seed=1):
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(m, eth.N_FEATURES)), 6)
    y = rng.choice([10.0, 50.0, 100.0], size=m)
    batch = np.arange(m) % 3
    header = "batch,ppm," + ",".join(eth.FEATURE_NAMES) + ",exact\n"
    body = "".join(
        f"{batch[i]},{y[i]:g}," + ",".join(repr(float(v)) for v in X[i]) + f",{int(batch[i] > 0)}\n"
        for i in range(m)
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / eth.CSV_NAME
    with gzip.open(path, "wt") as f:
        f.write(header + body)
    monkeypatch.setattr(eth, "CSV_SHA256", _sha(path))
    monkeypatch.setattr(eth, "N_ROWS", m)
    return X, y, batch


def test_ethanol_auto_falls_back_to_csv_with_warning(tmp_path, monkeypatch):
    folder = tmp_path / "gas_sensor_drift"
    X, y, batch = _write_fake_csv(folder, monkeypatch)
    with pytest.warns(IncompleteDataWarning, match="batch1.dat"):
        d = load_ethanol(tmp_path, standardize=False, download=False)
    np.testing.assert_array_equal(d.X, X)
    np.testing.assert_array_equal(d.y, y)
    np.testing.assert_array_equal(d.meta["batch"], batch)
    assert "prepared table" in d.source and eth.CSV_SHA256 in d.source
    # corrupt csv -> checksum error, never a silent answer
    path = folder / eth.CSV_NAME
    good = eth.CSV_SHA256
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ChecksumError, match=good):
        load_ethanol(tmp_path, source="csv")


def test_ethanol_bad_source():
    with pytest.raises(ValueError, match="source must be"):
        load_ethanol(source="web")


# ----------------------------------------------------------- Ethanol, shared data


@needs_shared
def test_shared_ethanol_csv():
    if not (SHARED / "gas_sensor_drift" / eth.CSV_NAME).is_file():
        pytest.skip("ethanol csv absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteDataWarning)
        d = load_ethanol(SHARED, source="csv")
        raw = load_ethanol(SHARED, source="csv", standardize=False)
    assert d.X.shape == (2565, 128) and d.y.shape == (2565,)
    np.testing.assert_allclose(d.X.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X.std(0), 1, rtol=1e-12)
    assert abs(d.y.mean()) < 1e-12 and d.y.std() == pytest.approx(1, rel=1e-12)
    # label mean / std (ddof=1) of all 2565 official Ethanol rows (shared/data/README.md)
    assert raw.y.mean() == pytest.approx(114.950292, abs=1e-6)
    assert raw.y.std(ddof=1) == pytest.approx(86.637492, abs=1e-6)


@needs_shared
def test_shared_batches_verify_and_agree_with_csv():
    folder = SHARED / "gas_sensor_drift"
    present = [n for n in eth.BATCH_NAMES if (folder / n).is_file()]
    if not present or not (folder / eth.CSV_NAME).is_file():
        pytest.skip("batch files or csv absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteDataWarning)
        csv = load_ethanol(SHARED, source="csv", standardize=False)
    n_rows = n_diff = 0
    for name in present:
        assert _sha(folder / name) == eth.BATCH_SHA256[name], name
        cls, conc, X = eth.parse_batch_file(folder / name)
        b = int(name[5:-4])
        rows = csv.meta["batch"] == b
        assert rows.sum() == (cls == 1).sum(), name
        # the csv's "exact" rows were written with 10 significant digits: two values of
        # batch 2 (row 74 of its Ethanol rows, f42 and f58) differ by 1.6e-10 relative
        np.testing.assert_allclose(csv.X[rows], X[cls == 1], rtol=1e-9, atol=0)
        np.testing.assert_array_equal(csv.y[rows], conc[cls == 1])
        assert csv.meta["exact"][rows].all()
        n_rows += int(rows.sum())
        n_diff += int((csv.X[rows] != X[cls == 1]).sum())
    if len(present) == 8:
        assert n_rows == 1316
    assert n_diff <= 2
