"""Fair starts: each model's initial gap near the gap at w = 0 (numpy reference)."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments.starts import (
    check_single_layer_scale,
    initial_gaps_note,
    model_scale,
    start_note,
)
from depthaccel.losses import lp_optimum
from depthaccel.train import Run, train

DEFAULT_DTYPE = __import__("torch").float64


def test_scales():
    assert check_single_layer_scale(0) == 0.0 and check_single_layer_scale(1e-3) == 1e-3
    for bad in (0.05, -1e-4, float("nan")):
        with pytest.raises(ValueError, match="single_layer_scale"):
            check_single_layer_scale(bad)
    kw = dict(single_layer_scale=1e-3, init_scale=0.05, identity_scale=0.0)
    assert model_scale(1, "near_zero", **kw) == 1e-3
    assert model_scale(3, "near_zero", **kw) == 0.05
    assert model_scale(4, "identity", **kw) == 0.0
    with pytest.raises(ValueError):
        model_scale(1, "near_zero", single_layer_scale=0.05, init_scale=0.05)
    assert "exactly 0" in start_note(0.0, 0.05) and "0.001^2" in start_note(1e-3, 0.05)
    note = initial_gaps_note({"depth 1": [1.25, 1.5], "depth 3": [2.0]}, 4.0)
    assert "depth 1: 1.25 (plain 5) .. 1.5 (plain 6)" in note and "depth 3: 2 (plain 8)" in note


def test_every_model_starts_near_zero_in_function_space():
    # reference: the gap at w = 0, (1/m) sum (1/p)|y|^p - L*, in numpy; every fair start
    # (single layer at <= 1e-3, deep nets at 0.05 per factor) is within 2% of it, while a
    # single layer drawn at the deep nets' 0.05 is far from it
    rng = np.random.default_rng(0)
    m, d, p = 300, 64, 4.0
    X = rng.standard_normal((m, d))  # standardised features, as Ethanol's
    y = X @ rng.standard_normal(d) / np.sqrt(d) + 0.1 * rng.standard_normal(m)
    y = (y - y.mean()) / y.std()
    opt = lp_optimum(X, y, p)
    at_zero = np.mean(np.abs(y) ** p) / p - opt.loss
    runs = [
        Run("gd", 1e-9, depth=1, init_scale=0.0),
        Run("gd", 1e-9, depth=1, init_scale=1e-3, seed=1),
        Run("gd", 1e-9, depth=2, init_scale=0.05, seed=2),
        Run("gd", 1e-9, depth=3, init_scale=0.05, seed=3),
        Run("gd", 1e-9, depth=1, init_scale=0.05, seed=4),
    ]
    res = train(X, y, p, runs, 1, optimum=opt)
    g0 = [float(r.gap[0]) for r in res]
    assert g0[0] == pytest.approx(at_zero, rel=1e-12)
    for g in g0[1:4]:
        assert abs(g / at_zero - 1) < 0.02
    assert g0[4] > 1.5 * at_zero
