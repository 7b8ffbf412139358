"""Claim 1 / Eq. 10 / Eq. 12 against independent float64 references."""

import itertools

import numpy as np
import pytest
import torch

from depthaccel.preconditioner import (
    GRAM_MAX_CONDITION,
    amortised_direction,
    amortised_parts,
    amortised_svd,
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


# ------------------------------------------- the amortised kernels (EndToEndSGD's cache)


def reference_eq10(W: np.ndarray, G: np.ndarray, N: float) -> np.ndarray:
    """Eq. 10 in numpy float64, independent of the library, from numpy's *full* SVD
    ``W = U S V^T`` (singular values below 1e-13 of the largest, round-off, set to 0).
    Integer N: the sum ``sum_j [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}`` term by term, with
    the fractional powers ``[W W^T]^q = U diag(s_row^{2q}) U^T`` (``[.]^0 = I``); the SVD
    instead of eigh of ``W W^T`` keeps the relative precision of tiny singular values. Any
    other N: Claim 1 entry by entry (``K(a, b) = (a^2 - b^2) / (a^{2/N} - b^{2/N})``,
    ``N a^{2(N-1)/N}`` for a = b, ``max^{2(N-1)/N}`` when one is 0), singular values equal
    to 1e-9 relative treated as equal (repeated ones come out a few ulps apart)."""
    U, s, Vh = np.linalg.svd(W)
    k, d = W.shape
    s = np.where(s > 1e-13 * max(s.max(initial=0.0), 1e-300), s, 0.0)
    sr = np.concatenate([s, np.zeros(k - len(s))])
    sc = np.concatenate([s, np.zeros(d - len(s))])
    if float(N).is_integer():
        N = int(N)

        def power(B, sv, q):  # [B diag(sv^2) B^T]^q
            return np.eye(len(sv)) if q == 0 else (B * sv ** (2 * q)) @ B.T

        return sum(
            power(U, sr, (j - 1) / N) @ G @ power(Vh.T, sc, (N - j) / N) for j in range(1, N + 1)
        )
    p = 2 * (N - 1) / N

    def K(a, b):
        if abs(a - b) <= 1e-9 * max(a, b):
            return N * a**p if a > 0 else 0.0
        if min(a, b) == 0:
            return max(a, b) ** p
        return (a**2 - b**2) / (a ** (2 / N) - b ** (2 / N))

    Kmat = np.array([[K(a, b) for b in sc] for a in sr])
    return U @ ((U.T @ G @ Vh.T) * Kmat) @ Vh


def test_reference_eq10_is_the_library_independent_sum():
    """The numpy reference agrees with the torch eigh sum of this file (integer N) and its
    Claim 1 form with its sum form (N = 3, via the non-integer branch at N = 3 + 1e-12)."""
    W = matrix_with_singular_values(3, 5, [1.2, 0.5, 0.0], seed=2)
    G = torch.randn(3, 5, generator=torch.Generator().manual_seed(3))
    for N in (2, 3):
        want = explicit_sum(W, G, N).numpy()
        np.testing.assert_allclose(reference_eq10(W.numpy(), G.numpy(), N), want, atol=1e-12)
    near = reference_eq10(W.numpy(), G.numpy(), 3 + 1e-12)
    np.testing.assert_allclose(near, explicit_sum(W, G, 3).numpy(), atol=1e-9)


def amortised_cases():
    """(name, W): wide, tall and square; well-conditioned (the Gram route), ill-conditioned,
    rank-deficient, zero, repeated and tiny singular values (the SVD route)."""
    g = torch.Generator().manual_seed(11)
    yield "wide_conditioned", matrix_with_singular_values(4, 9, [2.0, 1.5, 1.1, 0.3])
    yield "tall_conditioned", matrix_with_singular_values(9, 4, [2.0, 1.5, 1.1, 0.3])
    yield "square_conditioned", matrix_with_singular_values(5, 5, [1.0, 0.8, 0.5, 0.4, 0.1])
    yield "nearly_square_conditioned", matrix_with_singular_values(5, 6, [1.0, 0.8, 0.5, 0.4, 0.1])
    yield "wide_repeated_conditioned", matrix_with_singular_values(4, 7, [1.2, 1.2, 1.2, 0.5])
    yield "random_wide", torch.randn(3, 7, generator=g)
    yield "random_tall", torch.randn(8, 5, generator=g)
    yield "random_square", torch.randn(6, 6, generator=g)
    yield "ill_conditioned_wide", matrix_with_singular_values(4, 9, [1.0, 0.5, 0.1, 1e-3])
    yield "tiny_wide", matrix_with_singular_values(4, 9, [1.0, 0.7, 1e-6, 1e-7])
    yield "round_off_tall", matrix_with_singular_values(9, 4, [1.0, 0.7, 0.2, 1e-17])
    yield "rank_deficient_wide", matrix_with_singular_values(4, 6, [1.5, 0.3, 0.0, 0.0])
    yield "rank_deficient_tall", matrix_with_singular_values(6, 4, [1.5, 0.0, 0.0, 0.0])
    yield "rank_deficient_square", matrix_with_singular_values(5, 5, [2.0, 0.7, 0.0, 0.0, 0.0])
    yield "repeated_square", matrix_with_singular_values(5, 5, [1.3, 1.3, 1.3, 0.4, 0.4])
    yield "zero", torch.zeros(4, 6)


GRAM_ROUTE_CASES = {"wide_conditioned", "tall_conditioned", "nearly_square_conditioned"}
GRAM_ROUTE_CASES |= {"wide_repeated_conditioned", "random_wide", "random_tall"}


def takes_gram_route(W: torch.Tensor) -> bool:
    """amortised_svd's rule, from numpy's singular values: rectangular, condition <= 32."""
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    return W.shape[0] != W.shape[1] and s[-1] > 0 and s[0] / s[-1] <= GRAM_MAX_CONDITION


@pytest.mark.parametrize("depth", [1.5, 2, 2.5, 3, 4, 3.7])
@pytest.mark.parametrize("name,W", list(amortised_cases()), ids=[c[0] for c in amortised_cases()])
def test_amortised_direction_equals_independent_reference(name, W, depth):
    """amortised_svd + amortised_direction == Eq. 10 (numpy float64 reference) for every
    shape and spectrum, through the Gram route where W is well-conditioned and the SVD
    route otherwise; also with thresholded_svd's factorisation (the previous refresh)."""
    G = torch.randn(W.shape, generator=torch.Generator().manual_seed(8))
    want = reference_eq10(W.numpy(), G.numpy(), depth)
    U, s, V, by_gram = amortised_svd(W)
    assert by_gram == takes_gram_route(W)
    assert by_gram == (name in GRAM_ROUTE_CASES)  # both routes are exercised
    scale = max(np.abs(want).max(), 1.0)
    for svd in ((U, s, V), thresholded_svd(W)):
        got = amortised_direction(*svd, G, depth).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-11 * scale)
        parts = amortised_parts(*svd, depth)
        assert torch.equal(amortised_direction(*svd, G, depth, parts=parts), torch.tensor(got))


@pytest.mark.parametrize("shape", [(4, 9), (9, 4), (5, 5)])
def test_amortised_svd_gram_route_is_an_svd(shape):
    """The Gram route (rectangular W) and the SVD route (square W) give a thin SVD."""
    k, d = shape
    m = min(k, d)
    W = matrix_with_singular_values(k, d, [2.0, 1.0, 0.5, 0.25, 0.125][:m], seed=3)
    U, s, V, by_gram = amortised_svd(W)
    assert by_gram == (k != d) and U.shape == (k, m) and V.shape == (d, m) and s.shape == (m,)
    torch.testing.assert_close(
        s, torch.tensor([2.0, 1.0, 0.5, 0.25, 0.125][:m]), rtol=1e-14, atol=0
    )
    torch.testing.assert_close((U * s) @ V.T, W, rtol=0, atol=5e-14)
    torch.testing.assert_close(U.T @ U, torch.eye(m), rtol=0, atol=5e-14)
    torch.testing.assert_close(V.T @ V, torch.eye(m), rtol=0, atol=5e-14)


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
def test_amortised_svd_condition_limit(shape):
    """The Gram route is taken up to condition GRAM_MAX_CONDITION and not beyond; gram=False
    never takes it; route 2 is the (thresholded) SVD."""
    k, d = shape
    for kappa, gram in ((GRAM_MAX_CONDITION * 0.99, True), (GRAM_MAX_CONDITION * 1.01, False)):
        W = matrix_with_singular_values(k, d, [1.0, 0.6, 0.3, 1 / kappa], seed=4)
        assert amortised_svd(W)[3] is gram
        U, s, V, by_gram = amortised_svd(W, gram=False)
        assert by_gram is False
        torch.testing.assert_close((U * s) @ V.T, W, rtol=0, atol=1e-14)
        torch.testing.assert_close(s, torch.linalg.svdvals(W), rtol=1e-13, atol=0)
    zero = amortised_svd(torch.zeros(k, d))
    assert zero[3] is False and torch.all(zero[1] == 0)


@pytest.mark.parametrize("shape", [(64, 200), (200, 64), (64, 80)])
@pytest.mark.parametrize("depth", [1.5, 2, 3])
def test_amortised_gram_route_float32_as_accurate_as_the_svd(shape, depth):
    """In float32, at condition 30 (just inside the limit), the Gram route's direction is
    as close to the float64 reference as the exact path's (SVD + direction_from_svd)."""
    k, d = shape
    m = min(k, d)
    W = matrix_with_singular_values(k, d, np.logspace(0, -np.log10(30), m).tolist(), seed=5)
    G = torch.randn(k, d, generator=torch.Generator().manual_seed(9))
    want = torch.from_numpy(reference_eq10(W.numpy(), G.numpy(), depth))
    W32, G32 = W.float(), G.float()
    U, s, V, by_gram = amortised_svd(W32)
    assert by_gram and U.dtype == torch.float32

    def err(D):
        return ((D.double() - want).norm() / want.norm()).item()

    e_gram = err(amortised_direction(U, s, V, G32, depth))
    e_exact = err(end_to_end_direction(W32, G32, depth))
    assert e_exact < 1e-5
    assert e_gram < 2 * e_exact, (e_gram, e_exact)


def test_amortised_direction_batched_matches_loop():
    g = torch.Generator().manual_seed(12)
    for shape in ((3, 4, 7), (3, 7, 4), (2, 5, 5)):
        W, G = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        U, s, V, _ = amortised_svd(W)
        for depth in (2, 3.5):
            got = amortised_direction(U, s, V, G, depth)
            for i in range(shape[0]):
                want = amortised_direction(*amortised_svd(W[i])[:3], G[i], depth)
                torch.testing.assert_close(got[i], want, rtol=1e-12, atol=1e-12)
