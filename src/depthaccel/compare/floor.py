"""The round-off floor of the loss gap: the smallest ``L(w) - L*`` the arithmetic
resolves on the data (gaps below it count as the optimum reached), and the initial gap."""

from __future__ import annotations

import numpy as np
import torch

from depthaccel.losses import lp_loss

__all__ = ["FLOOR_SAFETY", "ce_roundoff_floor", "gap_floor", "initial_gap", "roundoff_floor"]


def gap_floor(optimum: float) -> float:
    """The smallest floor ever used: ~100 float64 ulps of L* (see :func:`roundoff_floor`
    for the floor of the data)."""
    return 100 * np.finfo(np.float64).eps * max(abs(optimum), np.finfo(np.float64).tiny)


#: The round-off floor is this many times the estimated rounding error of the loss.
FLOOR_SAFETY = 10.0


def roundoff_floor(X, y, p: float, w, *, eps: float = float(np.finfo(np.float64).eps)) -> float:
    r"""The smallest loss gap ``L(w) - L*`` that the arithmetic resolves on this data.

    A computed residual ``r_i = x_i^T w - y_i`` carries an absolute rounding error of
    about ``delta_i = eps * (|y_i| + sum_j |x_ij w_j|)`` (eps times the magnitudes of the
    terms summed; rounding ``w`` to the compute dtype contributes the same order). Near the
    optimum ``w*`` the computed loss ``(1/(p m)) sum_i |r_i|^p`` is therefore off by about

        E = (1/m) sum_i [ |r*_i|^(p-1) delta_i + delta_i^p / p ]

    (the first-order change, plus what remains when ``r* = 0``: an exact fit, where L* is
    itself round-off, e.g. 1e-30). The floor is ``FLOOR_SAFETY * E`` (and never below
    ~100 ulps of L*): gaps below it are "converged to round-off" and are never compared
    as ratios. ``y`` may be (m,) or (m, k) with ``w`` (d,) or (d, k); ``eps`` is the
    machine epsilon of the compute dtype (float32 training cannot resolve more).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
    W = np.asarray(w, dtype=np.float64).reshape(X.shape[1], -1)
    r = X @ W - Y
    delta = eps * (np.abs(Y) + np.abs(X) @ np.abs(W))
    err = np.mean(np.sum(np.abs(r) ** (p - 1) * delta + delta**p / p, axis=1))
    L = float(lp_loss(torch.from_numpy(X @ W), torch.from_numpy(Y), p))
    return float(max(FLOOR_SAFETY * err, gap_floor(L)))


def initial_gap(y: np.ndarray, p: float, optimum: float) -> float:
    """L(0) - L*: the gap of the zero model, which near-zero initialisation starts close to."""
    Y = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(len(y), -1)
    return float(lp_loss(torch.zeros_like(Y), Y, p)) - optimum


def ce_roundoff_floor(
    X, labels, W, l2: float, *, eps: float = float(np.finfo(np.float64).eps)
) -> float:
    r"""The round-off floor of the softmax cross-entropy gap (``losses.SoftmaxCE``).

    Row i's term ``log sum_c exp(z_ic) - z_{i y_i}`` with ``z_i = W x_i`` is computed with
    an absolute error of about ``eps * (2 max_c |z_ic| + sum_j |x_ij| max_c |w_cj| +
    log k)`` (the logits' own rounding, and logsumexp's); the L2 term adds ``eps * l2 *
    ||W||^2``. The floor is ``FLOOR_SAFETY`` times the mean over the rows plus that
    (and never below :func:`gap_floor` of the loss)."""
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    Z = X @ W.T
    k = W.shape[0]
    per_row = 2 * np.abs(Z).max(1) + np.abs(X) @ np.abs(W).max(0) + np.log(k)
    err = eps * (per_row.mean() + l2 * float((W * W).sum()))
    loss = float(
        np.mean(
            np.log(np.exp(Z - Z.max(1, keepdims=True)).sum(1))
            + Z.max(1)
            - Z[np.arange(len(Z)), np.asarray(labels)]
        )
        + 0.5 * l2 * float((W * W).sum())
    )
    return float(max(FLOOR_SAFETY * err, gap_floor(loss)))
