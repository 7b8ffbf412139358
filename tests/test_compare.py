"""Tests of depthaccel.compare and the `depthaccel compare` command."""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.cli import main
from depthaccel.compare import (
    CompareConfig,
    ModelBest,
    build_runs,
    parse_loss,
    select_best,
    verdict,
)
from depthaccel.data import load_table
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
        ({"depths": (0, 1)}, "depths must be integers >= 1"),
        ({"depths": (1.5,)}, "depths must be integers >= 1"),
        ({"depths": ()}, "depths must not be empty"),
        ({"methods": ("gd", "sgd")}, r"unknown method\(s\) \['sgd'\]"),
        ({"iters": 0}, "iters must be an integer >= 1"),
        ({"lrs": (1e-3, -1.0)}, "learning rates must be finite and > 0"),
        ({"lrs": ()}, "learning rates must not be empty"),
        ({"thresholds": (0.0,)}, "thresholds must be finite and > 0"),
        ({"dtype": "float16"}, "dtype must be float32 or float64"),
        ({"loss": "l1"}, "p must be a finite number >= 2"),
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1"),
        ({"device": "gpu7"}, "unknown device"),
        ({"init": "zeros"}, "unknown init 'zeros'"),
        ({"init_scale": -1.0}, "init_scale must be finite and >= 0"),
    ],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        CompareConfig(data=Path("t.csv"), **kw)


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
        lrs_m = sorted(res[i].run.lr for i in mine)
        assert m.on_edge == (res[ref].run.lr in (lrs_m[0], lrs_m[-1]))


def fake(method, depth, lr, final, hits, diverged=False, T=1000):
    r = Run(method, lr, depth=depth)
    return RunResult(
        run=r,
        iters=np.array([0, T]),
        gap=np.array([1.0, final]),
        first_hit=dict(hits),
        final_gap=final,
        diverged=diverged,
        diverged_at=5 if diverged else None,
    )


def model(res: RunResult, on_edge=False) -> ModelBest:
    return ModelBest(
        method=res.run.method,
        depth=res.run.depth,
        label=f"depth-{res.run.depth} {res.run.method}",
        indices=[0],
        best_index=0,
        best=res,
        on_edge=on_edge,
        n_diverged=0,
    )


THR = (1e-1, 1e-3, 1e-5)


def test_verdict_answers_and_factors():
    base = model(fake("gd", 1, 1e-2, 1e-3, {1e-1: 100, 1e-3: 900, 1e-5: None}))
    deep = model(fake("gd", 3, 1e-3, 1e-4, {1e-1: 40, 1e-3: 300, 1e-5: None}))
    e2e = model(fake("e2e", 2, 1e-3, 5e-4, {1e-1: 50, 1e-3: 500, 1e-5: None}))
    ada = model(fake("adagrad", 1, 1e-1, 2e-2, {1e-1: 10, 1e-3: None, 1e-5: None}))
    v = verdict([base, deep, e2e, ada], THR, 1000, 0.05)
    assert v.answer == "yes" and v.deep is deep and v.base is base
    assert v.final_ratio == pytest.approx(10.0)
    assert v.speedup == pytest.approx(3.0) and v.speedup_threshold == 1e-3
    assert v.baselines == {"adagrad": pytest.approx(200.0)}
    assert "10x lower in final gap" in v.text and "after 300 vs 900 iterations" in v.text
    assert "Caveats" in v.text
    # Ratios: modest, no difference, slower.
    for final, answer in ((6e-4, "modest"), (1.05e-3, "no difference"), (2e-3, "slower")):
        d = model(fake("gd", 2, 1e-3, final, {1e-1: 80, 1e-3: 800, 1e-5: None}))
        assert verdict([base, d], THR, 1000, 0.05).answer == answer
    # Both at the optimum to round-off: iterations decide.
    b0 = model(fake("gd", 1, 1e-2, 1e-19, {1e-1: 90, 1e-3: 300, 1e-5: 600}))
    d0 = model(fake("gd", 2, 1e-2, -1e-18, {1e-1: 30, 1e-3: 100, 1e-5: 200}))
    v0 = verdict([b0, d0], THR, 1000, 0.05)
    assert v0.answer == "yes" and v0.speedup == pytest.approx(3.0)
    assert "both reach the optimum to round-off" in v0.text
    # The edge caveat names the models whose best rate is on the edge.
    edge = model(fake("gd", 2, 1e-3, 1e-4, {1e-1: 40, 1e-3: 300, 1e-5: None}), on_edge=True)
    assert (
        "edge of the grid (or every rate diverged) for depth-2 gd"
        in verdict([base, edge], THR, 1000, 0.05).text
    )


def test_verdict_flags_models_that_barely_moved():
    base = model(fake("gd", 1, 1e-2, 1e-3, {}))
    stuck = model(fake("gd", 3, 1e-2, 0.95, {}))  # gap[0] = 1.0: barely moved
    moving = model(fake("gd", 2, 1e-2, 0.5, {}))
    v = verdict([base, stuck, moving], (), 1000, 0.05)
    assert "Barely moved from the initial point in 1000 iterations" in v.text
    assert "depth-3 gd;" in v.text and "depth-2 gd;" not in v.text
    assert "Barely moved" not in verdict([base, moving], (), 1000, 0.05).text


def test_verdict_when_it_cannot_say():
    deep = model(fake("gd", 2, 1e-3, 1e-4, {}))
    assert verdict([deep], (), 100, 0.1).answer == "unknown"
    base = model(fake("gd", 1, 1e-3, 1e-4, {}))
    v = verdict([base], (), 100, 0.1)
    assert v.answer == "unknown" and "no a deeper GD net or e2e" in v.text
    dead = ModelBest("gd", 1, "depth-1 GD", [0], None, None, True, 3)
    v = verdict([dead, deep], (), 100, 0.1)
    assert v.answer == "unknown" and "diverged" in v.text


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
    assert "Does depth accelerate this problem?" in text
    for name in ("compare.png", "summary.csv", "curves.csv", "REPORT.md", DEFAULT_FILENAME):
        assert (out / name).is_file(), name
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == n_runs
    hit_cols = [c for c in rows[0] if c.startswith("first_hit_")]
    assert len(hit_cols) == 5  # default thresholds: 1e-1 .. 1e-6 of the initial gap
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
    assert report.count("| depth-") + report.count("| Eq. 12") == 5

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
        (["--iters", "0"], 2, "--iters must be >= 1"),
        (["--depths", "1", "--methods", "e2e"], 1, "e2e scheme needs a depth > 1"),
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
