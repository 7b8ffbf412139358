"""Tests of depthaccel.compare and the `depthaccel compare` command."""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.cli import main
from depthaccel.compare import (
    CompareConfig,
    build_runs,
    parse_loss,
    roundoff_floor,
    select_best,
)
from depthaccel.data import load_table
from depthaccel.outdir import LEGACY_BEFORE, MANIFEST_NAME
from depthaccel.store import DEFAULT_FILENAME
from depthaccel.train import Run, RunResult, train


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_table(path: Path, m: int = 60, d: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d)) * np.logspace(0, -1, d)
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(m)
    with path.open("w") as fh:
        fh.write(",".join([f"x{j}" for j in range(d)] + ["price", "other"]) + "\n")
        for i in range(m):
            fh.write(",".join(repr(float(v)) for v in [*X[i], y[i], i % 7]) + "\n")
    return path


# ---------------------------------------------------------------------- config and runs


def test_parse_loss():
    assert parse_loss("l2") == 2 and parse_loss("L4") == 4 and parse_loss("l2.5") == 2.5
    for bad in ("l1", "huber", "lx", "l", "4", "l-4", "linf"):
        with pytest.raises(ValueError, match="loss"):
            parse_loss(bad)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"depths": (0, 1)}, r"depth must be an integer in \[1, 10000\]"),
        ({"depths": (1.5,)}, r"depth must be an integer in \[1, 10000\]"),
        ({"depths": (10**9,)}, r"depth must be an integer in \[1, 10000\]"),
        ({"loss": "l1000"}, "p must be <= 100"),
        ({"methods": ("e2e",), "depths": (1,)}, "e2e scheme needs a depth > 1"),
        ({"depths": ()}, "depths must not be empty"),
        ({"methods": ("gd", "sgd")}, r"unknown method\(s\) \['sgd'\]"),
        ({"iters": 0}, r"iters must be an integer in \[1, 1e\+12\], got 0"),
        ({"iters": 1.5}, "iters must be an integer"),
        ({"lrs": (1e-3, -1.0)}, "learning rate must be a finite number > 0"),
        ({"lrs": ()}, "learning rates must not be empty"),
        ({"thresholds": (0.0,)}, "threshold must be a finite number > 0"),
        ({"dtype": "float16"}, "dtype must be float32 or float64"),
        ({"loss": "l1"}, "p must be a finite number >= 2"),
        ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
        ({"device": "gpu7"}, "unknown device"),
        ({"init": "zeros"}, "unknown init 'zeros'"),
        ({"init_scale": -1.0}, "init_scale must be a finite number >= 0"),
    ],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        CompareConfig(data=Path("t.csv"), **kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"seed": None}, "seed must be a 64-bit integer in ["),  # was a TypeError
        ({"seed": True}, "seed must be a 64-bit integer in ["),
        ({"loss": "ce", "l2": "x"}, "l2 must be a finite number >= 0, got 'x'"),  # was float()'s
        ({"loss": "ce", "l2": True}, "l2 must be a finite number >= 0, got True"),
        ({"init_scale": True}, "init_scale must be a finite number >= 0, got True"),  # accepted
        ({"init_scale": "0.1"}, "init_scale must be a finite number >= 0, got '0.1'"),
        ({"hidden": True}, "hidden must be an integer >= 1, got True"),
        ({"log_points": 1}, "log_points must be an integer >= 2, got 1"),
        ({"lrs": (0.1, True)}, "learning rate must be a finite number > 0, got True"),
        ({"standardize": "no"}, "standardize must be True or False, got 'no'"),  # was truthy
        ({"force": 1}, "force must be True or False, got 1"),
        ({"header": 0}, "header must be None, True or False, got 0"),
    ],
)
def test_config_numbers_and_switches_are_the_shared_declarations(kw, message):
    """CompareConfig checks its numbers and switches with depthaccel.validation (bools are
    never numbers), one line each; values that used to raise a TypeError or a raw float()
    error, or pass unchecked, now name the setting."""
    with pytest.raises(ValueError) as err:
        CompareConfig(data=Path("t.csv"), **kw)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_config_converts_numbers_as_before():
    """The values runs are built from (and so their store keys) keep their types: ints for
    counts, depths and seeds (whole floats, numpy integers and strings of digits too),
    floats for rates."""
    cfg = CompareConfig(
        data=Path("t.csv"),
        depths=(3, 1.0, "2", np.int64(2)),
        lrs=(1, "0.5", np.float32(0.25)),
        thresholds=("1e-3", 1),
        iters=np.int64(50),
        checkpoint_every=5.0,
        hidden="3",
        seed=np.int64(-7),
        log_points=100.0,
        init_scale=0,
    )
    assert cfg.depths == (1, 2, 3) and all(type(d) is int for d in cfg.depths)
    assert cfg.lrs == (0.25, 0.5, 1.0) and all(type(v) is float for v in cfg.lrs)
    assert cfg.thresholds == (1e-3, 1.0) and all(type(v) is float for v in cfg.thresholds)
    for name, want in (("iters", 50), ("checkpoint_every", 5), ("hidden", 3), ("seed", -7)):
        assert type(getattr(cfg, name)) is int and getattr(cfg, name) == want, name
    assert type(cfg.log_points) is int and cfg.init_scale == 0
    (run, *_) = build_runs(cfg)
    assert (
        run.config_dict()
        == Run("gd", 0.25, depth=1, hidden=3, seed=-7, init_scale=0.0).config_dict()
    )


def test_build_runs_grid():
    cfg = CompareConfig(
        data=Path("t.csv"), depths=(3, 1, 2, 2), methods=("gd", "e2e", "adam"), lrs=(0.1, 1e-2)
    )
    assert cfg.depths == (1, 2, 3) and cfg.lrs == (1e-2, 0.1)
    runs = build_runs(cfg)
    combos = {(r.method, r.depth, r.lr) for r in runs}
    expect = {
        (m, d, lr)
        for m in ("gd", "e2e", "adam")
        for d in (1, 2, 3)
        for lr in (1e-2, 0.1)
        if not (m == "e2e" and d == 1)
    }
    assert combos == expect and len(runs) == len(expect) == 16
    assert all(r.hidden == 1 and r.init == "near_zero" and r.convention == "tf" for r in runs)
    ident = build_runs(
        CompareConfig(
            data=Path("t.csv"),
            depths=(2,),
            methods=("gd",),
            lrs=(0.1,),
            init="identity",
            init_scale=0.0,
        )
    )
    assert [(r.init, r.init_scale) for r in ident] == [("identity", 0.0)]
    with pytest.raises(ValueError, match="e2e scheme needs a depth > 1"):
        build_runs(CompareConfig(data=Path("t.csv"), depths=(1,), methods=("e2e",)))


# ------------------------------------------------------------------------- selection


def test_select_best_matches_a_plain_reference():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 4))
    y = X @ rng.standard_normal(4)
    lrs = (1e-3, 1e-2, 1e-1, 10.0)
    runs = [Run(m, lr, depth=d) for m, d in (("gd", 1), ("gd", 2), ("adam", 1)) for lr in lrs]
    runs += [Run("gd", lr, depth=3) for lr in (50.0, 100.0)]  # all diverge
    res = train(X, y, 4, runs, 150, thresholds=(1e-1, 1e-3))
    models = select_best(res)
    assert [(m.method, m.depth) for m in models] == [("gd", 1), ("gd", 2), ("adam", 1), ("gd", 3)]
    for m in models:
        mine = [i for i, r in enumerate(res) if (r.run.method, r.run.depth) == (m.method, m.depth)]
        assert sorted(m.indices) == mine
        ok = [i for i in mine if not res[i].diverged and math.isfinite(res[i].final_gap)]
        assert m.n_diverged == len(mine) - len(ok)
        if not ok:
            assert m.best is None and m.best_index is None and m.on_edge
            continue
        ref = min(ok, key=lambda i: res[i].final_gap)  # distinct gaps: no ties here
        assert m.best_index == ref and m.best is res[ref]
    # the edge rule: tests/test_grid.py (synthetic objectives, shared with compare)


# the verdict on synthetic results: tests/test_compare_verdict.py


# ----------------------------------------------------------------------- end to end


ARGS = ["--loss", "l4", "--depths", "1,2", "--methods", "gd,e2e,adam", "--lrs", "0.01,0.1,0.3"]


def test_compare_end_to_end(tmp_path, capsys):
    table = write_table(tmp_path / "my data.csv")
    out = tmp_path / "out"
    argv = ["compare", "--data", str(table), "--target", "price", *ARGS]
    argv += ["--iters", "300", "--out", str(out), "--no-progress", "--checkpoint-every", "100"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    n_runs = (3 * 2 - 1) * 3
    assert f"{n_runs} runs: 0 reused from the store, {n_runs} trained" in text
    # the verdict: a headline, then at most six bullets; the same text in REPORT.md
    lines = text.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith(("Yes", "Modestly", "No", "Mixed")))
    assert len(lines[head]) <= 150 and lines[head + 1] == ""
    bullets = [x for x in lines[head + 2 : head + 9] if x.startswith("- ")]
    assert 2 <= len(bullets) <= 6
    verdict_text = "\n".join(lines[head : head + 2 + len(bullets)])
    for name in ("compare.png", "summary.csv", "curves.csv", "REPORT.md", DEFAULT_FILENAME):
        assert (out / name).is_file(), name
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == n_runs
    hit_cols = [c for c in rows[0] if c.startswith("first_hit_")]
    assert len(hit_cols) == 6  # default thresholds: 1e-1 .. 1e-6 of the initial gap
    best = defaultdict(int)
    for r in rows:
        best[(r["method"], r["depth"])] += int(r["best_for_model"])
    assert len(best) == 5 and all(v == 1 for v in best.values())

    # The numbers are those of the trainer on the standardised table, target 'price'.
    ds = load_table(table, "price")
    assert ds.X.shape == (60, 5)  # 'other' is a feature
    thr = sorted((float(c.removeprefix("first_hit_")) for c in hit_cols), reverse=True)
    runs = [Run("gd", 0.1, depth=2), Run("adam", 0.01, depth=1)]
    ref = train(ds.X, ds.y, 4, runs, 300, thresholds=thr)
    for run, r in zip(runs, ref, strict=True):
        (row,) = [
            x
            for x in rows
            if (x["method"], x["depth"], float(x["lr"])) == (run.method, str(run.depth), run.lr)
        ]
        assert float(row["final_gap"]) == pytest.approx(r.final_gap, rel=1e-9, abs=1e-15)
        for c, t in zip(hit_cols, thr, strict=True):
            want = r.first_hit[t]
            assert row[c] == ("" if want is None else str(want))

    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert len(curves) == n_runs * len(ref[0].iters)
    assert {int(c["run"]) for c in curves} == set(range(n_runs))
    report = (out / "REPORT.md").read_text()
    assert "## Verdict" in report and "| model | best lr | final gap |" in report
    assert f"## Verdict\n\n{verdict_text}\n\n## " in report
    assert report.count("| depth-") + report.count("| Eq. 10/12") == 5

    # Same command again: everything comes from the store.
    assert main(argv) == 0
    assert f"{n_runs} runs: {n_runs} reused from the store, 0 trained" in capsys.readouterr().out


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    return code, cap.err


@pytest.mark.parametrize(
    "content, match",
    [
        ("a,b,y\n1,2,3\n4,x,6\n", "non-numeric value 'x' in column 'b'"),
        ("a,b,y\n1,2,3\n4,nan,6\n", "NaN or inf values in column 'b'"),
        ("a,b,y\n1,2,3\n1,5,6\n", "constant feature column"),
        ("a,b,y\n1,2,3\n", "2"),  # too few rows
        ("", "empty file"),
        ("a,b,y\n1,2\n", "fields"),
    ],
)
def test_bad_tables_give_clear_errors(tmp_path, capsys, content, match):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    code, err = run_cli(["compare", "--data", str(f), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.startswith("depthaccel compare: error:")
    assert match in err


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    table = write_table(tmp_path / "t.csv")
    base = ["compare", "--data", str(table), "--out", str(tmp_path / "o"), "--iters", "5"]
    cases = [
        (["--methods", "gd,sgd"], 2, "bad method 'sgd'"),
        (["--depths", "1,0"], 2, "bad depth '0'"),
        (["--depths", "1,two"], 2, "bad depth 'two'"),
        (["--loss", "huber"], 2, "unknown loss 'huber'"),
        (["--lrs", "0.1,-1"], 2, "bad learning rate '-1'"),
        (["--iters", "0"], 2, "--iters must be an integer in [1, 1e+12], got 0"),
        (["--depths", "1", "--methods", "e2e"], 2, "e2e scheme needs a depth > 1"),
        (["--target", "nope"], 1, "no target column 'nope'"),
    ]
    for extra, want_code, match in cases:
        code, err = run_cli(base + extra, capsys)
        assert code == want_code and match in err, (extra, err)
    if not torch.cuda.is_available():
        code, err = run_cli(base + ["--device", "cuda"], capsys)
        assert code == 2 and "CUDA is not available" in err
    code, err = run_cli(["compare", "--data", str(tmp_path / "missing.csv")], capsys)
    assert code == 1 and "not found" in err and "missing.csv" in err


def test_corrupt_store_in_out_dir_is_refused_untouched(tmp_path, capsys):
    table = write_table(tmp_path / "t.csv")
    out = tmp_path / "o"
    out.mkdir()
    (out / DEFAULT_FILENAME).write_bytes(b"definitely not sqlite" * 100)
    before = hashlib.sha256((out / DEFAULT_FILENAME).read_bytes()).hexdigest()
    argv = ["compare", "--data", str(table), "--out", str(out), *ARGS, "--iters", "5"]
    code, err = run_cli(argv, capsys)
    assert code == 1 and "not a depthaccel store" in err
    assert hashlib.sha256((out / DEFAULT_FILENAME).read_bytes()).hexdigest() == before


# ------------------------------------------------------------- arguments: exit 2, no files


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--iters", "99999999999999999999"], "--iters must be an integer in [1, 1e+12]"),
        (["--device", "mps"], "unsupported device 'mps'"),
        (["--device", "meta"], "unsupported device 'meta'"),
        (["--device", "cpu:1"], "unsupported device 'cpu:1'"),
        (["--seed", "99999999999999999999999"], "--seed must be a 64-bit integer"),
        (["--seed", "1.5"], "--seed must be a 64-bit integer in"),
        (["--init-scale", "nan"], "--init-scale must be a finite number >= 0, got nan"),
        (["--hidden", "0"], "--hidden must be an integer >= 1, got 0"),
        (["--threads", "-1"], "--threads must be an integer in [0, 1024], got -1"),
        (["--checkpoint-every", "x"], "--checkpoint-every must be an integer >= 0, got 'x'"),
    ],
)
def test_argument_errors_exit_2_before_any_file(tmp_path, capsys, extra, match):
    table = write_table(tmp_path / "t.csv")
    out = tmp_path / "o"
    code, err = run_cli(["compare", "--data", str(table), "--out", str(out), *extra], capsys)
    assert code == 2 and match in err, err
    assert len(err.strip().splitlines()[-1]) > 0 and "Traceback" not in err
    assert not out.exists()


def test_config_checks_device_and_seed():
    assert CompareConfig(data=Path("t.csv"), device="CUDA:1").device == "cuda:1"
    for dev in ("mps", "meta", "xla"):
        with pytest.raises(ValueError, match="device"):
            CompareConfig(data=Path("t.csv"), device=dev)
    with pytest.raises(ValueError, match="seed must be a 64-bit integer in"):
        CompareConfig(data=Path("t.csv"), seed=2**64)
    with pytest.raises(
        ValueError, match=r"iters must be an integer in \[1, 1e\+12\], got 10000000000000"
    ):
        CompareConfig(data=Path("t.csv"), iters=10**13)


def test_too_large_grid_is_refused_with_the_estimate(tmp_path, capsys):
    table = write_table(tmp_path / "t.csv")
    out = tmp_path / "o"
    argv = ["compare", "--data", str(table), "--out", str(out), "--hidden", "200000"]
    code, err = run_cli(argv, capsys)
    # depth-3 nets of width 200000 hold a 200000 x 200000 factor: 320 GB per run
    assert code == 2 and "runs need about" in err and "TB of memory" in err, err
    assert "5x200000x200000x1" in err and "--hidden" in err  # 5 features (target: last)
    assert not out.exists()


# ----------------------------------------------------------------- outputs: never lose data


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


QUICK = ["--target", "price", *ARGS, "--no-progress", "--iters", "30"]


def test_folder_with_user_files_is_refused_byte_for_byte(tmp_path, capsys, monkeypatch):
    table = write_table(tmp_path / "data.csv")
    home = tmp_path / "project"
    home.mkdir()
    (home / "REPORT.md").write_text("# My own report\n\nhours of work\n")
    (home / "summary.csv").write_bytes(b"my,own\n1,2\n")
    before = _snapshot(home)
    monkeypatch.chdir(home)
    code, err = run_cli(["compare", "--data", str(table), "--out", ".", *QUICK], capsys)
    assert code == 2 and "depthaccel did not write (REPORT.md, summary.csv)" in err
    assert "--force" in err
    assert _snapshot(home) == before  # nothing changed, nothing created (no store either)
    # With --force the outputs are written; a file that is not an output is left alone.
    (home / "notes.txt").write_text("keep me")
    code, _ = run_cli(["compare", "--data", str(table), "--out", ".", *QUICK, "--force"], capsys)
    assert code == 0
    assert (home / "notes.txt").read_text() == "keep me"
    assert (home / "REPORT.md").read_text().startswith("# Does depth accelerate")


def test_input_file_is_never_an_output(tmp_path, capsys):
    table = write_table(tmp_path / "data.csv")
    out = tmp_path / "out"
    assert run_cli(["compare", "--data", str(table), "--out", str(out), *QUICK], capsys)[0] == 0
    before = _snapshot(out)
    argv = ["compare", "--data", str(out / "curves.csv"), "--out", str(out), "--target", "gap"]
    for extra in ([], ["--force"]):
        code, err = run_cli([*argv, *extra, "--iters", "5", "--no-progress"], capsys)
        assert code == 2 and "is also an output (curves.csv" in err, err
        assert _snapshot(out) == before


def test_rerun_into_own_folder_is_accepted(tmp_path, capsys):
    table = write_table(tmp_path / "data.csv")
    out = tmp_path / "out"
    argv = ["compare", "--data", str(table), "--out", str(out), *QUICK]
    assert run_cli(argv, capsys)[0] == 0
    assert run_cli([*argv[:-2], "--iters", "40"], capsys)[0] == 0  # other outputs, same folder
    (out / "summary.csv").write_text("edited by hand\n")
    code, err = run_cli(argv, capsys)
    assert code == 2 and "(summary.csv)" in err


def test_outputs_of_an_earlier_version_are_recognised(tmp_path, capsys):
    table = write_table(tmp_path / "data.csv")
    out = tmp_path / "out"
    argv = ["compare", "--data", str(table), "--out", str(out), *QUICK]
    assert run_cli(argv, capsys)[0] == 0
    (out / MANIFEST_NAME).unlink()  # as an earlier version left it
    (out / "summary.csv").write_text("run,method,depth,lr,final_gap,other\n")
    for p in out.iterdir():  # written before output folders had a manifest
        os.utime(p, (LEGACY_BEFORE - 86400, LEGACY_BEFORE - 86400))
    assert run_cli(argv, capsys)[0] == 0
    (out / MANIFEST_NAME).unlink()
    (out / "summary.csv").write_text("my,own,table\n")  # not ours: refused
    for p in out.iterdir():
        os.utime(p, (LEGACY_BEFORE - 86400, LEGACY_BEFORE - 86400))
    code, err = run_cli(argv, capsys)
    assert code == 2 and "(summary.csv)" in err


def test_failure_mid_write_keeps_the_previous_good_set(tmp_path, capsys, monkeypatch):
    import depthaccel.compare.outputs as cmp

    table = write_table(tmp_path / "data.csv")
    out = tmp_path / "out"
    argv = ["compare", "--data", str(table), "--out", str(out), *QUICK]
    assert run_cli(argv, capsys)[0] == 0
    good = {k: v for k, v in _snapshot(out).items() if not k.startswith("depthaccel-store")}
    assert set(good) == {"summary.csv", "curves.csv", "compare.png", "REPORT.md", MANIFEST_NAME}

    def full_disk(res):  # REPORT.md is the last output: the others are already staged
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cmp, "_report", full_disk)
    code, err = run_cli([*argv[:-2], "--iters", "50"], capsys)
    assert code == 1 and "No space left on device" in err
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith("depthaccel-store")}
    assert after == good  # byte for byte, and no temporary file left behind
    monkeypatch.undo()
    assert run_cli([*argv[:-2], "--iters", "50"], capsys)[0] == 0  # the folder is still ours


# --------------------------------------------------------------- round-off floor (exact fit)


def _exact_fit(m=80, d=4, seed=3, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    return X, scale * (X @ rng.standard_normal(d))


def test_roundoff_floor_bounds_the_loss_noise_at_an_exact_fit():
    from depthaccel.losses import lp_optimum

    X, y = _exact_fit()
    for p in (2.0, 4.0):
        opt = lp_optimum(X, y, p)
        floor = roundoff_floor(X, y, p, opt.w)

        def loss(w, p=p):  # a plain float64 loop: the reference
            return sum(
                abs(sum(X[i, j] * w[j] for j in range(X.shape[1])) - y[i]) ** p
                for i in range(X.shape[0])
            ) / (p * X.shape[0])

        rng = np.random.default_rng(0)
        eps = np.finfo(np.float64).eps
        noise = [
            abs(loss(opt.w * (1 + eps * rng.uniform(-1, 1, opt.w.shape))) - opt.loss)
            for _ in range(20)
        ]
        assert max(noise) < floor  # round-off-level changes of w stay below the floor
        assert floor < 1e-25  # but far below any real gap: a 1e-6 move is well above it
        assert loss(opt.w + 1e-6) - opt.loss > 1e3 * floor


def test_roundoff_floor_scales_like_the_loss():
    from depthaccel.losses import lp_optimum

    X, y = _exact_fit()
    rng = np.random.default_rng(1)
    y_noisy = y + 0.3 * rng.standard_normal(len(y))
    for yy in (y, y_noisy):
        opt = lp_optimum(X, yy, 4.0)
        f1 = roundoff_floor(X, yy, 4.0, opt.w)
        f8 = roundoff_floor(X, 8 * yy, 4.0, 8 * opt.w)  # L scales by 8^4
        assert f8 == pytest.approx(8**4 * f1, rel=1e-6)
        # float32 resolves ~2^29 times less
        f32 = roundoff_floor(X, yy, 4.0, opt.w, eps=float(np.finfo(np.float32).eps))
        assert f32 > 1e6 * f1
    # With noise, the floor is eps-relative to L* (first-order term), not to L*'s ulps only.
    opt = lp_optimum(X, y_noisy, 2.0)
    assert 1e-16 * opt.loss < roundoff_floor(X, y_noisy, 2.0, opt.w) < 1e-12 * opt.loss


def test_exact_fit_end_to_end_reports_convergence_not_ratios(tmp_path, capsys):
    X, y = _exact_fit(m=60, d=3)
    f = tmp_path / "exact.csv"
    np.savetxt(f, np.c_[X, y], delimiter=",", header="a,b,c,y", comments="")
    out = tmp_path / "o"
    argv = ["compare", "--data", str(f), "--out", str(out), "--no-standardize", "--loss", "l2"]
    argv += ["--depths", "1,2", "--methods", "gd,adam", "--lrs", "0.01,0.1,0.5"]
    argv += ["--iters", "3000", "--no-progress"]
    code, _ = run_cli(argv, capsys)
    assert code == 0
    report = (out / "REPORT.md").read_text()
    verdict_text = report.split("## Verdict")[1].split("##")[0]
    assert "to round-off" in verdict_text
    assert "to reach 1e-6 of the initial gap" in verdict_text  # iterations decide
    assert not re.search(r"\d(\.\d+)?e\+\d+x", verdict_text), verdict_text
    assert "(round-off) |" in report.split("## Best learning rate per model")[1]


def test_compare_plot_legend_is_outside_the_axes(tmp_path, capsys, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figs = []
    real = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figs.append(fig), real(fig)))
    table = write_table(tmp_path / "t.csv")
    argv = ["compare", "--data", str(table), "--out", str(tmp_path / "o"), "--iters", "40"]
    argv += ["--lrs", "0.01,0.1", "--no-progress"]  # all methods, depths 1-3: 14 models
    assert run_cli(argv, capsys)[0] == 0
    (fig,) = figs
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    (ax,) = fig.axes
    assert ax.get_legend() is None and len(fig.legends) == 1
    leg, box = fig.legends[0].get_window_extent(r), ax.get_window_extent(r)
    assert leg.x0 >= box.x1  # to the right of the axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    # 14 models; the round-off floor (~1e-13 of these gaps) is far below every curve, so
    # it is not drawn: a line there would squash the curves into the top of the plot
    assert len(labels) == 14 and not any(t.startswith("round-off floor") for t in labels)
    lowest = min(line.get_ydata().min() for line in ax.get_lines())
    assert ax.get_ylim()[0] > lowest / 100


def test_compare_plot_draws_the_floor_when_curves_reach_it(tmp_path, capsys, monkeypatch):
    import matplotlib.pyplot as plt

    figs = []
    real = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figs.append(fig), real(fig)))
    X, y = _exact_fit(m=60, d=3)
    f = tmp_path / "exact.csv"
    np.savetxt(f, np.c_[X, y], delimiter=",", header="a,b,c,y", comments="")
    argv = ["compare", "--data", str(f), "--out", str(tmp_path / "o"), "--no-standardize"]
    argv += ["--loss", "l2", "--depths", "1", "--methods", "gd", "--lrs", "0.1,0.5"]
    argv += ["--iters", "3000", "--no-progress"]
    assert run_cli(argv, capsys)[0] == 0
    (fig,) = figs
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-1].startswith("round-off floor")  # the curve converged down to it


def test_headerless_csv_is_refused_and_no_header_reads_it(tmp_path, capsys):
    """A headerless table must not turn its first data row into column names."""
    src = write_table(tmp_path / "with_header.csv", m=30, d=2)
    f = tmp_path / "headerless.csv"
    f.write_text("".join(src.read_text().splitlines(keepends=True)[1:]))  # drop the header
    out = tmp_path / "o"
    code, err = run_cli(["compare", "--data", str(f), "--out", str(out)], capsys)
    assert code == 1 and "is all numbers" in err and "--no-header" in err
    assert not out.exists()
    argv = ["compare", "--data", str(f), "--out", str(out), "--no-header", "--target", "c3"]
    argv += ["--depths", "1", "--methods", "gd", "--lrs", "0.01", "--iters", "50", "--no-progress"]
    code, _ = run_cli(argv, capsys)
    assert code == 0
    report = (out / "REPORT.md").read_text()
    assert "`c3`" in report and "30" in report  # all 30 rows are data, target named c3


def test_rates_within_the_round_off_floor_tie_and_iterations_decide(tmp_path, monkeypatch):
    """run_compare selects with ``tie_tol`` = the data's round-off floor: two rates that
    both end below the floor are tied, and the one that reached the thresholds first wins
    (with ``tie_tol=0`` the lower rounding noise would win)."""
    import depthaccel.compare.run as crun
    from depthaccel.compare import run_compare
    from depthaccel.sweep import SweepResult

    X, y = _exact_fit(m=40, d=3)
    f = tmp_path / "exact.csv"
    np.savetxt(f, np.c_[X, y], delimiter=",", header="a,b,c,y", comments="")
    seen = {}

    def fake_sweep(X, y, p, runs, iters, *, thresholds, **kw):
        floor = seen["floor"]  # computed by run_compare before it trains
        out = []
        for r in runs:  # lr 0.5 is fast but ends at 0.9 x floor, lr 0.1 slow at 0.1 x floor
            fast = r.lr == 0.5
            hits = {t: (10 if fast else 50) for t in thresholds}
            final = (0.9 if fast else 0.1) * floor
            out.append(
                RunResult(r, np.array([0, iters]), np.array([1.0, final]), hits, final, False, None)
            )
        return SweepResult(out, 0, len(out), keys=[str(i) for i in range(len(out))])

    import depthaccel.compare.problem as cprob

    real_floor = cprob.roundoff_floor

    def floor_seen(*args, **kw):
        seen["floor"] = real_floor(*args, **kw)
        return seen["floor"]

    monkeypatch.setattr(cprob, "roundoff_floor", floor_seen)
    monkeypatch.setattr(crun, "sweep", fake_sweep)
    cfg = CompareConfig(
        data=f,
        out=tmp_path / "o",
        loss="l2",
        standardize=False,
        depths=(1,),
        methods=("gd",),
        lrs=(0.1, 0.5),
        iters=100,
        thresholds=(1e-3, 1e-6),
    )
    res = run_compare(cfg)
    assert res.floor == seen["floor"] > 0
    (m,) = res.models
    assert m.best_lr == 0.5  # tie within the floor: fewer iterations decide


def test_threads_are_restored_after_the_command(tmp_path, capsys):
    table = write_table(tmp_path / "t.csv")
    assert torch.get_num_threads() == 1  # the fixture's
    argv = ["compare", "--data", str(table), "--out", str(tmp_path / "o"), *QUICK, "--threads", "2"]
    assert run_cli(argv, capsys)[0] == 0
    assert torch.get_num_threads() == 1
    code, _ = run_cli([*argv, "--lrs", "-1"], capsys)  # an error path restores them too
    assert code == 2 and torch.get_num_threads() == 1


def test_feature_and_loss_scales(tmp_path, capsys):
    """--loss-scale plain minimises |r|^p: a GD run at lr is the paper's (1/p)|r|^p run at
    p lr, every gap p times larger; --feature-scale k trains on k X (same L*)."""
    table = write_table(tmp_path / "t.csv")
    base = ["compare", "--data", str(table), "--target", "price", "--depths", "1"]
    base += ["--methods", "gd", "--iters", "200", "--no-progress"]
    assert run_cli([*base, "--out", str(tmp_path / "a"), "--lrs", "0.04"], capsys)[0] == 0
    argv = [*base, "--out", str(tmp_path / "b"), "--lrs", "0.01", "--loss-scale", "plain"]
    assert run_cli(argv, capsys)[0] == 0
    (a,) = list(csv.DictReader((tmp_path / "a" / "summary.csv").open()))
    (b,) = list(csv.DictReader((tmp_path / "b" / "summary.csv").open()))
    assert float(b["final_gap"]) == pytest.approx(4 * float(a["final_gap"]), rel=1e-9)
    assert "loss scale plain (|r|^p)" in (tmp_path / "b" / "REPORT.md").read_text()
    argv = [
        *base,
        "--out",
        str(tmp_path / "c"),
        "--lrs",
        "0.04",
        "--feature-scale",
        "zscore-unit-row",
    ]
    assert run_cli(argv, capsys)[0] == 0
    report = (tmp_path / "c" / "REPORT.md").read_text()
    assert "feature scale zscore-unit-row (k = 0.4472)" in report  # 5 features
    L = [
        re.search(r"L\* = ([0-9.e+-]+)", (tmp_path / x / "REPORT.md").read_text()).group(1)
        for x in "ac"
    ]
    assert float(L[0]) == pytest.approx(float(L[1]), rel=1e-12)
    for extra, match in (
        (["--feature-scale", "big"], "feature_scale must be one of"),
        (["--loss-scale", "half"], "invalid choice"),
        (["--feature-scale", "-1"], "feature_scale must be a finite number > 0"),
        (["--loss", "ce", "--loss-scale", "plain"], "loss_scale applies to the l_p losses only"),
    ):
        code, err = run_cli([*base, "--out", str(tmp_path / "d"), *extra], capsys)
        assert code == 2 and match in err, err
        assert not (tmp_path / "d").exists()
