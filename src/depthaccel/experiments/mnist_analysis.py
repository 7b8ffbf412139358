"""Analysis of the MNIST tutorial experiments (fig5-right, mnist-e2e): moving averages,
first iterations reaching a level, speed-ups at checkpoints, and the split of the batch
loss into its L2 term and cross-entropy that says why a verdict comes out as it does.
Pure functions of the per-step histories (no training)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "first_reach",
    "iterations_to_levels",
    "loss_split",
    "similar",
    "smooth",
    "speedups",
    "speedup_text",
    "why_text",
    "levels_measured",
    "ratio_of_means",
    "l2_cause",
]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: ``s_t = mean(v[max(0, t - window + 1) .. t])``."""
    v = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.concatenate([[0.0], np.cumsum(v)])
    t = np.arange(1, len(v) + 1)
    lo = np.maximum(0, t - window)
    return (c[t] - c[lo]) / (t - lo)


def first_reach(curve: np.ndarray, level: float) -> int | None:
    """First (1-based) iteration at which ``curve <= level``, or None."""
    hit = np.flatnonzero(np.asarray(curve) <= level)
    return int(hit[0]) + 1 if hit.size else None


def speedups(
    base: np.ndarray, other: np.ndarray, fractions: tuple[float, ...]
) -> list[dict[str, Any]]:
    """For each checkpoint ``t = round(f * len(base))``: the level ``base[t-1]``, the
    iteration ``t_other`` at which ``other`` first reaches it, and ``t / t_other``
    (0 when never reached)."""
    rows = []
    n = len(base)
    for f in fractions:
        t = max(1, min(n, round(f * n)))
        level = float(base[t - 1])
        t_o = first_reach(other, level)
        rows.append(
            {
                "fraction": f,
                "iteration": t,
                "level": level,
                "iteration_other": t_o,
                "speedup": (t / t_o) if t_o else 0.0,
            }
        )
    return rows


def speedup_text(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        reached = f"{r['iteration_other']}" if r["iteration_other"] else "never"
        parts.append(
            f"level {r['level']:.3g} (original at it. {r['iteration']}): overparam. at {reached}"
            f" ({r['speedup']:.2f}x)"
        )
    return "; ".join(parts)


def loss_split(
    base_loss: Any,
    base_ce: Any,
    other_loss: Any,
    other_ce: Any,
    window: int,
    iterations: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Why one net's batch loss is above or below the original's: the loss split into
    its L2 term (``loss - ce``, the tutorial's ``5e-4 * sum l2_loss``) and cross-entropy,
    for the original (``base_*``) and the other net (``other_*``), per-step histories of
    one length. Smoothed quantities use :func:`smooth` with ``window``.

    Returns (JSON-able): ``l2_first`` [original, other] at step 1 (unsmoothed);
    ``steps``; ``l2_above_steps``: steps at which the other's smoothed L2 term is above the
    original's; ``l2_below_from``: the first step from which it stays below (None if it
    is above at the last step); ``ce_below_frac``: the share of steps with the other's
    smoothed cross-entropy below the original's; ``end``: smoothed ``l2``, ``ce`` and
    ``l2_share`` (L2 term / batch loss) [original, other] at the last step; ``at``: for
    each 1-based step of ``iterations``, the smoothed ``l2`` and ``ce`` [original, other].
    """
    arrs = [np.asarray(a, dtype=np.float64) for a in (base_loss, base_ce, other_loss, other_ce)]
    n = arrs[0].size
    if n == 0 or any(a.shape != (n,) for a in arrs):
        raise ValueError(
            "loss and cross-entropy histories must be 1-d of one non-zero length, got "
            f"shapes {[a.shape for a in arrs]}"
        )
    bl, bc, ol, oc = arrs
    l2 = (smooth(bl - bc, window), smooth(ol - oc, window))
    ce = (smooth(bc, window), smooth(oc, window))
    loss = (smooth(bl, window), smooth(ol, window))
    above = np.flatnonzero(l2[1] > l2[0])
    if not above.size:
        below_from: int | None = 1
    elif above[-1] == n - 1:
        below_from = None
    else:
        below_from = int(above[-1]) + 2  # 1-based step after the last one above
    at = []
    for t in iterations:
        if not 1 <= t <= n:
            raise ValueError(f"iterations must be steps in 1..{n}, got {t}")
        at.append(
            {
                "iteration": int(t),
                "l2": [float(l2[0][t - 1]), float(l2[1][t - 1])],
                "ce": [float(ce[0][t - 1]), float(ce[1][t - 1])],
            }
        )
    return {
        "l2_first": [float(bl[0] - bc[0]), float(ol[0] - oc[0])],
        "steps": int(n),
        "l2_above_steps": int(above.size),
        "l2_below_from": below_from,
        "ce_below_frac": float(np.mean(ce[1] < ce[0])),
        "end": {
            "l2": [float(l2[0][-1]), float(l2[1][-1])],
            "ce": [float(ce[0][-1]), float(ce[1][-1])],
            "l2_share": [float(l2[0][-1] / loss[0][-1]), float(l2[1][-1] / loss[1][-1])],
        },
        "at": at,
    }


def _l2_course(split: dict[str, Any]) -> str:
    o, x = split["l2_first"]
    n, above, below_from = split["steps"], split["l2_above_steps"], split["l2_below_from"]
    course = (
        f"above the original's at {above} of {n} steps"
        + (
            f", below it from step {below_from} on"
            if below_from is not None and above
            else " (at every step)"
            if below_from is None and above == n
            else ""
        )
        if above
        else "below the original's at every step"
    )
    return f"step 1: {x:.4g} (overparam.) vs {o:.4g} (original), {x / o:.2f}x; smoothed {course}"


def why_text(split: dict[str, Any], rows: list[dict[str, Any]], window: int) -> str:
    """The measured reason for a batch-loss verdict (:func:`loss_split` of the two nets,
    ``rows`` the :func:`speedups` of their smoothed batch loss): the L2 term's course and,
    at each checkpoint the other net does not pass (speed-up <= 1), both terms of both
    nets at the original's iteration."""
    text = f"why, the L2 term (loss - ce, smoothed over {window}): " + _l2_course(split)
    at = {a["iteration"]: a for a in split["at"]}
    slow = [r for r in rows if r["speedup"] <= 1.0]
    missing = [r["iteration"] for r in slow if r["iteration"] not in at]
    if missing:
        raise ValueError(f"loss_split has no values at checkpoint step(s) {missing}")
    pts = [(r["iteration"], at[r["iteration"]]["l2"], at[r["iteration"]]["ce"]) for r in slow]
    if 0 < len(pts) <= 2:
        text += "; at the checkpoints not passed, overparam. vs original: " + "; ".join(
            f"it. {t}: L2 {lx:.4g} vs {lo:.4g} ({lx - lo:+.3g}), cross-entropy {cx:.4g} vs "
            f"{co:.4g} ({cx - co:+.3g})"
            for t, (lo, lx), (co, cx) in pts
        )
    elif pts:
        dl = [lx - lo for _, (lo, lx), _ in pts]
        dc = [cx - co for _, _, (co, cx) in pts]
        text += (
            f"; at the {len(pts)} checkpoints not passed (it. "
            f"{', '.join(str(t) for t, _, _ in pts)}), overparam. minus original: L2 "
            f"{min(dl):+.3g}..{max(dl):+.3g}, cross-entropy {min(dc):+.3g}..{max(dc):+.3g}"
        )
    end = split["end"]
    text += (
        f"; at the end L2 {end['l2'][1]:.4g} vs {end['l2'][0]:.4g} ("
        f"{100 * end['l2_share'][1]:.0f}% vs {100 * end['l2_share'][0]:.0f}% of the batch "
        f"loss), cross-entropy {end['ce'][1]:.4g} vs {end['ce'][0]:.4g} (below the "
        f"original's at {100 * split['ce_below_frac']:.0f}% of steps)"
    )
    return text


def ratio_of_means(
    a: Any, b: Any, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``mean(a) / mean(b)`` of paired samples (``a[i]``, ``b[i]`` measured side by side,
    e.g. two nets' times of step i) and its ``level`` percentile-bootstrap interval:
    ``n_boot`` resamples of the pairs (with replacement, a fixed ``seed``). Returns
    ``(ratio, low, high)``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two paired 1-d samples of one length, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and b.sum() > 0):
        raise ValueError("samples must be finite, with a positive mean of b")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boots = a[idx].mean(1) / b[idx].mean(1)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(boots, [tail, 100.0 - tail])
    return float(a.mean() / b.mean()), float(low), float(high)


def levels_measured(rows: list[dict[str, Any]]) -> str:
    """A claim's measured cell from :func:`speedups` rows: where the other net falls
    behind (how many levels, the first of them), else how much sooner it reaches the
    last level; e.g. ``behind at 1 of 5 levels (3.18: it. 560 vs the original's 430);
    9.42x sooner at the last``."""

    def at(r: dict[str, Any]) -> str:
        other = f"it. {r['iteration_other']}" if r["iteration_other"] else "never"
        return f"{r['level']:.3g}: {other} vs the original's {r['iteration']}"

    slow = [r for r in rows if r["speedup"] <= 1.0]
    last = rows[-1]
    if not slow:
        return f"ahead at all {len(rows)} levels; {last['speedup']:.2f}x sooner at the last"
    text = f"behind at {len(slow)} of {len(rows)} levels ({at(slow[0])})"
    if last["speedup"] > 1.0:
        text += f"; {last['speedup']:.2f}x sooner at the last"
    return text


def l2_cause(split: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One sentence for a batch-loss FAIL: at the levels the other net reaches late or
    never, how its two terms (L2 term, cross-entropy) differ from the original's there
    (:func:`loss_split` at the original's iterations)."""
    at = {a["iteration"]: a for a in split["at"]}
    slow = [r["iteration"] for r in rows if r["speedup"] <= 1.0]
    if not slow:
        return ""
    missing = [t for t in slow if t not in at]
    if missing:
        raise ValueError(f"loss_split has no values at checkpoint step(s) {missing}")
    dl = [at[t]["l2"][1] - at[t]["l2"][0] for t in slow]
    dc = [at[t]["ce"][1] - at[t]["ce"][0] for t in slow]

    def compared(d: list[float], name: str, up: str, down: str) -> str:
        span = f"{d[0]:+.3g}" if len(d) == 1 else f"{min(d):+.3g}..{max(d):+.3g}"
        if min(d) > 0 or max(d) < 0:
            return f"{name} is {up if min(d) > 0 else down} than the original's ({span})"
        return f"{name} is within {span} of the original's"

    where = f"at it. {slow[0]}" if len(slow) == 1 else f"at the {len(slow)} levels it misses"
    return (
        f"{where}, {compared(dl, 'its L2 term', 'larger', 'smaller')}, and "
        f"{compared(dc, 'its cross-entropy', 'higher', 'lower')}"
    )


def iterations_to_levels(
    hist: dict[str, np.ndarray], fractions: tuple[float, ...]
) -> list[dict[str, Any]]:
    """For each checkpoint ``t = round(f * n)`` of the original net's smoothed curve: its
    level, and the first iteration at which each other net's smoothed curve reaches it
    (None: never)."""
    base = hist["original"]
    n = len(base)
    rows = []
    for f in fractions:
        t = max(1, min(n, round(f * n)))
        level = float(base[t - 1])
        row: dict[str, Any] = {"fraction": f, "level": level, "original": t}
        for k in ("overparameterized", "e2e"):
            row[k] = first_reach(hist[k], level)
        rows.append(row)
    return rows


def similar(row: dict[str, Any], factor: float) -> bool:
    """Whether the e2e net reached a row's level within ``factor`` x the iterations of the
    overparameterized net (or the latter never did)."""
    t_o, t_e = row["overparameterized"], row["e2e"]
    if t_e is None:
        return False
    return t_o is None or t_e <= factor * t_o
