"""`depthaccel compare` on multi-output regression tables (--target a,b,c; k outputs)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.cli import main
from depthaccel.data import load_table
from depthaccel.losses import lp_optimum
from depthaccel.preconditioner import end_to_end_direction
from depthaccel.train import Run, initial_factors, train


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_multi(path: Path, m=60, d=5, k=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d)) * np.logspace(0, -0.5, d)
    Y = X @ rng.standard_normal((d, k)) + 0.3 * rng.standard_normal((m, k))
    head = [f"x{j}" for j in range(d)] + ["a", "b", "c"][:k]
    np.savetxt(path, np.c_[X, Y], delimiter=",", header=",".join(head), comments="")
    return path


def run_cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    return code, cap.out, cap.err


def test_multi_output_l2_optimum_matches_lstsq():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 6))
    Y = X @ rng.standard_normal((6, 3)) + rng.standard_normal((50, 3))
    W, *_ = np.linalg.lstsq(X, Y, rcond=None)
    want = float(np.sum((X @ W - Y) ** 2) / (2 * 50))
    opt = lp_optimum(X, Y, 2.0)
    assert opt.loss == pytest.approx(want, rel=1e-13)
    np.testing.assert_allclose(opt.w, W, rtol=0, atol=1e-12)
    assert opt.grad_norm < 1e-12


def test_compare_multi_output_end_to_end(tmp_path, capsys):
    table = write_multi(tmp_path / "multi.csv")
    out = tmp_path / "o"
    argv = ["compare", "--data", table, "--target", "a,b,c", "--loss", "l2", "--out", out]
    argv += ["--depths", "1,2", "--methods", "gd,e2e,adam", "--lrs", "0.03,0.1,0.3"]
    argv += ["--iters", "200", "--no-progress"]
    code, text, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "60 rows x 5 features x 3 outputs, l2 loss" in text
    report = (out / "REPORT.md").read_text()
    assert "3 targets (outputs) `a`, `b`, `c`" in report and "hidden width 3" in report
    ds = load_table(table, "a,b,c")
    assert ds.y.shape == (60, 3) and ds.X.shape == (60, 5)
    opt = lp_optimum(ds.X, ds.y, 2.0)
    assert f"L* = {opt.loss:.10g}" in report
    # the numbers are those of the trainer on the (m, 3) problem, hidden width k = 3
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 3 * 3 * 2 - 3
    runs = [Run("gd", 0.1, depth=2, hidden=3), Run("e2e", 0.3, depth=2, hidden=3)]
    ref = train(ds.X, ds.y, 2, runs, 200)
    for run, r in zip(runs, ref, strict=True):
        (row,) = [
            x
            for x in rows
            if (x["method"], x["depth"], float(x["lr"])) == (run.method, "2", run.lr)
        ]
        assert float(row["final_gap"]) == pytest.approx(r.final_gap, rel=1e-9, abs=1e-15)


def test_batched_e2e_step_matches_end_to_end_direction_per_run():
    """One step of the grid's e2e runs (k = 3 outputs, batched SVDs) against
    ``end_to_end_direction`` applied to each run on its own, in float64."""
    rng = np.random.default_rng(2)
    m, d, k = 40, 5, 3
    X = torch.from_numpy(rng.standard_normal((m, d)))
    Y = torch.from_numpy(rng.standard_normal((m, k)))
    runs = [
        Run("e2e", lr, depth=N, hidden=k, init_scale=0.5, seed=s)
        for s, (lr, N) in enumerate([(0.05, 2), (0.1, 2), (0.05, 3), (0.02, 2.5)])
    ]
    res = train(X, Y, 2, runs, 1, optimum=0.0, log_points=2)
    for r in res:
        f = initial_factors(r.run, d, k)
        W = f[0]
        for w in f[1:]:
            W = w @ W
        G = (W @ X.T - Y.T) @ X / m
        W1 = W - r.run.lr * end_to_end_direction(W, G, r.run.depth)
        loss = float(((X @ W1.T - Y) ** 2).sum() / (2 * m))
        assert r.gap[1] == pytest.approx(loss, rel=1e-12)


def test_balanced_deep_net_follows_the_e2e_scheme_at_small_rates():
    """Theorem 1 for k = 3 outputs: GD on a balanced depth-2 net and the Eq. 10 scheme
    from the same end-to-end matrix agree up to O(lr) over a fixed time lr x T: halving
    lr (and doubling T) halves the gap between them."""
    rng = np.random.default_rng(3)
    m, d, k = 40, 5, 3
    X = rng.standard_normal((m, d))
    Y = X @ rng.standard_normal((d, k)) + 0.2 * rng.standard_normal((m, k))
    diffs = []
    for lr, T in ((2e-3, 100), (1e-3, 200)):
        kw = dict(depth=2, hidden=k, init="balanced", init_scale=0.5, seed=0)
        net, e2e = train(X, Y, 2, [Run("gd", lr, **kw), Run("e2e", lr, **kw)], T, optimum=0.0)
        assert net.gap[0] == pytest.approx(e2e.gap[0], rel=1e-14)  # the same start
        assert net.final_gap < 0.9 * net.gap[0]  # it moved
        diffs.append(abs(net.final_gap - e2e.final_gap))
    assert 0 < diffs[0] < 1e-2 * (net.gap[0] - net.final_gap)
    assert 1.6 < diffs[0] / diffs[1] < 2.4, diffs


@pytest.mark.parametrize(
    "target, match",
    [
        ("a,b,a", "target column(s) ['a'] named more than once"),
        ("a,zz", "no target column 'zz'"),
    ],
)
def test_bad_targets_are_one_line_and_write_nothing(tmp_path, capsys, target, match):
    table = write_multi(tmp_path / "multi.csv")
    out = tmp_path / "o"
    code, _, err = run_cli(["compare", "--data", table, "--target", target, "--out", out], capsys)
    assert code == 1 and match in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
