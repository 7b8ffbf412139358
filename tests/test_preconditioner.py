"""Claim 1 / Eq. 10 / Eq. 12 against independent float64 references."""

import itertools

import pytest
import torch

from depthaccel.preconditioner import (
    claim1_eigenvalues,
    claim1_parts,
    direction_from_svd,
    end_to_end_direction,
    preconditioner_matrix,
    single_output_direction,
    thresholded_svd,
)

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)


def psd_power(A: torch.Tensor, q: float) -> torch.Tensor:
    """[A]^q of a PSD matrix through eigh, with [A]^0 = I and zero eigenvalues kept zero."""
    if q == 0:
        return torch.eye(A.shape[0], dtype=A.dtype)
    lam, Q = torch.linalg.eigh(A)
    tol = A.shape[0] * torch.finfo(A.dtype).eps * max(lam.abs().max().item(), 1e-300) * 10
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    return (Q * lam.pow(q)) @ Q.T


def explicit_sum(W: torch.Tensor, G: torch.Tensor, N: int) -> torch.Tensor:
    """Eq. 10's sum written out term by term with eigh-based fractional powers."""
    A, B = W @ W.T, W.T @ W
    return sum(psd_power(A, (j - 1) / N) @ G @ psd_power(B, (N - j) / N) for j in range(1, N + 1))


def matrix_with_singular_values(k: int, d: int, s: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(k, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    S = torch.zeros(k, d)
    for i, v in enumerate(s):
        S[i, i] = v
    return U @ S @ V.T


def cases():
    g = torch.Generator().manual_seed(1)
    yield "random_square", torch.randn(5, 5, generator=g)
    yield "random_wide", torch.randn(3, 7, generator=g)
    yield "random_tall", torch.randn(7, 3, generator=g)
    yield "row_vector", torch.randn(1, 6, generator=g)
    yield "column_vector", torch.randn(6, 1, generator=g)
    yield "zero", torch.zeros(4, 6)
    yield "rank_deficient_square", matrix_with_singular_values(5, 5, [2.0, 0.7, 0.0, 0.0, 0.0])
    yield "rank_deficient_wide", matrix_with_singular_values(4, 6, [1.5, 0.3, 0.0, 0.0])
    yield "rank_deficient_tall", matrix_with_singular_values(6, 4, [1.5, 0.0, 0.0, 0.0])
    yield "repeated", matrix_with_singular_values(5, 5, [1.3, 1.3, 1.3, 0.4, 0.4])
    yield "repeated_wide", matrix_with_singular_values(3, 5, [0.9, 0.9, 0.9])


@pytest.mark.parametrize("depth", range(1, 9))
@pytest.mark.parametrize("name,W", list(cases()), ids=[c[0] for c in cases()])
def test_closed_form_equals_explicit_sum(name, W, depth):
    G = torch.randn(W.shape, generator=torch.Generator().manual_seed(7))
    got = end_to_end_direction(W, G, depth)
    want = explicit_sum(W, G, depth)
    assert torch.allclose(got, want, atol=1e-10, rtol=1e-10), (got - want).abs().max()


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3)])
def test_cached_svd_applies_the_old_matrix_operator(shape):
    """direction_from_svd(SVD of W_old, G) is Eq. 10's sum at W_old, not at the current W."""
    g = torch.Generator().manual_seed(5)
    W_old, W_new, G = (torch.randn(*shape, generator=g) for _ in range(3))
    U, s, V = thresholded_svd(W_old)
    for N in (2, 3, 4):
        got = direction_from_svd(U, s, V, G, N)
        torch.testing.assert_close(got, explicit_sum(W_old, G, N), rtol=1e-10, atol=1e-12)
        assert not torch.allclose(got, explicit_sum(W_new, G, N), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3)])
def test_precomputed_claim1_parts_give_the_same_direction(shape):
    g = torch.Generator().manual_seed(6)
    W, G = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    U, s, V = thresholded_svd(W)
    for N in (2, 3.5):
        parts = claim1_parts(U, s, V, N)
        assert (parts[1] is None) == (shape[0] == shape[1])
        assert torch.equal(
            direction_from_svd(U, s, V, G, N, parts=parts), direction_from_svd(U, s, V, G, N)
        )


def test_thresholded_svd_zeroes_round_off_singular_values():
    W = matrix_with_singular_values(5, 4, [2.0, 1e-17, 0.0, 0.0])
    U, s, V = thresholded_svd(W)
    assert s[0] == pytest.approx(2.0) and torch.all(s[1:] == 0)
    torch.testing.assert_close((U * s) @ V.T, W, rtol=0, atol=1e-14)


def test_clustered_singular_values_are_stable():
    # s_r and s_r' differ by 1e-9: the naive (a^2-b^2)/(a^{2/N}-b^{2/N}) loses ~8 digits.
    W = matrix_with_singular_values(4, 4, [1.0, 1.0 + 1e-9, 0.5, 0.5 + 1e-12])
    G = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    for N in (2, 3, 5):
        assert torch.allclose(end_to_end_direction(W, G, N), explicit_sum(W, G, N), atol=1e-12)


@pytest.mark.parametrize(
    "a,b", [(1.3, 0.4), (0.4, 1.3), (2.0, 2.0), (1.0, 0.0), (0.0, 0.0), (3.0, 3.0 + 1e-13)]
)
@pytest.mark.parametrize("N", [1, 2, 3, 4, 8])
def test_claim1_eigenvalue_is_the_sum(a, b, N):
    want = sum(a ** (2 * (j - 1) / N) * b ** (2 * (N - j) / N) for j in range(1, N + 1))
    got = claim1_eigenvalues(torch.tensor(a), torch.tensor(b), N).item()
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("N", [1.0, 1.5, 2.5, 3.7])
def test_fractional_depth_closed_form(N):
    a, b = torch.tensor([1.7, 0.3, 0.0, 0.8]), torch.tensor([0.2, 0.3, 0.9, 0.0])
    got = claim1_eigenvalues(a, b, N)
    for i in range(4):
        ai, bi = a[i].item(), b[i].item()
        if ai == bi:
            want = N * ai ** (2 * (N - 1) / N) if ai > 0 else float(N == 1)
        else:
            want = (ai**2 - bi**2) / (ai ** (2 / N) - bi ** (2 / N))
        assert got[i].item() == pytest.approx(want, rel=1e-12)


def test_fractional_depth_interpolates_integer_depths():
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    G = torch.randn(3, 4, generator=torch.Generator().manual_seed(6))
    d2, d3 = end_to_end_direction(W, G, 2.0), end_to_end_direction(W, G, 3.0)
    d25 = end_to_end_direction(W, G, 2.5)
    assert not torch.allclose(d25, d2) and not torch.allclose(d25, d3)
    assert torch.allclose(end_to_end_direction(W, G, 3.0 - 1e-9), d3, atol=1e-7)


@pytest.mark.parametrize("N", [1, 2, 3, 4, 8, 2.5])
def test_single_output_equals_eq10(N):
    g = torch.Generator().manual_seed(11)
    for w in (torch.randn(1, 9, generator=g), torch.zeros(1, 9)):
        grad = torch.randn(1, 9, generator=g)
        assert torch.allclose(
            single_output_direction(w[0], grad[0], N),
            end_to_end_direction(w, grad, N)[0],
            atol=1e-12,
        )


def test_single_output_batched():
    g = torch.Generator().manual_seed(12)
    w, grad = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    batched = single_output_direction(w, grad, 3)
    for i in range(4):
        assert torch.allclose(batched[i], single_output_direction(w[i], grad[i], 3))


def test_end_to_end_batched_matches_loop():
    g = torch.Generator().manual_seed(13)
    W, G = torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g)
    W[1] = 0
    out = end_to_end_direction(W, G, 3)
    for i in range(3):
        assert torch.allclose(out[i], end_to_end_direction(W[i], G[i], 3))


def vec(A):
    return A.T.reshape(-1)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (4, 2), (1, 5)])
@pytest.mark.parametrize("N", [2, 3, 6])
def test_preconditioner_matrix(shape, N):
    g = torch.Generator().manual_seed(17)
    W = torch.randn(shape, generator=g)
    P = preconditioner_matrix(W, N)
    assert torch.allclose(P, P.T, atol=1e-12)
    lam = torch.linalg.eigvalsh(P)
    assert lam.min() > -1e-10
    # eigenvalues: K(s_r, s_r') over padded singular values
    k, d = shape
    s = torch.linalg.svdvals(W)
    sr, sc = torch.zeros(k), torch.zeros(d)
    sr[: s.numel()], sc[: s.numel()] = s, s
    want = sorted(
        sum(
            a ** (2 * (j - 1) / N) * b ** (2 * (N - j) / N)
            if (a > 0 or j == 1) and (b > 0 or j == N)
            else 0.0
            for j in range(1, N + 1)
        )
        for a, b in itertools.product(sr.tolist(), sc.tolist())
    )
    assert torch.allclose(lam, torch.tensor(want), atol=1e-10)
    for _ in range(3):
        G = torch.randn(shape, generator=g)
        assert torch.allclose(P @ vec(G), vec(explicit_sum(W, G, N)), atol=1e-10)


def test_depth_one_is_identity():
    g = torch.Generator().manual_seed(19)
    W, G = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    assert torch.equal(end_to_end_direction(W, G, 1), G)
    assert torch.allclose(preconditioner_matrix(W, 1), torch.eye(12))


def test_float32_matches_float64():
    g = torch.Generator().manual_seed(23)
    W = matrix_with_singular_values(6, 4, [2.0, 1.0, 1.0, 0.0])
    G = torch.randn(6, 4, generator=g)
    want = end_to_end_direction(W, G, 3)
    got = end_to_end_direction(W.float(), G.float(), 3)
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), want, atol=1e-4)
    z = end_to_end_direction(
        torch.zeros(3, 5, dtype=torch.float32), torch.ones(3, 5, dtype=torch.float32), 4
    )
    assert torch.equal(z, torch.zeros(3, 5))


@pytest.mark.parametrize("bad", [0.5, 0, -1, float("nan"), float("inf")])
def test_bad_depth(bad):
    with pytest.raises(ValueError, match="depth"):
        end_to_end_direction(torch.ones(2, 2), torch.ones(2, 2), bad)


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match="same shape"):
        end_to_end_direction(torch.ones(2, 3), torch.ones(3, 2), 2)
    with pytest.raises(ValueError, match="NaN"):
        end_to_end_direction(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2), 2)
    with pytest.raises(ValueError, match="same shape"):
        single_output_direction(torch.ones(3), torch.ones(4), 2)


def test_g_with_nan_or_inf_is_refused():
    W = torch.randn(3, 4)
    for bad in (float("nan"), float("inf")):
        G = torch.ones(3, 4)
        G[1, 2] = bad
        for depth in (1, 2, 3.5):
            with pytest.raises(ValueError, match="G contains NaN or inf"):
                end_to_end_direction(W, G, depth)


@pytest.mark.parametrize(
    "call",
    [
        lambda W, G: end_to_end_direction(W, G, 2),
        lambda W, G: single_output_direction(W[0], G[0], 2),
        lambda W, G: preconditioner_matrix(W, 2),
        lambda W, G: claim1_eigenvalues(W, G, 2),
    ],
)
def test_complex_input_is_refused(call):
    W = torch.randn(1, 4, dtype=torch.complex128)
    G = torch.randn(1, 4, dtype=torch.complex128)
    with pytest.raises(ValueError, match="complex"):
        call(W, G)


def test_complex_gradient_with_real_weight_is_refused():
    with pytest.raises(ValueError, match="G is complex"):
        end_to_end_direction(torch.randn(2, 3), torch.randn(2, 3, dtype=torch.complex128), 2)


@pytest.mark.parametrize("scale", [1e160, 1e-160, 1e-170, 1e-200])
@pytest.mark.parametrize("N", [2, 3, 4.5])
def test_single_output_at_extreme_scales_matches_general(scale, N):
    """Eq. 12 with a scaled norm: the squares of w overflow (1e160) or underflow (<1e-154)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(1, 6, generator=g, dtype=torch.float64)
    grad = torch.randn(1, 6, generator=g, dtype=torch.float64)
    ws = w * scale
    got = single_output_direction(ws[0], grad[0], N)
    assert torch.isfinite(got).all() and got.abs().max() > 0
    # the general SVD path (Eq. 10) in float64 as the independent reference
    ref = end_to_end_direction(ws, grad, N)[0]
    assert torch.allclose(got, ref, rtol=1e-10, atol=0)
    # and the exact scaling law P_{cw}(g) = c^{2(N-1)/N} P_w(g)
    unit = single_output_direction(w[0], grad[0], N)
    assert torch.allclose(got, unit * scale ** (2 * (N - 1) / N), rtol=1e-10, atol=0)


def test_scaled_norm_empty_and_zero():
    z = single_output_direction(torch.zeros(2, 4), torch.ones(2, 4), 3)
    assert torch.equal(z, torch.zeros(2, 4))
    assert single_output_direction(torch.zeros(3, 0), torch.zeros(3, 0), 3).shape == (3, 0)


def test_end_to_end_sgd_on_a_huge_row_vector_stays_finite_and_exact():
    """The issue's case: EndToEndSGD on a 1 x d weight of size 1e160 (Eq. 12's path)."""
    from depthaccel import EndToEndSGD

    g = torch.Generator().manual_seed(5)
    W0 = torch.randn(1, 7, generator=g, dtype=torch.float64) * 1e160
    G = torch.randn(1, 7, generator=g, dtype=torch.float64)
    w = torch.nn.Parameter(W0.clone())
    opt = EndToEndSGD([w], lr=1e-54, depth=3)  # a step of ~10% of W
    w.grad = G.clone()
    opt.step()
    expected = W0 - 1e-54 * end_to_end_direction(W0, G, 3)  # the SVD path as reference
    assert torch.isfinite(w).all()
    assert torch.allclose(w.detach(), expected, rtol=1e-12, atol=0)
    assert not torch.equal(w.detach(), W0)  # it moved


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_single_output_with_subnormal_weights(dtype):
    """w below the smallest normal number (its reciprocal would overflow): the scaled
    norm still gives Eq. 12; reference in float64 through logarithms."""
    import math

    base = torch.tensor([3.0, -4.0, 1.0], dtype=torch.float64)
    c = torch.finfo(dtype).tiny / 64
    w = (base * c).to(dtype)
    g = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    N = 1.5  # exponent 2 - 2/N = 2/3: the direction is far from underflow
    got = single_output_direction(w, g.to(dtype), N).double()
    nrm = base.norm().item()
    scale = math.exp((2 - 2 / N) * (math.log(nrm) + math.log(c)))
    w_hat = base / nrm
    ref = scale * (g + (N - 1) * (g @ w_hat) * w_hat)
    assert torch.allclose(got, ref, rtol=1e-12 if dtype == torch.float64 else 1e-5, atol=0)
