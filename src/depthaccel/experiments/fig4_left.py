r"""Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer (l4, Ethanol).

Paper (Sec. 8): with the setup of Fig. 3 right (l4 loss, 1e6 iterations, learning rates
grid-searched per model) a depth-3 linear network trained by plain gradient descent
converges faster than a single layer trained by AdaGrad or AdaDelta; AdaGrad is even
slower than plain GD on the single layer.

AdaGrad and AdaDelta use the TensorFlow-1 conventions (the paper used TensorFlow):
AdaGrad's initial accumulator 0.1, AdaDelta's rho 0.95 and eps 1e-8. Every model's rate
is chosen by the one search (:mod:`depthaccel.experiments.search`) at the full length;
TensorFlow's default rates are always in the grids. Besides the curves at the chosen
rates, the experiment publishes each method's whole learning-rate curve (final gap vs
rate, figure and CSV) and states, for each conclusion, the window of rates in which it
holds. Fair starts and seeds as fig3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthaccel import reporting
from depthaccel.experiments import seeds as over_seeds
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.loss_scale import data_note
from depthaccel.experiments.lr_curves import (
    below_windows,
    grid_steps,
    plot_lr_curves,
    ratio_range_text,
    resolution_text,
    windows_text,
    write_lr_curves_csv,
)
from depthaccel.experiments.results import (
    Claim,
    SearchedGaps,
    searched_figure,
    searched_settings,
)
from depthaccel.experiments.search import SearchPolicy, search_models
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.experiments.starts import FairStartConfig, fair_run, initial_gaps_note, start_note

NAME = "fig4-left"
TITLE = "Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer (l4, Ethanol)"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "l{config.p:g}, {config.iters} iterations: {models}, learning rate "
    "grid-searched per model and seed (seeds {measured.seeds})."
)
_NAMES = {"gd": "GD", "adagrad": "AdaGrad", "adadelta": "AdaDelta"}


@dataclass(frozen=True)
class Config(FairStartConfig):
    p: float = 4.0
    # (method, depth, coarse lr grid low, high): the models compared
    models: tuple[tuple[str, int, float, float], ...] = (
        ("gd", 3, 1e-4, 1.0),
        ("gd", 1, 1e-4, 1.0),
        ("adagrad", 1, 1e-3, 10.0),
        ("adadelta", 1, 1e-3, 100.0),
    )
    # TensorFlow's default rates, always trained: AdaDelta 1e-3 (TF1 and Keras); AdaGrad
    # 1e-3 (Keras; TF1's AdagradOptimizer has no default) and 0.01 (this project's tf
    # default for AdaGrad, torch's)
    tf_default_lrs: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("adagrad", (1e-3, 1e-2)),
        ("adadelta", (1e-3,)),
    )
    convention: str = "tf"
    iters: int = 1_000_000
    search: SearchPolicy = SearchPolicy()  # lr_min/lr_max unused: per-model ranges above
    assess_claims: bool = True  # False: report the numbers without a verdict

    @classmethod
    def quick(cls) -> Config:
        return cls(
            models=(
                ("gd", 3, 1e-3, 1e-1),
                ("gd", 1, 1e-3, 1e-1),
                ("adagrad", 1, 1e-2, 1.0),
                ("adadelta", 1, 1e-1, 10.0),
            ),
            search=SearchPolicy(per_decade=1, max_ratio=2.2),
            iters=5_000,
            seeds=(0, 1),
            log_points=200,
            assess_claims=False,
        )


Key = tuple[str, int, int]  # (method, depth, seed)
_STYLES = {
    ("gd", 3): {"color": "tab:red", "lw": 2},
    ("gd", 1): {"color": "tab:gray", "ls": "--"},
    ("adagrad", 1): {"color": "tab:green"},
    ("adadelta", 1): {"color": "tab:purple"},
}


@dataclass
class Measured(SearchedGaps):
    """What fig4-left measured, keyed by (method, depth, seed): the chosen run's final
    and initial gap (``finals``: NaN when every rate diverged) and rate; ``rates``: every
    rate the search trained and its final gap (None: diverged); ``edges``: models whose
    chosen rate is on its grid's edge; ``lr_rows``: the learning-rate table (CSV);
    ``curves``: the chosen runs' gap curves."""

    rates: dict[Key, tuple[list[float], list[float | None]]]
    edges: list[str]
    search: dict[str, Any]
    lr_rows: list[dict[str, Any]]


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    seeds = over_seeds.check_seeds(config.seeds)
    task = ctx.ethanol()
    p = config.p
    X, y = ctx.lp_data(task.X, task.y, p)
    defaults = dict(config.tf_default_lrs)
    models, grids = [], []
    for s in seeds:
        for method, depth, lo, hi in config.models:
            models.append(fair_run(config, method, 1.0, depth=depth, seed=s))
            grids.append([*config.search.grid(lo, hi), *defaults.get(method, ())])
    found, record = search_models(
        ctx, X, y, p, models, config.search, config.iters, grids=grids,
        log_points=config.log_points,
    )  # fmt: skip
    finals, inits, chosen, rates, curves, edges, lr_rows = {}, {}, {}, {}, [], [], []
    for f in found:
        m = f.model
        key = (m.method, m.depth, m.seed)
        name = f"{m.depth}-layer {_NAMES[m.method]}"
        marked = defaults.get(m.method, ())
        gaps = [None if r.diverged else float(r.final_gap) for r in f.results]
        rates[key] = (list(f.lrs), gaps)
        for r, g in zip(f.results, gaps, strict=True):
            lr_rows.append(
                {
                    "model": name,
                    "seed": m.seed,
                    "lr": r.run.effective_lr,
                    "final_gap": g,
                    "final_gap_plain": None if g is None else p * g,
                    "diverged": bool(r.diverged),
                    "marker": "tf_default"
                    if any(abs(r.run.effective_lr / v - 1) < 1e-6 for v in marked)
                    else "",
                }
            )
        if f.best is None:
            finals[key] = float("nan")
            edges.append(f"{m.method} depth {m.depth} seed {m.seed} (all diverged)")
            continue
        finals[key] = f.best.final_gap
        inits[key] = float(f.best.gap[0])
        chosen[key] = f.best_lr
        if f.on_edge:
            edges.append(f"{m.method} depth {m.depth} seed {m.seed}")
        label = f"{name}, lr {reporting.format_lr(f.best_lr)}" + (
            f", seed {m.seed}" if len(seeds) > 1 else ""
        )
        curves.append((key, reporting.run_curve(f.best, label, f"l{p:g}")))
    return Measured(
        ctx.quick, p, config.iters, seeds, ctx.data_source(task), ctx.loss_scale, finals,
        inits, chosen, curves, rates, edges, record, lr_rows,
    )  # fmt: skip


_PAPER_DEEP = (
    "the implicit acceleration of overparameterization outperforms AdaGrad and AdaDelta "
    "(Fig. 4 left)"
)
_PAPER_ADAGRAD = "AdaGrad ... is slower than plain gradient descent (Fig. 4 caption)"


def _comparisons(config: Config) -> list[tuple[str, str, tuple[str, int], tuple[str, int]]]:
    """(statement, paper, winner, loser) of every claim the configured models allow."""
    have = {(m, d) for m, d, _, _ in config.models}
    out = []
    if ("gd", 3) in have:
        for method in ("adagrad", "adadelta"):
            if (method, 1) in have:
                out.append(
                    (
                        f"Depth-3 GD ends lower than single-layer {_NAMES[method]}",
                        _PAPER_DEEP,
                        ("gd", 3),
                        (method, 1),
                    )
                )
    if ("adagrad", 1) in have and ("gd", 1) in have:
        out.append(
            ("AdaGrad is slower than plain GD on the single layer", _PAPER_ADAGRAD,
             ("gd", 1), ("adagrad", 1))
        )  # fmt: skip
    return out


def judge(measured: Measured, config: Config) -> list[Claim]:
    """Each comparison: the winner's best final gap below the loser's, for every seed;
    the details give, per seed, the windows of rates in which each side wins."""
    m, seeds, p = measured, measured.seeds, config.p
    finals = m.finals
    short = (
        {} if config.assess_claims else {"not assessed": f"{config.iters} iterations (paper: 1e6)"}
    )

    def spread_gaps(method, depth):
        return over_seeds.gap_range_text(
            over_seeds.spread([finals.get((method, depth, s), float("nan")) for s in seeds]), p
        )

    def windows(model, ref_model, s):
        """Rates of ``model`` whose final gap is below ``ref_model``'s best."""
        key = (*model, s)
        if key not in m.rates:
            return []
        ref = finals.get((*ref_model, s), float("nan"))
        return below_windows(*m.rates[key], ref)

    claims = []
    for statement, paper, win, lose in _comparisons(config):
        holds = {
            s: bool(finals[(*win, s)] < finals[(*lose, s)])
            if (*win, s) in finals and (*lose, s) in finals
            else False
            for s in seeds
        }
        wname = f"{win[1]}-layer {_NAMES[win[0]]}"
        lname = f"{lose[1]}-layer {_NAMES[lose[0]]}"
        per_seed = {
            f"seed {s}": f"{lname} ends below {wname}'s best at "
            f"{windows_text(windows(lose, win, s))}; {wname} ends below {lname}'s best at "
            f"{windows_text(windows(win, lose, s))}"
            for s in seeds
        }
        ratios = [
            finals.get((*win, s), float("nan")) / finals.get((*lose, s), float("nan"))
            for s in seeds
        ]
        rtext = over_seeds.range_text(over_seeds.spread(ratios))
        bad = [s for s, ok in holds.items() if not ok]
        claims.append(
            Claim.judged(
                statement,
                paper,
                f"final-gap ratio {wname} / {lname}: {rtext} over seeds",
                over_seeds.every_seed(holds) if config.assess_claims else None,
                why=_why(m, win, lose, bad),
                details={
                    **short,
                    "final gap": {wname: spread_gaps(*win), lname: spread_gaps(*lose)},
                    "per seed": over_seeds.seeds_text(holds),
                    "windows of rates": per_seed,
                    **({"chosen lr on its grid's edge": m.edges} if m.edges else {}),
                },
            )
        )
    return claims


def _why(m: Measured, win: tuple[str, int], lose: tuple[str, int], bad: list[int]) -> str:
    """For the seeds where ``lose`` ends at or below ``win``: by how much, and whether
    that is smaller than what one lr-grid step changes either's final gap ("" when
    there are no such seeds)."""
    if not bad:
        return ""
    wname, lname = (f"{k[1]}-layer {_NAMES[k[0]]}" for k in (win, lose))
    ratios = [m.finals.get((*win, s), float("nan")) / m.finals.get((*lose, s), float("nan"))
              for s in bad]  # fmt: skip
    seeds = ", ".join(map(str, bad))
    if not all(math.isfinite(r) for r in ratios):
        return f"a model diverged at every rate for seed(s) {seeds}"
    why = f"{wname} ends at {ratio_range_text(ratios)}x {lname}'s final gap (seeds {seeds})"
    steps = grid_steps(
        [(*m.rates[key], m.chosen.get(key)) if key in m.rates else None
         for s in bad for key in ((*win, s), (*lose, s))]
    )  # fmt: skip
    if steps is None:
        return why
    return why + resolution_text(max(max(r, 1 / r) for r in ratios), *steps)


def describe_fields(measured: Measured, config: Config) -> dict:
    """Values for ``DESCRIBE``."""
    return {"models": [f"{m} depth {d}" for m, d, _, _ in config.models]}


def settings(measured: Measured, config: Config) -> dict:
    m = measured

    def keyed(d):
        return {f"{a}/depth{b}/seed{c}": v for (a, b, c), v in d.items()}

    windows = {}
    for _, _, win, lose in _comparisons(config):
        for s in m.seeds:
            for a, b in ((lose, win), (win, lose)):
                key = (*a, s)
                ref = m.finals.get((*b, s), float("nan"))
                name_a = f"{a[1]}-layer {_NAMES[a[0]]}"
                name_b = f"{b[1]}-layer {_NAMES[b[0]]}"
                windows[f"{name_a} below {name_b}'s best/seed{s}"] = (
                    below_windows(*m.rates[key], ref) if key in m.rates else []
                )
    return {
        **searched_settings(m, keyed),
        "windows": windows,
    }


def notes(measured: Measured, config: Config) -> list[str]:
    m, seeds, p = measured, measured.seeds, config.p
    return [
        data_note(m.data_source, p, m.loss_scale, figures="the figures show"),
        start_note(config.single_layer_scale, config.init_scale)
        + f" Hidden width {config.hidden}.",
        initial_gaps_note(
            {
                f"{d}-layer {_NAMES[a]}": [
                    m.inits[(a, d, s)] for s in seeds if (a, d, s) in m.inits
                ]
                for a, d, _, _ in config.models
            },
            p,
        ),
        f"Adaptive optimizers with the {config.convention} conventions (TensorFlow 1: "
        "AdaGrad initial accumulator 0.1; AdaDelta rho 0.95, eps 1e-8). Coarse grids: "
        + ", ".join(
            f"{_NAMES[a]} depth {d}: {reporting.format_lr(lo)}..{reporting.format_lr(hi)}"
            for a, d, lo, hi in config.models
        )
        + "; TensorFlow's default rates always trained: "
        + ", ".join(
            f"{_NAMES[a]} {', '.join(map(reporting.format_lr, v))}"
            for a, v in config.tf_default_lrs
        )
        + " (AdaDelta 1e-3: TF1 and Keras; AdaGrad 1e-3: Keras, TF1 has no default, 0.01: "
        "torch's).",
        config.search.describe(config.iters, grid="per model (above)"),
        "Learning-rate curves: fig4_left_lr.png (seed "
        f"{seeds[0]}) and lr_curves.csv (every seed): the final gap of every rate the search "
        "trained; each claim's details name the window of rates in which its conclusion "
        "holds.",
        "Where we may differ from the paper: AdaGrad and AdaDelta are not invariant to the "
        "scale of the gradient, and ours differs from the paper's in ways the paper does not "
        "pin down (standardised features and target, the (1/p) in the loss, the TensorFlow-1 "
        "defaults assumed, the init scale); the kernels match TensorFlow's ApplyAdagrad / "
        "ApplyAdadelta (tests).",
    ]


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    m, seeds = measured, measured.seeds
    defaults = {}
    for row in m.lr_rows:
        if row["marker"]:
            defaults.setdefault(row["model"], set()).add(row["lr"])
    lr_series = [
        (name, lrs, gaps, tuple(sorted(defaults.get(name, ()))))
        for (method, depth, seed), (lrs, gaps) in m.rates.items()
        if seed == seeds[0]
        for name in [f"{depth}-layer {_NAMES[method]}"]
    ]
    fig, csv = searched_figure(
        m,
        outdir,
        "fig4_left.png",
        "Depth-3 GD vs AdaGrad / AdaDelta on a single layer",
        lambda key: dict(_STYLES.get(key[:2], {})),  # key: (method, depth, seed)
    )
    fig_lr = plot_lr_curves(
        outdir / "fig4_left_lr.png",
        lr_series,
        title=f"Final gap after {m.iters} iterations vs learning rate (seed {seeds[0]})"
        + (" [quick mode]" if m.quick else ""),
        ylabel=reporting.gap_ylabel(m.loss_scale) + " (final)",
    )
    csv_lr = write_lr_curves_csv(outdir / "lr_curves.csv", m.lr_rows)
    return [fig, fig_lr, csv, csv_lr]


SPEC = ExperimentSpec(
    NAME,
    "fig4_left",
    "Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer, each "
    "grid-searched, l4 on Ethanol; claim: depth-3 GD ends lower than both",
    data="ethanol",
    after=("fig3",),  # its GD runs and their search are fig3's l4 ones
    title=TITLE,
    cost=(45.0, 7200.0),
    config=Config,
)
