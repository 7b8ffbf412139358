"""The stability edge of Eq. 12 near a minimiser, against a closed form and the dynamics."""

import numpy as np
import pytest
import torch

from depthaccel.losses import lp_hessian, lp_optimum
from depthaccel.preconditioner import single_output_direction
from depthaccel.stability import eq12_paths, path_edges, stability_edge, start_edge


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


# ------------------------------------------------------------------ along the path


@pytest.mark.parametrize("N", [1.0, 2.0, 3.0, 2.5])
@pytest.mark.parametrize("p", [2.0, 4.0])
def test_path_edge_at_the_minimiser_is_the_edge_there(N, p):
    # the along-path edge and the at-w* edge must agree where the path is at w*
    X, y = problem()
    w = lp_optimum(X, y, p).w
    H = lp_hessian(X, y, w, p)
    (e,) = path_edges(X, y, p, w[None, :], N)
    assert e == pytest.approx(stability_edge(H, w, N), rel=1e-10)
    assert e == pytest.approx(closed_form_edge(H, w, N), rel=1e-10)


@pytest.mark.parametrize("N", [1.0, 3.0])
def test_path_edges_at_arbitrary_points_use_the_hessian_there(N):
    X, y = problem(seed=2)
    rng = np.random.default_rng(0)
    ws = rng.standard_normal((4, X.shape[1]))
    ws[2] = np.nan  # a diverged point: NaN, not an error
    got = path_edges(X, y, 4.0, ws, N)
    for w, g in zip(ws[[0, 1, 3]], got[[0, 1, 3]], strict=True):
        assert g == pytest.approx(closed_form_edge(lp_hessian(X, y, w, 4.0), w, N), rel=1e-10)
    assert np.isnan(got[2])


def test_start_edge_is_gradient_descents_edge_at_zero():
    X, y = problem()
    H0 = ((4.0 - 1) / len(y)) * X.T @ (y[:, None] ** 2 * X)  # H(0) for p = 4, written out
    assert start_edge(X, y, 4.0) == pytest.approx(2 / np.linalg.eigvalsh(H0)[-1], rel=1e-12)
    assert start_edge(X, y, 2.0) == pytest.approx(
        2 / np.linalg.eigvalsh(X.T @ X / len(y))[-1], rel=1e-12
    )


@pytest.mark.parametrize("p", [2.0, 4.0])
def test_eq12_paths_follow_the_librarys_direction(p):
    # reference: a float64 loop with the library's Eq. 12 kernel and torch's autograd
    X, y = problem(m=30, d=4, seed=5, scale=1.0)
    rng = np.random.default_rng(1)
    w0 = 0.1 * rng.standard_normal((3, 4))
    depths = [1.0, 2.0, 3.0]
    lr, T = 0.01, 60
    paths = eq12_paths(X, y, p, w0, depths, lr, T, n_points=T + 1)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for i, N in enumerate(depths):
        w = torch.as_tensor(w0[i]).clone()
        for t in range(T + 1):
            np.testing.assert_allclose(paths[i].w[t], w.numpy(), rtol=1e-11, atol=1e-14)
            v = w.clone().requires_grad_(True)
            loss = ((Xt @ v - yt).abs() ** p).mean() / p
            assert paths[i].loss[t] == pytest.approx(float(loss.detach()), rel=1e-12)
            (g,) = torch.autograd.grad(loss, v)
            w = w - lr * single_output_direction(w, g, N)
        assert paths[i].diverged_at is None


def test_divergence_is_predicted_by_the_path_edge():
    # depth-1 GD above the start edge diverges, and the path says so before it does;
    # below the edge at every visited point, the run settles
    X, y = problem(seed=3)
    edge0 = start_edge(X, y, 2.0)  # l2: the edge is the same everywhere
    w0 = np.zeros((1, X.shape[1]))
    (bad,) = eq12_paths(X, y, 2.0, w0, [1.0], 1.05 * edge0, 2000, n_points=201)
    assert bad.diverged_at is not None
    assert bad.first_unstable(1.05 * edge0) is not None
    assert bad.first_unstable(1.05 * edge0) <= bad.diverged_at
    (good,) = eq12_paths(X, y, 2.0, w0, [1.0], 0.95 * edge0, 2000, n_points=201)
    assert good.diverged_at is None and good.first_unstable(0.95 * edge0) is None
    assert good.loss[-1] == pytest.approx(lp_optimum(X, y, 2.0).loss, rel=1e-8)
    with pytest.raises(ValueError, match="depths"):
        eq12_paths(X, y, 2.0, w0, [0.5], 0.1, 10)


def test_a_diverging_path_is_caught_quietly():
    """A run far above the edge overflows on its way out; the path records where it
    diverged and numpy says nothing (Ray workers printed these warnings into the log)."""
    import warnings

    X, y = problem(seed=3)
    w0 = np.full((2, X.shape[1]), 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = eq12_paths(X, y, 4.0, w0, [2.0, 3.0], 1.0, 3000, n_points=31)
    assert all(p.diverged_at is not None for p in paths)
