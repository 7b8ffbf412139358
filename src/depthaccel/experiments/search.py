r"""The paper's learning-rate search: each model's rate chosen at the run's own length.

One rule for every experiment (a :class:`SearchPolicy` config field of each):

1. Train every model at every rate of its grid (``lr_min .. lr_max``, ``per_decade``
   rates per decade on a log scale, plus ``extra_lrs`` such as TensorFlow's default
   rates) for the full number of iterations -- no shorter pre-search.
2. Rounds (all models of a round in one batched call, at most ``max_rounds``), while any
   of these asks for a rate (``depthaccel.train.grid.grid_search`` with ``extend`` and
   ``fill_ratio``: the project's one grid search):

   * **edge**: the best rate (lowest final gap; diverged runs never) is the smallest or
     largest rate trained, or every run diverged: one rate beyond that edge, at the
     coarse grid's spacing;
   * **near the best**: a neighbour of the best rate is farther than ``max_ratio``
     (x1.33): rates in between, spaced evenly on a log scale, at most ``max_ratio`` apart;
   * **near the stability edge**: the largest stable rate below the smallest diverged
     one above the best is farther from it than ``max_ratio``: rates in between likewise.

After the search no chosen rate is on its grid's edge unless ``max_rounds`` ran out (the
record and the claims say so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from depthaccel.train.grid import (
    grid_search,
    log_grid,
    merge_rates,
    model_id,
    round_rate,
    search_record,
    spacing_at_best,
)
from depthaccel.validation import Integral, Interval, Real, check, check_params

__all__ = ["SearchPolicy", "search_models"]

_RATE = Interval(Real, 0, None, closed="neither")
_POLICY = {
    "lr_min": _RATE,
    "lr_max": _RATE,
    "per_decade": Interval(Integral, 1, None),
    "max_ratio": Interval(Real, 1, None, closed="neither"),
    "max_rounds": Interval(Integral, 0, None),
    "lr_digits": Interval(Integral, 3, None),
}


@dataclass(frozen=True)
class SearchPolicy:
    """How every model's learning rate is chosen (see the module docstring).

    Attributes:
        lr_min, lr_max, per_decade: the coarse log grid (both ends included).
        max_ratio: largest allowed ratio between the best rate and its neighbours, and
            across the stability edge (> 1).
        max_rounds: cap on extension/refinement rounds (each is one full-length call).
        extra_lrs: rates always trained as well (e.g. TensorFlow's defaults).
        lr_digits: significant digits of every rate.
    """

    lr_min: float = 1e-4
    lr_max: float = 1.0
    per_decade: int = 2
    max_ratio: float = 1.33
    max_rounds: int = 8
    extra_lrs: tuple[float, ...] = ()
    lr_digits: int = 4

    def __post_init__(self) -> None:
        # checks only: the fields are kept as given (they are part of the experiments'
        # stored settings)
        check_params(dataclasses.asdict(self), _POLICY)
        for v in self.extra_lrs:
            check("extra_lrs", v, _RATE)
        if self.lr_min > self.lr_max:
            raise ValueError(f"need lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")

    @property
    def step(self) -> float:
        """The coarse grid's spacing, ``10 ** (1 / per_decade)``."""
        return 10 ** (1 / self.per_decade)

    def grid(self, lr_min: float | None = None, lr_max: float | None = None) -> list[float]:
        """The coarse grid (optionally over another range) with ``extra_lrs``, sorted:
        ``depthaccel.train.grid.log_grid`` with its ``"geometric"`` formula, rounded to
        ``lr_digits``."""
        lo = self.lr_min if lr_min is None else lr_min
        hi = self.lr_max if lr_max is None else lr_max
        coarse = log_grid(lo, hi, self.per_decade, digits=self.lr_digits, formula="geometric")
        return self._with_extras(coarse)

    def _with_extras(self, grid: Sequence[float]) -> list[float]:
        """``grid`` and ``extra_lrs``, each rounded to ``lr_digits``, without repeats."""
        return merge_rates([], [round_rate(v, self.lr_digits) for v in (*grid, *self.extra_lrs)])

    def describe(self, iters: int, grid: str | None = None) -> str:
        """The report's sentence on the search (``grid``: how the coarse grids were set,
        when not ``lr_min .. lr_max``)."""
        extra = f" plus {', '.join(f'{v:g}' for v in self.extra_lrs)}" if self.extra_lrs else ""
        return (
            f"Learning rates: each model's rate chosen by grid search at the run's own length "
            f"({iters} iterations; no shorter pre-search): a log grid "
            + (grid or f"{self.lr_min:g}..{self.lr_max:g}")
            + f", {self.per_decade} per decade{extra}, then rounds (at most "
            f"{self.max_rounds}) that extend the grid beyond an edge the best rate sits on and "
            f"fill in rates at most x{self.max_ratio:g} apart next to the best rate and across "
            "the stability edge (largest stable vs smallest diverged rate); lowest final gap "
            "wins, diverged runs never. Every grid, gap and chosen rate is in the settings."
        )


def search_models(
    ctx: Any,
    X: Any,
    y: Any,
    p: float,
    models: Sequence[Any],
    policy: SearchPolicy,
    iters: int,
    *,
    grids: Sequence[Sequence[float]] | None = None,
    **train_options: Any,
) -> tuple[list[Any], dict[str, Any]]:
    """The search of the module docstring for every model (a ``Run``; its lr is replaced),
    training through ``ctx.train``: ``depthaccel.train.grid.grid_search`` with the
    policy's extension and refinement. ``grids``: one coarse grid per model instead of
    ``policy.grid()`` (``extra_lrs`` are added to each). Returns one
    ``depthaccel.train.grid.ModelSearch`` per model, in order, and a JSON-able record."""
    models = list(models)
    if grids is None:
        grids = [policy.grid()] * len(models)
    if len(grids) != len(models):
        raise ValueError(f"{len(grids)} grids for {len(models)} models")
    if len({model_id(m) for m in models}) != len(models):
        raise ValueError("two models differ only in their learning rate")
    grids = [policy._with_extras(g) for g in grids]
    runs = [replace(m, lr=lr) for m, g in zip(models, grids, strict=True) for lr in g]
    found = grid_search(
        X,
        y,
        p,
        runs,
        iters,
        extend=True,
        max_extensions=int(policy.max_rounds),
        rescue_diverged=int(policy.max_rounds),
        lr_digits=int(policy.lr_digits),
        fill_ratio=policy.max_ratio,
        warn=False,
        train=ctx.train,
        **train_options,
    )
    rows = []
    for ms, base in zip(found, search_record(found), strict=True):
        near, edge = spacing_at_best(ms)
        rounds = base.pop("extensions")
        rows.append(
            {
                **base,
                "seed": ms.model.seed,
                "initial_gap": None if ms.best is None else float(ms.best.gap[0]),
                "rounds": rounds,
                "spacing_at_best": near,
                "spacing_at_stability_edge": edge,
            }
        )
    record = {"policy": dataclasses.asdict(policy), "iters": iters, "search": rows}
    return found, record
