r"""Fig. 5 left: depth 4 and 8 with near-zero vs near-identity init, against depth 1.

Paper (Sec. 8): with the setup of Fig. 3 right (l4 loss, learning rates grid-searched),
deeper networks under near-zero initialisation suffer from vanishing gradients: the
depth-4 net makes visible progress only after about 65k iterations and the depth-8 net
seems stuck after 100k; under identity ("linear residual") initialisation both move at
once and again beat the single layer. 1e5 iterations in full mode.

"Starts to move" = the first logged iteration whose gap is at least ``move_drop``
(1%) below the run's initial gap. Identity init of a width-1 net: the first factor is
the first row of the identity (1 x d), the scalars are 1, plus i.i.d.
N(0, identity_scale^2) noise.

Fair starts (:mod:`depthaccel.experiments.starts`): the single layer at
``single_layer_scale`` (<= 1e-3 or exactly 0), the near-zero deep nets at
``near_zero_scale`` per factor. Every model's rate is chosen by the one search
(:mod:`depthaccel.experiments.search`) at the run's own length, per seed of ``seeds``;
a claim passes only if it holds for every seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthaccel import reporting
from depthaccel.experiments import seeds as over_seeds
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.loss_scale import data_note
from depthaccel.experiments.results import (
    Claim,
    SearchedGaps,
    searched_figure,
    searched_settings,
)
from depthaccel.experiments.search import SearchPolicy, search_models
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.experiments.starts import fair_run, initial_gaps_note, start_note

NAME = "fig5-left"
TITLE = "Fig. 5 left: depth 4/8, near-zero vs near-identity init, vs depth 1 (l4, Ethanol)"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "GD, l{measured.p:g}, {measured.iters} iterations: depth 1, depth {deep} with "
    "near-zero and identity init, lr grid-searched per model and seed (seeds "
    "{measured.seeds})."
)


@dataclass(frozen=True)
class Config:
    p: float = 4.0
    deep: tuple[int, ...] = (4, 8)
    hidden: int = 1
    search: SearchPolicy = SearchPolicy(lr_min=1e-4, lr_max=1.0)
    iters: int = 100_000
    near_zero_scale: float = 0.05  # deep nets, per factor (as fig3; the paper gives none)
    single_layer_scale: float = 1e-3  # depth 1: <= 1e-3 or exactly 0 (fair start)
    identity_scale: float = 0.0  # noise added to the identity init
    seeds: tuple[int, ...] = (0, 1, 2)
    log_points: int = 1000
    move_drop: float = 0.01  # "moves" = gap 1% below its initial value
    stall_fraction: float = 0.1  # near-zero "stalls" = has not moved in the first 10%
    move_fraction: float = 0.01  # identity "moves at once" = within the first 1%
    assess_stall: bool = True  # False: report stall numbers without a verdict

    @classmethod
    def quick(cls) -> Config:
        return cls(
            iters=3_000,
            search=SearchPolicy(
                lr_min=1e-3, lr_max=1e-1, per_decade=1, max_ratio=2.2, max_rounds=3
            ),
            seeds=(0, 1),
            log_points=300,
            assess_stall=False,
        )

    @classmethod
    def full(cls) -> Config:
        return cls()


def move_iteration(iters: np.ndarray, gap: np.ndarray, drop: float) -> int | None:
    """First logged iteration with ``gap <= (1 - drop) * gap[0]`` (None: never)."""
    gap = np.asarray(gap, dtype=float)
    hit = np.flatnonzero(np.isfinite(gap) & (gap <= (1 - drop) * gap[0]))
    return int(np.asarray(iters)[hit[0]]) if hit.size else None


Key = tuple[int, str, int]  # (depth, init, seed)


@dataclass
class Measured(SearchedGaps):
    """What fig5-left measured, keyed by (depth, init, seed): the chosen run's final and
    initial gap and rate, the iteration it starts to move (None: never), the searched
    range of a model that no rate moved (``stuck``), and the chosen runs' curves."""

    moves: dict[Key, int | None]
    stuck: dict[Key, list[str]]
    search: dict[str, Any]


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    seeds = over_seeds.check_seeds(config.seeds)
    task = ctx.ethanol()
    p = config.p
    X, y = ctx.lp_data(task.X, task.y, p)
    specs = [(1, "near_zero")]
    specs += [(d, "near_zero") for d in config.deep]
    specs += [(d, "identity") for d in config.deep]
    models = [
        fair_run(config, "gd", 1.0, depth=d, seed=s, init=init, init_scale=config.near_zero_scale)
        for s in seeds
        for d, init in specs
    ]
    found, record = search_models(
        ctx, X, y, p, models, config.search, config.iters, log_points=config.log_points
    )
    curves, finals, inits, moves, stuck, chosen = [], {}, {}, {}, {}, {}
    for f in found:
        m = f.model
        key = (m.depth, m.init, m.seed)
        if f.best is None:
            finals[key], moves[key] = float("nan"), None
            continue
        b = f.best
        finals[key] = b.final_gap
        inits[key] = float(b.gap[0])
        chosen[key] = f.best_lr
        moves[key] = move_iteration(b.iters, b.gap, config.move_drop)
        init_txt = (
            ""
            if m.depth == 1
            else (", near-zero init" if m.init == "near_zero" else ", identity init")
        )
        lr_txt = f"lr {reporting.format_lr(f.best_lr)}"
        if all(
            move_iteration(r.iters, r.gap, config.move_drop) is None
            for r in f.results
            if not r.diverged
        ):
            # no rate moved it: the "best" rate is arbitrary (final gaps tie to round-off)
            stuck[key] = [reporting.format_lr(min(f.lrs)), reporting.format_lr(max(f.lrs))]
            lr_txt = f"stuck at every lr in {stuck[key][0]}..{stuck[key][1]}"
        label = f"{m.depth}-layer{init_txt}, {lr_txt}" + (
            f", seed {m.seed}" if len(seeds) > 1 else ""
        )
        curves.append((key, reporting.run_curve(b, label, "l4")))
    return Measured(
        ctx.quick, p, config.iters, seeds, ctx.data_source(task), ctx.loss_scale, finals,
        inits, chosen, curves, moves, stuck, record,
    )  # fmt: skip


_PAPER_STALL = "with near-zero initialization ... the deeper networks stall (Fig. 5 left)"
_PAPER_ID = "near-identity initialization ... leads to considerably faster convergence"


def judge(measured: Measured, config: Config) -> list[Claim]:
    """Near-zero init: the deepest net never moves, the others not in the first
    ``stall_fraction`` (NOT ASSESSED with ``assess_stall=False``); identity init: moves
    within the first ``move_fraction`` and ends below depth 1. Every seed."""
    m, seeds, p, T = measured, measured.seeds, measured.p, measured.iters
    short = {} if config.assess_stall else {"not assessed": f"{T} iterations (paper: 1e5)"}

    def it(v):
        return "never" if v is None else str(v)

    def moves(verb: str, mv: dict) -> str:
        if all(mv[s] is None for s in seeds):
            return "does not move within the run" + (" (any seed)" if len(seeds) > 1 else "")
        return f"{verb} at iteration " + ", ".join(it(mv[s]) for s in seeds)

    claims = []
    for d in config.deep:
        mv = {s: m.moves.get((d, "near_zero", s)) for s in seeds}
        if d == max(config.deep):
            holds = {s: mv[s] is None for s in seeds}
            statement = f"Near-zero init, depth {d}: stuck (does not move within the run)"
        else:
            holds = {s: mv[s] is None or mv[s] > config.stall_fraction * T for s in seeds}
            statement = (
                f"Near-zero init, depth {d}: stalls through the first "
                f"{config.stall_fraction:.0%} of the iterations"
            )
        bad = [str(s) for s, ok in holds.items() if not ok]
        claims.append(
            Claim.judged(
                statement,
                _PAPER_STALL,
                moves("starts to move", mv),
                over_seeds.every_seed(holds) if config.assess_stall else None,
                why=f"it moves early for seed(s) {', '.join(bad)}",
                details={
                    **short,
                    "per seed": over_seeds.seeds_text(holds),
                    "depth 1 moves at": [m.moves.get((1, "near_zero", s)) for s in seeds],
                    "paper": "~65k of 100k iterations",
                },
            )
        )
    for d in config.deep:
        holds, mv, ratios = {}, {}, []
        for s in seeds:
            mv[s] = m.moves.get((d, "identity", s))
            g = m.finals.get((d, "identity", s), float("nan"))
            g1 = m.finals.get((1, "near_zero", s), float("nan"))
            ratios.append(g / g1)
            holds[s] = bool(mv[s] is not None and mv[s] <= config.move_fraction * T and g < g1)
        gi = over_seeds.spread([m.finals.get((d, "identity", s), float("nan")) for s in seeds])
        g1 = over_seeds.spread([m.finals.get((1, "near_zero", s), float("nan")) for s in seeds])
        bad = [str(s) for s, ok in holds.items() if not ok]
        claims.append(
            Claim.judged(
                f"Identity init, depth {d}: moves at once and ends below depth 1",
                _PAPER_ID,
                f"{moves('moves', mv)}; final-gap ratio "
                f"{over_seeds.range_text(over_seeds.spread(ratios))}",
                over_seeds.every_seed(holds),
                why=f"it moves late or ends above depth 1 for seed(s) {', '.join(bad)}",
                details={
                    "final gap": {
                        f"depth {d} identity": over_seeds.gap_range_text(gi, p),
                        "depth 1": over_seeds.gap_range_text(g1, p),
                    },
                    "moves within": f"the first {config.move_fraction:.0%} of the iterations",
                    "per seed": over_seeds.seeds_text(holds),
                },
            )
        )
    return claims


def describe_fields(measured: Measured, config: Config) -> dict:
    """Values for ``DESCRIBE``."""
    return {"deep": " and ".join(map(str, config.deep))}


def settings(measured: Measured, config: Config) -> dict:
    m = measured

    def keyed(x):
        return {f"depth{d}/{i}/seed{s}": v for (d, i, s), v in x.items()}

    return {
        **searched_settings(m, keyed),
        "move_iteration": keyed(m.moves),
        "stuck_at_every_lr": keyed(m.stuck),
    }


def notes(measured: Measured, config: Config) -> list[str]:
    m, seeds, p, T = measured, measured.seeds, measured.p, measured.iters
    labels = {(1, "near_zero"): "depth 1"}
    labels.update({(d, "near_zero"): f"depth {d} near-zero" for d in config.deep})
    labels.update({(d, "identity"): f"depth {d} identity" for d in config.deep})
    return [
        data_note(m.data_source, p, m.loss_scale),
        start_note(config.single_layer_scale, config.near_zero_scale)
        + " Identity init: first row of the identity and unit scalars plus "
        f"N(0, {config.identity_scale:g}^2) noise. Widths {config.hidden}.",
        initial_gaps_note(
            {
                name: [m.inits[(*k, s)] for s in seeds if (*k, s) in m.inits]
                for k, name in labels.items()
            },
            p,
        ),
        config.search.describe(T),
        "A model that no rate of its (extended) grid moves is labelled 'stuck at every lr': "
        "its final gaps tie to round-off, so the extension keeps raising the rate and the "
        "rate shown in the settings is arbitrary.",
        f"'Starts to move' = first logged iteration with gap <= {1 - config.move_drop:g} x "
        f"the initial gap (logged every ~{max(1, T // config.log_points)} iterations).",
        f"Seeds {', '.join(map(str, seeds))}: each (model, seed) has its own search; the "
        f"claims must hold for every seed; the figure shows seed {seeds[0]}, the CSV every seed.",
        *rebound_note(m),
    ]


def rebound_note(measured: Measured, factor: float = 2.0) -> list[str]:
    """A note naming every chosen run that falls and then climbs back: it ends above
    ``factor`` x the lowest gap it reached (logged points; [] when none does). Such a
    run's rate is the best of its grid at the last iteration only, and its curve jumps
    up without diverging."""
    found = []
    for (depth, init, seed), c in measured.curves:
        v = np.asarray(c.values, dtype=np.float64)
        if v.size == 0 or not np.all(np.isfinite(v)):
            continue
        i = int(np.argmin(v))
        if v[-1] > factor * v[i]:
            lr = measured.chosen.get((depth, init, seed))
            found.append(
                f"depth {depth} {init.replace('_', '-')} seed {seed}"
                + (f" (lr {lr:.3g})" if lr is not None else "")
                + f": down to {v[i]:.3g} at iteration {int(c.iters[i])}, then back up to "
                f"{v[-1]:.3g} at the end"
            )
    if not found:
        return []
    return [
        "Runs that fall and climb back without diverging (the chosen rate is the best of "
        f"its grid at the last iteration only): {'; '.join(found)}."
    ]


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    colors = {1: "tab:gray", 4: "tab:blue", 8: "tab:red"}

    def style(key: Key) -> dict[str, Any]:
        depth, init, _ = key
        return {
            "color": colors.get(depth, "k"),
            "ls": "--" if init == "near_zero" and depth > 1 else "-",
        }

    return searched_figure(
        measured,
        outdir,
        "fig5_left.png",
        "Deeper nets: near-zero vs identity initialisation",
        style,
    )


SPEC = ExperimentSpec(
    NAME,
    "fig5_left",
    "Fig. 5 left: depth 4 and 8, near-zero vs near-identity init vs depth 1, l4 on "
    "Ethanol; claims: near-zero init stalls, identity init moves at once and wins",
    data="ethanol",
    title=TITLE,
    cost=(53.0, 2300.0),
    config=Config,
)
