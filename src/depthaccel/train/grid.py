"""Learning-rate grid search over the batched trainer.

Runs that differ only in their learning rate form one *model*. ``grid_search`` trains
every run of every model in one batched call, picks per model the learning rate with
the lowest final gap (ties, within ``tie_tol``, broken by the first-hit iterations,
hardest threshold first; diverged runs are never best), warns when the best rate is the
smallest or largest of the model's grid and, with ``extend=True``, adds rates on the
grid's log scale beyond that edge (one batched call per round) until the best is
interior or ``max_extensions`` rounds have run.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from depthaccel.losses import LpOptimum, lp_optimum
from depthaccel.train.engine import train
from depthaccel.train.runs import Run, RunResult

__all__ = ["GridEdgeWarning", "ModelSearch", "best_result", "grid_search", "model_id"]


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
        on_edge: the best lr is the smallest or largest trained (or all diverged).
        extensions: how many extension rounds added rates to this model.
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


def grid_search(
    X,
    y,
    p: float,
    runs: Sequence[Run],
    iters: int,
    *,
    extend: bool = False,
    max_extensions: int = 4,
    tie_tol: float = 0.0,
    warn: bool = True,
    **train_kwargs,
) -> list[ModelSearch]:
    """Train ``runs`` (one or more models x learning rates) and pick each model's best lr.

    Args:
        X, y, p, runs, iters: as for :func:`depthaccel.train.train`.
        extend: extend a model's grid beyond the edge its best lr sits on, on the grid's
            log scale (ratio = the geometric mean ratio of adjacent rates; 10 for a
            single rate); if every run diverged, below the smallest rate.
        max_extensions: cap on extension rounds.
        tie_tol: final gaps within this of the lowest count as tied.
        warn: emit a :class:`GridEdgeWarning` for each model whose best lr is (still)
            on the edge.
        **train_kwargs: passed to ``train`` (thresholds, dtype, device, ...).

    Returns:
        One :class:`ModelSearch` per model, in order of first appearance.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("no runs given")
    if "optimum" not in train_kwargs or train_kwargs["optimum"] is None:
        train_kwargs["optimum"] = lp_optimum(X, y, p)
    elif not isinstance(train_kwargs["optimum"], (LpOptimum, float, int)):
        raise ValueError("optimum must be a float or an LpOptimum")
    models: dict[str, list[RunResult]] = {}
    order: list[str] = []
    for res in train(X, y, p, runs, iters, **train_kwargs):
        mid = model_id(res.run)
        if mid not in models:
            models[mid] = []
            order.append(mid)
        if any(r.run.effective_lr == res.run.effective_lr for r in models[mid]):
            continue  # duplicate lr
        models[mid].append(res)
    extensions = dict.fromkeys(order, 0)
    for _ in range(max_extensions if extend else 0):
        new_runs: list[Run] = []
        for mid in order:
            res = sorted(models[mid], key=lambda r: r.run.effective_lr)
            best = best_result(res, tie_tol=tie_tol)
            lrs = [r.run.effective_lr for r in res]
            ratio = _ratio(lrs)
            if best is None:
                lr_new = lrs[0] / ratio
            elif best.run.effective_lr == lrs[-1]:
                lr_new = lrs[-1] * ratio
            elif best.run.effective_lr == lrs[0]:
                lr_new = lrs[0] / ratio
            else:
                continue
            new_runs.append(replace(res[0].run, lr=lr_new))
            extensions[mid] += 1
        if not new_runs:
            break
        for res in train(X, y, p, new_runs, iters, **train_kwargs):
            models[model_id(res.run)].append(res)
    out = []
    for mid in order:
        res = sorted(models[mid], key=lambda r: r.run.effective_lr)
        best = best_result(res, tie_tol=tie_tol)
        lrs = [r.run.effective_lr for r in res]
        if best is None:
            on_edge = True
        else:
            on_edge = len(lrs) < 3 or best.run.effective_lr in (lrs[0], lrs[-1])
        model = best.run if best is not None else res[0].run
        if on_edge and warn:
            where = (
                "every run diverged"
                if best is None
                else f"best lr {best.run.effective_lr:g} is on the edge of the grid "
                f"[{lrs[0]:g}, {lrs[-1]:g}]"
            )
            warnings.warn(
                f"grid_search: {model.label()}: {where}"
                + ("" if extend else " (pass extend=True to extend the grid)"),
                GridEdgeWarning,
                stacklevel=2,
            )
        out.append(
            ModelSearch(
                model=model,
                results=res,
                best=best,
                best_lr=None if best is None else best.run.effective_lr,
                on_edge=on_edge,
                extensions=extensions[mid],
                lrs=lrs,
            )
        )
    return out


def _ratio(lrs: list[float]) -> float:
    if len(lrs) < 2:
        return 10.0
    return math.exp((math.log(lrs[-1]) - math.log(lrs[0])) / (len(lrs) - 1))
