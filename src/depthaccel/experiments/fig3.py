r"""Fig. 3: depth 1, 2, 3 (hidden width 1), learning rate grid-searched per model.

Paper (Sec. 8): with l2 loss depth (slightly) slows gradient descent; with l4 loss
depth-3 and depth-2 networks converge markedly faster than the single layer, over
1e6 iterations.

Fair starts (:mod:`depthaccel.experiments.starts`): every model starts near zero in
function space -- the single layer at ``single_layer_scale`` (<= 1e-3 or exactly 0),
the deep nets with i.i.d. N(0, ``init_scale``^2) factor entries. Each (depth, seed) is
its own model with its own learning rate, chosen by the one grid search
(:func:`depthaccel.experiments.search.search_models`) at the run's own length; the
claims must hold for every seed of ``seeds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthaccel import reporting
from depthaccel.experiments import seeds as over_seeds
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.loss_scale import scale_label
from depthaccel.experiments.lr_curves import grid_steps, ratio_range_text, resolution_text
from depthaccel.experiments.results import Claim, searched_settings
from depthaccel.experiments.search import SearchPolicy, search_models
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.experiments.starts import FairStartConfig, fair_run, initial_gaps_note, start_note

NAME = "fig3"
TITLE = "Fig. 3: depth 1/2/3, lr grid-searched per model (l2 and l4, Ethanol)"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "GD on depth {config.depths} (width {config.hidden}), {config.iters} "
    "iterations, l2 and l4, lr grid-searched per model and seed (seeds "
    "{measured.seeds})."
)


@dataclass(frozen=True)
class Config(FairStartConfig):
    losses: tuple[float, ...] = (2.0, 4.0)
    depths: tuple[int, ...] = (1, 2, 3)
    iters: int = 1_000_000
    search: SearchPolicy = SearchPolicy(lr_min=1e-4, lr_max=1.0)
    l2_tolerance: float = 0.05  # l2: deeper counts as "not faster" unless >5% lower gap
    assess_claims: bool = True  # False: numbers without a verdict (runs too short)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            iters=5_000,
            search=SearchPolicy(lr_min=1e-3, lr_max=1e-1, per_decade=1, max_ratio=2.2),
            seeds=(0, 1),
            log_points=200,
            assess_claims=False,
        )


def _edge_text(names: list[str]) -> str:
    if not names:
        return ""
    return "; chosen lr on its grid's edge (a better rate may lie beyond it): " + ", ".join(names)


@dataclass
class Measured:
    """What fig3 measured, keyed by (p, depth, seed): the chosen run's final and initial
    gap (``finals``: NaN when every rate diverged) and learning rate; ``edges``: per p,
    the models whose chosen rate lies on its grid's edge; ``search``: the grid search
    records per loss; ``curves``: the chosen runs' gap curves (panel ``l<p>``)."""

    quick: bool
    seeds: tuple[int, ...]
    data_source: str
    loss_scale: str
    finals: dict[tuple[float, int, int], float]
    inits: dict[tuple[float, int, int], float]
    lrs: dict[tuple[float, int, int], float]
    edges: dict[float, list[str]]
    search: dict[str, Any]
    curves: list[reporting.Curve]


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    seeds = over_seeds.check_seeds(config.seeds)
    task = ctx.ethanol()
    models = [fair_run(config, "gd", 1.0, depth=d, seed=s) for s in seeds for d in config.depths]
    curves, searched, finals, inits, lrs, edges = [], {}, {}, {}, {}, {}
    for p in config.losses:
        X, y = ctx.lp_data(task.X, task.y, p)
        found, record = search_models(
            ctx, X, y, p, models, config.search, config.iters, log_points=config.log_points
        )
        searched[f"l{p:g}"] = record
        for f in found:
            m = f.model
            key = (p, m.depth, m.seed)
            if f.best is None:
                finals[key] = float("nan")
                edges.setdefault(p, []).append(f"depth {m.depth} seed {m.seed} (all diverged)")
                continue
            finals[key] = f.best.final_gap
            inits[key] = float(f.best.gap[0])
            lrs[key] = f.best_lr
            if f.on_edge:
                edges.setdefault(p, []).append(f"depth {m.depth} seed {m.seed}")
            curves.append(
                reporting.run_curve(
                    f.best,
                    f"{m.depth}-layer, lr {reporting.format_lr(f.best_lr)}"
                    + (f", seed {m.seed}" if len(seeds) > 1 else ""),
                    f"l{p:g}",
                )
            )
    return Measured(
        ctx.quick, seeds, ctx.data_source(task), ctx.loss_scale, finals, inits, lrs, edges,
        searched, curves,
    )  # fmt: skip


_PAPER_L2 = "with l2 loss depth slightly slows gradient descent (Fig. 3)"
_PAPER_L4 = "with l4 loss it leads to significant acceleration (Fig. 3)"


def judge(measured: Measured, config: Config) -> list[Claim]:
    """l2: no deeper model ends more than ``l2_tolerance`` below depth 1; l4: final gap
    depth 3 < depth 2 < depth 1; each for every seed. NOT ASSESSED with
    ``assess_claims=False`` (quick mode)."""
    m, seeds = measured, measured.seeds
    finals = m.finals
    claims = []
    d1 = min(config.depths)
    deeper = [d for d in config.depths if d > d1]
    short = (
        {} if config.assess_claims else {"not assessed": f"{config.iters} iterations (paper: 1e6)"}
    )

    def gap_spread(p, d):
        return over_seeds.gap_range_text(
            over_seeds.spread([finals.get((p, d, s), float("nan")) for s in seeds]), p
        )

    def edge(p):
        return {"chosen lr on its grid's edge": m.edges[p]} if m.edges.get(p) else {}

    if 2.0 in config.losses and deeper:
        holds, ratios = {}, {d: [] for d in deeper}
        for s in seeds:
            r = {d: finals[(2.0, d, s)] / finals[(2.0, d1, s)] for d in deeper}
            for d in deeper:
                ratios[d].append(r[d])
            holds[s] = all(np.isfinite(v) and v >= 1 - config.l2_tolerance for v in r.values())
        low = min(min(v) for v in ratios.values())
        claims.append(
            Claim.judged(
                "l2: depth does not accelerate GD",
                _PAPER_L2,
                f"smallest final-gap ratio deeper / depth 1: {low:.3g} (every seed)",
                over_seeds.every_seed(holds) if config.assess_claims else None,
                why=f"a deeper net ends more than {config.l2_tolerance:.0%} below depth 1 "
                f"for seed(s) {', '.join(str(s) for s, ok in holds.items() if not ok)}",
                details={
                    **short,
                    "final gap ratio to depth 1": {
                        f"depth {d}": over_seeds.spread(v).text() for d, v in ratios.items()
                    },
                    "depth-1 final gap": gap_spread(2.0, d1),
                    "per seed": over_seeds.seeds_text(holds),
                    **edge(2.0),
                },
            )
        )
    if 4.0 in config.losses and deeper:
        order = sorted(config.depths, reverse=True)
        holds = {}
        for s in seeds:
            g = [finals[(4.0, d, s)] for d in order]
            holds[s] = bool(
                all(np.isfinite(g)) and all(a < b for a, b in zip(g, g[1:], strict=False))
            )
        ratio = {
            d: over_seeds.spread([finals[(4.0, d, s)] / finals[(4.0, d1, s)] for s in seeds])
            for d in deeper
        }
        dmax = max(deeper)
        claims.append(
            Claim.judged(
                "l4: depth accelerates GD, final gap depth 3 < depth 2 < depth 1",
                _PAPER_L4,
                f"final-gap ratio depth {dmax} / depth 1: "
                f"{over_seeds.range_text(ratio[dmax])} over seeds",
                over_seeds.every_seed(holds) if config.assess_claims else None,
                why=_order_why(m, order, holds),
                details={
                    **short,
                    "final gaps": {f"depth {d}": gap_spread(4.0, d) for d in order},
                    "ratio to depth 1": {f"depth {d}": r.text() for d, r in ratio.items()},
                    "per seed": over_seeds.seeds_text(holds),
                    **edge(4.0),
                },
            )
        )
    return claims


def _search_row(measured: Measured, p: float, depth: int, seed: int) -> dict | None:
    """The grid-search record of the (depth, seed) model at loss ``p``, if stored."""
    for row in measured.search.get(f"l{p:g}", {}).get("search", []):
        if row.get("seed") == seed and str(row.get("model", "")).startswith(f"depth-{depth} "):
            return row
    return None


def _order_why(m: Measured, order: list[int], holds: dict[int, bool]) -> str:
    """Why the l4 order fails: which deeper net ends at or above a shallower one, by how
    much, and whether that is within what one step of the lr grid changes a final gap."""
    failing = [s for s, ok in holds.items() if not ok]
    broken: dict[tuple[int, int], list[float]] = {}
    searches = []
    for s in failing:
        g = {d: m.finals[(4.0, d, s)] for d in order}
        if not all(np.isfinite(v) for v in g.values()):
            return f"a run diverged at every rate for seed(s) {', '.join(map(str, failing))}"
        for deep, shallow in zip(order, order[1:], strict=False):
            if g[deep] >= g[shallow]:
                broken.setdefault((deep, shallow), []).append(g[deep] / g[shallow])
                for d in (deep, shallow):
                    row = _search_row(m, 4.0, d, s)
                    searches.append(
                        None
                        if row is None
                        else (row["grid"], row["final_gap"], row.get("chosen_lr"))
                    )
    parts = [
        f"depth {deep} ends at {ratio_range_text(r)}x depth {shallow}'s final gap"
        for (deep, shallow), r in broken.items()
    ]
    why = "; ".join(parts) + f" (seeds {', '.join(map(str, failing))})"
    steps = grid_steps(searches)
    if steps is not None and broken:
        why += resolution_text(max(max(r) for r in broken.values()), *steps)
    return why


def settings(measured: Measured, config: Config) -> dict:
    m = measured

    def keyed(d):
        return {f"l{p:g}/depth{dd}/seed{s}": v for (p, dd, s), v in d.items()}

    return searched_settings(m, keyed, chosen=m.lrs, p_of=lambda key: key[0])


def notes(measured: Measured, config: Config) -> list[str]:
    m, seeds = measured, measured.seeds
    out = [
        f"Data: {m.data_source}; features and target standardised; loss (1/m) sum "
        "(1/p)(x^T w - y)^p, no bias; every gap in the tables also in the plain scale "
        "(1/m) sum |r|^p (= p times; the figure shows the "
        f"{m.loss_scale} scale: {scale_label(4.0, m.loss_scale)}).",
        start_note(config.single_layer_scale, config.init_scale)
        + f" Hidden width {config.hidden}.",
    ]
    for p in config.losses:
        out.append(
            initial_gaps_note(
                {
                    f"depth {d}": [m.inits[(p, d, s)] for s in seeds if (p, d, s) in m.inits]
                    for d in config.depths
                },
                p,
            )
        )
    out.append(config.search.describe(config.iters))
    out.append(
        "Seeds: every (depth, seed) pair is its own model with its own grid search; the "
        f"claims must hold for every seed ({', '.join(map(str, seeds))}); the figure shows "
        f"seed {seeds[0]}, the CSV every seed."
    )
    return out


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    m, seeds = measured, measured.seeds
    first = f", seed {seeds[0]}" if len(seeds) > 1 else ""
    panels = []
    for panel in dict.fromkeys(c.panel for c in m.curves):
        pc = [
            type(c)(c.label, c.iters, np.asarray(c.values, dtype=np.float64), c.panel)
            for c in m.curves
            if c.panel == panel and (len(seeds) == 1 or c.label.endswith(first))
        ]
        panels.append((f"{panel} loss", pc))
    fig = reporting.plot_gap_panels(
        outdir / "fig3.png",
        panels,
        suptitle=over_seeds.seed_title(
            "GD: single layer vs depth-2/3 linear nets, lr grid-searched per model", seeds
        ),
        ylabel=reporting.gap_ylabel(m.loss_scale),
        quick=m.quick,
    )
    csv = reporting.write_curves_csv(outdir / "curves.csv", m.curves)
    return [fig, csv]


SPEC = ExperimentSpec(
    NAME,
    "fig3",
    "Fig. 3: depth 1/2/3, lr grid-searched per model, l2 and l4 on Ethanol; claims: "
    "l2 depth does not accelerate, l4 depth 3 < depth 2 < depth 1 in final gap",
    data="ethanol",
    title=TITLE,
    cost=(32.0, 11000.0),
    config=Config,
)
