"""grid_search: best lr per model, edge warnings, log-scale extension."""

import math
import warnings

import numpy as np
import pytest
import torch

from depthaccel.train import GridEdgeWarning, Run, RunResult, best_result, grid_search, train
from depthaccel.train.grid import fill_rates, log_grid, refinement_rates, search_record


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


def test_best_result_breaks_ties_on_the_smallest_threshold_first():
    # Equal final gaps: the earlier hit of the smallest threshold (1e-3) decides, even
    # when the other run reached the larger threshold (1e-2) sooner.
    a = result(0.1, 1e-5, {1e-2: 50, 1e-3: 80})
    b = result(0.2, 1e-5, {1e-2: 30, 1e-3: 90})
    assert best_result([a, b]).run.lr == 0.1 and best_result([b, a]).run.lr == 0.1


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


# --------------------------------------------------------------- the edge rule
#
# A synthetic objective: final gap 1 + (log10(lr) - log10(center))^2, diverged above
# ``diverge_above``. The expected grids below follow from the documented rule by hand.


def synthetic(center, diverge_above=math.inf):
    calls = []

    def fake_train(X, y, p, runs, iters, **kw):
        calls.append([r.effective_lr for r in runs])
        out = []
        for r in runs:
            lr = r.effective_lr
            div = lr > diverge_above
            gap = math.nan if div else 1.0 + (math.log10(lr) - math.log10(center)) ** 2
            out.append(
                RunResult(
                    run=r,
                    iters=np.array([0, iters]),
                    gap=np.array([2.0, gap]),
                    first_hit={},
                    final_gap=gap,
                    diverged=div,
                    diverged_at=1 if div else None,
                )
            )
        return out

    return fake_train, calls


def search(center, grid, diverge_above=math.inf, **kw):
    fake, calls = synthetic(center, diverge_above)
    kw.setdefault("warn", False)
    (ms,) = grid_search(None, None, 4, [Run("gd", lr) for lr in grid], 10, train=fake, **kw)
    return ms, calls


GRID3 = (1e-3, 1e-2, 1e-1)


@pytest.mark.parametrize(
    "center, best, edge",
    [(1e-2, 1e-2, False), (1.0, 1e-1, True), (1e-5, 1e-3, True)],
    ids=["interior", "top edge", "bottom edge"],
)
def test_edge_rule_on_a_three_rate_grid(center, best, edge):
    ms, calls = search(center, GRID3)
    assert (ms.best_lr, ms.on_edge, ms.extensions) == (best, edge, 0) and len(calls) == 1


def test_a_one_rate_grid_is_on_the_edge_and_extends_up_then_down():
    ms, _ = search(1e-2, (1e-2,))
    assert ms.on_edge and ms.best_lr == 1e-2
    ms, calls = search(1e-2, (1e-2,), extend=True, lr_digits=4)
    # round 1: above (step 10 for one rate); the old rate is now the smallest: round 2 below
    assert calls == [[1e-2], [0.1], [1e-3]]
    assert ms.lrs == [1e-3, 1e-2, 0.1] and not ms.on_edge and ms.extensions == 2


def test_extension_walks_to_an_interior_best_on_the_grid_step():
    ms, calls = search(10.0, GRID3, extend=True, lr_digits=4)
    assert [c for c in calls[1:]] == [[1.0], [10.0], [100.0]]
    assert ms.best_lr == 10.0 and not ms.on_edge and ms.extensions == 3
    ms, calls = search(1e-6, GRID3, extend=True, lr_digits=4, max_extensions=2)
    assert calls[1:] == [[1e-4], [1e-5]] and ms.on_edge and ms.best_lr == 1e-5


def test_all_diverged_goes_below_for_the_rescue_rounds_only():
    ms, calls = search(1e-2, (1.0, 10.0), diverge_above=0.5, extend=True, max_extensions=0)
    assert ms.best is None and ms.on_edge and len(calls) == 1
    ms, calls = search(
        1e-2, (1.0, 10.0), diverge_above=0.5, extend=True, max_extensions=0, rescue_diverged=2
    )
    assert calls[1:] == [[0.1]] and ms.best_lr == 0.1 and ms.extensions == 1
    assert ms.on_edge  # the rescued rate is the smallest: no more rounds (max_extensions 0)


def test_compare_uses_the_same_edge_rule():
    from depthaccel.compare import select_best

    fake, _ = synthetic(1e-2)
    one = fake(None, None, 4, [Run("gd", 1e-2), Run("gd", 1e-3, depth=2)], 10)
    three = fake(None, None, 4, [Run("gd", lr) for lr in GRID3], 10)
    assert [m.on_edge for m in select_best(one)] == [True, True]
    (m,) = select_best(three)
    assert not m.on_edge and m.best_index == 1 and m.indices == [0, 1, 2]


# ---------------------------------------------------- grids, two stages, refinement


def test_log_grid():
    g = log_grid(1e-4, 1.0, 2)
    assert len(g) == 9 and g[0] == 1e-4 and g[-1] == 1.0
    np.testing.assert_allclose(np.diff(np.log10(g)), 0.5, atol=1e-3)
    assert log_grid(1e-3, 1e-3) == (1e-3,)
    with pytest.raises(ValueError):
        log_grid(1.0, 0.1)
    for args, message in (
        ((0.0, 1.0), "lo must be a finite number > 0, got 0.0"),
        ((1e-3, math.inf), "hi must be a finite number > 0, got inf"),
        ((1e-3, 1.0, True), "per_decade must be an integer >= 1, got True"),
        ((1e-3, 1.0, 2.5), "per_decade must be an integer >= 1, got 2.5"),  # used to pass
    ):
        with pytest.raises(ValueError) as err:
            log_grid(*args)
        assert str(err.value) == message


# The rate grids of every caller, pinned: rates are part of stored runs' keys, so the
# one log_grid (with the formula each caller used before the experiments' grid moved
# here) must give these exact floats. "logspace": compare's default rates, sec7;
# "geometric": the experiments' SearchPolicy.grid (with extra rates merged in).
_DECADES_2 = [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2, 3.162e-2, 0.1, 0.3162, 1.0]
_SEC7_QUICK = [m * 10.0**e for e in range(-7, 1) for m in (1.0, 1.778, 3.162, 5.623)] + [10.0]
_SEC7_FULL = [
    m * 10.0**e
    for e in range(-7, 1)
    for m in (1.0, 1.334, 1.778, 2.371, 3.162, 4.217, 5.623, 7.499)
] + [10.0]


def _exact_grid(lo: float, hi: float, per_decade: int, digits: int = 4) -> list[float]:
    """Independent reference: lo * (hi/lo)^(i/n) in 50-digit decimal arithmetic from the
    decimal text of lo and hi, rounded half-even to ``digits`` significant digits."""
    from decimal import Decimal, localcontext

    with localcontext() as c:
        c.prec = 50
        dlo, dhi = Decimal(repr(lo)), Decimal(repr(hi))
        n = round(math.log10(hi / lo) * per_decade)
        out = []
        for i in range(n + 1):
            x = dlo * (dhi / dlo) ** (Decimal(i) / Decimal(n)) if n else dlo
            out.append(float(x.quantize(Decimal(1).scaleb(x.adjusted() - digits + 1))))
        return out


def _pinned(values):
    return [float(f"{v:.4g}") for v in values]  # 3.162 * 1e-4 -> 0.0003162 exactly


@pytest.mark.parametrize(
    ("lo", "hi", "per_decade", "want"),
    [
        (1e-4, 1.0, 2, _DECADES_2),  # compare's DEFAULT_LRS
        (1e-7, 10.0, 4, _SEC7_QUICK),  # sec7 quick
        (1e-7, 10.0, 8, _SEC7_FULL),  # sec7 full
        (1e-3, 10.0, 5, None),  # benchmarks/bench_classify.py
    ],
)
def test_log_grid_rates_of_compare_and_sec7_are_pinned(lo, hi, per_decade, want):
    got = log_grid(lo, hi, per_decade)  # the call style of compare and sec7
    assert list(got) == _exact_grid(lo, hi, per_decade)
    assert got == log_grid(lo, hi, per_decade, digits=4, formula="logspace")
    if want is not None:
        assert list(got) == _pinned(want)


@pytest.mark.parametrize(
    ("policy", "args", "want"),
    [
        (dict(lr_min=1e-4, lr_max=1.0), (), _DECADES_2),  # fig3/fig5-left full
        (dict(lr_min=1e-3, lr_max=0.1, per_decade=1), (), [1e-3, 1e-2, 0.1]),  # quick
        (dict(per_decade=1), (0.1, 10.0), [0.1, 1.0, 10.0]),  # fig4-left quick, per model
        (dict(), (1e-3, 100.0), _DECADES_2[2:] + [3.162, 10.0, 31.62, 100.0]),  # fig4-left
        (dict(extra_lrs=(1e-3, 0.005, 1e-2)), (1e-3, 10.0), None),  # extra rates merged
        (dict(lr_min=1e-6, lr_max=3e-2, per_decade=7, lr_digits=3), (), None),
    ],
)
def test_search_policy_grid_rates_are_pinned(policy, args, want):
    from depthaccel.experiments.search import SearchPolicy

    pol = SearchPolicy(**policy)
    got = pol.grid(*args)  # the call style of the experiments
    lo, hi = args or (pol.lr_min, pol.lr_max)
    ref = _exact_grid(lo, hi, pol.per_decade, pol.lr_digits)
    extras = [float(f"{v:.{pol.lr_digits}g}") for v in pol.extra_lrs]
    assert got == sorted(set(ref) | set(extras))
    coarse = log_grid(lo, hi, pol.per_decade, digits=pol.lr_digits, formula="geometric")
    assert got == sorted(set(coarse) | set(extras))
    if want is not None:
        assert got == _pinned(want)


def test_log_grid_formulas_differ_only_on_a_rounding_boundary():
    """Why log_grid keeps both formulas: from lo = 1.0005e-4 (a point on a 4-digit
    rounding boundary) numpy's logspace lands just below it and the power just above,
    so each caller keeps the formula its stored rates were built with."""
    assert log_grid(1.0005e-4, 1.0005e-2, 2) == (1e-4, 3.164e-4, 1e-3, 3.164e-3, 1.001e-2)
    assert log_grid(1.0005e-4, 1.0005e-2, 2, formula="geometric") == (
        1.001e-4, 3.164e-4, 1.001e-3, 3.164e-3, 1.001e-2,
    )  # fmt: skip
    from depthaccel.experiments.search import SearchPolicy

    # the experiments' grids are the geometric ones, compare's and sec7's the logspace ones
    boundary = SearchPolicy(lr_min=1.0005e-4, lr_max=1.0005e-2).grid()
    assert boundary == [1.001e-4, 3.164e-4, 1.001e-3, 3.164e-3, 1.001e-2]
    with pytest.raises(ValueError, match="formula"):
        log_grid(1e-3, 1e-1, 1, formula="linear")


def test_merge_rates_and_spacing_at_best():
    from depthaccel.train.grid import merge_rates, round_rate, spacing_at_best

    assert merge_rates([0.1, 0.01], [0.01 * (1 + 1e-12), 0.05, 0.05]) == [0.01, 0.05, 0.1]
    assert round_rate(10**-3.5, 4) == 3.162e-4 and round_rate(0.123456, None) == 0.123456
    fake, _ = synthetic(1e-2, diverge_above=0.05)
    (ms,) = grid_search(None, None, 4, [Run("gd", lr) for lr in GRID3], 10, train=fake, warn=False)
    near, edge = spacing_at_best(ms)  # GRID3 = 1e-3, 1e-2, 1e-1; 1e-1 diverged
    assert near == pytest.approx(10.0) and edge == pytest.approx(10.0)


def test_search_record_is_json():
    import json

    fake, _ = synthetic(1e-2, diverge_above=0.05)
    found = grid_search(None, None, 4, [Run("gd", lr) for lr in GRID3], 10, train=fake, warn=False)
    (row,) = search_record(found)
    assert row["grid"] == list(GRID3) and row["final_gap"][2] is None
    assert row["chosen_lr"] == 1e-2 and row["on_edge"] is False
    json.dumps(row)


# ----------------------------------------------------------- refinement at full length


@pytest.mark.parametrize(
    ("lo", "hi", "ratio"),
    [(1e-3, 10**-2.5, 1.33), (0.01, 0.1, 1.33), (1.0, 1.2, 1.33), (2, 9, 2.2)],
)
def test_fill_rates_spacing(lo, hi, ratio):
    pts = [lo, *fill_rates(lo, hi, ratio, digits=None), hi]
    gaps = np.diff(np.log(pts))
    assert np.all(gaps > 0)
    assert np.max(np.exp(gaps)) <= ratio * (1 + 1e-12)
    # as few points as the spacing allows: one fewer would exceed the ratio
    n = len(pts) - 1
    assert n == 1 or (hi / lo) ** (1 / (n - 1)) > ratio


def test_refinement_rates_rules():
    grid = [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]
    kw = dict(max_ratio=1.33)
    # best at the top, all stable: the gap below the best filled (4 rates at x1.259)
    new = refinement_rates(grid, [False] * 5, 1e-2, **kw)
    assert len(new) == 4 and all(3.162e-3 < v < 1e-2 for v in new)
    # interior best, next rate diverged: both sides filled (the upper one is the edge)
    new = refinement_rates(grid, [False, False, False, True, True], 1e-3, **kw)
    assert len(new) == 8 and all(3.162e-4 < v < 3.162e-3 for v in new)
    # the stability edge away from the best is filled too
    new = refinement_rates(grid, [False, False, False, False, True], 3.162e-4, **kw)
    assert sum(3.162e-3 < v < 1e-2 for v in new) == 4
    # a finished model: nothing more
    fine = [1e-3, 1.25e-3, 1.5e-3, 1.8e-3]
    assert refinement_rates(fine, [False, False, False, True], 1.25e-3, **kw) == []
    with pytest.raises(ValueError):
        refinement_rates([1e-2, 1e-3], [False, False], 1e-3, **kw)
    # rounding of rates: a spacing up to 0.1% above max_ratio counts as fine ...
    assert refinement_rates([1e-3, 1e-3 * 1.33 * 1.0005], [False, False], 1e-3, **kw) == []
    # ... beyond that it is filled
    assert len(refinement_rates([1e-3, 1e-3 * 1.33 * 1.002], [False, False], 1e-3, **kw)) == 1


def test_grid_search_with_fill_ratio_finds_best_and_edge():
    # synthetic final gap 1 + log(lr / 0.00731)^2, divergence above 0.0213: the search
    # from a grid far below must extend up, then refine to x1.33 at the best and the edge
    best, edge = 0.00731, 0.0213
    calls = []

    def fake_train(X, y, p, runs, iters, **kw):
        calls.append(len(runs))
        out = []
        for r in runs:
            lr = r.effective_lr
            div = lr > edge
            g = float("nan") if div else 1.0 + math.log(lr / best) ** 2
            out.append(
                RunResult(
                    run=r,
                    iters=np.array([0, iters]),
                    gap=np.array([5.0, g]),
                    final_gap=g,
                    diverged=div,
                )
            )
        return out

    runs = [Run("gd", lr) for lr in (1e-5, 3.162e-5, 1e-4)]
    (ms,) = grid_search(
        None,
        None,
        2.0,
        runs,
        10,
        extend=True,
        max_extensions=10,
        lr_digits=4,
        fill_ratio=1.33,
        train=fake_train,
        warn=False,
    )
    assert not ms.on_edge and ms.best_lr <= edge
    assert abs(math.log(ms.best_lr / best)) <= math.log(1.33)
    i = ms.lrs.index(ms.best_lr)
    assert ms.lrs[i + 1] / ms.best_lr <= 1.33 * 1.001 and ms.best_lr / ms.lrs[i - 1] <= 1.33 * 1.001
    div = [r.diverged for r in ms.results]
    u = div.index(True)
    assert ms.lrs[u] / ms.lrs[u - 1] <= 1.33 * 1.001
    assert len(set(ms.lrs)) == len(ms.lrs) and ms.extensions == len(calls) - 1
    with pytest.raises(ValueError, match="fill_ratio"):
        grid_search(None, None, 2.0, runs, 10, extend=True, fill_ratio=1.0, train=fake_train)
