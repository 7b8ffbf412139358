"""The paper's learning-rate search: rate proposals and the whole loop on a synthetic
final-gap curve whose minimiser and stability edge are known."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from depthaccel.experiments.search import SearchPolicy, search_models
from depthaccel.train import Run, RunResult

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
    # the shared declarations (depthaccel.validation): bools are not numbers, a count is a
    # whole integer (2.5 used to pass as 2; lr_digits=4.0 used to fail later, formatting)
    for bad, message in (
        (dict(per_decade=True), "per_decade must be an integer >= 1, got True"),
        (dict(per_decade=2.5), "per_decade must be an integer >= 1, got 2.5"),
        (dict(lr_digits=4.0), "lr_digits must be an integer >= 3, got 4.0"),
        (dict(max_rounds=-1), "max_rounds must be an integer >= 0, got -1"),
        (dict(max_ratio=math.inf), "max_ratio must be a finite number > 1, got inf"),
        (dict(extra_lrs=(1e-3, math.nan)), "extra_lrs must be a finite number > 0, got nan"),
    ):
        with pytest.raises(ValueError) as err:
            SearchPolicy(**bad)
        assert str(err.value) == message
    assert SearchPolicy(lr_min=1e-4, lr_max=1.0, per_decade=2).grid()[:3] == [1e-4, 3.162e-4, 1e-3]
