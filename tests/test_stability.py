"""The stability edge of Eq. 12 near a minimiser, against a closed form and the dynamics."""

import numpy as np
import pytest
import torch

from depthaccel.losses import lp_hessian, lp_optimum
from depthaccel.preconditioner import single_output_direction
from depthaccel.stability import stability_edge


def problem(m=40, d=5, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = X @ (scale * rng.standard_normal(d)) + 0.5 * rng.standard_normal(m)
    return X, y


def closed_form_edge(H, w, N):
    """2 / lambda_max(P H) with the single-output P written out (no Claim 1 machinery):
    P = ||w||^{2-2/N} (I + (N-1) w_hat w_hat^T); eigenvalues of the non-symmetric P H."""
    n = np.linalg.norm(w)
    P = n ** (2 - 2 / N) * (np.eye(len(w)) + (N - 1) * np.outer(w / n, w / n))
    return 2.0 / np.max(np.linalg.eigvals(P @ H).real)


@pytest.mark.parametrize("N", [1.0, 1.5, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("p", [2.0, 4.0])
def test_edge_matches_the_closed_form_preconditioner(N, p):
    X, y = problem()
    w = lp_optimum(X, y, p).w
    H = lp_hessian(X, y, w, p)
    assert stability_edge(H, w, N) == pytest.approx(closed_form_edge(H, w, N), rel=1e-10)


def test_depth_one_is_gradient_descents_edge_and_depth_tightens_it():
    X, y = problem()
    w = lp_optimum(X, y, 4.0).w
    H = lp_hessian(X, y, w, 4.0)
    assert stability_edge(H, w, 1) == pytest.approx(2 / np.linalg.eigvalsh(H)[-1], rel=1e-12)
    lam, n = np.linalg.eigvalsh(H)[-1], np.linalg.norm(w)
    for N in (2, 3, 4):
        e = stability_edge(H, w, N)
        assert 2 / (N * n ** (2 - 2 / N) * lam) * (1 - 1e-12) <= e
        assert e <= 2 / (n ** (2 - 2 / N) * lam) * (1 + 1e-12)


def run_eq12(X, y, p, w0, lr, N, steps):
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    w = torch.from_numpy(w0.copy())
    for _ in range(steps):
        r = Xt @ w - yt
        g = Xt.T @ (r.abs() ** (p - 2) * r) / len(y)
        w = w - lr * single_output_direction(w, g, N)
        if not torch.isfinite(w).all():
            break
    return w.numpy()


@pytest.mark.parametrize("N", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("p", [2.0, 4.0])
def test_the_edge_separates_settling_from_leaving_the_minimiser(N, p):
    """Eq. 12 itself (the library's single-output direction), started 1e-6 from w*: below
    the edge the perturbation dies, just above it grows."""
    X, y = problem(d=4, seed=1)
    w_star = lp_optimum(X, y, p).w
    edge = stability_edge(lp_hessian(X, y, w_star, p), w_star, N)
    w0 = w_star + 1e-6 * np.random.default_rng(2).standard_normal(len(w_star))
    below = run_eq12(X, y, p, w0, 0.95 * edge, N, 3000)
    above = run_eq12(X, y, p, w0, 1.05 * edge, N, 3000)
    assert np.linalg.norm(below - w_star) < 1e-8
    assert not np.isfinite(above).all() or np.linalg.norm(above - w_star) > 1e-3


def test_edge_is_infinite_at_zero_for_deep_nets_and_input_is_checked():
    H = np.eye(3)
    assert stability_edge(H, np.zeros(3), 2) == float("inf")
    assert stability_edge(H, np.zeros(3), 1) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shape"):
        stability_edge(np.eye(2), np.ones(3), 2)
    with pytest.raises(ValueError, match="symmetric"):
        stability_edge(np.triu(np.ones((3, 3))), np.ones(3), 2)
    with pytest.raises(ValueError, match="finite"):
        stability_edge(H, np.array([1.0, np.inf, 0.0]), 2)
    with pytest.raises(ValueError, match="depth"):
        stability_edge(H, np.ones(3), 0.5)


@pytest.mark.parametrize("N", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("p", [2.0, 4.0])
def test_the_edge_scales_as_the_target_to_the_power_minus_p_minus_2_over_n(N, p):
    """Scaling the target by c scales w* by c, H by c^(p-2) and P by c^(2-2/N), so the
    edge by c^-(p - 2/N) (what fig2's note uses to say how the data scale moves it)."""
    X, y = problem(seed=5)
    c = 0.37

    def edge(yy):
        w = lp_optimum(X, yy, p).w
        return stability_edge(lp_hessian(X, yy, w, p), w, N)

    assert edge(c * y) == pytest.approx(edge(y) * c ** -(p - 2 / N), rel=1e-8)
