"""``depthaccel data where|check|fetch`` (no network: file:// URLs only)."""

from __future__ import annotations

import pytest

from depthaccel.cli import main
from depthaccel.data import mnist as mn
from test_data_catalog import fake_mnist


def test_where_lists_the_candidates_and_the_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHACCEL_DATA_DIR", str(tmp_path))
    assert main(["data", "where"]) == 0
    out = capsys.readouterr().out
    assert f"$DEPTHACCEL_DATA_DIR: {tmp_path} (exists)  <- used" in out
    assert "the cache folder" in out
    assert (
        "mnist/t10k-labels-idx1-ubyte.gz" in out
        and mn.GZ_SHA256["t10k-labels-idx1-ubyte.gz"] in out
    )
    assert "batch10.dat" in out and "ethanol_2565.csv.gz" in out


def test_check_exit_status_and_table(tmp_path, monkeypatch, capsys):
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 1
    cap = capsys.readouterr()
    assert "ethanol: NOT USABLE" in cap.out and "MISSING  mnist/train-images" in cap.out
    assert "depthaccel data fetch ethanol mnist" in cap.err
    fake_mnist(tmp_path / "mnist", monkeypatch)
    assert main(["data", "check", "mnist", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist: OK" in out and "ethanol" not in out


def test_fetch_offline_prints_instructions_exit_1(tmp_path, capsys):
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and "To get the files by hand" in err
    assert f"{mn.MIRRORS[0]}train-images-idx3-ubyte.gz" in err


def test_fetch_via_file_url(tmp_path, monkeypatch, capsys):
    fake_mnist(tmp_path / "mirror", monkeypatch)
    monkeypatch.setattr(mn, "MIRRORS", [(tmp_path / "mirror").as_uri() + "/"])
    dest = tmp_path / "d"
    assert main(["data", "fetch", "mnist", "--data-dir", str(dest)]) == 0
    cap = capsys.readouterr()
    assert "fetched mnist/t10k-labels-idx1-ubyte.gz" in cap.out and "mnist: OK" in cap.out
    assert main(["data", "fetch", "mnist", "--data-dir", str(dest), "--no-progress"]) == 0
    assert "nothing to fetch" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["data"], "the following arguments are required"),
        (["data", "list"], "invalid choice"),
        (["data", "check", "cifar"], "unknown data set"),
    ],
)
def test_bad_arguments_exit_2(argv, msg, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2 and msg in capsys.readouterr().err


def test_data_dir_that_is_a_file_is_an_error(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(SystemExit) as ei:
        main(["data", "check", "--data-dir", str(f)])
    assert ei.value.code == 2 and "not a directory" in capsys.readouterr().err
