r"""The largest stable learning rate of the end-to-end update near a minimiser.

For one output the end-to-end update of a depth-N net (Eq. 12, the single-output form
of Eq. 10) is::

    w <- w - eta P_w grad L(w),      P_w = ||w||^{2-2/N} (I + (N-1) w_hat w_hat^T)

(``P_w`` is Claim 1's preconditioner of the row vector ``w``; ``w_hat = w / ||w||``).
Linearised at a minimiser ``w*`` (``grad L(w*) = 0``, so the change of ``P_w`` enters
only at second order) a perturbation ``delta`` evolves as::

    delta <- (I - eta P H) delta,     P = P_{w*},  H = Hessian of L at w*

``P H`` is similar to the symmetric ``P^{1/2} H P^{1/2}``, so the iteration is stable
iff ``eta < 2 / lambda_max(P^{1/2} H P^{1/2})``: the *stability edge*. For N = 1 it is
gradient descent's ``2 / lambda_max(H)``. It lies between
``2 / (N ||w*||^{2-2/N} lambda_max(H))`` and ``2 / (||w*||^{2-2/N} lambda_max(H))``,
so a minimiser of large norm makes deep nets unstable at rates that are safe for a
single layer. GD on a balanced depth-N net moves its end-to-end vector by this update
up to O(eta^2) (Theorem 1), so a net trained at a rate above the edge cannot settle
at ``w*``: it diverges on the way in.
"""

from __future__ import annotations

import numpy as np
import torch

from depthaccel.preconditioner import preconditioner_matrix

__all__ = ["stability_edge"]


def stability_edge(H, w, depth: float) -> float:
    """``2 / lambda_max(P_w^{1/2} H P_w^{1/2})``, the largest stable rate of Eq. 12 near ``w``.

    Args:
        H: the loss's Hessian at ``w`` (d x d, symmetric), e.g. from
            :func:`depthaccel.losses.lp_hessian`.
        w: the end-to-end vector (d,), a minimiser of the loss for the linearisation to
            hold.
        depth: N >= 1 (real; N = 1 is plain gradient descent).

    Returns:
        The edge as a float (``inf`` if ``P_w H`` has no positive eigenvalue, e.g. at
        ``w = 0`` for N > 1).

    Raises:
        ValueError: on shape mismatch, NaN/inf, a non-symmetric ``H`` or ``depth < 1``.
    """
    H = np.asarray(H, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"w must be a non-empty vector (d,), got shape {w.shape}")
    d = w.size
    if H.shape != (d, d):
        raise ValueError(f"H must have shape ({d}, {d}) to match w, got {H.shape}")
    if not (np.isfinite(H).all() and np.isfinite(w).all()):
        raise ValueError("H and w must be finite (no NaN or inf)")
    if not np.allclose(H, H.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(H).max()))):
        raise ValueError("H must be symmetric")
    P = preconditioner_matrix(torch.from_numpy(w[None, :].copy()), depth).numpy()
    vals, vecs = np.linalg.eigh((P + P.T) / 2)
    root = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    lam = float(np.linalg.eigvalsh(root @ ((H + H.T) / 2) @ root)[-1])
    return 2.0 / lam if lam > 0 else float("inf")
