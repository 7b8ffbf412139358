r"""Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer (l4, Ethanol).

Paper (Sec. 8): with the setup of Fig. 3 right (l4 loss, 1e6 iterations, learning rates
grid-searched per model) a depth-3 linear network trained by plain gradient descent
converges faster than a single layer trained by AdaGrad or AdaDelta; AdaGrad is even
slower than plain GD on the single layer.

AdaGrad and AdaDelta use the TensorFlow-1 conventions (the paper used TensorFlow):
AdaGrad's initial accumulator 0.1, AdaDelta's rho 0.95 and eps 1e-8; their learning
rates are grid-searched like GD's. Same grid-search procedure as fig3 (a pre-search at
``presearch_iters`` then a narrow full-length grid when set).
"""

from __future__ import annotations

from dataclasses import dataclass

from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.results import Claim, ExperimentResult
from depthaccel.experiments.runs import config_run
from depthaccel.reporting import (
    format_lr,
    plot_loss_panel,
    run_curve,
)
from depthaccel.train.grid import log_grid, two_stage_search

NAME = "fig4-left"
TITLE = "Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer (l4, Ethanol)"


@dataclass(frozen=True)
class Config:
    p: float = 4.0
    # (method, depth, lr grid low, lr grid high): the models compared
    models: tuple[tuple[str, int, float, float], ...] = (
        ("gd", 3, 1e-4, 1.0),
        ("gd", 1, 1e-4, 1.0),
        ("adagrad", 1, 1e-3, 10.0),
        ("adadelta", 1, 1e-2, 100.0),
    )
    convention: str = "tf"
    hidden: int = 1
    lrs_per_decade: int = 2
    iters: int = 1_000_000
    presearch_iters: int | None = 20_000
    narrow_points: int = 3
    narrow_factor: float = 10**0.25
    # full-length extensions of the narrow grid: each costs a 1e6-iteration call (~30-40
    # min on the busy 2-core machine), so at most one (as fig3's l4, whose GD runs this
    # reuses through the results store); edges are flagged
    narrow_extensions: int = 1
    # one more full-length call at half the narrow spacing around each model's best
    refine: bool = True
    init: str = "near_zero"
    init_scale: float | None = 0.05  # "near-zero" (the paper's scale is not given)
    seed: int = 0
    log_points: int = 1000
    assess_claims: bool = True  # False: report the numbers without a verdict

    @classmethod
    def quick(cls) -> Config:
        return cls(
            lrs_per_decade=1,
            iters=5_000,
            presearch_iters=None,
            log_points=200,
            assess_claims=False,
        )

    @classmethod
    def full(cls) -> Config:
        return cls()


def run(config: Config, ctx: ExperimentContext) -> ExperimentResult:
    task = ctx.ethanol()
    X, y = task.X, task.y
    models = [config_run(config, method, 1.0, depth=depth) for method, depth, _, _ in config.models]
    grids = [log_grid(lo, hi, config.lrs_per_decade) for _, _, lo, hi in config.models]
    found_all, record = two_stage_search(
        X,
        y,
        config.p,
        models,
        grids,
        config.iters,
        presearch_iters=config.presearch_iters,
        narrow_points=config.narrow_points,
        narrow_factor=config.narrow_factor,
        narrow_extensions=config.narrow_extensions,
        refine=config.refine,
        log_points=config.log_points,
        train=ctx.train,
    )
    finals, curves, edges = {}, [], []
    styles = {
        ("gd", 3): {"color": "tab:red", "lw": 2},
        ("gd", 1): {"color": "tab:gray", "ls": "--"},
        ("adagrad", 1): {"color": "tab:green"},
        ("adadelta", 1): {"color": "tab:purple"},
    }
    order = {(m, d): i for i, (m, d, _, _) in enumerate(config.models)}
    found_all.sort(key=lambda f: order[(f.model.method, f.model.depth)])
    for f in found_all:
        m = f.model
        key = (m.method, m.depth)
        if f.best is None:
            finals[key] = float("nan")
            continue
        name = {"gd": "GD", "adagrad": "AdaGrad", "adadelta": "AdaDelta"}[m.method]
        c = run_curve(
            f.best, f"{m.depth}-layer {name}, lr {format_lr(f.best_lr)}", f"l{config.p:g}"
        )
        c.style = dict(styles.get(key, {}))
        curves.append(c)
        finals[key] = f.best.final_gap
        if f.on_edge:
            edges.append(f"{m.method} depth {m.depth}")
    fig, csv = plot_loss_panel(
        ctx.out_dir,
        "fig4_left.png",
        config.p,
        curves,
        "Depth-3 GD vs AdaGrad / AdaDelta on a single layer",
    )

    note = (
        "" if config.iters >= 1_000_000 else f"quick mode: {config.iters} iterations (paper: 1e6)"
    )
    g3 = finals.get(("gd", 3), float("nan"))
    edge_txt = (
        "; chosen lr on its grid's edge (a better rate may lie beyond it): " + ", ".join(edges)
        if edges
        else ""
    )
    claims = []
    for method, name in (("adagrad", "AdaGrad"), ("adadelta", "AdaDelta")):
        if (method, 1) in finals:
            ga = finals[(method, 1)]
            claims.append(
                Claim(
                    f"Depth-3 GD ends lower than single-layer {name} (each at its best lr)",
                    f"final gap depth-3 GD {g3:.3e} vs {name} {ga:.3e} (ratio {g3 / ga:.3g})"
                    + edge_txt,
                    bool(g3 < ga) if config.assess_claims else None,
                    note,
                )
            )
    if ("adagrad", 1) in finals and ("gd", 1) in finals:
        ga, g1 = finals[("adagrad", 1)], finals[("gd", 1)]
        claims.append(
            Claim(
                "AdaGrad is slower than plain GD on the single layer (the paper's caption)",
                f"final gap AdaGrad {ga:.3e} vs 1-layer GD {g1:.3e}" + edge_txt,
                bool(ga > g1) if config.assess_claims else None,
                note,
            )
        )
    notes = [
        f"Data: {task.source}; features and target standardised; l{config.p:g} loss "
        "(1/m) sum (1/p)(x^T w - y)^p; no bias.",
        f"Adaptive optimizers with the {config.convention} conventions (TensorFlow 1: "
        "AdaGrad initial accumulator 0.1; AdaDelta rho 0.95, eps 1e-8); learning rates "
        "grid-searched per model on log grids "
        + ", ".join(
            f"{m} depth {d}: {format_lr(lo)}..{format_lr(hi)}" for m, d, lo, hi in config.models
        )
        + f" ({config.lrs_per_decade} per decade), extended beyond an edge when the best "
        "rate sits on it; lowest final gap wins.",
        f"Initialisation: {config.init}, scale "
        f"{'1e-3 (trainer default)' if config.init_scale is None else config.init_scale} "
        f"(i.i.d. Gaussian factor entries); hidden width {config.hidden}. The paper says "
        "'near-zero' without a scale; at 1e-3 a depth-3 width-1 net at lr 1e-3 did not "
        "move for more than 1e4 iterations in our trial.",
    ]
    failed = [c for c in claims if c.passed is False]
    if failed:
        notes.append(
            "Where we differ from the paper (investigation): "
            + (
                "every chosen rate is interior to its grid (settings), so the failures are "
                "not an artefact of the grid's range. "
                if not edges
                else f"chosen rates on a grid edge ({', '.join(edges)}) may hide better ones. "
            )
            + "AdaGrad and AdaDelta are not invariant to the scale of the gradient, and ours "
            "differs from the paper's in ways the paper does not pin down: standardised "
            "features and target, the (1/p) in the loss, the TensorFlow-1 defaults we assume "
            "(AdaGrad initial accumulator 0.1; AdaDelta rho 0.95, eps 1e-8, whose eps sets the "
            "size of the first steps), and the near-zero init scale (0.05 here, which also "
            "sets how long the depth-3 net sits near its saddle at 0). Depth-3 GD does beat "
            "the single-layer GD it accelerates (fig3) and AdaGrad by a wide margin; a "
            "single-layer AdaDelta tuned on this grid ends lower than it, and AdaGrad ends "
            "lower than single-layer GD -- on this preprocessing, these two observations of "
            "the paper do not reproduce."
        )
    if config.presearch_iters is not None and config.presearch_iters < config.iters:
        notes.append(
            f"Budget: the broad grids ran {config.presearch_iters} iterations; the "
            f"{config.iters}-iteration search used {config.narrow_points} rates spaced by "
            f"{config.narrow_factor:.3g} ending at each model's pre-search best (a longer run "
            "tends to need a smaller rate), extended at most "
            f"{config.narrow_extensions} time(s) beyond an edge at full length, then refined "
            "once at half that spacing around each model's best (the settings "
            "and the claims say whether a chosen rate is on its grid's edge). Reason: a "
            "1e6-iteration call of the batched trainer took ~30-45 min on this busy 2-core "
            "machine (other jobs running), so the broad grids at full length, or more "
            "extension rounds, did not fit the session."
        )
    settings = {
        "what_was_run": (
            f"l{config.p:g}, {config.iters} iterations: "
            + ", ".join(f"{m} depth {d}" for m, d, _, _ in config.models)
            + ", learning rate grid-searched per model."
        ),
        "data_source": task.source,
        "grid_search": record,
        "final_gaps": {f"{m}/depth{d}": g for (m, d), g in finals.items()},
    }
    return ExperimentResult(
        settings=settings, figures=[fig], curves=[csv], claims=claims, notes=notes
    )
