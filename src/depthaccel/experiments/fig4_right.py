r"""Fig. 4 right: Adam (TensorFlow defaults) on depth 1, 2, 3 (l4, Ethanol).

Paper (Sec. 8): Adam alone is faster than overparameterization, but adding depth to
Adam accelerates it further: with the learning rate at TensorFlow's default (1e-3) and
the setup of Fig. 3 right, depth-2 and depth-3 nets trained by Adam converge faster
than a single layer trained by Adam. 2e5 iterations in full mode.

Adam with the TensorFlow-1 conventions (lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8
added to the bias-corrected sqrt(v) as ``tf.compat.v1.train.AdamOptimizer`` does), no
grid search (the paper used the default rate), applied to every factor of the net.
Fair starts (:mod:`depthaccel.experiments.starts`: the single layer at
``single_layer_scale``, deep nets at ``init_scale`` per factor) and every seed of
``seeds`` (a claim passes only if it holds for each).

The claim reads one point per run, the gap at the last iteration. Adam at a fixed rate
gives the deep nets short loss spikes (the gap jumps far above its running minimum for
tens to hundreds of iterations, then falls back) that the single layer does not show, so
a run that ends inside one ends high although its curve was ahead. The report therefore
gives, per seed and read off the logged curve (:func:`tail_evidence`), the minimum along the curve
and the final gap over it, the share of the last ``TAIL_FRACTION`` of the logged
iterations at which the deep net is below the single layer, the number of spikes, and the
exact first hits; :func:`diagnosis_note` says from these whether a failing seed's deep
net was ahead before the end (a spike at the end) or never (depth does not help). The
criterion itself stays the paper's: the final gap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthaccel import reporting
from depthaccel.experiments import seeds as over_seeds
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.loss_scale import data_note
from depthaccel.experiments.results import Claim
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.experiments.starts import FairStartConfig, fair_run, initial_gaps_note, start_note

NAME = "fig4-right"
TITLE = "Fig. 4 right: Adam (TensorFlow defaults) on depth 1/2/3 (l4, Ethanol)"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "Adam ({config.convention}, lr {lr}) on depth {config.depths}, l{measured.p:g}, "
    "{config.iters} iterations, seeds {measured.seeds}."
)


@dataclass(frozen=True)
class Config(FairStartConfig):
    p: float = 4.0
    depths: tuple[int, ...] = (1, 2, 3)
    convention: str = "tf"
    lr: float | None = None  # None: the convention's default (TF: 1e-3)
    iters: int = 200_000
    thresholds: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
    assess_claims: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(iters=5_000, log_points=200, seeds=(0, 1), assess_claims=False)


#: share of the run (its last iterations) whose logged points the tail diagnostics read
TAIL_FRACTION = 0.1
#: a logged gap more than this factor above the curve's running minimum is a spike
SPIKE_FACTOR = 2.0


@dataclass(frozen=True)
class TailEvidence:
    """What a logged gap curve says beyond its last point (:func:`tail_evidence`).

    Attributes:
        final: the gap at the last logged iteration (the run's end).
        curve_min: the smallest logged gap (NaN if none is finite).
        min_iter: the first logged iteration at which ``curve_min`` occurs.
        spikes: logged points ``i`` with ``gap_i > SPIKE_FACTOR * min(gap_0 .. gap_i)``
            (over the whole run).
        below_ref_frac: among the logged points of the last ``TAIL_FRACTION`` of the
            iterations, the fraction at which the gap is below the reference curve's.
        last_below_ref: the last logged iteration with the gap below the reference's
            (None if never).
    """

    final: float
    curve_min: float
    min_iter: int | None
    spikes: int
    below_ref_frac: float
    last_below_ref: int | None

    @property
    def final_over_min(self) -> float:
        """``final / curve_min``: 1 for a curve that ends at its lowest point."""
        return self.final / self.curve_min


def tail_evidence(
    iters: Sequence[int],
    gap: Sequence[float],
    ref_gap: Sequence[float],
    *,
    tail_fraction: float = TAIL_FRACTION,
    spike_factor: float = SPIKE_FACTOR,
) -> TailEvidence:
    """The :class:`TailEvidence` of ``gap`` (logged at ``iters``, increasing) against a
    reference curve ``ref_gap`` logged at the same iterations (here the single layer of the
    same seed). NaN gaps (a diverged run) never count as below, as a spike or as the
    minimum. ValueError on mismatched lengths, ``tail_fraction`` outside (0, 1] or
    ``spike_factor`` <= 1."""
    it = np.asarray(iters, dtype=np.int64)
    g = np.asarray(gap, dtype=np.float64)
    ref = np.asarray(ref_gap, dtype=np.float64)
    if not (it.ndim == 1 and it.shape == g.shape == ref.shape and it.size > 0):
        raise ValueError(
            f"iters, gap and ref_gap must be 1-d of one non-zero length, got shapes "
            f"{it.shape}, {g.shape}, {ref.shape}"
        )
    if not 0 < tail_fraction <= 1:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction!r}")
    if not spike_factor > 1:
        raise ValueError(f"spike_factor must be > 1, got {spike_factor!r}")
    finite = np.isfinite(g)
    if finite.any():
        curve_min = float(np.min(g[finite]))
        min_iter = int(it[np.flatnonzero(g == curve_min)[0]])
    else:
        curve_min, min_iter = float("nan"), None
    running_min = np.fmin.accumulate(g)  # fmin: NaN entries do not poison the minimum
    spikes = int(np.count_nonzero(g > spike_factor * running_min))
    below = g < ref
    tail = it >= (1.0 - tail_fraction) * it[-1]
    hit = np.flatnonzero(below)
    return TailEvidence(
        final=float(g[-1]),
        curve_min=curve_min,
        min_iter=min_iter,
        spikes=spikes,
        below_ref_frac=float(np.mean(below[tail])),
        last_below_ref=int(it[hit[-1]]) if hit.size else None,
    )


def earlier_hits(
    hits: Mapping[str, int | None], ref_hits: Mapping[str, int | None]
) -> tuple[int, int]:
    """(thresholds that ``hits`` reaches strictly before ``ref_hits``, thresholds reached
    by either): a threshold never reached (None) counts as reached at infinity."""
    if set(hits) != set(ref_hits):
        raise ValueError(f"different thresholds: {sorted(hits)} vs {sorted(ref_hits)}")
    inf = float("inf")
    compared = [t for t in hits if hits[t] is not None or ref_hits[t] is not None]
    earlier = sum(
        (inf if hits[t] is None else hits[t]) < (inf if ref_hits[t] is None else ref_hits[t])
        for t in compared
    )
    return int(earlier), len(compared)


def _hits_text(hits: Mapping[str, int | None]) -> str:
    return ", ".join("never" if h is None else str(h) for h in hits.values())


def _range(values: Sequence[float], fmt: str = ".3g") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}..{hi:{fmt}}"


def diagnosis_note(
    evidence: Mapping[tuple[int, int], TailEvidence],
    hits: Mapping[tuple[int, int], Mapping[str, int | None]],
    holds: Mapping[tuple[int, int], bool],
    *,
    depths: Sequence[int],
    seeds: Sequence[int],
    log_every: float,
    lr: float,
) -> str:
    """The report's note on why a seed's deep net can end above the single layer, from
    the measured :class:`TailEvidence` (keys (depth, seed); the smallest depth is the
    reference) and the first hits; ``holds[(d, s)]``: the claim's verdict per deep net."""
    d1 = min(depths)
    deep = [d for d in depths if d != d1]
    seeds_txt = ", ".join(map(str, seeds))
    spikes = "; ".join(
        f"depth {d}: " + ", ".join(str(evidence[(d, s)].spikes) for s in seeds) for d in depths
    )
    ratio = "; ".join(
        f"depth {d}: " + _range([evidence[(d, s)].final_over_min for s in seeds], ".2f")
        for d in depths
    )
    below = "; ".join(
        f"depth {d}: " + _range([100 * evidence[(d, s)].below_ref_frac for s in seeds], ".0f") + "%"
        for d in deep
    )
    counts = [earlier_hits(hits[(d, s)], hits[(d1, s)]) for d in deep for s in seeds]
    tail_pct = f"{100 * TAIL_FRACTION:.0f}%"
    n_early, n_hits = sum(c[0] for c in counts), sum(c[1] for c in counts)
    text = (
        f"Tail of the curves (read off the logged curves, one point every {log_every:.0f} "
        f"iterations; seeds {seeds_txt}): logged points more than {SPIKE_FACTOR:g}x above "
        "the curve's running minimum (spikes, as far as the logged points catch them): "
        + spikes
        + f". Final gap / the curve's minimum: {ratio}. Logged iterations of the last "
        + tail_pct
        + f" at which the deep net is below the single layer: {below}. The deep nets reach "
        f"{n_early} of the {n_hits} (depth, seed, threshold) first hits that either net "
        "reaches strictly before the single layer."
    )
    failing = [(d, s) for d in deep for s in seeds if holds.get((d, s)) is False]
    if not failing:
        return text
    parts = []
    for d, s in failing:
        ev, ref = evidence[(d, s)], evidence[(d1, s)]
        parts.append(
            f"depth {d}, seed {s}: minimum along the curve {ev.curve_min:.3e} (it. "
            f"{ev.min_iter}) "
            + ("<" if ev.curve_min < ref.final else ">=")
            + f" the single layer's final {ref.final:.3e}; final/min {ev.final_over_min:.2f} "
            f"(single layer {ref.final_over_min:.2f})"
        )
    never_below = [
        f"depth {d}, seed {s}"
        for d, s in failing
        if not evidence[(d, s)].curve_min < evidence[(d1, s)].final
    ]
    single_spikes = sum(evidence[(d1, s)].spikes for s in seeds)
    if never_below:
        verdict = (
            f" {', '.join(never_below)} never got below the single layer's final gap: "
            "depth does not help there in this setup."
        )
    else:
        verdict = (
            " Each failing run was below the single layer's final gap earlier and ended "
            "above its own minimum, on an upswing of the kind counted above as spikes "
            f"(Adam at the fixed rate {reporting.format_lr(lr)}; the single layer has "
            f"{single_spikes} spikes over all seeds): the end point fails while the curve is "
            "below the single layer's at most logged iterations; the spikes themselves are a "
            "cost that depth brings to Adam at this rate."
        )
    return text + " Where the claim fails: " + "; ".join(parts) + "." + verdict


def _plot(
    path: Any,
    curves: Sequence[reporting.Curve],
    keys: Sequence[tuple[int, int]],
    m: Any,
    seeds: Sequence[int],
    loss_scale: str,
) -> Any:
    """Two panels: the whole run and its last ``TAIL_FRACTION`` (its last point, which the
    claim reads, marked), every seed (the first seed thick, the others thin and dashed),
    one colour per depth."""
    p = m.p
    depths = sorted({d for d, _ in keys})
    dashes = ["-", "--", ":", "-."]
    whole, tail = [], []
    for c, (d, s) in zip(curves, keys, strict=True):
        i = seeds.index(s)
        style = {
            "color": f"C{depths.index(d)}",
            "lw": 1.6 if i == 0 else 0.9,
            "ls": dashes[i % len(dashes)],
            "alpha": 1.0 if i == 0 else 0.75,
        }
        vals = np.asarray(c.values, dtype=np.float64)
        its = np.asarray(c.iters)
        whole.append(reporting.Curve(c.label, its, vals, c.panel, style))
        keep = its >= (1.0 - TAIL_FRACTION) * its[-1]
        end = {"marker": "o", "ms": 4, "markevery": [int(np.count_nonzero(keep)) - 1]}
        tail.append(reporting.Curve(c.label, its[keep], vals[keep], c.panel, style | end))
    return reporting.plot_gap_panels(
        path,
        [
            (f"l{p:g} loss, whole run", whole),
            (f"last {100 * TAIL_FRACTION:.0f}% of the run (the claim reads the last point)", tail),
        ],
        suptitle=f"Adam (lr {reporting.format_lr(m.lr)}) on depth {', '.join(map(str, depths))}"
        + (f" (seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""),
        ylabel=reporting.gap_ylabel(loss_scale),
        panel_size=(6.4, 4.6),
        quick=m.quick,
    )


@dataclass
class Measured:
    """What fig4-right measured, keyed by (depth, seed): final and initial gaps, exact
    first-hit iterations per threshold, the tail evidence against the single layer of
    the same seed, and the gap curves; ``lr``: Adam's (fixed) rate; ``log_every``: the
    mean spacing of the logged points."""

    quick: bool
    p: float
    seeds: tuple[int, ...]
    lr: float
    data_source: str
    loss_scale: str
    finals: dict[tuple[int, int], float]
    inits: dict[tuple[int, int], float]
    hits: dict[tuple[int, int], dict[str, int | None]]
    evidence: dict[tuple[int, int], TailEvidence]
    log_every: float
    curves: list[tuple[tuple[int, int], reporting.Curve]]


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    seeds = over_seeds.check_seeds(config.seeds)
    task = ctx.ethanol()
    p = config.p
    X, y = ctx.lp_data(task.X, task.y, p)
    runs = [
        fair_run(config, "adam", config.lr, depth=d, seed=s) for s in seeds for d in config.depths
    ]
    res = ctx.train(
        X, y, config.p, runs, config.iters, thresholds=config.thresholds,
        log_points=config.log_points,
    )  # fmt: skip
    lr = runs[0].effective_lr
    curves = [
        (
            (r.run.depth, r.run.seed),
            reporting.run_curve(
                r,
                f"{r.run.depth}-layer Adam, lr {reporting.format_lr(lr)}"
                + (f", seed {r.run.seed}" if len(seeds) > 1 else ""),
                f"l{p:g}",
            ),
        )
        for r in res
    ]
    d1 = min(config.depths)
    by_key = {(r.run.depth, r.run.seed): r for r in res}
    iters0 = np.asarray(res[0].iters)
    return Measured(
        quick=ctx.quick,
        p=p,
        seeds=seeds,
        lr=lr,
        data_source=ctx.data_source(task),
        loss_scale=ctx.loss_scale,
        finals={k: r.final_gap for k, r in by_key.items()},
        inits={k: float(r.gap[0]) for k, r in by_key.items()},
        hits={
            k: {f"{t:g}": r.first_hit.get(t) for t in config.thresholds} for k, r in by_key.items()
        },
        evidence={
            k: tail_evidence(r.iters, r.gap, by_key[(d1, k[1])].gap) for k, r in by_key.items()
        },
        log_every=float(np.mean(np.diff(iters0))) if iters0.size > 1 else float(config.iters),
        curves=curves,
    )


_PAPER = "depth improves speed, suggesting that the acceleration ... is somewhat orthogonal"


def _holds(m: Measured, config: Config) -> dict[tuple[int, int], bool]:
    d1 = min(config.depths)
    return {
        (d, s): bool(m.finals[(d, s)] < m.finals[(d1, s)])
        for d in config.depths
        if d != d1
        for s in m.seeds
    }


def judge(measured: Measured, config: Config) -> list[Claim]:
    """Each deeper net ends below the single layer, for every seed; the details give,
    per seed, the curve's minimum, its tail against the single layer and the first hits."""
    m, seeds, p = measured, measured.seeds, measured.p
    d1 = min(config.depths)
    holds_all = _holds(m, config)
    short = (
        {}
        if config.assess_claims
        else {"not assessed": f"{config.iters} iterations (the paper's claim is about 2e5)"}
    )
    thr_names = "/".join(f"{t:g}" for t in config.thresholds)
    tail_pct = f"{100 * TAIL_FRACTION:.0f}%"

    def gaps_text(d):
        return over_seeds.gap_range_text(over_seeds.spread([m.finals[(d, s)] for s in seeds]), p)

    def seed_text(d, s):
        ev, ref = m.evidence[(d, s)], m.evidence[(d1, s)]
        last = "never" if ev.last_below_ref is None else f"it. {ev.last_below_ref}"
        return (
            f"{ev.final:.3e} vs {ref.final:.3e} (x{ev.final / ref.final:.2f}), min along the "
            f"curve {ev.curve_min:.3e} at it. {ev.min_iter}, below depth {d1} at "
            f"{100 * ev.below_ref_frac:.0f}% of the last {tail_pct} (last {last}); first "
            f"below {thr_names}: {_hits_text(m.hits[(d, s)])} vs {_hits_text(m.hits[(d1, s)])}"
        )

    claims = []
    for d in config.depths:
        if d == d1:
            continue
        holds = {s: holds_all[(d, s)] for s in seeds}
        ratios = [m.finals[(d, s)] / m.finals[(d1, s)] for s in seeds]
        bad = [str(s) for s, ok in holds.items() if not ok]
        claims.append(
            Claim.judged(
                f"Depth helps Adam: the depth-{d} net ends lower than the single layer",
                _PAPER,
                f"final-gap ratio depth {d} / depth {d1}: {_range(ratios)} over seeds",
                over_seeds.every_seed(holds) if config.assess_claims else None,
                why=f"depth {d} ends above the single layer for seed(s) {', '.join(bad)}",
                details={
                    **short,
                    "final gap": {f"depth {d}": gaps_text(d), f"depth {d1}": gaps_text(d1)},
                    "per seed": over_seeds.seeds_text(holds),
                    **{f"seed {s}": seed_text(d, s) for s in seeds},
                },
            )
        )
    return claims


def describe_fields(measured: Measured, config: Config) -> dict:
    """Values for ``DESCRIBE``."""
    return {"lr": reporting.format_lr(measured.lr)}


def settings(measured: Measured, config: Config) -> dict:
    m, p = measured, measured.p

    def keyed(d):
        return {f"depth{a}/seed{b}": v for (a, b), v in d.items()}

    return {
        "data_source": m.data_source,
        "loss_scale_of_figure": m.loss_scale,
        "lr": m.lr,
        "final_gaps": keyed(m.finals),
        "final_gaps_plain": {k: p * v for k, v in keyed(m.finals).items()},
        "initial_gaps": keyed(m.inits),
        "first_hit": keyed(m.hits),
        "tail_evidence": {k: dataclasses.asdict(v) for k, v in keyed(m.evidence).items()},
    }


def notes(measured: Measured, config: Config) -> list[str]:
    m, seeds, p = measured, measured.seeds, measured.p
    tail_pct = f"{100 * TAIL_FRACTION:.0f}%"
    return [
        data_note(m.data_source, p, m.loss_scale),
        f"Adam, {config.convention} conventions, lr {reporting.format_lr(m.lr)} (TensorFlow's "
        "default, as in the paper; no grid search), on every factor; hidden width "
        f"{config.hidden}.",
        start_note(config.single_layer_scale, config.init_scale),
        initial_gaps_note(
            {f"depth {d}": [m.inits[(d, s)] for s in seeds] for d in config.depths}, p
        ),
        "First-hit iterations are exact (checked every iteration), not read off the "
        "logged curve; never = never within the run.",
        diagnosis_note(
            m.evidence,
            m.hits,
            _holds(m, config),
            depths=config.depths,
            seeds=seeds,
            log_every=m.log_every,
            lr=m.lr,
        ),  # fmt: skip
        f"Seeds {', '.join(map(str, seeds))}: the claims must hold for every seed; the "
        f"figure shows every seed (seed {seeds[0]} thick, the others thin) over the whole "
        f"run and over its last {tail_pct}; the CSV has every curve.",
    ]


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    m = measured
    curves = [c for _, c in m.curves]
    fig = _plot(
        outdir / "fig4_right.png",
        curves,
        [k for k, _ in m.curves],
        m,
        m.seeds,
        m.loss_scale,
    )
    csv = reporting.write_curves_csv(outdir / "curves.csv", curves)
    return [fig, csv]


SPEC = ExperimentSpec(
    NAME,
    "fig4_right",
    "Fig. 4 right: Adam (TensorFlow defaults) on depth 1/2/3, l4 on Ethanol; "
    "claim: depth helps Adam too",
    data="ethanol",
    title=TITLE,
    cost=(11.0, 460.0),
    config=Config,
)
