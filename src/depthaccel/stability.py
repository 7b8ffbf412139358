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

from dataclasses import dataclass

import numpy as np
import torch

from depthaccel.losses import as_float64, lp_hessian
from depthaccel.preconditioner import preconditioner_matrix

__all__ = ["EdgePath", "eq12_paths", "path_edges", "stability_edge", "start_edge"]


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


def path_edges(X, y, p: float, ws, depth: float) -> np.ndarray:
    """The edge *along a path*: :func:`stability_edge` with the Hessian and the
    preconditioner taken at each point ``w`` of ``ws`` (n x d), not at a minimiser.

    Away from a minimiser this is the edge of the linearised update around the current
    point (``P_w`` frozen): a run whose rate exceeds it is locally unstable there, and
    since ``||w||`` grows on the way from a near-zero start to ``w*`` (the edge falls like
    ``||w||^-(2-2/N)``), the first logged point where ``lr`` exceeds the edge predicts
    where a fixed-rate run starts to diverge. At ``w = w*`` it is the edge at the optimum.
    Points that are not finite give NaN.
    """
    ws = np.atleast_2d(np.asarray(ws, dtype=np.float64))
    n = float(depth)
    if not (np.isfinite(n) and n >= 1):
        raise ValueError(f"depth must be >= 1, got {depth!r}")
    X = as_float64("X", X).numpy()
    y = as_float64("y", y).numpy().reshape(-1)
    if ws.shape[1] != X.shape[1] or y.shape != (X.shape[0],):
        raise ValueError(f"X {X.shape}, y {y.shape} and the points {ws.shape} disagree")
    m = X.shape[0]
    H2 = X.T @ X * (1.0 / m) if float(p) == 2.0 else None
    out = np.full(ws.shape[0], np.nan)
    for i, w in enumerate(ws):
        if np.isfinite(w).all():
            if H2 is None:  # lp_hessian's formula, without its per-call checks and copies
                a = np.abs(X @ w - y) ** (float(p) - 2.0)
                H = (X * ((float(p) - 1.0) / m * a)[:, None]).T @ X
            else:
                H = H2
            out[i] = _edge_single_output(H, w, n)
    return out


def _edge_single_output(H: np.ndarray, w: np.ndarray, n: float) -> float:
    """:func:`stability_edge` for a row vector through the closed form of ``P_w^{1/2}``:
    ``P_w = ||w||^{2-2/N} (I + (N-1) w_hat w_hat^T)`` has the square root
    ``||w||^{1-1/N} (I + (sqrt(N)-1) w_hat w_hat^T)`` (no SVD, one ``eigvalsh``)."""
    norm = float(np.linalg.norm(w))
    if n == 1.0:
        root = np.eye(w.size)
    elif norm == 0.0:
        return float("inf")
    else:
        u = w / norm
        root = norm ** (1.0 - 1.0 / n) * (np.eye(w.size) + (np.sqrt(n) - 1.0) * np.outer(u, u))
    lam = float(np.linalg.eigvalsh(root @ ((H + H.T) / 2) @ root)[-1])
    return 2.0 / lam if lam > 0 else float("inf")


def start_edge(X, y, p: float) -> float:
    """The largest stable rate of gradient descent on a single layer at ``w = 0``:
    ``2 / lambda_max(H(0))``, ``H(0) = ((p-1)/m) X^T diag(|y|^{p-2}) X``. Unlike the
    edge at ``w*`` it bounds the rates a depth-1 run from the origin can start with."""
    d = np.shape(X)[1]
    return stability_edge(lp_hessian(X, y, np.zeros(d), p), np.zeros(d), 1.0)


@dataclass(frozen=True)
class EdgePath:
    """The trajectory of Eq. 12 at a fixed rate, logged, with its edge along the path.

    Attributes:
        iters: logged iterations (int64, increasing, from 0).
        w: the end-to-end vector at those iterations (n x d; NaN after divergence).
        loss: the loss ``(1/m) sum (1/p)|x^T w - y|^p`` there (NaN after divergence).
        edge: :func:`path_edges` at those points.
        diverged_at: the first iteration whose loss was non-finite or above
            ``diverge_factor`` times the initial loss (None: it did not diverge).
    """

    iters: np.ndarray
    w: np.ndarray
    loss: np.ndarray
    edge: np.ndarray
    diverged_at: int | None

    def first_unstable(self, lr: float) -> int | None:
        """The first logged iteration where ``lr`` is above the edge (None: never)."""
        over = np.flatnonzero(np.asarray(self.edge) < float(lr))
        return int(self.iters[over[0]]) if over.size else None


def eq12_paths(
    X,
    y,
    p: float,
    w0,
    depths,
    lr: float,
    iters: int,
    *,
    n_points: int = 200,
    diverge_factor: float = 1e6,
) -> list[EdgePath]:
    r"""Run Eq. 12 (weight decay 0) in float64 numpy and log each run's ``w`` and its
    edge along the way::

        w <- w - lr * ||w||^{2-2/N} (g + (N-1) <g, w_hat> w_hat),   g = dL/dw,
        L(w) = (1/m) sum_i (1/p) |x_i^T w - y_i|^p

    for R runs at once (rows of ``w0``, one depth each, the same rate). For p = 2 the
    gradient takes the Gram form ``X^T X w / m - X^T y / m``. About ``n_points``
    iterations are logged, evenly spaced, 0 and ``iters`` included; a run diverges at the
    first logged iteration whose loss is non-finite or above ``diverge_factor`` times
    its initial loss (or the first step whose ``w`` is not finite), and is frozen there.
    A plain loop written apart from the batched trainer: an independent reference for
    where a fixed-rate run leaves its stable region.
    """
    X = as_float64("X", X).numpy()
    y = as_float64("y", y).numpy().reshape(-1)
    W = np.atleast_2d(as_float64("w0", w0).numpy()).copy()
    m, d = X.shape
    R = W.shape[0]
    N = np.broadcast_to(np.asarray(depths, dtype=np.float64), (R,)).copy()
    if y.shape != (m,) or W.shape[1] != d:
        raise ValueError(f"X {X.shape}, y {y.shape} and w0 {W.shape} disagree")
    if (N < 1).any():
        raise ValueError(f"depths must be >= 1, got {N}")
    iters = int(iters)
    if iters < 1 or not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"need iters >= 1 and a finite lr > 0, got {iters}, {lr}")
    log_iters = np.unique(np.linspace(0, iters, max(2, int(n_points))).round().astype(np.int64))
    H = X.T @ X / m
    b = X.T @ y / m
    ws = np.full((R, log_iters.size, d), np.nan)
    losses = np.full((R, log_iters.size), np.nan)
    diverged_at: list[int | None] = [None] * R
    alive = np.ones(R, dtype=bool)
    expo = (2.0 - 2.0 / N)[:, None]
    limit = None
    nxt = 0
    for t in range(iters + 1):
        if t == log_iters[nxt]:
            with np.errstate(over="ignore", invalid="ignore"):
                cur = (np.abs(W @ X.T - y) ** p).sum(1) / (p * m)
            if limit is None:
                limit = diverge_factor * np.maximum(cur, np.finfo(float).tiny)
            bad = alive & ~(np.isfinite(cur) & (cur <= limit))
            for r in np.flatnonzero(bad):
                diverged_at[r] = t
            alive &= ~bad
            ws[alive, nxt], losses[alive, nxt] = W[alive], cur[alive]
            nxt += 1
            if t == iters or not alive.any():
                break
        Wa = W[alive]
        # a run on its way to divergence overflows here; it is caught just below
        with np.errstate(over="ignore", invalid="ignore"):
            if p == 2.0:
                G = Wa @ H - b
            else:
                Rr = Wa @ X.T - y
                G = (np.abs(Rr) ** (p - 2.0) * Rr) @ X / m
            norm = np.linalg.norm(Wa, axis=1, keepdims=True)
            safe = np.where(norm > 0, norm, 1.0)
            what = Wa / safe
            proj = (G * what).sum(1, keepdims=True)
            scale = np.where(norm > 0, norm ** expo[alive], np.where(expo[alive] == 0, 1.0, 0.0))
            W[alive] = Wa - lr * scale * (G + (N[alive, None] - 1.0) * proj * what)
        bad = alive.copy()
        bad[alive] = ~np.isfinite(W[alive]).all(1)
        for r in np.flatnonzero(bad):
            diverged_at[r] = t + 1
        alive &= ~bad
        if not alive.any():
            break
    return [
        EdgePath(log_iters, ws[r], losses[r], path_edges(X, y, p, ws[r], N[r]), diverged_at[r])
        for r in range(R)
    ]
