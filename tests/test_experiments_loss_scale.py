"""The loss scale of a gap: paper (with 1/p) vs plain mean of |r|^p, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthaccel.experiments.loss_scale import (
    LOSS_SCALES,
    check_loss_scale,
    gap_text,
    plain_factor,
    scale_factor,
    scale_label,
)
from depthaccel.losses import lp_loss, lp_optimum


@pytest.mark.parametrize("p", [2.0, 3.0, 4.0])
def test_plain_gap_equals_numpy_plain_mean_gap(p):
    # independent reference: the plain mean (1/m) sum |x^T w - y|^p evaluated in numpy,
    # minus the same at the optimum, vs the library's paper-scale gap times plain_factor
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5))
    y = X @ rng.standard_normal(5) + 0.3 * rng.standard_normal(40)
    opt = lp_optimum(X, y, p)
    w = opt.w + 0.2 * rng.standard_normal(5)
    paper_gap = float(lp_loss(torch.as_tensor(X @ w), torch.as_tensor(y), p)) - opt.loss
    plain = np.mean(np.abs(X @ w - y) ** p) - np.mean(np.abs(X @ opt.w - y) ** p)
    assert plain_factor(p) * paper_gap == pytest.approx(plain, rel=1e-12)
    assert scale_factor(p, "plain") * paper_gap == pytest.approx(plain, rel=1e-12)


def test_scale_factor_and_validation():
    assert LOSS_SCALES == ("paper", "plain")
    assert scale_factor(4.0, "paper") == 1.0
    assert scale_factor(4.0, "plain") == 4.0
    with pytest.raises(ValueError, match="loss_scale must be one of"):
        check_loss_scale("linear")
    with pytest.raises(ValueError, match="loss_scale"):
        scale_factor(2.0, "Paper")
    with pytest.raises(ValueError, match="p must be"):
        scale_factor(0.5, "plain")
    with pytest.raises(ValueError, match="p must be"):
        plain_factor(float("nan"))


def test_gap_text_and_label():
    assert gap_text(0.0125, 4.0) == "1.250e-02 (plain 5.000e-02)"
    assert gap_text(float("nan"), 4.0) == "nan (plain nan)"
    assert gap_text(0.05, 4.0, loss_scale="plain") == "5.000e-02 (paper 1.250e-02)"
    assert "(1/p)" in scale_label(4.0, "paper") and scale_label(4.0, "paper").startswith("l4")
    assert "(1/p)" not in scale_label(2.0, "plain")
