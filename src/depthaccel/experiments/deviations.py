"""Deviations between two loss-gap curves: the relative deviation over logged iterations
(whole curve, from an iteration on, up to one), the deviation with one curve shifted in
time (:func:`aligned_rel_dev`), where a diverging run starts rising (:func:`descent_end`)
and the exact saddle-escape iteration (:func:`escape_iteration`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def max_rel_dev(a: np.ndarray, b: np.ndarray, iters: np.ndarray, start: int = 0) -> float:
    """``max |a - b| / b`` over logged iterations ``>= start`` (NaN-safe: a NaN in either
    curve, i.e. a divergence, gives inf)."""
    keep = iters >= start
    a, b = np.asarray(a)[keep], np.asarray(b)[keep]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.max(np.abs(a - b) / np.abs(b)))


def descent_end(*runs: Any) -> int | None:
    """For the diverged runs among ``runs``: the earliest logged iteration at which one of
    them reaches its lowest gap, i.e. where its rise to divergence begins (None: none
    diverged). Compared up to there, two runs are compared while both still descend."""
    ends = []
    for r in runs:
        if r.diverged_at is None:
            continue
        gap = np.asarray(r.gap, dtype=float)
        ok = np.isfinite(gap)
        if not ok.any():
            ends.append(0)
            continue
        ends.append(int(np.asarray(r.iters)[ok][np.argmin(gap[ok])]))
    return min(ends) if ends else None


def rel_dev_until(a: np.ndarray, b: np.ndarray, iters: np.ndarray, stop: int) -> float:
    """:func:`max_rel_dev` over the logged iterations ``<= stop``."""
    iters = np.asarray(iters)
    keep = iters <= stop
    return max_rel_dev(np.asarray(a)[keep], np.asarray(b)[keep], iters[keep])


def escape_iteration(res, threshold: float) -> int | None:
    """The exact first iteration whose gap is below ``threshold`` (the trainer's first
    hit; None: never)."""
    return res.first_hit.get(threshold)


def aligned_rel_dev(
    a: np.ndarray,
    a_iters: np.ndarray,
    b: np.ndarray,
    b_iters: np.ndarray,
    shift: int,
    start: int = 0,
    stop: int | None = None,
) -> float:
    """``max |a(t - shift) - b(t)| / b(t)`` over the logged iterations ``t >= start`` of
    ``b`` for which ``t - shift`` lies within ``a``'s logged range; ``a`` between its
    logged iterations is interpolated linearly in log gap. ``shift`` = (b's escape
    iteration) - (a's): the curves compared as if both left the saddle together. NaN or a
    non-positive gap in the compared range gives inf; no overlap gives NaN. ``stop``:
    only iterations ``t <= stop`` of ``b`` and ``t - shift <= stop`` of ``a``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a_iters, b_iters = np.asarray(a_iters), np.asarray(b_iters)
    t = b_iters.astype(float)
    src = t - shift
    keep = (t >= start) & (src >= a_iters[0]) & (src <= a_iters[-1])
    if stop is not None:
        keep &= (t <= stop) & (src <= stop)
        a_keep = a_iters <= stop
        a, a_iters = a[a_keep], a_iters[a_keep]
        keep &= src <= (a_iters[-1] if a_iters.size else -np.inf)
    if not keep.any():
        return float("nan")
    bv = b[keep]
    if not (np.isfinite(a).all() and np.isfinite(bv).all()) or (a <= 0).any() or (bv <= 0).any():
        return float("inf")
    av = np.exp(np.interp(src[keep], a_iters.astype(float), np.log(a)))
    return float(np.max(np.abs(av - bv) / bv))
