r"""The end-to-end preconditioner of a depth-N linear network (Theorem 1, Claim 1, Claim 2).

Arora, Cohen & Hazan (ICML 2018) show that gradient descent on a balanced depth-N
factorisation ``W_e = W_N ... W_1`` moves the end-to-end matrix, to first order in the
learning rate, as (Eq. 10)::

    W_e <- (1 - eta*lambda*N) W_e - eta * P_{W_e}(G),
    P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N},

where ``G = dL^1/dW (W_e)`` and ``[A]^q`` is the fractional power of a PSD matrix
(``[A]^0 = I``, also on A's null space). This module computes ``P_W(G)`` -- the
*direction* of the update, without learning rate or weight decay.

Claim 1: with the SVD ``W = sum_r s_r u_r v_r^T`` the operator is diagonal in the basis
``u_r v_{r'}^T`` with eigenvalue::

    K(a, b) = sum_{j=1..N} a^{2(j-1)/N} b^{2(N-j)/N}
            = (a^2 - b^2) / (a^{2/N} - b^{2/N})      (a != b)
            = N a^{2(N-1)/N}                          (a == b)

(a singular value that is 0 contributes ``0^0 = 1`` to the one surviving term). The
closed form is defined for any real N >= 1. We evaluate it stably as::

    K(a, b) = hi^{2(N-1)/N} * expm1(N u) / expm1(u),   u = (2/N) log(lo / hi) <= 0,

with ``hi = max(a, b)``, ``lo = min(a, b)``: the ratio is N at u = 0 and 1 at lo = 0, and
has no cancellation for clustered singular values.

Singular values below ``rtol * s_max`` (``rtol = max(k, d) * eps`` by default) are
treated as exact zeros: a fractional power of a round-off-sized singular value would
otherwise turn noise into a large spurious component (``(1e-16)^{1/4} = 1e-4``).

Only real tensors are accepted: the paper's operator is defined for real matrices, and a
complex W would need the conjugate transpose ``W^H`` throughout. Complex input is refused
with a ``ValueError`` rather than silently using the plain transpose.
"""

from __future__ import annotations

import torch

__all__ = [
    "GRAM_MAX_CONDITION",
    "amortised_direction",
    "amortised_parts",
    "amortised_svd",
    "claim1_eigenvalues",
    "claim1_parts",
    "direction_from_svd",
    "end_to_end_direction",
    "single_output_direction",
    "preconditioner_matrix",
    "thresholded_svd",
]


def _check_depth(depth: float) -> float:
    depth = float(depth)
    if not depth >= 1.0 or depth != depth or depth == float("inf"):
        raise ValueError(f"depth must be a finite real number >= 1, got {depth!r}")
    return depth


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")


def _check_real(**tensors: torch.Tensor) -> None:
    """Refuse complex (and non-floating) tensors: the formulas here use the real transpose."""
    for name, t in tensors.items():
        if t.is_complex():
            raise ValueError(
                f"{name} is complex ({t.dtype}); the end-to-end preconditioner is defined for "
                "real matrices only (pass the real and imaginary parts as separate real weights)"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _check_all_finite(W: torch.Tensor, G: torch.Tensor, wname: str, gname: str) -> None:
    """One host sync for both tensors; the message names the offending one."""
    if bool(torch.isfinite(W).all() & torch.isfinite(G).all()):
        return
    bad = wname if not torch.isfinite(W).all() else gname
    raise ValueError(f"{bad} contains NaN or inf")


def claim1_eigenvalues(a: torch.Tensor, b: torch.Tensor, depth: float) -> torch.Tensor:
    r"""Claim 1's eigenvalue ``K(a, b) = sum_{j=1..N} a^{2(j-1)/N} b^{2(N-j)/N}``, elementwise.

    ``a`` and ``b`` are tensors of non-negative singular values that broadcast against each
    other; ``depth`` is N (any real >= 1). ``K`` is symmetric in (a, b),
    ``K(s, s) = N s^{2(N-1)/N}``, ``K(s, 0) = s^{2(N-1)/N}`` and ``K(0, 0) = [N == 1]``.
    Complex input is refused (``ValueError``).
    """
    n = _check_depth(depth)
    _check_real(a=a, b=b)
    a, b = torch.broadcast_tensors(a, b)
    if n == 1.0:
        return torch.ones_like(a)
    hi = torch.maximum(a, b)
    lo = torch.minimum(a, b)
    hi_pos = hi > 0
    safe_hi = torch.where(hi_pos, hi, torch.ones_like(hi))
    u = (2.0 / n) * (torch.log(lo) - torch.log(safe_hi))  # <= 0, -inf where lo == 0
    den = torch.expm1(u)
    ratio = torch.where(
        u == 0,
        torch.full_like(u, n),
        torch.expm1(n * u) / torch.where(u == 0, torch.ones_like(den), den),
    )
    scale = safe_hi.pow(2.0 * (n - 1.0) / n)
    return torch.where(hi_pos, scale * ratio, torch.zeros_like(hi))


def thresholded_svd(
    w: torch.Tensor, rtol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``w = U diag(s) V^T`` as ``(U, s, V)``, singular values below ``rtol * s_max``
    set to exactly 0 (default ``rtol = max(k, d) * eps``). Only the dtype is checked (complex
    input is refused); finiteness is left to callers."""
    _check_real(W=w)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    if rtol is None:
        rtol = max(w.shape[-2], w.shape[-1]) * torch.finfo(w.dtype).eps
    smax = s[..., :1]
    s = torch.where(s > rtol * smax, s, torch.zeros_like(s))
    return u, s, vh.mT


def end_to_end_direction(
    W: torch.Tensor,
    G: torch.Tensor,
    depth: float,
    *,
    rtol: float | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Eq. 10's direction ``P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}``.

    Computed through one thin SVD ``W = U diag(s) V^T`` (m = min(k, d) columns) and the
    Claim 1 closed form::

        P_W(G) = U [(U^T G V) * K(s, s)] V^T
                 + U diag(K(s, 0)) U^T G (I - V V^T)      (only when k < d)
                 + (I - U U^T) G V diag(K(s, 0)) V^T      (only when k > d)

    where the two last terms are G's parts outside W's row or column space, on which
    one factor's power is ``[0]^0 = I`` and only one term of the sum survives.

    Args:
        W: end-to-end matrix, shape ``(..., k, d)`` (leading batch dimensions allowed).
        G: gradient ``dL^1/dW`` at W, same shape as W.
        depth: N, any real number >= 1 (N = 1 returns G unchanged).
        rtol: singular values below ``rtol * s_max`` count as zero; default
            ``max(k, d) * eps``.
        check_finite: refuse NaN/inf in W or G (one host sync); False for callers that
            checked already (e.g. one fused check over all gradients per optimizer step).

    Returns:
        ``P_W(G)``, same shape and dtype as G.

    Raises:
        ValueError: bad depth, shapes that differ, complex or integer W or G (only real
            matrices are supported; the plain transpose would be wrong for complex ones),
            or NaN/inf in W or in G.
    """
    n = _check_depth(depth)
    _check_real(W=W, G=G)
    if W.shape != G.shape or W.dim() < 2:
        raise ValueError(
            f"W and G must have the same shape (..., k, d); got {tuple(W.shape)} and {tuple(G.shape)}"
        )
    if check_finite:
        _check_all_finite(W, G, "W", "G")
    if n == 1.0:
        return G.clone()
    U, s, V = thresholded_svd(W, rtol)
    return direction_from_svd(U, s, V, G, n)


def claim1_parts(
    U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, depth: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r"""What :func:`direction_from_svd` needs besides G, for reuse across gradients:
    ``(Kmat, c, C)`` with ``Kmat = K(s_r, s_r')`` (Claim 1's eigenvalues, m x m),
    ``c = K(s, 0) = s^{2(N-1)/N}`` and ``C = U diag(c) U^T`` (k < d) or ``V diag(c) V^T``
    (k > d); c and C are None for a square W."""
    n = float(depth)
    k, d = U.shape[-2], V.shape[-2]
    Kmat = claim1_eigenvalues(s.unsqueeze(-1), s.unsqueeze(-2), n)
    if k == d:
        return Kmat, None, None
    c = claim1_eigenvalues(s, torch.zeros_like(s), n)  # K(s, 0) = s^{2(N-1)/N}
    B = U if k < d else V  # the square factor
    return Kmat, c, (B * c.unsqueeze(-2)) @ B.mT


def direction_from_svd(
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    G: torch.Tensor,
    depth: float,
    *,
    parts: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    r"""Claim 1's operator of ``W = U diag(s) V^T`` applied to G: ``P_W(G)`` of Eq. 10.

    ``(U, s, V)`` is a thin SVD as :func:`thresholded_svd` returns it (U: ``(..., k, m)``,
    s: ``(..., m)``, V: ``(..., d, m)``, m = min(k, d)); G has shape ``(..., k, d)``. The
    formula is the one of :func:`end_to_end_direction`. Given the SVD of an *earlier* W
    (a cached factorisation) it applies that W's operator to the current G. ``parts``:
    :func:`claim1_parts` of the same SVD and depth, if already computed. No input checks.
    """
    Kmat, c, C = claim1_parts(U, s, V, depth) if parts is None else parts
    k, d = G.shape[-2], G.shape[-1]
    core = U.mT @ (G @ V)  # (..., m, m)
    M = core * Kmat
    if k == d:
        return (U @ M) @ V.mT
    # G's part outside W's row (k < d) or column (k > d) space, written so that only
    # three or four products have the large size k*d*m:
    #   k < d: U diag(c) U^T G (I - V V^T) = C G - U (c * core) V^T,  C = U diag(c) U^T
    #   k > d: (I - U U^T) G V diag(c) V^T = G C - U (core * c) V^T,  C = V diag(c) V^T
    if k < d:  # U is square (k x k)
        return (U @ (M - c.unsqueeze(-1) * core)) @ V.mT + C @ G
    return U @ ((M - core * c.unsqueeze(-2)) @ V.mT) + G @ C


# ------------------------------------------------- the amortised preconditioner's kernels

GRAM_MAX_CONDITION = 32.0
"""Largest condition number ``s_max / s_min`` for which :func:`amortised_svd` takes the
Gram-matrix route (see there)."""


def amortised_svd(
    w: torch.Tensor, rtol: float | None = None, *, gram: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    r"""Thin SVD ``w = U diag(s) V^T`` as ``(U, s, V, by_gram)``, computed for speed, for the
    refresh of the amortised preconditioner (``EndToEndSGD(precondition_every=K > 1)``);
    ``by_gram`` says which route below gave it (``gram=False``: route 2 without trying 1).

    w is ``(..., k, d)``; m = min(k, d), n = max(k, d). Two routes:

    1. **Gram route** (a well-conditioned w). The eigendecomposition of the m x m Gram
       matrix of the short side, ``w w^T = Q diag(e) Q^T`` (k <= d; ``w^T w`` for k > d),
       gives the short side's singular vectors Q and ``s = sqrt(e)``; the long side's are
       ``w^T Q diag(1/s)`` (k <= d; ``w Q diag(1/s)`` for k > d). Cost ``2 m^2 n`` + one
       m x m ``eigh``, a fraction of an SVD's (measured in benchmarks/README.md).
    2. Otherwise :func:`thresholded_svd` of the **tall orientation** (``w^T`` when k < d,
       so ``U`` and ``V`` swap): LAPACK's SVD, as accurate as that of w, and with MKL
       several times faster for a wide matrix than for its transpose.

    *Why the Gram route needs a condition.* Forming ``w w^T`` and its ``eigh`` cost each
    eigenvalue ``e = s^2`` an absolute error of a few ``eps * s_max^2``, so s itself is
    known only to a relative ``~ eps (s_max / s)^2`` (and the long side's vectors, which
    are divided by s, likewise), where the SVD keeps ``~ eps s_max / s``. Singular values
    near the SVD's round-off level (``rtol * s_max``) would come out as noise of size
    ``sqrt(eps) s_max``, and Eq. 10 raises them to the power ``2(N-1)/N`` (< 1 for N < 2:
    ``(1e-4)^{0.4} = 0.03`` at N = 1.25), so treating them as zero is not enough to be
    safe. The Gram route is therefore taken only when every matrix of the batch has
    ``s_min >= s_max / GRAM_MAX_CONDITION`` (``e_min >= e_max / 32^2``): then
    ``eps (s_max / s)^2 <= 1024 eps`` for every singular value, none is treated as zero,
    and the direction agrees with the SVD route's to its own rounding level (measured on
    128 x 512 matrices of condition 2 .. 1000, depth 1.5, 2, 3: the same relative error
    as the SVD route, ~1e-6 in float32 and ~3e-15 in float64, up to condition 30; in
    float32 5-9x that at 100 and 100-450x at 1000, which is why those take route 2). Rank-deficient,
    ill-conditioned and zero matrices take route 2, with its threshold ``rtol`` (default
    ``max(k, d) * eps``). So do square matrices: there the long side's vectors must form a
    complete basis and inherit the ``eps (s_max / s)^2`` error where no part outside the
    row space absorbs it (measured: 6x the SVD route's error at condition 30, depth 1.5),
    and the SVD of a square matrix costs only about twice the Gram route.

    A failed try of route 1 costs the Gram matrix and its ``eigh`` (about a quarter of the
    SVD for 512 x 3136), which is why a caller that refreshes the same weight again can
    skip it (``gram=False``) after a failure. The route is chosen on the host (one read of
    a device value per call that tries route 1: the SVD synchronises too). Singular
    values are in descending order, as from :func:`thresholded_svd`; the singular vectors
    of a repeated singular value are some orthonormal basis of its space (Eq. 10's
    operator does not depend on the choice).
    Only the dtype is checked (complex input is refused).
    """
    _check_real(W=w)
    k, d = w.shape[-2], w.shape[-1]
    wide = k <= d
    if gram and k != d:
        e, Q = torch.linalg.eigh(w @ w.mT if wide else w.mT @ w)  # ascending
        e_min, e_max = e[..., 0], e[..., -1]
        if bool(((e_max > 0) & (e_min >= e_max / GRAM_MAX_CONDITION**2)).all()):
            e, Q = e.flip(-1), Q.flip(-1)  # descending, as the SVD
            s = e.sqrt()
            other = (w.mT @ Q if wide else w @ Q).div_(s.unsqueeze(-2))
            return (Q, s, other, True) if wide else (other, s, Q, True)
    if k < d:
        V, s, U = thresholded_svd(w.mT, rtol)
        return U, s, V, False
    return (*thresholded_svd(w, rtol), False)


def amortised_parts(
    U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, depth: float
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""What :func:`amortised_direction` needs besides the SVD and G, computed once per
    refresh: ``(M, C)``. With ``c = K(s, 0) = s^{2(N-1)/N}`` and B the *square* factor
    (U when k <= d, V when k > d; m x m):

    - ``C = B diag(c) B^T`` (m x m), None when k = d and N != 2;
    - ``M = K(s_r, s_r') - c_r`` (k < d), ``K(s_r, s_r') - c_r'`` (k > d), ``K(s_r, s_r')``
      (k = d) (m x m, Claim 1's eigenvalues, :func:`claim1_eigenvalues`), None when N = 2.

    At N = 2, ``c = s`` and ``C`` is ``[W W^T]^{1/2}`` (k <= d) or ``[W^T W]^{1/2}`` (k > d).
    """
    n = float(depth)
    k, d = U.shape[-2], V.shape[-2]
    B = U if k <= d else V
    if n == 2.0:
        return None, (B * s.unsqueeze(-2)) @ B.mT
    K = claim1_eigenvalues(s.unsqueeze(-1), s.unsqueeze(-2), n)
    if k == d:
        return K, None
    c = claim1_eigenvalues(s, torch.zeros_like(s), n)
    M = K - (c.unsqueeze(-1) if k < d else c.unsqueeze(-2))
    return M, (B * c.unsqueeze(-2)) @ B.mT


def _add_product(C: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``C + A @ B`` written into C (a fresh tensor of this module): one GEMM with beta = 1."""
    if C.dim() == 2:
        return C.addmm_(A, B)
    flat = C.view(-1, *C.shape[-2:])
    flat.baddbmm_(
        A.expand(*C.shape[:-2], *A.shape[-2:]).reshape(-1, *A.shape[-2:]),
        B.expand(*C.shape[:-2], *B.shape[-2:]).reshape(-1, *B.shape[-2:]),
    )
    return C


def amortised_direction(
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    G: torch.Tensor,
    depth: float,
    *,
    parts: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    r"""Eq. 10's operator of ``W = U diag(s) V^T`` applied to G, ``P_W(G)``, with the fewest
    large products: the cached step of the amortised preconditioner.

    The same operator as :func:`direction_from_svd` (Claim 1), grouped differently; with
    ``(M, C) =`` :func:`amortised_parts` (k x d = G's shape, m = min(k, d))::

        k < d:  P_W(G) = U [M * (U^T G V)] V^T + C G       (C G: the part outside W's row
                                                            space, C = U diag(c) U^T)
        k > d:  P_W(G) = U [M * (U^T G V)] V^T + G C       (C = V diag(c) V^T)
        k = d:  P_W(G) = U [K * (U^T G V)] V^T

    (``*`` entrywise; U is square for k <= d, V for k >= d, and M's subtracted c cancels the
    core's share of the part outside). Evaluated as ``T = G V``, ``Y = U [M * (U^T T)]``,
    ``D = C G + Y V^T`` in one GEMM with beta = 1 (k < d; the mirror image for k > d):
    three products of size k*d*m and two of m^3, no k x d temporary but the result (the
    k > d form of :func:`direction_from_svd` has four of size k*d*m). At depth N = 2,
    ``K(a, b) = a + b`` and ``c = s``, so ``M = 1 s^T`` (k < d) and the m^3 products drop
    out of Eq. 10 itself::

        P_W(G) = [W W^T]^{1/2} G + G [W^T W]^{1/2}
               = C G + (G V) diag(s) V^T     (k <= d, C = U diag(s) U^T)
               = U diag(s) (U^T G) + G C     (k > d,  C = V diag(s) V^T)

    three products of size k*d*m. G is ``(..., k, d)``; ``(U, s, V)`` a thin SVD as
    :func:`amortised_svd` or :func:`thresholded_svd` returns it (possibly of an earlier W).
    No input checks.
    """
    M, C = amortised_parts(U, s, V, depth) if parts is None else parts
    k, d = G.shape[-2], G.shape[-1]
    two = float(depth) == 2.0
    if k <= d:
        T = G @ V  # (..., k, m)
        Y = T * s.unsqueeze(-2) if two else U @ (M * (U.mT @ T))
        return Y @ V.mT if C is None else _add_product(C @ G, Y, V.mT)
    T = U.mT @ G  # (..., m, d)
    Y = T * s.unsqueeze(-1) if two else (M * (T @ V)) @ V.mT
    return _add_product(G @ C, U, Y)


def single_output_direction(w: torch.Tensor, g: torch.Tensor, depth: float) -> torch.Tensor:
    r"""Eq. 12's direction for a single output (k = 1), in O(d)::

        ||w||^{2-2/N} * ( g + (N-1) <g, w_hat> w_hat ),   w_hat = w / ||w||

    (0 at w = 0 for N > 1, g for N = 1). ``w`` and ``g`` have shape ``(..., d)``; the
    leading dimensions are independent problems. ``||w||`` is computed in a scaled way
    (``max|w_i| * ||w / max|w_i|||``), so huge (1e160) or tiny (1e-170) weights in float64
    do not overflow or underflow in the squares. Only real tensors are accepted (complex ->
    ``ValueError``). No NaN/inf check here (it would cost a host sync per call in the hot
    training loop); :func:`end_to_end_direction` does check.
    """
    n = _check_depth(depth)
    _check_real(w=w, g=g)
    if w.shape != g.shape or w.dim() < 1:
        raise ValueError(
            f"w and g must have the same shape (..., d); got {tuple(w.shape)} and {tuple(g.shape)}"
        )
    if n == 1.0:
        return g.clone()
    if w.shape[-1] == 0:
        return torch.zeros_like(g)
    # Scaled norm: ||w|| = c ||w / c|| with c = max(max_i |w_i|, smallest normal number),
    # so the squares of w / c lie in [0, d] (1e160 or 1e-170 weights do not overflow or
    # underflow) and 1 / c is finite; w_hat = (w / c) / ||w / c||. Reciprocals are
    # multiplied (a float64 division is several times slower than a multiplication).
    m = w.abs().amax(dim=-1, keepdim=True)
    pos = m > 0
    c = m.clamp(min=torch.finfo(w.dtype).tiny)
    ws = w * c.reciprocal()
    ns = torch.linalg.vector_norm(ws, dim=-1, keepdim=True)  # >= 2^-52 where pos
    w_hat = ws * torch.where(pos, ns, 1.0).reciprocal()
    proj = (g * w_hat).sum(-1, keepdim=True)
    scale = torch.where(pos, (c * ns).pow(2.0 - 2.0 / n), 0.0)
    return scale * (g + (n - 1.0) * proj * w_hat)


def preconditioner_matrix(
    W: torch.Tensor, depth: float, *, rtol: float | None = None
) -> torch.Tensor:
    r"""The explicit ``kd x kd`` matrix ``P_W`` of Claim 1, with ``vec(P_W(G)) = P_W vec(G)``.

    ``vec`` stacks columns (column-major), so ``vec(A G B) = (B^T kron A) vec(G)`` and::

        P_W = sum_j [W^T W]^{(N-j)/N} kron [W W^T]^{(j-1)/N}
            = (V kron U) diag(vec K) (V kron U)^T

    with the *full* SVD (U: k x k, V: d x d, singular values padded with zeros). It is
    symmetric positive semi-definite with eigenvalues ``K(s_r, s_r')``. For checks on
    small sizes only (memory ``(kd)^2``). ``W`` must be a single real 2-D matrix.
    """
    n = _check_depth(depth)
    _check_real(W=W)
    if W.dim() != 2:
        raise ValueError(f"W must be a 2-D matrix, got shape {tuple(W.shape)}")
    _check_finite("W", W)
    k, d = W.shape
    U, s, Vh = torch.linalg.svd(W, full_matrices=True)
    if rtol is None:
        rtol = max(k, d) * torch.finfo(W.dtype).eps
    if s.numel():
        s = torch.where(s > rtol * s[0], s, torch.zeros_like(s))
    s_row = torch.zeros(k, dtype=W.dtype, device=W.device)
    s_col = torch.zeros(d, dtype=W.dtype, device=W.device)
    s_row[: s.numel()] = s
    s_col[: s.numel()] = s
    Kmat = claim1_eigenvalues(s_row.unsqueeze(1), s_col.unsqueeze(0), n)
    B = torch.kron(Vh.mT.contiguous(), U.contiguous())
    vecK = Kmat.mT.reshape(-1)
    return (B * vecK) @ B.mT
