"""Bad inputs, faults and misuses of the command line: nothing lost, nothing hangs, no
traceback, the documented exit status (1 bad data or store, 2 bad arguments, 130/143
signals) and one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.cli import main
from depthaccel.outdir import MANIFEST_NAME

#: A small, fast compare grid.
S = [
    "--iters", "20", "--lrs", "0.01", "--depths", "1,2", "--methods", "gd,e2e",
    "--no-progress", "--checkpoint-every", "5",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def good_csv(path: Path, m: int = 30, d: int = 3, seed: int = 0) -> Path:
    """A 30x4 numeric table with a header (the last column is the target)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(m)
    lines = [",".join([*(f"x{j}" for j in range(d)), "y"])]
    lines += [",".join(repr(float(v)) for v in [*X[i], y[i]]) for i in range(m)]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(argv, capsys) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr). An exception that
    escapes ``main`` fails the test (the user would see a traceback)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return code, cap.out, cap.err


# ------------------------------------------------------------------------- data loss


def test_a_users_temp_named_file_in_out_is_never_deleted(tmp_path, capsys):
    data = good_csv(tmp_path / "good.csv")
    out = tmp_path / "o"
    out.mkdir()
    notes = out / ".depthaccel-tmp.notes"
    notes.write_text("x\n")
    code, _, err = cli(["compare", "--data", data, "--out", out, *S], capsys)
    assert code == 2 and ".depthaccel-tmp.notes" in err  # not ours: a foreign file
    assert notes.read_text() == "x\n"
    code, _, _ = cli(["compare", "--data", data, "--out", out, *S, "--force"], capsys)
    assert code == 0
    assert notes.read_text() == "x\n"


def test_edited_outputs_are_not_overwritten_once_the_manifest_is_deleted(tmp_path, capsys):
    data = good_csv(tmp_path / "good.csv")
    out = tmp_path / "o"
    argv = ["compare", "--data", data, "--out", out, *S]
    assert cli(argv, capsys)[0] == 0
    with open(out / "REPORT.md", "a") as fh:
        fh.write("\nmy notes\n")
    with open(out / "summary.csv", "a") as fh:
        fh.write("my,row\n")
    before = {p: (out / p).read_bytes() for p in ("REPORT.md", "summary.csv")}
    (out / MANIFEST_NAME).unlink()  # "delete this file to disown them"
    code, _, err = cli(argv, capsys)
    assert code == 2 and "REPORT.md" in err and "--force" in err
    assert {p: (out / p).read_bytes() for p in before} == before


@pytest.mark.parametrize("where", ["REPORT.md", MANIFEST_NAME, "claim1", "claim1/store.sqlite"])
def test_reproduce_store_is_never_an_output(tmp_path, capsys, where):
    out = tmp_path / "r"
    argv = ["reproduce", "claim1", "--quick", "--no-progress", "--out", out, "--store"]
    code, _, err = cli([*argv, out / where], capsys)
    assert code == 2 and "--store" in err and "output" in err
    assert not out.exists()
