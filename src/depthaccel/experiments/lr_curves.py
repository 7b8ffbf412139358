"""Learning-rate curves: the final gap of every rate a search trained, as a CSV and a
figure, the windows of rates in which a comparison holds, and how finely the grid
decides a comparison (what one grid step changes a chosen run's final gap by)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "below_windows",
    "grid_step_change",
    "grid_steps",
    "plot_lr_curves",
    "ratio_range_text",
    "resolution_text",
    "windows_text",
    "write_lr_curves_csv",
]


def below_windows(
    lrs: Sequence[float], gaps: Sequence[float | None], ref: float
) -> list[tuple[float, float]]:
    """Maximal runs of adjacent rates (of the sorted ``lrs``) whose final gap is below
    ``ref``, as ``(first rate, last rate)``; a diverged or non-finite gap (None/NaN) is
    never below."""
    if len(lrs) != len(gaps):
        raise ValueError("lrs and gaps differ in length")
    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    out: list[tuple[float, float]] = []
    start = None
    for k, i in enumerate(order):
        g = gaps[i]
        ok = g is not None and math.isfinite(g) and g < ref
        if ok and start is None:
            start = lrs[i]
        if start is not None and (not ok or k == len(order) - 1):
            end = lrs[i] if ok else lrs[order[k - 1]]
            out.append((float(start), float(end)))
            start = None
    return out


def grid_step_change(
    lrs: Sequence[float], gaps: Sequence[float | None], chosen: float | None
) -> tuple[float, bool] | None:
    """How much one step along a searched grid changes the chosen rate's final gap: the
    largest factor (>= 1) between its gap and a stable neighbour's (a diverged neighbour
    is skipped), and whether the next rate up diverged (the chosen rate is the largest
    stable one). None when ``chosen`` is not on the grid, its gap is not a positive
    finite number, or it has no stable neighbour."""
    if len(lrs) != len(gaps):
        raise ValueError("lrs and gaps differ in length")
    pairs = sorted(zip(lrs, gaps, strict=True))
    at = [i for i, (lr, _) in enumerate(pairs) if lr == chosen]
    if not at:
        return None
    i = at[0]
    best = pairs[i][1]
    if best is None or not math.isfinite(best) or best <= 0:
        return None
    steps = [
        max(g / best, best / g)
        for j in (i - 1, i + 1)
        if 0 <= j < len(pairs)
        for g in [pairs[j][1]]
        if g is not None and math.isfinite(g) and g > 0
    ]
    if not steps:
        return None
    largest_stable = i + 1 < len(pairs) and (
        pairs[i + 1][1] is None or not math.isfinite(pairs[i + 1][1])
    )
    return max(steps), largest_stable


def grid_steps(
    searches: Sequence[tuple[Sequence[float], Sequence[float | None], float | None] | None],
) -> tuple[list[float], bool] | None:
    """:func:`grid_step_change` of every ``(lrs, gaps, chosen)`` search: the factors, and
    whether every chosen rate is the largest stable one (the two arguments
    :func:`resolution_text` takes after the ratio). None when a search is missing (None)
    or has no step."""
    steps, largest_stable = [], True
    for search in searches:
        one = None if search is None else grid_step_change(*search)
        if one is None:
            return None
        steps.append(one[0])
        largest_stable = largest_stable and one[1]
    return steps, largest_stable


def ratio_range_text(ratios: Sequence[float]) -> str:
    """``min..max`` of gap ratios near 1, to two decimals (``"1.00..1.01"``; one number
    when they agree there)."""
    lo, hi = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
    return lo if lo == hi else f"{lo}..{hi}"


def resolution_text(ratio: float, steps: Sequence[float], largest_stable: bool) -> str:
    """The clause a why appends to "A ends at r x B's final gap": whether that difference
    (``ratio``, either way round) is smaller than what one grid step changes either run's
    final gap by (``steps``: :func:`grid_step_change` of each), and whether every chosen
    rate is the largest stable one. ``""`` without steps."""
    if not steps:
        return ""
    lo, hi = min(steps), max(steps)
    step = f"x{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"x{lo:.2f}..x{hi:.2f}"
    worst = max(ratio, 1 / ratio)
    text = (
        f", a smaller difference than one lr-grid step makes to either ({step})"
        if worst < lo
        else f"; one lr-grid step changes either's final gap by {step}"
    )
    return text + ("; each chosen rate is the largest stable one" if largest_stable else "")


def windows_text(windows: Sequence[tuple[float, float]]) -> str:
    """``"0.0178..0.0237"`` pieces joined by ``" and "``; ``"no rate"`` when empty."""
    if not windows:
        return "no rate"
    return " and ".join(f"{a:.4g}" if a == b else f"{a:.4g}..{b:.4g}" for a, b in windows)


def write_lr_curves_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """One line per trained rate: ``model,seed,lr,final_gap,final_gap_plain,diverged,
    marker`` (gaps empty when diverged; marker e.g. ``tf_default``)."""
    path = Path(path)
    cols = ["model", "seed", "lr", "final_gap", "final_gap_plain", "diverged", "marker"]
    with path.open("w") as fh:
        fh.write(",".join(cols) + "\n")
        for r in rows:
            vals = []
            for c in cols:
                v = r.get(c, "")
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    v = ""
                elif isinstance(v, float):
                    v = f"{v:.17g}"
                elif isinstance(v, bool):
                    v = int(v)
                vals.append(f'"{v}"' if c == "model" else str(v))
            fh.write(",".join(vals) + "\n")
    return path


def plot_lr_curves(
    path: str | os.PathLike,
    series: Sequence[tuple[str, Sequence[float], Sequence[float | None], Sequence[float]]],
    *,
    title: str,
    ylabel: str,
) -> Path:
    """Final gap against learning rate (log-log), one line per ``(label, lrs, gaps,
    marked rates)``; diverged rates as crosses on the top edge, marked rates (e.g. TF's
    defaults) as stars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    finite = [
        g for _, _, gaps, _ in series for g in gaps if g is not None and math.isfinite(g) and g > 0
    ]
    top = max(finite) * 2 if finite else 1.0
    for label, lrs, gaps, marked in series:
        lrs = np.asarray(lrs, dtype=float)
        g = np.array([np.nan if v is None else v for v in gaps], dtype=float)
        ok = np.isfinite(g) & (g > 0)
        (line,) = ax.plot(lrs[ok], g[ok], marker="o", ms=3, label=label)
        if (~ok).any():
            ax.plot(lrs[~ok], np.full((~ok).sum(), top), "x", color=line.get_color())
        for m in marked:
            hit = np.flatnonzero(np.isclose(lrs, m, rtol=1e-6) & ok)
            if hit.size:
                ax.plot(lrs[hit], g[hit], "*", ms=12, color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.text(0.01, 0.01, "x: diverged; *: TensorFlow's default rate", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
