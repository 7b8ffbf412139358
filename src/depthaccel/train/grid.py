"""Learning-rate grid search over the batched trainer: THE grid search of depthaccel
(``depthaccel reproduce``'s experiments and ``depthaccel compare`` both use it).

Runs that differ only in their learning rate form one *model* (:func:`model_id`).
:func:`grid_search` trains every run of every model in one batched call and
:func:`choose` picks per model the rate with the lowest final gap (:func:`best_result`:
gaps within ``tie_tol`` tie and are ordered by first-hit iterations, hardest threshold
first; diverged runs are never best).

**The edge rule** (one rule, everywhere): a model's choice is *on the edge* of its grid
when every run diverged, or when the chosen rate is the smallest or the largest rate the
model was trained at. A better rate may then lie beyond the grid. A one-rate grid is
always on the edge (nothing was tried on either side), and so is a two-rate grid.

**Extension** (``extend=True``): while a model's choice is on the edge, one more rate is
trained beyond that edge per round (all models of a round in one batched call): above the
grid when the chosen rate is the largest (for a one-rate grid: above), below it when it
is the smallest or every run diverged. The step is the model's initial grid's log-scale
spacing, the geometric mean ratio of adjacent rates (``10`` for a one-rate grid), kept
for every round. At most ``max_extensions`` rounds per model; a model whose every run
diverged may go on for up to ``max(max_extensions, rescue_diverged)`` rounds, so that it
has a curve at all. ``lr_digits`` rounds new rates to that many significant digits.

**Refinement at full length** (``fill_ratio``, the paper's search: each model's rate
chosen at the run's own length): in the same rounds, while the best rate has a trained
neighbour farther than ``fill_ratio`` (e.g. x1.33), or the largest stable rate and the
smallest diverged rate above the best are farther apart than that (the stability edge),
rates in between are added, evenly spaced on a log scale and at most ``fill_ratio``
apart (:func:`refinement_rates`). The search of a model ends when its choice is interior
and both neighbourhoods are that fine, or after ``max_extensions`` rounds.

**Rate grids.** :func:`log_grid` builds a coarse log grid (``compare``'s default rates,
sec7's and the experiments' :class:`~depthaccel.experiments.search.SearchPolicy` grids),
:func:`round_rate` rounds a rate to significant digits, :func:`merge_rates` adds rates to a
grid without repeats (two rates within a relative ``SAME_RATE`` are one rate), and
:func:`spacing_at_best` measures how fine a finished search is.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from depthaccel.losses import LpOptimum, lp_optimum
from depthaccel.train.engine import train as engine_train
from depthaccel.train.runs import Run, RunResult
from depthaccel.validation import Integral, Interval, Real, check, check_params

__all__ = [
    "SAME_RATE",
    "GridEdgeWarning",
    "ModelSearch",
    "best_result",
    "choose",
    "fill_rates",
    "grid_search",
    "log_grid",
    "merge_rates",
    "model_id",
    "on_edge",
    "refinement_rates",
    "round_rate",
    "search_record",
    "spacing_at_best",
]

#: ``train(X, y, p, runs, iters, **options) -> list[RunResult]``: ``depthaccel.train.train``
#: or a drop-in such as ``ExperimentContext.train``.
TrainFn = Callable[..., list[RunResult]]

_RATIO = Interval(Real, 1, None, closed="neither")  # a finite ratio > 1

#: Two rates closer than this (relative) are the same rate.
SAME_RATE = 1e-9


class GridEdgeWarning(UserWarning):
    """The best learning rate of a model is on the edge of its grid."""


def model_id(run: Run) -> str:
    """The run's configuration without its learning rate, as canonical JSON: the runs of one
    model (those that differ only in lr) share it."""
    config = run.config_dict()
    config.pop("lr")
    return json.dumps(config, sort_keys=True)


@dataclass
class ModelSearch:
    """Grid-search outcome of one model.

    Attributes:
        model: a representative run of the model (its lr is the best one, if any).
        results: all runs of the model, sorted by learning rate.
        best: the best run's result (None if every run diverged).
        best_lr: its learning rate (None if every run diverged).
        on_edge: the choice is on the edge of the grid (:func:`on_edge`).
        extensions: how many extension rounds added rates to this model.
        lrs: the rates trained, sorted.
    """

    model: Run
    results: list[RunResult]
    best: RunResult | None
    best_lr: float | None
    on_edge: bool
    extensions: int = 0
    lrs: list[float] = field(default_factory=list)


def _hit_key(res: RunResult) -> tuple[float, ...]:
    ths = sorted(res.first_hit)
    return tuple(math.inf if res.first_hit[t] is None else res.first_hit[t] for t in ths)


def best_result(results: Sequence[RunResult], *, tie_tol: float = 0.0) -> RunResult | None:
    """The result with the lowest final gap; gaps within ``tie_tol`` of the lowest tie and
    are ordered by first-hit iterations (smallest threshold first), then by lr. Diverged
    or non-finite runs are never chosen; None if no run qualifies."""
    ok = [r for r in results if not r.diverged and math.isfinite(r.final_gap)]
    if not ok:
        return None
    lowest = min(r.final_gap for r in ok)
    tied = [r for r in ok if r.final_gap <= lowest + tie_tol]
    return min(tied, key=lambda r: (*_hit_key(r), r.final_gap, r.run.effective_lr))


def on_edge(best_lr: float | None, lrs: Sequence[float]) -> bool:
    """The edge rule: True when every run diverged (``best_lr`` None) or ``best_lr`` is the
    smallest or the largest of ``lrs`` (so always for one or two rates)."""
    return best_lr is None or best_lr in (min(lrs), max(lrs))


def choose(results: Sequence[RunResult], *, tie_tol: float = 0.0) -> list[ModelSearch]:
    """Group ``results`` by model (:func:`model_id`, in order of first appearance; a repeated
    rate of a model counts once) and pick each model's best rate (:func:`best_result`)."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        group = groups.setdefault(model_id(r.run), [])
        if not any(g.run.effective_lr == r.run.effective_lr for g in group):
            group.append(r)
    return [_summarise(group, tie_tol) for group in groups.values()]


def _summarise(results: list[RunResult], tie_tol: float, extensions: int = 0) -> ModelSearch:
    res = sorted(results, key=lambda r: r.run.effective_lr)
    best = best_result(res, tie_tol=tie_tol)
    lrs = [r.run.effective_lr for r in res]
    best_lr = None if best is None else best.run.effective_lr
    return ModelSearch(
        model=best.run if best is not None else res[0].run,
        results=res,
        best=best,
        best_lr=best_lr,
        on_edge=on_edge(best_lr, lrs),
        extensions=extensions,
        lrs=lrs,
    )


def _step(lrs: Sequence[float]) -> float:
    """The log-scale spacing of a grid: the geometric mean ratio of adjacent rates (10
    for one rate)."""
    g = sorted(lrs)
    return (g[-1] / g[0]) ** (1 / (len(g) - 1)) if len(g) > 1 else 10.0


def round_rate(lr: float, digits: int | None) -> float:
    """``lr`` rounded to ``digits`` significant digits (None: unchanged), through its
    decimal text (``float(f"{lr:.{digits}g}")``), so 0.00031622776 -> 0.0003162 at 4."""
    return lr if digits is None else float(f"{lr:.{digits}g}")


def _is_new(v: float, have: Sequence[float]) -> bool:
    return all(abs(v / h - 1) > SAME_RATE for h in have)


def merge_rates(have: Sequence[float], new: Sequence[float]) -> list[float]:
    """``have`` sorted, plus each rate of ``new`` (in order) not within ``SAME_RATE`` of a
    rate already there; sorted."""
    out = sorted(have)
    for v in new:
        if _is_new(v, out):
            out.append(v)
            out.sort()
    return out


def grid_search(
    X: Any,
    y: Any,
    p: float,
    runs: Sequence[Run],
    iters: int,
    *,
    extend: bool = False,
    max_extensions: int = 4,
    rescue_diverged: int = 0,
    lr_digits: int | None = None,
    fill_ratio: float | None = None,
    tie_tol: float = 0.0,
    warn: bool = True,
    train: TrainFn | None = None,
    **train_kwargs: Any,
) -> list[ModelSearch]:
    """Train ``runs`` (one or more models x learning rates) and pick each model's best lr.

    Args:
        X, y, p, runs, iters: as for :func:`depthaccel.train.train`.
        extend: extend a model's grid beyond the edge its choice is on (module docstring).
        max_extensions: cap on extension (and refinement) rounds per model.
        rescue_diverged: a model whose every run diverged may extend downwards for up to
            ``max(max_extensions, rescue_diverged)`` rounds.
        lr_digits: round new rates to this many significant digits (None: no rounding).
        fill_ratio: with ``extend``, also refine each model near its best rate and
            across its stability edge until neighbours are at most this ratio apart
            (module docstring); None: extension only.
        tie_tol: final gaps within this of the lowest count as tied.
        warn: emit a :class:`GridEdgeWarning` for each model whose choice is (still) on
            the edge.
        train: the training function (default ``depthaccel.train.train``, with L* computed
            once here unless ``optimum`` is given).
        **train_kwargs: passed to ``train`` (thresholds, dtype, device, ...).

    Returns:
        One :class:`ModelSearch` per model, in order of first appearance.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("no runs given")
    if train is None:
        train = engine_train
        if train_kwargs.get("optimum") is None:
            train_kwargs["optimum"] = lp_optimum(X, y, p)
    opt = train_kwargs.get("optimum")
    if opt is not None and not isinstance(opt, (LpOptimum, float, int)):
        raise ValueError("optimum must be a float or an LpOptimum")
    models: dict[str, list[RunResult]] = {}
    for res in train(X, y, p, runs, iters, **train_kwargs):
        group = models.setdefault(model_id(res.run), [])
        if not any(r.run.effective_lr == res.run.effective_lr for r in group):
            group.append(res)  # a repeated rate counts once
    steps = {mk: _step([r.run.effective_lr for r in res]) for mk, res in models.items()}
    extensions = dict.fromkeys(models, 0)
    rounds = max(max_extensions, rescue_diverged) if extend else 0
    if fill_ratio is not None:
        check("fill_ratio", fill_ratio, _RATIO)
    for round_ in range(rounds):
        new_runs: list[Run] = []
        for mk, res in models.items():
            ms = _summarise(res, tie_tol)
            cap = max_extensions if ms.best is not None else max(max_extensions, rescue_diverged)
            if round_ >= cap:
                continue
            new: list[float] = []
            if ms.on_edge:
                if ms.best is not None and ms.best_lr == ms.lrs[-1]:
                    new.append(round_rate(ms.lrs[-1] * steps[mk], lr_digits))
                else:  # the smallest rate is best, or every run diverged
                    new.append(round_rate(ms.lrs[0] / steps[mk], lr_digits))
            if fill_ratio is not None and ms.best is not None:
                new += refinement_rates(
                    ms.lrs,
                    [r.diverged or not math.isfinite(r.final_gap) for r in ms.results],
                    ms.best_lr,
                    max_ratio=fill_ratio,
                    digits=lr_digits,
                )
            new = [v for v in dict.fromkeys(new) if _is_new(v, ms.lrs)]
            new_runs += [replace(ms.results[0].run, lr=lr) for lr in new]
            extensions[mk] += bool(new)
        if not new_runs:
            break
        for res in train(X, y, p, new_runs, iters, **train_kwargs):
            models[model_id(res.run)].append(res)
    out = [_summarise(res, tie_tol, extensions[mk]) for mk, res in models.items()]
    for ms in out:
        if ms.on_edge and warn:
            where = (
                "every run diverged"
                if ms.best is None
                else f"best lr {ms.best_lr:g} is on the edge of the grid "
                f"[{ms.lrs[0]:g}, {ms.lrs[-1]:g}]"
            )
            warnings.warn(
                f"grid_search: {ms.model.label()}: {where}"
                + ("" if extend else " (pass extend=True to extend the grid)"),
                GridEdgeWarning,
                stacklevel=2,
            )
    return out


# ---------------------------------------------------------------------- rate grids


def fill_rates(lo: float, hi: float, max_ratio: float, digits: int | None = 4) -> list[float]:
    """Rates strictly between ``lo < hi``, evenly spaced on a log scale, as few as make
    adjacent rates (``lo`` and ``hi`` included) at most ``max_ratio`` apart (before
    rounding to ``digits`` significant digits); empty when ``hi / lo <= max_ratio``."""
    if not (0 < lo < hi) or not max_ratio > 1:
        raise ValueError(f"need 0 < lo < hi and max_ratio > 1, got {lo}, {hi}, {max_ratio}")
    n = math.ceil(math.log(hi / lo) / math.log(max_ratio) - 1e-9)
    return [round_rate(lo * (hi / lo) ** (k / n), digits) for k in range(1, n)]


def refinement_rates(
    lrs: Sequence[float],
    diverged: Sequence[bool],
    best_lr: float,
    *,
    max_ratio: float,
    digits: int | None = 4,
) -> list[float]:
    """The rates a refinement round adds to a model (module docstring): between the best
    rate and each trained neighbour farther than ``max_ratio``, and between the largest
    stable rate and the smallest diverged rate above the best when they are farther apart
    than that. ``lrs`` sorted, ``diverged`` their outcome. Sorted, none already trained;
    empty when both neighbourhoods are fine enough. A spacing up to 0.1% above
    ``max_ratio`` (rounding of rates) counts as fine."""
    lrs = [float(v) for v in lrs]
    if not lrs or sorted(lrs) != lrs or len(lrs) != len(diverged):
        raise ValueError("lrs must be sorted, non-empty and match diverged")
    tol = max_ratio * (1 + 1e-3)
    i = min(range(len(lrs)), key=lambda j: abs(lrs[j] / best_lr - 1))
    new: list[float] = []
    for j in (i - 1, i + 1):
        if 0 <= j < len(lrs):
            lo, hi = sorted((lrs[i], lrs[j]))
            if hi / lo > tol:
                new += fill_rates(lo, hi, max_ratio, digits)
    above = [j for j in range(i + 1, len(lrs)) if diverged[j]]
    if above:
        s = max(j for j in range(i, above[0]) if not diverged[j])
        if lrs[above[0]] / lrs[s] > tol:
            new += fill_rates(lrs[s], lrs[above[0]], max_ratio, digits)
    out: list[float] = []
    for v in sorted(new):
        if _is_new(v, (*lrs, *out)):
            out.append(v)
    return out


_LOG_GRID = {
    "lo": Interval(Real, 0, None, closed="neither"),
    "hi": Interval(Real, 0, None, closed="neither"),
    "per_decade": Interval(Integral, 1, None),
    "digits": Interval(Integral, 1, 17),
}

#: How :func:`log_grid` computes its points before rounding (see there).
GridFormula = Literal["logspace", "geometric"]


def log_grid(
    lo: float,
    hi: float,
    per_decade: int = 2,
    *,
    digits: int = 4,
    formula: GridFormula = "logspace",
) -> tuple[float, ...]:
    """Learning rates ``lo .. hi`` on a log scale, ``n = round(log10(hi / lo) * per_decade)``
    steps (both ends included), each rounded to ``digits`` significant digits
    (:func:`round_rate`), e.g. ``log_grid(1e-4, 1, 2)`` = 1e-4, 3.162e-4, ..., 1.

    ``formula`` says how the i-th point is computed before rounding; the two agree up to
    the last bit of a float, so after rounding they differ only when a point falls on a
    rounding boundary (rare: e.g. ``lo = 1.0005e-4``). Stored runs are keyed by their
    rate, so each caller keeps the formula its grids were first built with:

    * ``"logspace"``: ``numpy.logspace(log10(lo), log10(hi), n + 1)`` (``compare``'s
      default rates, sec7);
    * ``"geometric"``: ``lo * (hi / lo) ** (i / n)`` (the experiments'
      :class:`~depthaccel.experiments.search.SearchPolicy` grids).

    ``lo == hi`` (or ``n == 0``) gives the one rate ``lo``, rounded."""
    check_params(dict(lo=lo, hi=hi, per_decade=per_decade, digits=digits), _LOG_GRID)
    if lo > hi:
        raise ValueError(f"need lo <= hi, got {lo}, {hi}")
    n = round(math.log10(hi / lo) * per_decade)
    if not n:
        vals: Sequence[float] = [lo]
    elif formula == "logspace":
        vals = [float(v) for v in np.logspace(math.log10(lo), math.log10(hi), n + 1)]
    elif formula == "geometric":
        vals = [lo * (hi / lo) ** (i / n) for i in range(n + 1)]
    else:
        raise ValueError(f"formula must be 'logspace' or 'geometric', got {formula!r}")
    return tuple(round_rate(v, digits) for v in vals)


def spacing_at_best(ms: ModelSearch) -> tuple[float | None, float | None]:
    """How fine a model's search is around its choice: the largest ratio between the best
    rate and a trained neighbour (None: no neighbour), and the ratio across the stability
    edge, the smallest diverged rate above the best over the largest stable rate below it
    (None: no diverged rate above the best). Both None when every run diverged."""
    if ms.best_lr is None:
        return None, None
    lrs = ms.lrs
    i = lrs.index(ms.best_lr)
    near = [
        lrs[j] / lrs[i] if j > i else lrs[i] / lrs[j] for j in (i - 1, i + 1) if 0 <= j < len(lrs)
    ]
    div = [r.diverged for r in ms.results]
    above = [j for j in range(i + 1, len(lrs)) if div[j]]
    edge = None
    if above:
        s = max(j for j in range(i, above[0]) if not div[j])
        edge = lrs[above[0]] / lrs[s]
    return (max(near) if near else None), edge


def search_record(found: Sequence[ModelSearch]) -> list[dict[str, Any]]:
    """JSON-able summary of a search: per model its grid, the final gap at each lr (None:
    diverged), the chosen lr, whether it is on the grid's edge, the extension rounds."""
    return [
        {
            "model": f.model.label(),
            "grid": list(f.lrs),
            "final_gap": [
                None if r.diverged or not math.isfinite(r.final_gap) else r.final_gap
                for r in f.results
            ],
            "chosen_lr": f.best_lr,
            "chosen_final_gap": None if f.best is None else f.best.final_gap,
            "on_edge": f.on_edge,
            "extensions": f.extensions,
        }
        for f in found
    ]
