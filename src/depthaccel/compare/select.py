"""Each model's best learning rate: the trainer's one grid-search rule
(``depthaccel.train.grid.choose``) applied to compare's runs, with compare's labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from depthaccel.train import METHOD_NAMES, Run, RunResult
from depthaccel.train.grid import choose

__all__ = ["ModelBest", "model_label", "select_best"]


@dataclass
class ModelBest:
    """One model (method, depth) of the grid and its best learning rate.

    ``indices`` are the model's runs in the run list (sorted by lr); ``best_index`` is
    the chosen one (None if every rate diverged); ``on_edge``: the grid search's edge rule
    (``depthaccel.train.grid.on_edge``: all diverged, or the best rate is the smallest or
    largest of the grid, always so for one rate), so a wider grid might do better;
    ``lrs``: the rates the model was trained at, sorted (empty: unknown).
    """

    method: str
    depth: float
    label: str
    indices: list[int]
    best_index: int | None
    best: RunResult | None
    on_edge: bool
    n_diverged: int
    lrs: tuple[float, ...] = ()

    @property
    def best_lr(self) -> float | None:
        return None if self.best is None else self.best.run.effective_lr

    @property
    def edge_sides(self) -> tuple[str, ...]:
        """Where a better rate may lie: ``("smaller",)`` when every rate diverged or the
        best is the smallest rate, ``("larger",)`` when it is the largest, both for a
        one-rate grid, ``()`` for an interior best (or an unknown grid)."""
        if not self.on_edge:
            return ()
        if self.best is None:
            return ("smaller",)
        if not self.lrs:
            return ()
        lr = self.best_lr
        return tuple(
            side for side, at in (("smaller", min(self.lrs)), ("larger", max(self.lrs))) if lr == at
        )


def model_label(run: Run) -> str:
    """``depth-3 GD``, ``depth-1 Adam``, ``Eq. 10/12 scheme (N=2)``."""
    name = METHOD_NAMES[run.method]
    if run.method == "e2e":
        return f"{name} (N={run.depth:g})"
    return f"depth-{run.depth:g} {name}"


def select_best(results: Sequence[RunResult], *, tie_tol: float = 0.0) -> list[ModelBest]:
    """Each model's best rate by the one grid-search rule (``depthaccel.train.grid.choose``:
    lowest final gap, gaps within ``tie_tol`` tied and ordered by first-hit iterations;
    its edge rule), as indices into ``results``; models in order of first appearance."""
    index = {id(r): i for i, r in enumerate(results)}
    out = []
    for ms in choose(results, tie_tol=tie_tol):
        run = ms.results[0].run
        out.append(
            ModelBest(
                method=run.method,
                depth=run.depth,
                label=model_label(run),
                indices=[index[id(r)] for r in ms.results],
                best_index=None if ms.best is None else index[id(ms.best)],
                best=ms.best,
                on_edge=ms.on_edge,
                n_diverged=sum(r.diverged for r in ms.results),
                lrs=tuple(ms.lrs),
            )
        )
    return out
