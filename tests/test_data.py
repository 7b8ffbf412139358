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
    load_mnist,
    load_table,
    standardize,
    unstandardize_y,
)
from depthaccel.data import ethanol as eth
from depthaccel.data import mnist as mn

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


# ------------------------------------------------------------- Ethanol download


def test_ethanol_download_from_zip(tmp_path, monkeypatch):
    import zipfile

    src = tmp_path / "src" / "gas_sensor_drift"
    X, y, b = _write_fake_batches(src, monkeypatch)
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as outer:
        inner = tmp_path / "Dataset.zip"  # the batch files inside a nested zip folder
        with zipfile.ZipFile(inner, "w") as zf:
            for name in eth.BATCH_NAMES:
                zf.write(src / name, f"Dataset/{name}")
        outer.write(inner, "Dataset.zip")
    dest = tmp_path / "dest"
    (dest / "gas_sensor_drift").mkdir(parents=True)
    (dest / "gas_sensor_drift" / "batch3.dat").write_bytes((src / "batch3.dat").read_bytes())
    monkeypatch.setattr(eth, "UCI_URLS", [archive.as_uri()])
    d = load_ethanol(dest, standardize=False, source="batches", download=True)
    np.testing.assert_array_equal(d.X, X)
    np.testing.assert_array_equal(d.y, y)
    assert sorted(p.name for p in (dest / "gas_sensor_drift").iterdir()) == sorted(eth.BATCH_NAMES)
    # a tampered archive is refused and nothing is written
    monkeypatch.setitem(eth.BATCH_SHA256, "batch5.dat", "0" * 64)
    dest2 = tmp_path / "dest2"
    with pytest.raises(FileNotFoundError, match=r"batch5\.dat sha256 .* != expected 0000"):
        load_ethanol(dest2, download=True)
    assert not (dest2 / "gas_sensor_drift").exists() or not any(
        (dest2 / "gas_sensor_drift").glob("batch*.dat")
    )


def test_ethanol_download_offline_names_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        load_ethanol(tmp_path / "empty", download=True)
    msg = str(ei.value)
    assert "batch1.dat" in msg and "batch10.dat" in msg and "Download failed" in msg
    assert str(tmp_path / "empty" / "gas_sensor_drift") in msg and "DEPTHACCEL_DATA_DIR" in msg


# ------------------------------------------------------------------ MNIST, small


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_fake_mnist(folder: Path, monkeypatch, n_train=5, n_test=3):
    rng = np.random.default_rng(2)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    shas, md5s = {}, {}
    for key, fname in mn.FILES.items():
        raw = _idx(arrays[key])
        (folder / fname).write_bytes(gzip.compress(raw, mtime=0))
        shas[fname] = _sha(folder / fname)
        md5s[fname] = hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(mn, "GZ_SHA256", shas)
    monkeypatch.setattr(mn, "RAW_MD5", md5s)
    monkeypatch.setattr(
        mn,
        "SHAPES",
        {k: (n_train if "train" in k else n_test,) + a.shape[1:] for k, a in arrays.items()},
    )
    return arrays


def test_mnist_small_roundtrip_and_recompressed_copy(tmp_path, monkeypatch):
    arrays = _write_fake_mnist(tmp_path / "mnist", monkeypatch)
    m = load_mnist(tmp_path, download=False)
    for key, a in arrays.items():
        got = getattr(m, key)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, a)
    assert "sha256=" in m.source
    # same content, different gzip level: accepted through the md5 of the content
    p = tmp_path / "mnist" / mn.FILES["test_labels"]
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1, mtime=7))
    m2 = load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(m2.test_labels, arrays["test_labels"])
    assert "md5(uncompressed)=" in m2.source


def test_mnist_truncated_gz_is_checksum_error(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "mnist", monkeypatch)
    p = tmp_path / "mnist" / mn.FILES["train_images"]
    expected = mn.GZ_SHA256[p.name]
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ChecksumError) as ei:
        load_mnist(tmp_path, download=False)
    msg = str(ei.value)
    assert str(p) in msg and expected in msg and _sha(p) in msg and "truncated" in msg


def test_mnist_wrong_content_is_checksum_error(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "mnist", monkeypatch)
    p = tmp_path / "mnist" / mn.FILES["test_labels"]
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # a valid file with one label changed
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ChecksumError, match=mn.RAW_MD5[p.name]):
        load_mnist(tmp_path, download=False)


def test_parse_idx_errors():
    good = _idx(np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(mn.parse_idx(good), np.arange(12).reshape(3, 4))
    with pytest.raises(ValueError, match=r"f: bad IDX magic number 0x00000f02"):
        mn.parse_idx(b"\x00\x00\x0f\x02" + good[4:], "f")
    with pytest.raises(ValueError, match="bad IDX magic"):
        mn.parse_idx(b"\x12\x34" + good[2:], "f")
    with pytest.raises(ValueError, match=r"dims \(3, 4\).*truncated"):
        mn.parse_idx(good[:-1], "f")
    with pytest.raises(ValueError, match="trailing data"):
        mn.parse_idx(good + b"\x00", "f")
    with pytest.raises(ValueError, match="truncated IDX header"):
        mn.parse_idx(good[:9], "f")


def test_mnist_bad_magic_in_verified_file(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "mnist", monkeypatch)
    p = tmp_path / "mnist" / mn.FILES["train_labels"]
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[2] = 0x42
    p.write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setitem(mn.GZ_SHA256, p.name, _sha(p))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: bad IDX magic"):
        load_mnist(tmp_path, download=False)


def test_mnist_download_via_file_url(tmp_path, monkeypatch):
    arrays = _write_fake_mnist(tmp_path / "mirror", monkeypatch)
    (tmp_path / "mirror" / mn.FILES["test_images"]).write_bytes(b"garbage")  # bad first mirror
    good = tmp_path / "mirror2"
    _write_fake_mnist(good, monkeypatch)  # same seed: same arrays and checksums
    monkeypatch.setattr(mn, "MIRRORS", [(tmp_path / "mirror").as_uri() + "/", good.as_uri() + "/"])
    m = load_mnist(tmp_path / "data")
    np.testing.assert_array_equal(m.test_images, arrays["test_images"])
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        mn.FILES.values()
    )


def test_mnist_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHACCEL_DOWNLOAD", "no")
    with pytest.raises(FileNotFoundError) as ei:
        load_mnist(tmp_path)
    msg = str(ei.value)
    assert all(f in msg for f in mn.FILES.values()) and str(tmp_path / "mnist") in msg
    assert all(mn.MIRRORS[0] + f in msg for f in mn.FILES.values())  # names its URLs
    assert "depthaccel data fetch" in msg
    with pytest.raises(FileNotFoundError, match="Download failed"):
        load_mnist(tmp_path, download=True)


@needs_shared
def test_shared_mnist():
    if not (SHARED / "mnist").is_dir():
        pytest.skip("mnist absent")
    m = load_mnist(SHARED, download=False)
    assert m.train_images.shape == (60000, 28, 28) and m.test_images.shape == (10000, 28, 28)
    assert m.train_images.dtype == np.uint8
    for labels, n in ((m.train_labels, 60000), (m.test_labels, 10000)):
        assert labels.shape == (n,) and labels.min() == 0 and labels.max() == 9
    # label counts published with the data (shared/data/README.md)
    assert np.bincount(m.test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert m.train_images.mean() / 255 == pytest.approx(0.13066048, abs=1e-8)


# ------------------------------------------------------------------- user tables


def _csv(tmp_path: Path, text: str, name="t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_table_csv_default_and_named_target(tmp_path):
    p = _csv(tmp_path, "a,b,t\n1,2,3\n2,0,5\n4,1,4.5\n")
    d = load_table(p, standardize=False)
    np.testing.assert_array_equal(d.X, [[1, 2], [2, 0], [4, 1]])
    np.testing.assert_array_equal(d.y, [3, 5, 4.5])
    assert d.feature_names == ["a", "b"] and d.target_name == "t" and d.standardization is None
    assert _sha(p) in d.source
    d2 = load_table(p, target="a")
    raw_X = np.array([[2, 3], [0, 5], [1, 4.5]])
    np.testing.assert_allclose(d2.X, (raw_X - raw_X.mean(0)) / raw_X.std(0), rtol=1e-13)
    np.testing.assert_allclose(
        d2.y * d2.standardization["y_std"] + d2.standardization["y_mean"], [1, 2, 4]
    )
    assert d2.feature_names == ["b", "t"]


def test_table_csv_gz_and_tsv(tmp_path):
    p = tmp_path / "t.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("x,y\n1,2\n3,5\n")
    assert load_table(p, standardize=False).y.tolist() == [2, 5]
    q = _csv(tmp_path, "x\ty\n1\t2\n3\t5\n", "t.tsv")
    assert load_table(q, standardize=False).X[:, 0].tolist() == [1, 3]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("a,b,t\n1,2,3\n2,x7,5\n", r"non-numeric value 'x7' in column 'b', row 2 \(line 3\)"),
        ("a,b,t\n1,2,3\n2,,5\n", r"non-numeric value '' in column 'b', row 2"),
        ("a,b,t\n1,2,3\n2,5\n", r"row 2 \(line 3\) has 2 fields, header has 3"),
        ("a,b,t\n1,nan,3\n2,1,5\n3,inf,1\n", r"NaN or inf values in column 'b' rows 1, 3"),
        ("a,b,t\n1,2,3\n2,2,5\n3,2,1\n", r"constant feature column\(s\) \['b'\]"),
        ("a,b,t\n1,2,3\n", r"1 row\(s\); at least 2"),
        ("a,b,t\n", "no data rows"),
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("a,a,t\n1,2,3\n2,1,5\n", r"duplicate column name\(s\) \['a'\]"),
    ],
)
def test_table_csv_errors(tmp_path, text, pattern):
    p = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=pattern) as ei:
        load_table(p)
    assert str(p) in str(ei.value)


def test_table_other_errors(tmp_path):
    p = _csv(tmp_path, "a,b,t\n1,2,3\n2,1,5\n")
    with pytest.raises(
        ValueError, match=r"no target column 'z'; available columns: \['a', 'b', 't'\]"
    ):
        load_table(p, target="z")
    with pytest.raises(ValueError, match="unknown table format '.xlsx'"):
        load_table(_csv(tmp_path, "a,b\n1,2\n", "t.xlsx"))
    with pytest.raises(FileNotFoundError, match="table file not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="at least one feature column"):
        load_table(_csv(tmp_path, "t\n1\n2\n", "one.csv"))
    # constant columns are fine when not standardising
    d = load_table(_csv(tmp_path, "a,b,t\n1,2,3\n2,2,5\n", "c.csv"), standardize=False)
    assert d.X[:, 1].tolist() == [2, 2]


def test_table_npz(tmp_path):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    p = tmp_path / "xy.npz"
    np.savez(p, X=X, y=y, feature_names=np.array(["p", "q", "r"]))
    d = load_table(p, standardize=False)
    np.testing.assert_array_equal(d.X, X)
    np.testing.assert_array_equal(d.y, y)
    assert d.feature_names == ["p", "q", "r"]
    ds = load_table(p)
    np.testing.assert_allclose(ds.y, (y - y.mean(0)) / y.std(0), rtol=1e-12)
    q = tmp_path / "cols.npz"
    np.savez(q, u=X[:, 0], v=X[:, 1], w=X[:, 2])
    dc = load_table(q, target="u", standardize=False)
    np.testing.assert_array_equal(dc.y, X[:, 0])
    np.testing.assert_array_equal(dc.X, X[:, 1:])
    assert dc.feature_names == ["v", "w"]
    Xn = X.copy()
    Xn[4, 2] = np.nan
    np.savez(tmp_path / "nan.npz", X=Xn, y=y[:, 0])
    with pytest.raises(ValueError, match=r"NaN or inf values in column 'x3' rows 5"):
        load_table(tmp_path / "nan.npz")
    np.savez(tmp_path / "bad.npz", X=X, y=y[:4])
    with pytest.raises(ValueError, match=r"y must be \(m,\) or \(m, k\) with m = 6"):
        load_table(tmp_path / "bad.npz")
    np.savez(tmp_path / "ragged.npz", a=np.ones(3), b=np.ones(4))
    with pytest.raises(ValueError, match="1-D column arrays of equal length"):
        load_table(tmp_path / "ragged.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_table(tmp_path / "junk.npz")
    # a zip that is not an npz still gets numpy's reason
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="cannot read as .npz"):
        load_table(tmp_path / "zip.npz")


# ----------------------------------------------------------- headers, BOM, NPZ kinds, scale


def test_headerless_csv_is_refused_not_turned_into_names(tmp_path):
    p = _csv(tmp_path, "1,2,3\n4,5,6\n7,8,10\n2,2,2.5\n")
    with pytest.raises(ValueError, match=r"first row \(1, 2, 3\) is all numbers.*header=False"):
        load_table(p)
    d = load_table(p, header=False, standardize=False)
    assert d.feature_names == ["c1", "c2"] and d.target_name == "c3"
    np.testing.assert_array_equal(d.X, [[1, 2], [4, 5], [7, 8], [2, 2]])  # row 1 is data
    np.testing.assert_array_equal(d.y, [3, 6, 10, 2.5])
    assert load_table(p, header=False, target="c1", standardize=False).y.tolist() == [1, 4, 7, 2]
    # header=True keeps numeric column names on purpose
    d = load_table(p, header=True, standardize=False)
    assert d.feature_names == ["1", "2"] and d.target_name == "3" and len(d.y) == 3
    # a header with one non-numeric name is a header; errors in a headerless file count lines
    assert load_table(_csv(tmp_path, "1,x,3\n4,5,6\n7,8,1\n", "h.csv")).feature_names == ["1", "x"]
    bad = _csv(tmp_path, "1,2,3\n4,oops,6\n", "bad.csv")
    with pytest.raises(ValueError, match=r"'oops' in column 'c2', row 2 \(line 2\)"):
        load_table(bad, header=False)


@pytest.mark.parametrize("gz", [False, True])
def test_utf8_bom_is_not_part_of_the_first_name(tmp_path, gz):
    text = "\ufeffalpha,b,y\n1,2,3\n4,5,6\n7,8,10\n"
    if gz:
        p = tmp_path / "bom.csv.gz"
        with gzip.open(p, "wb") as f:
            f.write(text.encode("utf-8"))
    else:
        p = tmp_path / "bom.csv"
        p.write_bytes(text.encode("utf-8"))
    d = load_table(p, target="alpha", standardize=False)
    assert d.target_name == "alpha" and d.feature_names == ["b", "y"]
    assert d.y.tolist() == [1, 4, 7]


def test_npz_with_zero_rows_text_or_npy_named_npz(tmp_path):
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(ValueError, match=r"X has 0 row\(s\) \(shape \(0, 3\)\); at least 2"):
        load_table(tmp_path / "empty.npz")
    np.savez(tmp_path / "emptycols.npz", a=np.zeros(0), b=np.zeros(0))
    with pytest.raises(ValueError, match=r"0 row\(s\); at least 2"):
        load_table(tmp_path / "emptycols.npz")
    np.save(tmp_path / "arr.npy", np.ones((4, 3)))
    (tmp_path / "arr.npz").write_bytes((tmp_path / "arr.npy").read_bytes())
    with pytest.raises(ValueError, match=r"single .npy array saved under an .npz name"):
        load_table(tmp_path / "arr.npz")
    (tmp_path / "text.npz").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"not an .npz archive: it is a text file"):
        load_table(tmp_path / "text.npz")
    (tmp_path / "zero.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty file \(0 bytes\)"):
        load_table(tmp_path / "zero.npz")


def test_huge_values_standardise_correctly_or_are_refused_raw(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, 3))
    rows = "\n".join(",".join(repr(float(v) * 1e200) for v in r) for r in base)
    p = _csv(tmp_path, "a,b,y\n" + rows + "\n")
    d = load_table(p)
    # reference: standardising the unscaled numbers (scale-invariant), in float64
    ref = (base[:, :2] - base[:, :2].mean(0)) / base[:, :2].std(0)
    np.testing.assert_allclose(d.X, ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(d.y, (base[:, 2] - base[:, 2].mean()) / base[:, 2].std(), rtol=1e-12)
    np.testing.assert_allclose(d.standardization["X_std"], base[:, :2].std(0) * 1e200, rtol=1e-12)
    with pytest.raises(ValueError, match=r"values too large for float64.*'a' \(max \|value\|"):
        load_table(p, standardize=False)
    # moderate values are untouched by the scaled path: bit-identical to the plain formula
    q = _csv(
        tmp_path,
        "a,b,y\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in base) + "\n",
        "m.csv",
    )
    dm = load_table(q)
    assert np.array_equal(dm.X, (base[:, :2] - base[:, :2].mean(0)) / base[:, :2].std(0))


@pytest.mark.parametrize("scale", [1e-120, 1e-160, 1e-200, 1e-300, 1e250])
def test_tiny_and_huge_values_standardise_like_exact_arithmetic(tmp_path, scale):
    # Reference: mean and population std of the parsed float64 values in exact rational
    # arithmetic (fractions), rounded once; squares of 1e-160 underflow in float64.
    from decimal import Context
    from fractions import Fraction

    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 3))
    rows = "\n".join(",".join(repr(float(v) * scale) for v in r) for r in base)
    p = _csv(tmp_path, "a,b,y\n" + rows + "\n")
    d = load_table(p)
    raw = np.array([[float(v) for v in line.split(",")] for line in rows.splitlines()])
    for j in range(3):
        col = [Fraction(float(v)) for v in raw[:, j]]
        mu = sum(col) / len(col)
        var = sum((v - mu) ** 2 for v in col) / len(col)
        ctx = Context(prec=40)  # the square root to 40 digits
        sd = ctx.sqrt(ctx.divide(var.numerator, var.denominator))
        got_mu = d.standardization["X_mean" if j < 2 else "y_mean"]
        got_sd = d.standardization["X_std" if j < 2 else "y_std"]
        got_mu, got_sd = (got_mu[j], got_sd[j]) if j < 2 else (got_mu, got_sd)
        assert float(sd) > 0 and float(got_sd) == pytest.approx(float(sd), rel=1e-13, abs=0)
        assert float(got_mu) == pytest.approx(float(mu), rel=1e-11, abs=1e-13 * float(sd))
    ref = (base[:, :2] - base[:, :2].mean(0)) / base[:, :2].std(0)
    np.testing.assert_allclose(d.X, ref, rtol=1e-11, atol=1e-12)
