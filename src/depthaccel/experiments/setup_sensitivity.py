r"""The unstated setup, made explicit: the default feature scale by the paper's own text,
and how the fixed-rate claims move with the feature scale and the loss scale.

The paper does not state the global scale ``k`` of its (z-scored) features, nor whether
its l_p loss carries the ``1/p`` (:mod:`depthaccel.data.scaling`). Grid-searched GD does
not see ``k``; fixed-rate runs do. Two parts:

1. **The default, by a rule from the paper's text.** Fig. 2 "shows convergence" of GD on
   depth-2 and depth-3 nets at lr 1e-3 (Sec. 8: "simply used the common choice of
   10^-3"), with the setup of Fig. 3 (1e6 iterations), for l2 and l4. A preset passes if
   every Eq. 12 run of Fig. 2's starts (balanced and near-zero, width 1, seed 0) at lr 1e-3
   converges over 1e6 iterations: it never diverges and ends below ``converge_fraction``
   of its initial gap; the stability edge along its path
   (:func:`depthaccel.stability.eq12_paths`) says where a run crosses into instability.
   If several presets pass, the one with the largest ``k`` is the default (the smallest
   departure from per-column z-scores), a second rule fixed before any claim was looked
   at. :data:`depthaccel.data.scaling.DEFAULT_SETUP` must be the rule's pick (a claim).
2. **Sensitivity.** The fixed-rate claims over ``k`` (and the loss scale, where it changes
   the dynamics): Fig. 2's convergence at lr 1e-3 as above, and Fig. 4 right's "depth
   helps Adam" at TensorFlow's default rate (its own ``measure``/``judge``, at
   ``adam_iters`` iterations: a cut length is said so). Adam is invariant to the loss
   scale up to its epsilon, so it is run in the paper's scale only.

The Eq. 12 paths are stored tasks (``fig2-edge-path/1``, shared with fig2: the default's
paths are fig2's own), the Adam runs are stored runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthaccel.data.ethanol import N_FEATURES, N_ROWS
from depthaccel.data.scaling import DEFAULT_SETUP, LOSS_SCALES, SetupAxes, parse_feature_scale
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.results import Claim
from depthaccel.experiments.spec import ExperimentSpec

NAME = "setup"
TITLE = "The unstated setup: the feature scale chosen by the paper's Fig. 2 text, and the fixed-rate claims across it"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "Eq. 12 at lr {config.lr:g} for {config.iters} iterations from Fig. 2's starts "
    "(depths {config.depths}, l2 and l4) under each feature-scale preset and k in "
    "the grid, both loss scales; Fig. 4 right's Adam claims at {config.adam_iters} "
    "iterations for each k."
)

_PAPER_FIG2 = (
    "Figure 2 shows convergence ... of gradient descent optimizing depth-2 and depth-3 "
    "linear networks ... (simply used the common choice of 10^-3)"
)
_PAPER_ADAM = "depth improves speed, suggesting that the acceleration ... is somewhat orthogonal"


@dataclass(frozen=True)
class Config:
    presets: tuple[str, ...] = ("zscore", "zscore-unit-row", "zscore-unit-col")
    # the sensitivity grid: k values (1/sqrt(m) is the preset zscore-unit-col)
    scales: tuple[str | float, ...] = (1.0, 0.3, 0.1, 0.03, "zscore-unit-col")
    loss_scales: tuple[str, ...] = LOSS_SCALES
    lr: float = 1e-3
    iters: int = 1_000_000
    losses: tuple[float, ...] = (2.0, 4.0)
    depths: tuple[int, ...] = (2, 3)
    starts: tuple[tuple[str, float], ...] = (("balanced", 1e-2), ("near_zero", 1e-2))
    width: int = 1
    seed: int = 0
    edge_points: int = 500
    converge_fraction: float = 0.5  # "converges": ends below this x its initial gap
    adam_iters: int = 200_000
    adam_seeds: tuple[int, ...] = (0, 1, 2)
    assess: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(
            scales=(1.0, 0.1),
            iters=2_000,
            edge_points=20,
            adam_iters=2_000,
            adam_seeds=(0,),
            assess=False,
        )

    @classmethod
    def full(cls) -> Config:
        return cls()


@dataclass(frozen=True)
class PathRecord:
    """One Eq. 12 run at the fixed rate: where it ended and where it became unstable."""

    initial_gap: float
    final_gap: float | None  # None: diverged
    diverged_at: int | None
    first_unstable: int | None
    min_edge: float | None

    def converged(self, fraction: float) -> bool:
        return (
            self.diverged_at is None
            and self.final_gap is not None
            and self.final_gap < fraction * self.initial_gap
        )


@dataclass
class Measured:
    """Per setting ``(feature scale, loss scale)``: the Eq. 12 runs of Fig. 2's starts
    (``"l{p}/{init}/depth{N}"`` -> :class:`PathRecord`) and, in the paper's loss scale, Fig.
    4 right's claims (statement -> verdict, measured)."""

    quick: bool
    k: dict[str, float]
    paths: dict[tuple[str, str], dict[str, PathRecord]]
    adam: dict[str, list[Claim]] = field(default_factory=dict)
    config: Config | None = None  # what was measured (the grid's axes)


def _label(scale: str | float) -> str:
    return scale if isinstance(scale, str) else f"k={scale:g}"


def _settings(config: Config) -> list[tuple[str | float, str]]:
    """Every (feature scale, loss scale) measured: the presets in the paper's loss scale
    (the rule) and the sensitivity grid crossed with the loss scales."""
    out: list[tuple[str | float, str]] = [(p, "paper") for p in config.presets]
    for s in config.scales:
        for ls in config.loss_scales:
            if (parse_feature_scale(s), ls) not in [(parse_feature_scale(a), b) for a, b in out]:
                out.append((parse_feature_scale(s), ls))
    return out


def _paths_at(ctx: ExperimentContext, config: Config, setup: SetupAxes) -> dict[str, PathRecord]:
    from depthaccel.experiments.edge_paths import EdgeJob, edge_path_tasks, run_edge_job

    child = dataclasses.replace(ctx, setup=setup)
    task = child.ethanol()
    jobs = []
    starts = tuple((i, float(s), int(d)) for i, s in config.starts for d in config.depths)
    for p in config.losses:
        X, y = child.lp_data(task.X, task.y, p)
        jobs.append(
            EdgeJob(
                X,
                y,
                float(p),
                starts,
                config.width,
                config.seed,
                config.lr,
                config.iters,
                config.edge_points,
            )  # fmt: skip
        )
    stored = edge_path_tasks(lambda j: f"setup: Eq. 12 paths, l{j.p:g}, k={j.X.std():.3g}")
    results = ctx.map(run_edge_job, jobs, stored=stored)
    out = {}
    for job, res in zip(jobs, results, strict=True):
        opt = ctx.optimum(job.X, job.y, job.p)
        for key, rec in res.items():
            out[f"l{job.p:g}/{key}"] = _record(rec, opt.loss)
    return out


def _record(rec: dict[str, Any], optimum: float) -> PathRecord:
    loss = rec.get("loss")
    if loss is None:
        raise ValueError("an Eq. 12 path record without its losses")
    vals = [v for v in loss if v is not None]
    return PathRecord(
        initial_gap=float(vals[0]) - optimum,
        final_gap=None if rec["diverged_at"] is not None else float(vals[-1]) - optimum,
        diverged_at=rec["diverged_at"],
        first_unstable=rec["first_unstable"],
        min_edge=rec["min_edge"],
    )


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    from depthaccel.experiments import fig4_right

    k, paths, adam = {}, {}, {}
    shape = (N_ROWS, N_FEATURES)  # what the presets' k depends on
    for scale, ls in _settings(config):
        setup = SetupAxes(scale, ls)
        k[_label(scale)] = setup.factors(shape, 2.0)[0]
        paths[(_label(scale), ls)] = _paths_at(ctx, config, setup)
    adam_cfg = dataclasses.replace(
        fig4_right.Config.full(),
        iters=config.adam_iters,
        seeds=config.adam_seeds,
        assess_claims=config.assess and not ctx.quick,
        log_points=min(2000, config.adam_iters),
    )
    for scale in config.scales:
        child = dataclasses.replace(ctx, setup=SetupAxes(scale, "paper"))
        m = fig4_right.measure(adam_cfg, child)
        adam[_label(parse_feature_scale(scale))] = fig4_right.judge(m, adam_cfg)
    return Measured(quick=ctx.quick, k=k, paths=paths, adam=adam, config=config)


def rule_pick(measured: Measured, config: Config) -> tuple[dict[str, bool], str | None]:
    """Which presets pass the rule (every run converges) and the one it picks (largest k)."""
    passes = {
        p: all(r.converged(config.converge_fraction) for r in measured.paths[(p, "paper")].values())
        for p in config.presets
    }
    ok = [p for p, v in passes.items() if v]
    return passes, (max(ok, key=lambda p: measured.k[p]) if ok else None)


def _fig2_row(recs: dict[str, PathRecord], p: float, fraction: float) -> tuple[bool, str, dict]:
    """(all of loss ``p``'s runs converge, a short summary, per-run details)."""
    mine = {key.split("/", 1)[1]: r for key, r in recs.items() if key.startswith(f"l{p:g}/")}
    div = sorted(r.diverged_at for r in mine.values() if r.diverged_at is not None)
    stuck = [key for key, r in mine.items() if r.diverged_at is None and not r.converged(fraction)]
    if not mine:
        return True, "no runs", {}
    if div:
        text = f"{len(div)}/{len(mine)} diverge (first at {div[0]})"
    elif stuck:
        text = f"{len(stuck)}/{len(mine)} stay near their start"
    else:
        worst = max(r.final_gap / r.initial_gap for r in mine.values())
        text = f"all converge (final/initial gap <= {worst:.2g})"
    details = {key: dataclasses.asdict(r) for key, r in mine.items()}
    return not div and not stuck, text, details


def judge(measured: Measured, config: Config) -> list[Claim]:
    assess = config.assess and not measured.quick
    claims = []
    passes, pick = rule_pick(measured, config)
    for preset in config.presets:
        recs = measured.paths[(preset, "paper")]
        rows = [_fig2_row(recs, p, config.converge_fraction) for p in config.losses]
        ok = all(r[0] for r in rows)
        bad = "; ".join(r[1] for r in rows if not r[0])
        claims.append(
            Claim.judged(
                f"{preset}: Fig. 2's nets converge at lr 1e-3 for 1e6 iterations (l2, l4)",
                _PAPER_FIG2,
                "; ".join(f"l{p:g}: {r[1]}" for p, r in zip(config.losses, rows, strict=True)),
                ok if assess else None,
                why=f"under {preset} at lr {config.lr:g}: {bad}",
                details={f"l{p:g}": r[2] for p, r in zip(config.losses, rows, strict=True)},
            )
        )
    default = _label(DEFAULT_SETUP.feature_scale)
    claims.append(
        Claim.judged(
            "The default feature scale is the rule's pick",
            "(our rule, from Fig. 2's text: the largest k under which Fig. 2 converges)",
            f"rule picks {pick or 'no preset'}; default {default}",
            (pick == default) if assess else None,
            why=(
                "no standard preset lets every Fig. 2 run converge at lr 1e-3"
                if pick is None
                else f"the rule picks {pick}, the default is {default}"
            ),
            details={"presets passing": passes, "k": measured.k},
        )
    )
    return claims


def grid(
    measured: Measured, config: Config
) -> tuple[list[str], list[str], np.ndarray, list[list[str]]]:
    """The sensitivity grid: row names (claims), column names (settings), verdicts (1 PASS,
    0 FAIL, NaN otherwise) and each cell's text (PASS, FAIL, "not assessed" or "not run":
    Adam is run in the paper's loss scale only)."""
    cols = [
        (_label(parse_feature_scale(s)), ls) for s in config.scales for ls in config.loss_scales
    ]
    rows = [f"Fig. 2 converges at 1e-3, l{p:g}" for p in config.losses]
    adam_rows: list[str] = []
    for claims in measured.adam.values():
        for c in claims:
            if c.statement not in adam_rows:
                adam_rows.append(c.statement)
    vals = np.full((len(rows) + len(adam_rows), len(cols)), np.nan)
    texts = [["not run"] * len(cols) for _ in range(vals.shape[0])]
    assessed = config.assess and not measured.quick
    for j, (lab, ls) in enumerate(cols):
        recs = measured.paths.get((lab, ls))
        if recs is not None:
            for i, p in enumerate(config.losses):
                texts[i][j] = "not assessed"
                if assessed:
                    vals[i, j] = float(_fig2_row(recs, p, config.converge_fraction)[0])
        if ls == "paper":
            for c in measured.adam.get(lab, []):
                i = len(rows) + adam_rows.index(c.statement)
                vals[i, j] = {"PASS": 1.0, "FAIL": 0.0}.get(c.verdict, np.nan)
                texts[i][j] = "not assessed"
    for (i, j), v in np.ndenumerate(vals):
        if not np.isnan(v):
            texts[i][j] = "PASS" if v == 1.0 else "FAIL"
    short = [
        s.replace("Depth helps Adam: the ", "").replace(" net ends lower than", " Adam below")
        for s in adam_rows
    ]
    names = rows + [f"Fig. 4 right: {s}" for s in short]
    return names, [f"{lab}\n{ls}" for lab, ls in cols], vals, texts


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    from depthaccel.reporting import pyplot

    config = measured.config or (Config.quick() if measured.quick else Config.full())
    names, cols, vals, texts = grid(measured, config)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 4.0, 0.5 * len(names) + 1.6),
                           layout="constrained")  # fmt: skip
    rgb = np.ones((*vals.shape, 3)) * 0.85
    rgb[vals == 1.0] = (0.55, 0.8, 0.55)
    rgb[vals == 0.0] = (0.9, 0.5, 0.5)
    ax.imshow(rgb, aspect="auto")
    for (i, j), _v in np.ndenumerate(vals):
        ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    title = "Fixed-rate claims across feature scale k and loss scale"
    ax.set_title(title + (" (quick mode: not assessed)" if measured.quick else ""), fontsize=9)
    path = outdir / "setup_sensitivity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def settings(measured: Measured, config: Config) -> dict:
    passes, pick = rule_pick(measured, config)
    return {
        "rule": "see notes",
        "presets_passing": passes,
        "rule_pick": pick,
        "default": _label(DEFAULT_SETUP.feature_scale),
        "k": measured.k,
        "paths": {
            f"{lab}/{ls}": {key: dataclasses.asdict(r) for key, r in recs.items()}
            for (lab, ls), recs in measured.paths.items()
        },
    }


def notes(measured: Measured, config: Config) -> list[str]:
    from depthaccel.data.scaling import DEFAULT_RULE

    cut = (
        []
        if config.adam_iters >= 200_000
        else [f"Fig. 4 right's claims are judged at {config.adam_iters} iterations (paper: 2e5)."]
    )
    return [
        "Rule for the default: " + DEFAULT_RULE,
        f"A run converges if it never diverges and ends below {config.converge_fraction:g} "
        "of its initial gap; 'plain' trains (1/m) sum |r|^p (every gradient p times the "
        "paper's), so a fixed-rate run there is the paper's run at p times the rate.",
        "Fig. 4 left is grid-searched per model (the paper: 'optimal learning rates, "
        "chosen individually via grid search'), and not in this grid. Under X k, GD on a "
        "depth-N net at lr eta is GD on X at eta k^(2/N) from factors scaled by k^(1/N), so "
        "its search sees k only through the grid's spacing and the start; AdaGrad at lr "
        "eta with initial accumulator a is AdaGrad on X at eta k with accumulator a/k^2 "
        "(both checked against the trainer by the tests), and AdaDelta's epsilon enters "
        "as eps k^2 above and eps/k^2 below its ratio: only these two move with k, and a "
        "search of them at each k is not part of this experiment.",
        *cut,
    ]


SPEC = ExperimentSpec(
    NAME,
    "setup_sensitivity",
    "the unstated feature and loss scales: the default feature scale by Fig. 2's text "
    "(lr 1e-3 converges), and the fixed-rate claims (Fig. 2, Fig. 4 right) across them",
    data="ethanol",
    after=("fig2", "fig4-right"),
    title=TITLE,
    cost=(20.0, 9000.0),
    config=Config,
)
