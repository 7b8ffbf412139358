"""The setup axes: feature-scale presets against their closed forms, the loss scale
against the plain loss, and the dynamics it changes (one GD step at lr on the plain loss
is one step at p * lr on the paper's)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthaccel.data import standardize
from depthaccel.data.scaling import (
    DEFAULT_SETUP,
    FEATURE_SCALE_PRESETS,
    SetupAxes,
    feature_scale_factor,
    loss_scale_factor,
    parse_feature_scale,
)
from depthaccel.train import Run, train


def _zscored(m=60, d=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d)) * rng.uniform(0.5, 20, d) + rng.uniform(-5, 5, d)
    y = X @ rng.standard_normal(d) + rng.standard_normal(m)
    Xs, ys, _ = standardize(X, y)
    return Xs, ys


def test_presets_against_their_closed_forms():
    X, y = _zscored()
    m, d = X.shape
    # zscore: every column has (population) variance 1
    Xk, _ = SetupAxes("zscore").apply(X, y, 2.0)
    np.testing.assert_allclose(Xk.var(0), 1.0, rtol=1e-12)
    # unit-row: the mean squared row norm is 1
    Xk, _ = SetupAxes("zscore-unit-row").apply(X, y, 2.0)
    assert np.mean(np.sum(Xk**2, axis=1)) == pytest.approx(1.0, rel=1e-12)
    # unit-col: every centred column has Euclidean norm 1
    Xk, yk = SetupAxes("zscore-unit-col").apply(X, y, 2.0)
    np.testing.assert_allclose(np.linalg.norm(Xk - Xk.mean(0), axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(yk, y)  # the target is not touched by the feature scale
    # a number is k itself
    Xk, _ = SetupAxes(0.3).apply(X, y, 4.0)
    np.testing.assert_allclose(Xk, 0.3 * X, rtol=0, atol=0)
    assert feature_scale_factor("zscore-unit-row", m, d) == 1 / math.sqrt(d)
    assert feature_scale_factor("zscore-unit-col", m, d) == 1 / math.sqrt(m)


def test_parse_and_validation():
    assert parse_feature_scale("0.1") == 0.1
    for name in FEATURE_SCALE_PRESETS:
        assert parse_feature_scale(f" {name} ") == name
    for bad in ("zscores", "0", "-1", "nan", "inf", True, None):
        with pytest.raises(ValueError, match="feature_scale"):
            parse_feature_scale(bad)
    with pytest.raises(ValueError, match="loss_scale"):
        SetupAxes("zscore", "Paper")
    assert loss_scale_factor(4.0, "plain") == pytest.approx(math.sqrt(2.0))
    assert loss_scale_factor(3.0, "paper") == 1.0
    assert isinstance(DEFAULT_SETUP, SetupAxes)
    assert SetupAxes(0.25, "plain").label() == "k=0.25, plain loss"


@pytest.mark.parametrize("p", [2.0, 3.0, 4.0])
def test_plain_loss_is_the_mean_of_abs_r_to_the_p(p):
    # the trainer's (1/p)|r|^p on (cX, cy) is the plain mean of |r|^p on (X, y)
    X, y = _zscored(seed=1)
    w = np.random.default_rng(2).standard_normal(X.shape[1])
    Xc, yc = SetupAxes("zscore", "plain").apply(X, y, p)
    paper_form = np.mean(np.abs(Xc @ w - yc) ** p) / p
    assert paper_form == pytest.approx(np.mean(np.abs(X @ w - y) ** p), rel=1e-12)


@pytest.mark.parametrize("p", [2.0, 4.0])
@pytest.mark.parametrize("depth", [1, 2])
def test_plain_step_at_lr_equals_paper_step_at_p_lr(p, depth):
    # one GD step through the batched trainer: on the plain loss at lr, on the paper's
    # at p * lr; the plain gap is p times the paper's at both logged iterations
    X, y = _zscored(seed=3)
    Xc, yc = SetupAxes("zscore", "plain").apply(X, y, p)
    lr = 0.01
    run = dict(depth=depth, hidden=3, init="near_zero", init_scale=0.3, seed=5)
    (plain,) = train(Xc, yc, p, [Run("gd", lr, **run)], 1, log_points=2)
    (paper,) = train(X, y, p, [Run("gd", p * lr, **run)], 1, log_points=2)
    assert list(plain.iters) == [0, 1]
    np.testing.assert_allclose(plain.gap, p * paper.gap, rtol=1e-10)
    # and it is a different run from the paper's loss at the same lr
    (same_lr,) = train(X, y, p, [Run("gd", lr, **run)], 1, log_points=2)
    assert abs(plain.gap[1] / p - same_lr.gap[1]) > 1e-6 * same_lr.gap[1]


def test_gd_step_reference_in_numpy():
    # the plain-loss gradient step written out: w1 = w0 - lr * (1/m) X^T (p |r|^{p-2} r)
    p, lr = 4.0, 0.003
    X, y = _zscored(seed=4)
    Xc, yc = SetupAxes("zscore", "plain").apply(X, y, p)
    w0 = np.zeros(X.shape[1])
    r = X @ w0 - y
    w1 = w0 - lr * X.T @ (p * np.abs(r) ** (p - 2) * r) / X.shape[0]
    (res,) = train(Xc, yc, p, [Run("gd", lr, init_scale=0.0)], 1, log_points=2, optimum=0.0)
    assert res.gap[1] == pytest.approx(np.mean(np.abs(X @ w1 - y) ** p), rel=1e-10)
