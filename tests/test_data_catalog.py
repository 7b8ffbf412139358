"""Tests of depthaccel.data.catalog: the file list, check_data, fetch_data (file:// URLs
only; the autouse fixture in conftest.py points every real URL at a missing folder)."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from depthaccel.data import catalog, check_data, ensure_data, fetch_data, load_mnist
from depthaccel.data import ethanol as eth
from depthaccel.data import mnist as mn


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def fake_mnist(folder: Path, monkeypatch) -> dict[str, bytes]:
    """Four tiny valid IDX .gz files; the module's checksums patched to theirs."""
    rng = np.random.default_rng(0)
    shapes = {"train_images": (3, 28, 28), "train_labels": (3,)}
    shapes |= {"test_images": (2, 28, 28), "test_labels": (2,)}
    folder.mkdir(parents=True, exist_ok=True)
    out, shas, md5s = {}, {}, {}
    for key, fname in mn.FILES.items():
        arr = rng.integers(0, 10, shapes[key]).astype(np.uint8)
        raw = bytes([0, 0, 8, arr.ndim]) + b"".join(n.to_bytes(4, "big") for n in arr.shape)
        raw += arr.tobytes()
        gz = gzip.compress(raw, mtime=0)
        (folder / fname).write_bytes(gz)
        out[fname], shas[fname], md5s[fname] = gz, _sha(gz), hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(mn, "GZ_SHA256", shas)
    monkeypatch.setattr(mn, "RAW_MD5", md5s)
    monkeypatch.setattr(mn, "SHAPES", shapes)
    return out


def fake_uci_archive(tmp_path: Path, monkeypatch) -> Path:
    """A zip like the UCI-270 archive (batch files in a nested zip), checksums patched."""
    inner = tmp_path / "Dataset.zip"
    shas = {}
    with zipfile.ZipFile(inner, "w") as zf:
        for i, name in enumerate(eth.BATCH_NAMES):
            body = f"1;{10 + i}.0 " + " ".join(f"{k}:{k * 0.5 + i}" for k in range(1, 129))
            body = (body + "\n").encode()
            zf.writestr(f"Dataset/{name}", body)
            shas[name] = _sha(body)
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as outer:
        outer.write(inner, "Dataset.zip")
    monkeypatch.setattr(eth, "BATCH_SHA256", shas)
    monkeypatch.setattr(catalog, "_BATCH_SIZES", dict.fromkeys(eth.BATCH_NAMES))
    monkeypatch.setattr(eth, "UCI_URLS", [archive.as_uri()])
    return archive


def test_catalog_lists_the_official_files():
    mnist = catalog.catalog("mnist")
    assert [f.path for f in mnist] == [f"mnist/{n}" for n in mn.FILES.values()]
    assert all(f.sha256 == mn.GZ_SHA256[f.name] and f.size > 0 for f in mnist)
    assert mnist[0].urls[0] == mn.MIRRORS[0] + mnist[0].name
    ethanol = catalog.catalog("ethanol")
    assert [f.name for f in ethanol[:10]] == eth.BATCH_NAMES
    assert ethanol[-1].name == eth.CSV_NAME and not ethanol[-1].downloadable
    assert catalog.catalog("mnist")[3].size == 4542  # the official t10k labels file
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        catalog.catalog("cifar")


def test_check_empty_folder_says_what_is_missing(tmp_path):
    r = check_data(data_dir=tmp_path)
    assert not r.ok and r.unusable == ["ethanol", "mnist"]
    assert all(fs.status == "missing" for d in r.datasets.values() for fs in d.files)
    advice = r.advice({"ethanol": ["fig2"], "mnist": ["fig5-right"]})
    assert "ethanol (needed by fig2): missing batch1.dat" in advice
    assert "depthaccel data fetch ethanol mnist" in advice and str(tmp_path) in advice
    with pytest.raises(ValueError, match="unknown data set"):
        check_data(["imagenet"], tmp_path)


def test_check_ok_and_corrupt_files(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "mnist", monkeypatch)
    r = check_data(["mnist"], tmp_path)
    assert r.ok and [fs.status for fs in r.datasets["mnist"].files] == ["ok"] * 4
    # a recompressed copy still verifies (md5 of the content)
    p = tmp_path / "mnist" / mn.FILES["train_labels"]
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1, mtime=7))
    st = check_data(["mnist"], tmp_path).datasets["mnist"].files[1]
    assert st.status == "ok" and "md5" in st.detail
    # truncated: corrupt, and the data set is not usable
    p.write_bytes(p.read_bytes()[:20])
    r = check_data(["mnist"], tmp_path)
    assert not r.ok and [f.file.name for f in r.datasets["mnist"].corrupt] == [p.name]
    assert "CORRUPT" in r.format() and "corrupt train-labels" in r.advice()


def test_ethanol_usable_from_the_prepared_table_or_the_batches(tmp_path, monkeypatch):
    sub = tmp_path / "gas_sensor_drift"
    sub.mkdir()
    (sub / eth.CSV_NAME).write_bytes(b"prepared")
    monkeypatch.setattr(eth, "CSV_SHA256", _sha(b"prepared"))
    monkeypatch.setattr(catalog, "_CSV_SIZE", len(b"prepared"))
    d = check_data(["ethanol"], tmp_path).datasets["ethanol"]
    assert d.usable and "prepared table; 0 of 10" in d.how
    (sub / "batch1.dat").write_bytes(b"x" * 757889)  # right size, wrong bytes
    d = check_data(["ethanol"], tmp_path).datasets["ethanol"]
    assert d.files[0].status == "corrupt" and "checksum mismatch" in d.files[0].detail
    (sub / "batch2.dat").write_bytes(b"short")
    assert (
        "expected 2,134,300"
        in check_data(["ethanol"], tmp_path).datasets["ethanol"].files[1].detail
    )


def test_locations_follow_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHACCEL_DATA_DIR", str(tmp_path))
    locs = catalog.data_locations()
    assert [loc.chosen for loc in locs].count(True) == 1
    chosen = next(loc for loc in locs if loc.chosen)
    assert chosen.how == "$DEPTHACCEL_DATA_DIR" and chosen.path == tmp_path and chosen.exists
    locs = catalog.data_locations(tmp_path / "arg")
    assert locs[0].chosen and locs[0].path == tmp_path / "arg" and not locs[0].exists
    monkeypatch.delenv("DEPTHACCEL_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    locs = catalog.data_locations()
    if not (locs[2].path is not None and locs[2].exists):  # no ../shared/data here
        assert locs[3].chosen and locs[3].path == tmp_path / "cache" / "depthaccel"


def test_fetch_via_file_urls_verifies_and_shows_progress(tmp_path, monkeypatch, capsys):
    files = fake_mnist(tmp_path / "mirror", monkeypatch)
    monkeypatch.setattr(mn, "MIRRORS", [(tmp_path / "mirror").as_uri() + "/"])
    fake_uci_archive(tmp_path, monkeypatch)
    dest = tmp_path / "data"
    logs: list[str] = []
    res = fetch_data(data_dir=dest, progress=True, log=logs.append)
    assert res.errors == [] and res.report.ok
    assert sorted(res.fetched) == sorted(
        [f"gas_sensor_drift/{n}" for n in eth.BATCH_NAMES] + [f"mnist/{n}" for n in files]
    )
    assert all((dest / "mnist" / n).read_bytes() == b for n, b in files.items())
    assert any("UCI-270 archive" in m for m in logs)
    assert "B/s" in capsys.readouterr().err  # tqdm's byte-rate bars went to stderr
    np.testing.assert_array_equal(load_mnist(dest, download=False).train_labels.shape, (3,))
    again = fetch_data(data_dir=dest, progress=False)
    assert again.fetched == [] and again.errors == []


def test_fetch_offline_gives_exact_instructions(tmp_path):
    res = fetch_data(data_dir=tmp_path, progress=False)
    assert not res.report.ok and len(res.errors) == 2
    text = catalog.offline_instructions(res.report)
    assert (
        eth.UCI_URLS[0] in text and "batch7.dat" in text and eth.BATCH_SHA256["batch7.dat"] in text
    )
    for name, sha in mn.GZ_SHA256.items():
        assert (
            f"{name}, {catalog._MNIST_SIZES[name]:,} bytes, sha256 {sha}  {mn.MIRRORS[0]}{name}"
            in text
        )
    assert str(tmp_path / "mnist") in text and "DEPTHACCEL_DATA_DIR" in text
    assert not (tmp_path / "mnist").exists() or not any((tmp_path / "mnist").iterdir())


def test_ensure_data_fetches_once_only_when_allowed(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "mirror", monkeypatch)
    monkeypatch.setattr(mn, "MIRRORS", [(tmp_path / "mirror").as_uri() + "/"])
    monkeypatch.setenv("DEPTHACCEL_DOWNLOAD", "0")
    assert not ensure_data(["mnist"], tmp_path / "d").ok
    assert not (tmp_path / "d" / "mnist").exists()
    monkeypatch.delenv("DEPTHACCEL_DOWNLOAD")
    assert ensure_data(["mnist"], tmp_path / "d", progress=False).ok
