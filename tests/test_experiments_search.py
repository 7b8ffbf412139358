"""The paper's learning-rate search: rate proposals and the whole loop on a synthetic
final-gap curve whose minimiser and stability edge are known."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from depthaccel.experiments.search import (
    SearchPolicy,
    fill_rates,
    propose_rates,
    search_models,
)
from depthaccel.train import Run, RunResult


@pytest.mark.parametrize(
    ("lo", "hi", "ratio"),
    [(1e-3, 10**-2.5, 1.33), (0.01, 0.1, 1.33), (1.0, 1.2, 1.33), (2, 9, 2.2)],
)
def test_fill_rates_spacing(lo, hi, ratio):
    pts = [lo, *fill_rates(lo, hi, ratio, digits=12), hi]
    gaps = np.diff(np.log(pts))
    assert np.all(gaps > 0)
    assert np.max(np.exp(gaps)) <= ratio * (1 + 1e-12)
    # as few points as the spacing allows: one fewer would exceed the ratio
    n = len(pts) - 1
    assert n == 1 or (hi / lo) ** (1 / (n - 1)) > ratio


def test_propose_rates_rules():
    grid = [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]
    kw = dict(step=10**0.5, max_ratio=1.33)
    # every run diverged: one step below
    assert propose_rates(grid, [True] * 5, None, **kw) == [pytest.approx(3.162e-5)]
    # best at the top, all stable: one step above, and the gap below the best filled
    new = propose_rates(grid, [False] * 5, 1e-2, **kw)
    assert new[-1] == pytest.approx(3.162e-2, rel=1e-3)
    assert all(3.162e-3 < v < 1e-2 for v in new[:-1]) and len(new) == 5
    # best at the bottom: one step below plus the fill above it
    new = propose_rates(grid, [False] * 5, 1e-4, **kw)
    assert new[0] == pytest.approx(3.162e-5, rel=1e-3) and len(new) == 5
    # interior best, next rate diverged: fill both sides (the upper side is the edge)
    new = propose_rates(grid, [False, False, False, True, True], 1e-3, **kw)
    assert len(new) == 8 and all(3.162e-4 < v < 3.162e-3 for v in new)
    # stability edge away from the best: filled too
    new = propose_rates(grid, [False, False, False, False, True], 3.162e-4, **kw)
    assert any(3.162e-3 < v < 1e-2 for v in new)
    # a finished model: nothing more
    fine = [1e-3, 1.25e-3, 1.5e-3, 1.8e-3]
    assert propose_rates(fine, [False, False, False, True], 1.25e-3, **kw) == []
    with pytest.raises(ValueError):
        propose_rates([1e-2, 1e-3], [False, False], 1e-3, **kw)


# ---- the whole loop on a synthetic curve: gap(lr) = 1 + log(lr / 0.00731)^2, divergence
# above 0.0213 (known answers: the best rate of any grid is the one closest to 0.00731 in
# log distance among the stable ones)

_BEST, _EDGE = 0.00731, 0.0213


def _gap(lr: float) -> float:
    return 1.0 + math.log(lr / _BEST) ** 2


@dataclass
class _FakeCtx:
    calls: list = field(default_factory=list)

    def train(self, X, y, p, runs, iters, **options):
        self.calls.append(len(runs))
        out = []
        for r in runs:
            lr = r.effective_lr
            div = lr > _EDGE
            g = float("nan") if div else _gap(lr)
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


def test_search_models_finds_the_best_and_the_edge():
    ctx = _FakeCtx()
    policy = SearchPolicy(lr_min=1e-5, lr_max=1e-4, per_decade=2, max_ratio=1.33)
    models = [Run("gd", 1.0, depth=1, seed=0), Run("gd", 1.0, depth=2, seed=0)]
    found, record = search_models(ctx, None, None, 4.0, models, policy, 100)
    assert len(found) == 2 and len(ctx.calls) >= 3  # the coarse grid is far below the best
    for ms, row in zip(found, record["search"], strict=True):
        assert not ms.on_edge
        assert ms.best_lr <= _EDGE
        # the best is within x1.33 of the true minimiser and its neighbours are close
        assert abs(math.log(ms.best_lr / _BEST)) <= math.log(1.33)
        assert row["spacing_at_best"] <= 1.33 * 1.001
        assert row["spacing_at_stability_edge"] <= 1.33 * 1.001
        assert row["chosen_lr"] == ms.best_lr and row["initial_gap"] == 5.0
        # no rate trained twice, and the chosen one is the lowest gap trained
        assert len(set(ms.lrs)) == len(ms.lrs)
        assert ms.best.final_gap == min(_gap(v) for v in ms.lrs if v <= _EDGE)


def test_search_models_round_cap_and_extra_rates():
    ctx = _FakeCtx()
    policy = SearchPolicy(lr_min=1e-7, lr_max=1e-6, per_decade=1, max_rounds=1, extra_lrs=(0.005,))
    (ms,), record = search_models(ctx, None, None, 2.0, [Run("gd", 1.0)], policy, 10)
    assert 0.005 in ms.lrs and len(ctx.calls) == 2  # the coarse call and one round
    assert record["policy"]["max_rounds"] == 1


def test_policy_validation():
    for bad in (
        dict(lr_min=0.0),
        dict(lr_min=1.0, lr_max=0.1),
        dict(per_decade=0),
        dict(max_ratio=1.0),
        dict(max_rounds=-1),
        dict(extra_lrs=(-1.0,)),
    ):
        with pytest.raises(ValueError):
            SearchPolicy(**bad)
    assert SearchPolicy(lr_min=1e-4, lr_max=1.0, per_decade=2).grid()[:3] == [1e-4, 3.162e-4, 1e-3]
