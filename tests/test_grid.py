"""grid_search: best lr per model, edge warnings, log-scale extension."""

import math
import warnings

import numpy as np
import pytest
import torch

from depthaccel.train import GridEdgeWarning, Run, RunResult, best_result, grid_search, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def problem(seed=0, m=40, d=5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        m, generator=g, dtype=torch.float64
    )
    return X, y / y.std()


LRS = [10.0**e for e in (-3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5)]


def test_picks_lowest_final_gap_per_model_and_never_a_diverged_run():
    X, y = problem()
    models = [{"depth": 1}, {"depth": 2, "init_scale": 0.3}, {"depth": 3, "init_scale": 0.3}]
    runs = [Run("gd", lr, **mk) for mk in models for lr in LRS]
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridEdgeWarning)  # every best is interior here
        out = grid_search(X, y, 4, runs, 200, thresholds=(1e-3,))
    assert len(out) == 3
    for ms, mk in zip(out, models, strict=True):
        assert ms.model.depth == mk["depth"]
        assert [r.run.lr for r in ms.results] == sorted(LRS)
        # the independent way: one run at a time, pick the lowest final gap by hand
        gaps = {}
        for lr in LRS:
            (r,) = train(X, y, 4, [Run("gd", lr, **mk)], 200, thresholds=(1e-3,))
            gaps[lr] = math.inf if r.diverged else r.final_gap
        assert ms.best_lr == min(gaps, key=gaps.get)
        assert not ms.best.diverged and not ms.on_edge
        assert any(r.diverged for r in ms.results)  # the grid reaches divergent rates


def result(lr, gap, hits, diverged=False):
    return RunResult(
        run=Run("gd", lr),
        iters=np.array([0, 10]),
        gap=np.array([1.0, gap]),
        first_hit=hits,
        final_gap=gap,
        diverged=diverged,
        diverged_at=5 if diverged else None,
    )


def test_best_result_ties_and_divergence():
    rs = [
        result(0.1, 1e-3, {1e-2: 50, 1e-3: None}),
        result(0.2, 1e-5, {1e-2: 40, 1e-3: 90}),
        result(0.3, 1e-5, {1e-2: 30, 1e-3: 80}),  # tie on the gap, earlier hits: best
        result(0.4, float("nan"), {1e-2: 1, 1e-3: 2}, diverged=True),
    ]
    assert best_result(rs).run.lr == 0.3
    rs[2] = result(0.3, 1e-5 + 1e-12, {1e-2: 30, 1e-3: 80})
    assert best_result(rs).run.lr == 0.2  # strictly lower gap wins without tolerance
    assert best_result(rs, tie_tol=1e-11).run.lr == 0.3
    assert best_result(rs[3:]) is None


def test_warns_on_edge_and_extends_on_log_scale():
    X, y = problem(seed=1)
    lrs = [1e-4, 10**-3.5, 1e-3]
    runs = [Run("gd", lr, depth=2, init_scale=0.3) for lr in lrs]
    with pytest.warns(GridEdgeWarning, match="edge"):
        (ms,) = grid_search(X, y, 4, runs, 100)
    assert ms.on_edge and ms.best_lr == 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridEdgeWarning)
        (ext,) = grid_search(X, y, 4, runs, 100, extend=True, max_extensions=10)
    assert not ext.on_edge and ext.extensions >= 1
    ratio = np.exp(np.diff(np.log(ext.lrs)))
    np.testing.assert_allclose(ratio, 10**0.5, rtol=1e-12)  # same log-scale step
    assert ext.lrs[0] < ext.best_lr < ext.lrs[-1]
    assert ext.results[-1].diverged or ext.results[-1].final_gap > ext.best.final_gap


def test_all_diverged_warns_and_reports_none():
    X, y = problem(seed=2)
    runs = [Run("gd", lr) for lr in (50.0, 100.0)]
    with pytest.warns(GridEdgeWarning, match="diverged"):
        (ms,) = grid_search(X, y, 4, runs, 50)
    assert ms.best is None and ms.best_lr is None and ms.on_edge
