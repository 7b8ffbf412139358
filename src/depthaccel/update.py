r"""The one Eq. 10 update kernel: the step direction of a depth-N linear network's end-to-end matrix.

Gradient descent with weight decay on a balanced depth-N factorisation ``W = W_N ... W_1``
moves the end-to-end matrix, to first order in the learning rate, as (Arora, Cohen &
Hazan, ICML 2018, Theorem 1, Eq. 10)::

    W_new = W - eta * D,
    D     = P_W(G) + lambda * N * W,
    P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}

where:
    W       the end-to-end matrix, k x d (leading batch dimensions allowed);
    G       the gradient ``dL^1/dW`` of the loss at W, same shape as W;
    eta     the learning rate (applied by the caller: this module returns D);
    lambda  the weight decay of each factor (``W_j <- (1 - eta*lambda) W_j - ...``, Eq. 4),
            which decays the product by ``(1 - eta*lambda)^N = 1 - eta*lambda*N + O(eta^2)``;
    N       the depth, any real number >= 1 (N = 1 is plain gradient descent);
    [A]^q   the fractional power of a PSD matrix, with ``[A]^0 = I`` (also on A's null space).

In vectorised form (Claim 1, Eq. 11) the step is ``vec(W_new) = vec(W) - eta * (P_W vec(G) +
lambda N vec(W))`` with the PSD matrix ``P_W`` of
:func:`depthaccel.preconditioner.preconditioner_matrix`. ``P_W(G)`` is computed by
:func:`depthaccel.preconditioner.end_to_end_direction` (one thin SVD and the eigenvalues of
Claim 1). For a single row (k = 1) Eq. 10 reduces to Eq. 12 (Claim 2)::

    P_w(g) = ||w||^{2-2/N} ( g + (N-1) Pr_w(g) ),   Pr_w(g) = <g, w_hat> w_hat,  w_hat = w/||w||

where ``Pr_w`` is the projection onto w's direction (Eq. 13; 0 at w = 0)
(:func:`depthaccel.preconditioner.single_output_direction`, O(d), no SVD), and for a single
column (d = 1) to its transpose, since ``P_W(G)^T = P_{W^T}(G^T)``.

:func:`end_to_end_update` is used by :func:`depthaccel.optim.end_to_end_sgd_step` (and so
``EndToEndSGD``) and by the batched trainer's end-to-end group
(:mod:`depthaccel.train.groups`).
"""

from __future__ import annotations

import math

import torch

from depthaccel.preconditioner import (
    amortised_direction,
    end_to_end_direction,
    single_output_direction,
)

__all__ = ["end_to_end_update"]

Tensor = torch.Tensor


def _check_weight_decay(weight_decay: float | Tensor) -> None:
    if isinstance(weight_decay, Tensor):
        return  # per-problem decays (e.g. one per run); the caller validated them
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise ValueError(f"weight_decay must be a number or a tensor, got {weight_decay!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")


def end_to_end_update(
    W: Tensor,
    G: Tensor,
    *,
    depth: float,
    weight_decay: float | Tensor = 0.0,
    svd: tuple[Tensor, Tensor, Tensor] | None = None,
    svd_parts: tuple[Tensor | None, Tensor | None] | None = None,
    check_finite: bool = True,
) -> Tensor:
    r"""The Eq. 10 step direction ``D = P_W(G) + weight_decay * N * W`` (``W_new = W - lr * D``).

    With ``P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}`` (see the module
    docstring for the legend): Eq. 12's O(d) form when W has one row, its transpose when W
    has one column, otherwise one thin SVD per matrix (Claim 1).

    Args:
        W: end-to-end matrices, shape ``(..., k, d)``; the leading dimensions are
            independent problems.
        G: their gradients ``dL/dW``, same shape as W.
        depth: N, a finite real number >= 1.
        weight_decay: lambda, the decay rate of each factor: a number >= 0, or a tensor
            broadcastable against W (e.g. shape ``(R, 1, 1)``: one lambda per matrix).
            0 (the default) adds nothing, so ``D`` is then exactly ``P_W(G)``.
        svd: optional thin SVD ``(U, s, V)`` of an earlier matrix ``W_c`` (from
            :func:`depthaccel.preconditioner.amortised_svd` or ``thresholded_svd``): the
            direction is then ``P_{W_c}(G) + weight_decay * N * W`` (the amortised rule of
            ``EndToEndSGD``'s ``precondition_every``), applied by
            :func:`depthaccel.preconditioner.amortised_direction` in the dtype of U
            (G is cast to it and the direction back to G's dtype). Ignored for a single
            row or column (Eq. 12 is exact and O(d)).
        svd_parts: with ``svd``, its :func:`depthaccel.preconditioner.amortised_parts` for
            this depth, if already computed (saves recomputing them per gradient).
        check_finite: refuse NaN/inf in W and G (a host sync); False when the caller
            checked already.

    Returns:
        ``D``, same shape and dtype as G.

    Raises:
        ValueError: W and G of different shapes or with fewer than 2 dimensions, a depth
            that is not a finite real >= 1, a negative or non-finite weight decay.
    """
    if W.shape != G.shape or W.dim() < 2:
        raise ValueError(
            f"W and G must have the same shape (..., k, d); got {tuple(W.shape)} and {tuple(G.shape)}"
        )
    _check_weight_decay(weight_decay)
    if W.shape[-2] == 1:  # one row: Eq. 12
        D = single_output_direction(W.squeeze(-2), G.squeeze(-2), depth).unsqueeze(-2)
    elif W.shape[-1] == 1:  # one column: P_W(G) = P_{W^T}(G^T)^T
        D = single_output_direction(W.squeeze(-1), G.squeeze(-1), depth).unsqueeze(-1)
    elif svd is not None:  # in the cached factors' dtype (EndToEndSGD's precondition_dtype)
        Gc = G.to(svd[0].dtype)
        D = amortised_direction(*svd, Gc, depth, parts=svd_parts).to(G.dtype)
    else:
        D = end_to_end_direction(W, G, depth, check_finite=check_finite)
    if isinstance(weight_decay, Tensor):
        return torch.addcmul(D, weight_decay * float(depth), W)
    if weight_decay != 0:  # (D is a fresh tensor of the kernels above)
        return D.add_(W, alpha=weight_decay * float(depth))
    return D
