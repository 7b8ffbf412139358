"""thm2 experiment: line integrals of the end-to-end field against independent references."""

from __future__ import annotations

import math

import numpy as np

from depthaccel.experiments import thm2
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.thm2 import (
    Config,
    constant_field_value,
    converged_integral,
    field,
    line_integral,
    lp_gradient,
    regression_problem,
)


def _polygon_integral(F, e, f, r, R, t1, t2, n=20000):
    """Independent reference: the closed curve as a fine polygon, midpoint rule on each
    chord, the field written out by hand (not through the library)."""
    th = np.linspace(t1, t2, n)
    u = lambda t: np.cos(t)[:, None] * e + np.sin(t)[:, None] * f
    rho = np.linspace(r, R, n)
    pts = np.concatenate(
        [
            rho[:, None] * u(np.full(n, t1)),
            R * u(th),
            rho[::-1, None] * u(np.full(n, t2)),
            r * u(th[::-1]),
        ]
    )
    mid = (pts[1:] + pts[:-1]) / 2
    return float(np.sum(np.sum(F(mid) * np.diff(pts, axis=0), axis=1)))


def _field_by_hand(grad, N):
    def F(w):
        g = grad(w)
        nrm = np.linalg.norm(w, axis=1, keepdims=True)
        wh = w / nrm
        return nrm ** (2 - 2 / N) * (g + (N - 1) * np.sum(g * wh, axis=1, keepdims=True) * wh)

    return F


def _setup():
    cfg = Config()
    X, y = regression_problem(cfg)
    grad = lp_gradient(X, y, 2)
    kappa = grad(np.zeros(cfg.d))
    e = kappa / np.linalg.norm(kappa)
    f = np.random.default_rng(5).standard_normal(cfg.d)
    f -= (f @ e) * e
    f /= np.linalg.norm(f)
    return cfg, grad, kappa, e, f


def test_lp_gradient_matches_finite_differences():
    cfg = Config(p=4)
    X, y = regression_problem(cfg)
    g = lp_gradient(X, y, 4)
    w = np.random.default_rng(0).standard_normal(cfg.d) * 0.1
    L = lambda w: np.mean((X @ w - y) ** 4) / 4
    h = 1e-6
    fd = np.array([(L(w + h * ei) - L(w - h * ei)) / (2 * h) for ei in np.eye(cfg.d)])
    np.testing.assert_allclose(g(w), fd, rtol=1e-7)


def test_quadrature_agrees_with_polygon_reference():
    cfg, grad, _, e, f = _setup()
    for N in (1.0, 2.0, 3.0, 8.0):
        got = converged_integral(field(grad, N), e, f, 0.05, 0.1, 0.0, math.pi / 2, 16, 4096)
        ref = _polygon_integral(_field_by_hand(grad, N), e, f, 0.05, 0.1, 0.0, math.pi / 2)
        assert abs(got["value"] - ref) <= 1e-6 * got["scale"], (N, got, ref)


def test_constant_field_closed_form():
    _, _, kappa, e, f = _setup()
    const = lambda w: np.broadcast_to(kappa, w.shape).copy()
    kn = float(np.linalg.norm(kappa))
    for N in (1.0, 2.0, 3.0, 4.0, 2.5):
        for t1, t2 in ((0.0, math.pi / 2), (0.3, 2.0)):
            got = converged_integral(field(const, N), e, f, 0.02, 0.07, t1, t2, 16, 4096)
            cf = constant_field_value(kn, N, 0.02, 0.07, t1, t2)
            assert abs(got["value"] - cf) <= 1e-13 * got["scale"]
    # N = 3 by hand: a = 7/3, (N-1)(N-2)/(N a) = 2/7
    assert math.isclose(
        constant_field_value(1.0, 3, 0.0, 1.0, 0.0, math.pi / 2), 2 / 7, rel_tol=1e-15
    )


def test_nonzero_for_N3_zero_for_gradient_field():
    _, grad, _, e, f = _setup()
    one = converged_integral(field(grad, 1.0), e, f, 0.05, 0.1, 0.0, math.pi / 2, 16, 4096)
    three = converged_integral(field(grad, 3.0), e, f, 0.05, 0.1, 0.0, math.pi / 2, 16, 4096)
    assert abs(one["value"]) < 1e-14 * one["scale"]
    assert abs(three["value"]) > 1e10 * max(three["error"], 1e-300)
    assert abs(three["value"]) > 1e-2 * three["scale"]
    # n nodes vs 2n: the error estimate is honest (the n-node value is off by about it)
    a, _ = line_integral(field(grad, 3.0), e, f, 0.05, 0.1, 0.0, math.pi / 2, 4)
    b, _ = line_integral(field(grad, 3.0), e, f, 0.05, 0.1, 0.0, math.pi / 2, 8)
    assert abs(a - three["value"]) > abs(b - three["value"])


def test_quick_run_claims(tmp_path):
    cfg = Config.quick()
    m = thm2.measure(cfg, ExperimentContext(tmp_path, quick=True))
    claims = thm2.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS"] * len(claims), [c.measured for c in claims]
    vals = {(x["depth"], x["R"]): x for x in thm2.settings(m, cfg)["integrals"]}
    i3 = vals[(3.0, 0.1)]
    assert abs(i3["I"]) > 1e6 * max(i3["quadrature_error"], 1e-300)
    assert abs(vals[(1.0, 0.1)]["I"]) < 1e-15
    thm2.render(m, claims, tmp_path)
    assert (tmp_path / "thm2.png").is_file() and (tmp_path / "integrals.csv").is_file()


def _synthetic(i3: float, i1: float) -> thm2.Measured:
    """Rows for N = 1, 3 at two radii; ``i3``/``i1``: the regression integrals."""
    cfg = Config(depths=(1.0, 3.0), radii=(0.2, 0.1))
    rows = []
    for depth, value in ((1.0, i1), (3.0, i3)):
        for R in cfg.radii:
            q = {"value": value, "error": 1e-18, "scale": 1.0, "nodes": 32}
            lin = {"value": 0.5, "error": 0.0, "scale": 1.0, "nodes": 32}
            rows.append(
                {"depth": depth, "R": R, "r": R / 2, "regression": q, "linear": lin,
                 "closed_form_linear": 0.5}
            )  # fmt: skip
    z = np.zeros(2)
    return thm2.Measured(False, cfg, 1.0, z, z, z, z, rows), cfg


def test_judge_on_synthetic_integrals():
    m, cfg = _synthetic(i3=0.49, i1=1e-16)
    claims = thm2.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS", "PASS", "PASS"]
    assert claims[0].statement.startswith("N = 3:") and claims[0].measured.startswith(
        "I = 4.900e-01"
    )
    # N = 3's integral at round-off: FAIL; N = 1's integral clearly non-zero: FAIL
    m, cfg = _synthetic(i3=1e-17, i1=1e-6)
    claims = thm2.judge(m, cfg)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL", "PASS", "FAIL"]
    assert claims[1].why == "1.0e-06 is above the round-off bound 1e-12"
