"""Shared problem, grid and comparison helpers of the executor tests."""

from __future__ import annotations

import numpy as np

from depthaccel.train import Run

THRESHOLDS = (1e-2, 1e-4)


def problem(m: int = 60, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = X @ rng.standard_normal(d) / 2 + 0.3 * rng.standard_normal(m)
    return X, y


def grid() -> list[Run]:
    """Eleven runs over four engine groups (width-1 gd, e2e, a width-3 adam net) and one
    that diverges."""
    return [Run("gd", lr, depth=dp) for dp in (1, 2, 3) for lr in (1e-2, 3e-2)] + [
        Run("e2e", 1e-2, depth=2),
        Run("e2e", 3e-2, depth=2),
        Run("adam", 1e-2, depth=2, hidden=3),
        Run("adam", 3e-3, depth=2, hidden=3),
        Run("gd", 10.0, depth=1),  # diverges
    ]


def assert_same(a, b):
    """Two lists of RunResult are equal, bit for bit in float64."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.run == rb.run
        assert np.array_equal(ra.iters, rb.iters)
        assert np.array_equal(ra.gap, rb.gap, equal_nan=True), ra.run
        assert ra.first_hit == rb.first_hit
        assert ra.diverged == rb.diverged and ra.diverged_at == rb.diverged_at


def max_rel_diff(a, b, lstar: float) -> float:
    """Largest |gap_a - gap_b| / L_b over all runs and logged points, where L_b = gap_b + L*
    is the loss itself (the round-off of a loss value is relative to the loss, not to
    the gap, which can be 1e-5 of it); NaN (diverged) exactly where the other is NaN."""
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        assert np.array_equal(np.isnan(ra.gap), np.isnan(rb.gap))
        ok = ~np.isnan(rb.gap)
        if ok.any():
            diff = np.abs(ra.gap[ok] - rb.gap[ok]) / np.abs(rb.gap[ok] + lstar)
            worst = max(worst, float(np.max(diff)))
    return worst


def lstar(p: float = 4.0) -> float:
    from depthaccel.losses import lp_optimum

    X, y = problem()
    return lp_optimum(X, y, p).loss
