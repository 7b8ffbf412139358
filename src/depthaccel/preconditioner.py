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
