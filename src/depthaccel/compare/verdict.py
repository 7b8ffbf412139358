"""The verdict of ``depthaccel compare``: a headline that answers "does depth accelerate
gradient descent on this problem?", then at most six bullets with the numbers.

Everything here is a pure function of the models' best runs (:class:`ModelBest`), so it
is tested on synthetic results without training. Each comparison follows the one rule
of :mod:`depthaccel.compare.comparison`, and every comparative word ("accelerates",
"slows", "beats", "helps", "hurts", "fewer", "lower", ...) is derived from the outcome
of the comparison whose numbers it quotes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from depthaccel.compare.comparison import SAME_FACTOR, Comparison, compare_models, fmt
from depthaccel.compare.floor import gap_floor
from depthaccel.compare.select import ModelBest
from depthaccel.reporting import format_lr
from depthaccel.train import ADAPTIVE_METHODS, METHOD_NAMES

__all__ = [
    "HEADLINE_CHARS",
    "MAX_BULLETS",
    "SAME_FACTOR",
    "STALL_FRACTION",
    "Comparison",
    "Verdict",
    "compare_models",
    "verdict",
]

#: A best run whose final gap is at least this fraction of its initial gap "barely moved".
STALL_FRACTION = 0.9
#: The headline's length limit, in characters.
HEADLINE_CHARS = 150
#: At most this many bullets follow the headline.
MAX_BULLETS = 6
#: An answer of "yes" (rather than "modest") needs a factor of at least this.
STRONG_FACTOR = 2.0


# ----------------------------------------------------------------------------- verdict


@dataclass
class Verdict:
    """The headline, the bullets and the numbers behind them.

    ``answer``: ``yes`` (depth is better by a factor >= 2), ``modest`` (better, < 2),
    ``no difference``, ``slower``, ``mixed`` or ``unknown`` (nothing to compare).
    ``main``: the best deep model against depth-1 GD; ``versus_adaptive``: the best
    adaptive single layer against the best deep model (``adaptive_wins``: it is better).
    ``final_ratio`` = depth-1 GD's final gap / the deep model's (floored; > 1: depth
    ends lower); ``speedup`` = depth-1 GD's iterations / the deep model's to reach
    ``speedup_threshold`` (the smallest threshold both reached; None if none).
    """

    headline: str
    bullets: list[str]
    answer: str
    deep: ModelBest | None = None
    base: ModelBest | None = None
    adaptive: ModelBest | None = None
    main: Comparison | None = None
    versus_adaptive: Comparison | None = None

    @property
    def adaptive_wins(self) -> bool:
        return self.versus_adaptive is not None and self.versus_adaptive.outcome == "better"

    @property
    def final_ratio(self) -> float | None:
        return None if self.main is None else self.main.final_ratio

    @property
    def speedup(self) -> float | None:
        return None if self.main is None else self.main.speedup

    @property
    def speedup_threshold(self) -> float | None:
        c = None if self.main is None else self.main.common
        return None if c is None or self.main.speedup is None else c[0]

    @property
    def text(self) -> str:
        """The headline, a blank line, then the bullets as a Markdown list: what the
        terminal prints and what REPORT.md holds."""
        return "\n".join([self.headline, "", *(f"- {b}" for b in self.bullets)])


def _rank_key(m: ModelBest, floor: float) -> tuple:
    r = m.best
    hits = tuple(
        math.inf if r.first_hit[t] is None else r.first_hit[t] for t in sorted(r.first_hit)
    )
    return (max(r.final_gap, floor), *hits, m.depth)


def _best(models: Sequence[ModelBest], floor: float) -> ModelBest | None:
    ok = [m for m in models if m.best is not None]
    return min(ok, key=lambda m: _rank_key(m, floor)) if ok else None


def _fit(candidates: Sequence[str]) -> str:
    """The first candidate within ``HEADLINE_CHARS``, else the last (the shortest)."""
    for c in candidates:
        if len(c) <= HEADLINE_CHARS:
            return c
    return candidates[-1]


def _lead(main: Comparison) -> tuple[str, str]:
    """(answer, the headline's opening words) from the main comparison's outcome."""
    out = main.outcome
    if out == "better":
        if main.factor >= STRONG_FACTOR:
            return "yes", "Yes, depth accelerates GD here"
        return "modest", "Modestly, depth accelerates GD here"
    if out == "worse":
        return "slower", "No, depth slows GD down here"
    if out == "mixed":
        return "mixed", "Mixed"
    return "no difference", "No clear difference from depth here"


def _headline(main: Comparison, vs_ad: Comparison | None) -> tuple[str, str]:
    answer, lead = _lead(main)
    vs = f"{main.b.label} vs {main.a.label}"
    if vs_ad is not None and vs_ad.outcome == "better":
        who, deep = vs_ad.b.label, vs_ad.a.label
        ad = f"but {who} beats {deep}"
        short = f"{lead} ({main.b.label}: {main.key(terse=True)}); but {who} beats it"
        forms = [
            f"{lead}: {main.key()}; but {vs_ad.key()}.",
            f"{lead}: {main.key(numbers=False)}; but {vs_ad.key(numbers=False)}.",
            f"{lead}: {main.key(numbers=False)}; {ad}.",
            f"{lead} ({vs}: {main.key(terse=True)}); {ad}: {vs_ad.key(terse=True)}.",
            f"{short}: {vs_ad.key(terse=True)}.",
            f"{short}.",
            f"{lead}; {ad}.",
        ]
    else:
        forms = [
            f"{lead}: {main.key()}.",
            f"{lead}: {main.key(numbers=False)}.",
            f"{lead} ({vs}): {main.key(terse=True)}.",
            f"{lead} ({main.b.label}): {main.key(terse=True)}.",
            f"{lead}.",
        ]
    return answer, _fit(forms)


def _caveats(models: Sequence[ModelBest], iters: int, floor: float, lrs: str) -> str:
    text = (
        f"Caveats: one seed and one initialisation, {lrs}, and {iters} iterations; the "
        "ranking can change with longer training."
    )
    edge = [m.label for m in models if m.on_edge]
    if edge:
        text += (
            " The best rate sits on the edge of the grid (or every rate diverged) for "
            + _names(edge, len(models))
            + ": a wider grid could change their numbers."
        )
    stalled = _stalled(models)
    if stalled:
        text += (
            f" Barely moved from the initial point in {iters} iterations (final gap >= "
            f"{STALL_FRACTION:g} x the initial one): "
            + _names([m.label for m in stalled], len(models))
            + "; deep nets started near zero can stall for long (vanishing gradients)."
        )
    if any(m.best is not None and m.best.final_gap <= floor for m in models):
        text += (
            f" Final gaps at or below {fmt(floor)}, the round-off floor of this data, count "
            "as the optimum reached and are never compared as ratios."
        )
    return text


def _final_words(m: ModelBest, floor: float) -> str:
    if m.best is None:
        return f"{m.label} diverged at every rate"
    lr = format_lr(m.best_lr)
    if m.best.final_gap <= floor:
        return f"{m.label} (lr {lr}) reaches the optimum to round-off"
    return f"{m.label} (lr {lr}) ends at a gap of {fmt(m.best.final_gap)}"


def _names(labels: Sequence[str], total: int) -> str:
    """The labels, or "N of M models" when there are more than three."""
    if len(labels) <= 3:
        return ", ".join(labels)
    return f"{len(labels)} of {total} models"


def _stalled(models: Sequence[ModelBest]) -> list[ModelBest]:
    return [
        m
        for m in models
        if m.best is not None and m.best.final_gap >= STALL_FRACTION * m.best.gap[0]
    ]


def _next_steps(models: Sequence[ModelBest], thresholds: Sequence[float]) -> str:
    tips = []
    smaller = [m.label for m in models if "smaller" in m.edge_sides]
    larger = [m.label for m in models if "larger" in m.edge_sides]
    if smaller:
        tips.append(f"add smaller rates to --lrs ({_names(smaller, len(models))})")
    if larger:
        tips.append(f"add larger rates to --lrs ({_names(larger, len(models))})")
    stalled = [m.label for m in _stalled(models)]
    if stalled:
        tips.append(
            f"more --iters, --init identity or a larger --init-scale "
            f"({_names(stalled, len(models))})"
        )
    elif thresholds and not any(
        m.best is not None and m.best.first_hit.get(min(thresholds)) is not None for m in models
    ):
        tips.append("more --iters (no model reached the smallest threshold)")
    tips.append("other seeds (--seed) to see whether the ranking holds")
    return "Try next: " + "; ".join(tips) + "."


def verdict(
    models: Sequence[ModelBest],
    thresholds: Sequence[float],
    iters: int,
    optimum: float,
    *,
    floor: float | None = None,
    threshold_names: Mapping[float, str] | None = None,
    gap_word: str = "gap",
    notes: Sequence[str] = (),
) -> Verdict:
    """The answer to "does depth accelerate this problem?": a headline, then bullets.

    The main comparison is the best deep model trained by gradient descent (a depth > 1
    GD net or the e2e scheme; lowest final gap, then fewest iterations to the
    thresholds) against depth-1 GD, each at its best rate; then the best adaptive
    single layer (AdaGrad, AdaDelta, Adam at depth 1) against that deep model (the
    headline says so when it is better), depth within each adaptive method, the caveats
    (grid edges, stalls, round-off) and what to try next. Gaps at or below ``floor``
    (the data's round-off floor; at least ~100 ulps of ``optimum``) are "the optimum
    reached" and thresholds at or below it are ignored. ``threshold_names`` words the
    thresholds (e.g. "1e-3 of the initial gap"); ``gap_word`` names what is compared
    ("gap", or "loss" when the loss has no minimiser); ``notes`` join the caveats.
    """
    floor = max(gap_floor(optimum), 0.0 if floor is None else float(floor))
    names = dict(threshold_names or {})
    lrs = sorted({lr for m in models for lr in m.lrs})
    grid = (
        f"learning rates {format_lr(lrs[0])}..{format_lr(lrs[-1])} ({len(lrs)} values)"
        if lrs
        else "a finite grid of learning rates"
    )
    base = next((m for m in models if m.method == "gd" and m.depth == 1), None)
    deep_all = [m for m in models if m.method in ("gd", "e2e") and m.depth > 1]
    deep = _best(deep_all, floor)
    caveats = " ".join([_caveats(models, iters, floor, grid), *notes])
    steps = _next_steps(models, [t for t in thresholds if t > floor])
    missing = []
    if base is None:
        missing.append("depth-1 GD (method gd at depth 1)")
    if not deep_all:
        missing.append("a deep GD model (gd or e2e at a depth > 1)")
    if missing:
        head = f"Cannot say: the grid lacks {' and '.join(missing)} to compare."
        return Verdict(head, [caveats, steps], "unknown", deep=deep, base=base)
    if base.best is None or deep is None:
        dead = [base.label] if base.best is None else []
        if deep is None:
            dead.append("every deep GD model")
        head = (
            f"Cannot say: every learning rate diverged for {' and '.join(dead)}; "
            "try smaller rates (--lrs)."
        )
        return Verdict(head, [caveats, steps], "unknown", deep=deep, base=base)

    main = compare_models(base, deep, thresholds, floor, names, gap_word)
    adaptive_models = [m for m in models if m.method in ADAPTIVE_METHODS and m.depth == 1]
    adaptive = _best(adaptive_models, floor)
    vs_ad = (
        None
        if adaptive is None
        else compare_models(deep, adaptive, thresholds, floor, names, gap_word)
    )
    answer, headline = _headline(main, vs_ad)

    bullets = [
        f"{deep.label} (lr {format_lr(deep.best_lr)}) vs depth-1 GD (lr "
        f"{format_lr(base.best_lr)}), {iters} iterations: {main.details()}."
    ]
    if adaptive_models:
        text = "Adaptive optimizers on a single layer: "
        if vs_ad is not None:
            word = {
                "better": "beats",
                "worse": "trails",
                "mixed": "is mixed against",
                "same": "is about even with",
            }[vs_ad.outcome]
            text += (
                f"the best, {adaptive.label} (lr {format_lr(adaptive.best_lr)}), {word} "
                f"{deep.label}: {vs_ad.details()}."
            )
        others = [m for m in adaptive_models if m is not adaptive]
        if others:
            text += " " + "; ".join(_final_words(m, floor) for m in others) + "."
        bullets.append(text)
    within = []
    for meth in ADAPTIVE_METHODS:
        one = next((m for m in adaptive_models if m.method == meth and m.best), None)
        top = _best([m for m in models if m.method == meth and m.depth > 1], floor)
        if one is None or top is None:
            continue
        c = compare_models(one, top, thresholds, floor, names, gap_word)
        word = {
            "better": "helps",
            "worse": "hurts",
            "mixed": "is mixed for",
            "same": "makes no clear difference to",
        }[c.outcome]
        within.append(f"depth {word} {METHOD_NAMES[meth]}: {c.key()}")
    if within:
        bullets.append("Depth with adaptive optimizers: " + "; ".join(within) + ".")
    bullets += [caveats, steps]
    return Verdict(
        headline,
        bullets[:MAX_BULLETS],
        answer,
        deep=deep,
        base=base,
        adaptive=adaptive,
        main=main,
        versus_adaptive=vs_ad,
    )
