"""The one Eq. 10 kernel against an explicit float64 sum of fractional matrix powers."""

import pytest
import torch

from depthaccel.update import end_to_end_update

DEFAULT_DTYPE = torch.float64


def psd_power(A: torch.Tensor, q: float) -> torch.Tensor:
    """[A]^q of a symmetric PSD matrix through eigh; [A]^0 = I, round-off eigenvalues -> 0."""
    lam, Q = torch.linalg.eigh(A)
    lam = torch.where(lam > 1e-12 * lam.abs().max(), lam, torch.zeros_like(lam))
    powered = torch.ones_like(lam) if q == 0 else lam.clamp(min=0) ** q
    return (Q * powered) @ Q.T


def reference(W: torch.Tensor, G: torch.Tensor, N: float, wd: float = 0.0) -> torch.Tensor:
    """Eq. 10 written out for integer N: sum_j [WW^T]^{(j-1)/N} G [W^TW]^{(N-j)/N} + wd N W."""
    out = torch.zeros_like(G)
    for j in range(1, int(N) + 1):
        out += psd_power(W @ W.T, (j - 1) / N) @ G @ psd_power(W.T @ W, (int(N) - j) / N)
    return out + wd * N * W


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SHAPES = [(3, 5), (5, 3), (4, 4), (1, 6), (6, 1), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("N", [1, 2, 3, 5])
def test_matches_explicit_sum(shape, N):
    W, G = rand(*shape, seed=1), rand(*shape, seed=2)
    D = end_to_end_update(W, G, depth=N)
    torch.testing.assert_close(D, reference(W, G, N), rtol=1e-10, atol=1e-12)


def test_rank_deficient_w_uses_identity_on_the_null_space():
    # rank 1 in 3 x 4: [W W^T]^0 = I on W's left null space, where only one term survives
    W = torch.outer(rand(3, seed=3), rand(4, seed=4))
    G = rand(3, 4, seed=5)
    for N in (2, 3):
        D = end_to_end_update(W, G, depth=N)
        torch.testing.assert_close(D, reference(W, G, N), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 5), (1, 6), (6, 1)])
def test_fractional_depth_interpolates_the_closed_form(shape):
    # N = 2.5 has no finite sum; check P_W(G) against Claim 1's basis: for a single
    # singular triple (u, s, v) the component along u v^T is scaled by N s^{2(N-1)/N}
    W, G = rand(*shape, seed=6), rand(*shape, seed=7)
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    N = 2.5
    D = end_to_end_update(W, G, depth=N)
    for r in range(s.numel()):
        u, v = U[:, r], Vh[r]
        got = u @ D @ v
        want = N * s[r] ** (2 * (N - 1) / N) * (u @ G @ v)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 5), (1, 6), (6, 1)])
def test_batched_equals_per_matrix(shape):
    W, G = rand(2, 4, *shape, seed=8), rand(2, 4, *shape, seed=9)
    wd = torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64).view(1, 4, 1, 1)
    D = end_to_end_update(W, G, depth=3, weight_decay=wd)
    assert D.shape == W.shape
    for a in range(2):
        for b in range(4):
            one = end_to_end_update(W[a, b], G[a, b], depth=3, weight_decay=float(wd[0, b]))
            torch.testing.assert_close(D[a, b], one, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(
                D[a, b], reference(W[a, b], G[a, b], 3, float(wd[0, b])), rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("N", [1, 2, 4])
def test_weight_decay_is_scaled_by_depth(N):
    W, G = rand(3, 4, seed=10), rand(3, 4, seed=11)
    base = end_to_end_update(W, G, depth=N)
    for wd in (0.05, 0.3):
        with_wd = end_to_end_update(W, G, depth=N, weight_decay=wd)
        torch.testing.assert_close(with_wd - base, wd * N * W, rtol=1e-12, atol=1e-14)
    assert torch.equal(end_to_end_update(W, G, depth=N, weight_decay=0.0), base)


def test_depth_one_is_the_gradient():
    W, G = rand(3, 4, seed=12), rand(3, 4, seed=13)
    assert torch.equal(end_to_end_update(W, G, depth=1), G)


def test_bad_inputs_are_clear_errors():
    W = rand(3, 4, seed=14)
    with pytest.raises(ValueError, match="same shape"):
        end_to_end_update(W, W[:, :3], depth=2)
    with pytest.raises(ValueError, match="same shape"):
        end_to_end_update(W[0], W[0], depth=2)
    with pytest.raises(ValueError, match="depth"):
        end_to_end_update(W, W, depth=0.5)
    with pytest.raises(ValueError, match="weight_decay"):
        end_to_end_update(W, W, depth=2, weight_decay=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        end_to_end_update(W, W, depth=2, weight_decay=float("nan"))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (1, 6)])
def test_cached_svd_uses_the_old_matrix_and_the_current_decay(shape):
    from depthaccel.preconditioner import thresholded_svd

    W_old, W, G = rand(*shape, seed=3), rand(*shape, seed=4), rand(*shape, seed=5)
    D = end_to_end_update(W, G, depth=3, weight_decay=0.1, svd=thresholded_svd(W_old))
    if shape[0] == 1:  # Eq. 12 ignores the cache: exact at the current W
        expected = reference(W, G, 3, 0.1)
    else:
        expected = reference(W_old, G, 3) + 0.1 * 3 * W
    torch.testing.assert_close(D, expected, rtol=1e-10, atol=1e-12)


def test_check_finite_can_be_left_to_the_caller():
    W, G = rand(3, 4, seed=1), rand(3, 4, seed=2)
    G[0, 0] = float("nan")
    with pytest.raises(ValueError, match="G contains NaN"):
        end_to_end_update(W, G, depth=2)
    assert torch.isnan(end_to_end_update(W, G, depth=2, check_finite=False)).any()
