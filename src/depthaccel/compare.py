"""Does depth accelerate *your* problem? ``depthaccel compare`` on a user's table.

``run_compare(CompareConfig(data=...))``:

1. loads the table (``depthaccel.data.load_table``: CSV or NPZ, a target column,
   standardised by default) and computes the l_p optimum L* (``lp_optimum``);
2. builds the grid: every method in ``methods`` at every depth in ``depths`` (the
   end-to-end scheme ``e2e`` only at depths > 1: at depth 1 it is GD), each at every
   learning rate in ``lrs``, hidden width ``hidden``, initialisation ``init`` (near-zero
   by default);
3. trains it through the results store in the output directory (``depthaccel.sweep``:
   finished runs are reused, long runs checkpoint every ``checkpoint_every``
   iterations and resume after a crash);
4. picks each model's (method, depth) best learning rate with the trainer's
   grid-search rule (``depthaccel.train.best_result``: lowest final gap, ties broken by
   first-hit iterations; diverged runs never win);
5. writes ``OUT/compare.png`` (gap vs iteration of each model at its best rate, log y),
   ``OUT/summary.csv`` (one row per run), ``OUT/curves.csv`` (run, iteration, gap) and
   ``OUT/REPORT.md`` (settings, a table of final gaps and iterations to reach each
   threshold, and a verdict paragraph).

The verdict compares the best deep model trained by gradient descent (a depth > 1 net,
or the Eq. 10/12 scheme that emulates one) with depth-1 GD (plain linear regression by
GD), by final gap and by iterations to reach the smallest gap threshold both reached,
then with the adaptive optimizers on a single layer, and says whether depth helped each
adaptive optimizer. It states what was measured (one seed, a finite grid, T
iterations), not more.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthaccel.data import Dataset, load_table
from depthaccel.losses import lp_loss, lp_optimum
from depthaccel.outdir import OutputFolder
from depthaccel.reporting import format_lr, pyplot
from depthaccel.resources import check_train_memory
from depthaccel.store import DEFAULT_FILENAME as STORE_FILENAME
from depthaccel.sweep import sweep
from depthaccel.train import (
    ADAPTIVE_METHODS,
    CONVENTIONS,
    INITS,
    METHOD_NAMES,
    METHODS,
    Run,
    RunResult,
)
from depthaccel.train.grid import choose, log_grid

__all__ = [
    "DEFAULT_LRS",
    "DEFAULT_RELATIVE_THRESHOLDS",
    "CompareConfig",
    "CompareResult",
    "ModelBest",
    "Verdict",
    "build_runs",
    "parse_loss",
    "run_compare",
    "select_best",
    "verdict",
    "write_outputs",
]

#: Learning-rate grid: 1e-4 .. 1 with two rates per decade.
DEFAULT_LRS: tuple[float, ...] = log_grid(1e-4, 1.0, 2)
#: Default gap thresholds, as fractions of the initial gap L(0) - L*.
DEFAULT_RELATIVE_THRESHOLDS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_ITERS = 10_000
#: More iterations than this would take years at any speed the trainer reaches.
MAX_ITERS = 10**12
#: Seeds of torch's generator: a signed 64-bit integer.
SEED_RANGE = (-(2**63), 2**63 - 1)
DEFAULT_CHECKPOINT_EVERY = 2_000
# Final-gap ratios within this factor of 1 count as "no clear difference".
SAME_FACTOR = 1.1
# A best run whose final gap is at least this fraction of its initial gap "barely moved".
STALL_FRACTION = 0.9
FLOOR_SHOWN_WITHIN = 1e3  # the plot draws the round-off floor when a gap comes this close


def parse_loss(name: str) -> float:
    """``l2`` -> 2, ``l4`` -> 4, ``l<p>`` -> p for any real p >= 2 (e.g. ``l3``, ``l2.5``)."""
    s = str(name).strip().lower()
    try:
        if not s.startswith("l"):
            raise ValueError
        p = float(s[1:])
    except ValueError:
        raise ValueError(
            f"unknown loss {name!r}: use l2, l4, or l<p> with a real p >= 2 (e.g. l3)"
        ) from None
    if not (math.isfinite(p) and p >= 2):
        raise ValueError(f"loss {name!r}: p must be a finite number >= 2, got {p:g}")
    return p


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:<index>`` (the devices the trainer supports); the
    canonical spelling. Other torch devices (mps, meta, ...) raise ValueError."""
    text = str(device).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ValueError(f"unsupported device {device!r}: use cpu, cuda or cuda:<index>")
    return str(dev)


def _positive_sorted(name: str, values: Sequence[float]) -> tuple[float, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be numbers, got {v!r}")
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        out.append(v)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class CompareConfig:
    """Settings of ``depthaccel compare`` (the CLI's flags, same names and defaults).

    Attributes:
        data: the user's table (CSV or NPZ, see ``depthaccel.data.load_table``).
        target: target column (default: the table's last column).
        loss: ``l2``, ``l4`` or ``l<p>``.
        depths: depths of the linear nets (integers >= 1).
        methods: among gd, e2e, adagrad, adadelta, adam (e2e only at depths > 1).
        iters: full-batch iterations per run.
        lrs: the learning-rate grid (every method and depth).
        thresholds: gap thresholds for iterations-to-reach; None = the fractions
            ``DEFAULT_RELATIVE_THRESHOLDS`` of the initial gap L(0) - L*.
        out: output directory (holds the results store too).
        checkpoint_every: save the training state every this many iterations (None: never).
        device, dtype: torch device and compute dtype (``float64`` or ``float32``).
        standardize: z-score features and target (the paper's setup) before training.
        header: CSV header row: None = required (an all-numeric first row is refused as a
            probable headerless file), False = no header (columns ``c1 .. cn``).
        hidden: hidden width of the nets (the paper uses 1).
        init, init_scale: the initialisation (``near_zero``, ``identity`` or ``balanced``,
            see ``depthaccel.train.Run``) and its scale (None: the trainer's default).
        seed: seed of the initialisation.
        convention: ``tf`` or ``torch`` defaults for the adaptive optimizers.
        log_points: about this many logged iterations per curve.
        force: write into an output folder that holds files depthaccel did not write
            (``depthaccel.outdir``; files with an output's name are replaced).
    """

    data: Path
    target: str | None = None
    loss: str = "l4"
    depths: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = ("gd", "e2e", "adagrad", "adadelta", "adam")
    iters: int = DEFAULT_ITERS
    lrs: tuple[float, ...] = DEFAULT_LRS
    thresholds: tuple[float, ...] | None = None
    out: Path = Path("compare-results")
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY
    device: str = "cpu"
    dtype: str = "float64"
    standardize: bool = True
    header: bool | None = None
    hidden: int = 1
    init: str = "near_zero"
    init_scale: float | None = None
    seed: int = 0
    convention: str = "tf"
    log_points: int = 1000
    force: bool = False

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("data", Path(self.data))
        set_("out", Path(self.out))
        parse_loss(self.loss)
        depths = []
        for d in self.depths:
            if isinstance(d, bool) or not float(d).is_integer() or int(d) < 1:
                raise ValueError(f"depths must be integers >= 1, got {d!r}")
            depths.append(int(d))
        if not depths:
            raise ValueError("depths must not be empty")
        set_("depths", tuple(sorted(set(depths))))
        methods = [str(m).strip().lower() for m in self.methods]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if not methods:
            raise ValueError("methods must not be empty")
        set_("methods", tuple(dict.fromkeys(methods)))
        if isinstance(self.iters, bool) or int(self.iters) != self.iters or self.iters < 1:
            raise ValueError(f"iters must be an integer >= 1, got {self.iters!r}")
        if self.iters > MAX_ITERS:
            raise ValueError(f"iters must be <= {MAX_ITERS:.0e}, got {self.iters!r}")
        set_("iters", int(self.iters))
        set_("lrs", _positive_sorted("learning rates", self.lrs))
        if self.thresholds is not None:
            set_("thresholds", _positive_sorted("thresholds", self.thresholds))
        if self.checkpoint_every is not None:
            if int(self.checkpoint_every) < 1:
                raise ValueError(
                    f"checkpoint_every must be >= 1 (or None), got {self.checkpoint_every!r}"
                )
            set_("checkpoint_every", int(self.checkpoint_every))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if isinstance(self.hidden, bool) or int(self.hidden) != self.hidden or self.hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {self.hidden!r}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        if self.init_scale is not None and not (
            math.isfinite(float(self.init_scale)) and float(self.init_scale) >= 0
        ):
            raise ValueError(f"init_scale must be finite and >= 0, got {self.init_scale!r}")
        if (
            isinstance(self.seed, bool)
            or int(self.seed) != self.seed
            or not (SEED_RANGE[0] <= int(self.seed) <= SEED_RANGE[1])
        ):
            raise ValueError(
                f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed!r}"
            )
        if int(self.log_points) < 2:
            raise ValueError(f"log_points must be >= 2, got {self.log_points!r}")
        set_("device", check_device(self.device))

    @property
    def p(self) -> float:
        return parse_loss(self.loss)


def build_runs(cfg: CompareConfig) -> list[Run]:
    """Every (method, depth, lr) of the grid; e2e only at depths > 1."""
    runs = [
        Run(
            m,
            lr,
            depth=d,
            hidden=cfg.hidden,
            init=cfg.init,
            init_scale=cfg.init_scale,
            seed=cfg.seed,
            convention=cfg.convention,
        )
        for m in cfg.methods
        for d in cfg.depths
        if not (m == "e2e" and d == 1)
        for lr in cfg.lrs
    ]
    if not runs:
        raise ValueError(
            "nothing to run: the e2e scheme needs a depth > 1 (at depth 1 it is GD); "
            "add a depth > 1 or another method"
        )
    return runs


# ------------------------------------------------------------------------ selection


@dataclass
class ModelBest:
    """One model (method, depth) of the grid and its best learning rate.

    ``indices`` are the model's runs in the run list (sorted by lr); ``best_index`` is
    the chosen one (None if every rate diverged); ``on_edge``: the grid search's edge rule
    (``depthaccel.train.grid.on_edge``: all diverged, or the best rate is the smallest or
    largest of the grid, always so for one rate), so a wider grid might do better.
    """

    method: str
    depth: float
    label: str
    indices: list[int]
    best_index: int | None
    best: RunResult | None
    on_edge: bool
    n_diverged: int

    @property
    def best_lr(self) -> float | None:
        return None if self.best is None else self.best.run.effective_lr


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
                label=_model_label(run),
                indices=[index[id(r)] for r in ms.results],
                best_index=None if ms.best is None else index[id(ms.best)],
                best=ms.best,
                on_edge=ms.on_edge,
                n_diverged=sum(r.diverged for r in ms.results),
            )
        )
    return out


def _model_label(run: Run) -> str:
    name = METHOD_NAMES[run.method]
    if run.method == "e2e":
        return f"{name} (N={run.depth:g})"
    return f"depth-{run.depth:g} {name}"


# -------------------------------------------------------------------------- verdict


@dataclass
class Verdict:
    """The verdict paragraph and the numbers behind it.

    ``answer`` is one of "yes", "modest", "no difference", "slower", "unknown";
    ``final_ratio`` = depth-1 GD's final gap / the best deep model's (> 1: depth ends
    lower); ``speedup`` = depth-1 GD's iterations / the deep model's to reach
    ``speedup_threshold`` (the smallest threshold both reached; None if none).
    """

    text: str
    answer: str
    deep: ModelBest | None = None
    base: ModelBest | None = None
    final_ratio: float | None = None
    speedup: float | None = None
    speedup_threshold: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)


def _gap_floor(optimum: float) -> float:
    """The smallest floor ever used: ~100 float64 ulps of L* (see :func:`roundoff_floor`
    for the floor of the data)."""
    return 100 * np.finfo(np.float64).eps * max(abs(optimum), np.finfo(np.float64).tiny)


#: The round-off floor is this many times the estimated rounding error of the loss.
FLOOR_SAFETY = 10.0


def roundoff_floor(X, y, p: float, w, *, eps: float = float(np.finfo(np.float64).eps)) -> float:
    r"""The smallest loss gap ``L(w) - L*`` that the arithmetic resolves on this data.

    A computed residual ``r_i = x_i^T w - y_i`` carries an absolute rounding error of
    about ``delta_i = eps * (|y_i| + sum_j |x_ij w_j|)`` (eps times the magnitudes of the
    terms summed; rounding ``w`` to the compute dtype contributes the same order). Near the
    optimum ``w*`` the computed loss ``(1/(p m)) sum_i |r_i|^p`` is therefore off by about

        E = (1/m) sum_i [ |r*_i|^(p-1) delta_i + delta_i^p / p ]

    (the first-order change, plus what remains when ``r* = 0``: an exact fit, where L* is
    itself round-off, e.g. 1e-30). The floor is ``FLOOR_SAFETY * E`` (and never below
    ~100 ulps of L*): gaps below it are "converged to round-off" and are never compared
    as ratios. ``y`` may be (m,) or (m, k) with ``w`` (d,) or (d, k); ``eps`` is the
    machine epsilon of the compute dtype (float32 training cannot resolve more).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
    W = np.asarray(w, dtype=np.float64).reshape(X.shape[1], -1)
    r = X @ W - Y
    delta = eps * (np.abs(Y) + np.abs(X) @ np.abs(W))
    err = np.mean(np.sum(np.abs(r) ** (p - 1) * delta + delta**p / p, axis=1))
    L = float(lp_loss(torch.from_numpy(X @ W), torch.from_numpy(Y), p))
    return float(max(FLOOR_SAFETY * err, _gap_floor(L)))


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _ratio_words(r: float, more: str = "lower", less: str = "higher") -> str:
    if r >= 1:
        return f"{_fmt(r)}x {more}"
    return f"{_fmt(1 / r)}x {less}"


def _hits_compare(a: RunResult, b: RunResult, thresholds: Sequence[float]):
    """(threshold, a's iteration, b's iteration) for the smallest threshold both reached,
    the smallest threshold only b reached and the smallest only a reached (None where
    there is none)."""
    ha, hb = a.first_hit, b.first_hit
    both = [t for t in thresholds if ha.get(t) is not None and hb.get(t) is not None]
    only_b = [t for t in thresholds if ha.get(t) is None and hb.get(t) is not None]
    only_a = [t for t in thresholds if ha.get(t) is not None and hb.get(t) is None]
    common = None
    if both:
        t = min(both)
        common = (t, ha[t], hb[t])
    return common, (min(only_b) if only_b else None), (min(only_a) if only_a else None)


@dataclass
class _Pair:
    """How a challenger b compares with a baseline a (both at their best rates)."""

    factor: float  # > 1: b is better (final-gap ratio, or iteration ratio if both converged)
    final_ratio: float  # a's final gap / b's, gaps floored at round-off
    speedup: float | None  # a's iterations / b's to the smallest common threshold
    threshold: float | None
    at_floor: bool  # both end at the optimum to round-off
    text: str


def _threshold_name(t: float, names: Mapping[float, str] | None) -> str:
    if names and t in names:
        return names[t]
    return f"a gap of {_fmt(t)}"


def _pair(
    a: ModelBest,
    b: ModelBest,
    thresholds: Sequence[float],
    floor: float,
    names: Mapping[float, str] | None = None,
) -> _Pair:
    """Compare b against a; ``text`` gives b's numbers first, then a's: iterations to the
    thresholds, then final gaps (a ratio only when both are above the round-off floor)."""
    ra, rb = a.best, b.best
    fa, fb = max(ra.final_gap, floor), max(rb.final_gap, floor)
    a0, b0 = ra.final_gap <= floor, rb.final_gap <= floor
    final_ratio = fa / fb
    common, only_b, only_a = _hits_compare(ra, rb, thresholds)
    speedup = None
    hits = []
    if common is not None and common[2] > 0:
        t, ia, ib = common
        speedup = ia / ib
        hits.append(f"{ib} vs {ia} iterations to {_threshold_name(t, names)}")
    if only_b is not None:
        hits.append(
            f"{rb.first_hit[only_b]} iterations to {_threshold_name(only_b, names)}, which "
            f"{a.label} never reaches"
        )
    if only_a is not None:
        hits.append(
            f"never reaches {_threshold_name(only_a, names)}, which {a.label} reaches in "
            f"{ra.first_hit[only_a]} iterations"
        )
    if not hits and thresholds:
        hits.append(f"neither reaches {_threshold_name(max(thresholds), names)}")
    if a0 and b0:
        factor = speedup if speedup is not None else 1.0
        final = "both end at the optimum to round-off"
    elif b0:
        factor = final_ratio
        final = f"final gap at the optimum to round-off vs {_fmt(ra.final_gap)} for {a.label}"
    elif a0:
        factor = final_ratio
        final = f"final gap {_fmt(rb.final_gap)} vs the optimum to round-off for {a.label}"
    else:
        factor = final_ratio
        final = (
            f"final gap {_fmt(rb.final_gap)} vs {_fmt(ra.final_gap)} ({_ratio_words(final_ratio)})"
        )
    text = "; ".join([*hits, final])
    return _Pair(
        factor, final_ratio, speedup, None if common is None else common[0], a0 and b0, text
    )


def _rank_key(m: ModelBest, floor: float) -> tuple:
    r = m.best
    hits = tuple(
        math.inf if r.first_hit[t] is None else r.first_hit[t] for t in sorted(r.first_hit)
    )
    return (max(r.final_gap, floor), *hits, m.depth)


def verdict(
    models: Sequence[ModelBest],
    thresholds: Sequence[float],
    iters: int,
    optimum: float,
    *,
    context: str = "",
    floor: float | None = None,
    threshold_names: Mapping[float, str] | None = None,
) -> Verdict:
    """The one-paragraph answer to "does depth accelerate this problem?".

    Primary comparison: the best deep GD-trained model (a depth > 1 GD net or the e2e
    scheme; lowest final gap, then fewest iterations to the thresholds) vs depth-1 GD,
    each at its best learning rate. Each comparison leads with the iterations both need
    to reach the smallest threshold both reach (``threshold_names`` words them, e.g.
    "1e-3 of the initial gap"), then the thresholds only one reaches, then the final
    gaps. Gaps at or below ``floor`` (the data's round-off floor, :func:`roundoff_floor`;
    at least ~100 ulps of L*) count as "at the optimum to round-off": they are never
    compared as ratios, and thresholds below the floor are ignored. The factor is
    depth-1 GD's final gap over the deep model's (both floored), or, when both reach the
    optimum to round-off, depth-1 GD's iterations over the deep model's. "yes" for a
    factor >= 2, "modest" for 1.1..2, "no difference" within 1.1x either way, "slower"
    below 1/1.1. Then the adaptive optimizers on a single layer against the deep model,
    and depth within each adaptive method, with the same measure; then the caveats.
    """
    floor = max(_gap_floor(optimum), 0.0 if floor is None else float(floor))
    thresholds = [t for t in thresholds if t > floor]
    names = threshold_names
    base = next((m for m in models if m.method == "gd" and m.depth == 1), None)
    deep_all = [m for m in models if m.method in ("gd", "e2e") and m.depth > 1]
    deep_ok = [m for m in deep_all if m.best is not None]
    deep = min(deep_ok, key=lambda m: _rank_key(m, floor)) if deep_ok else None
    lead = "Does depth accelerate this problem? "
    if base is None or not deep_all:
        missing = "depth-1 GD (method gd at depth 1)" if base is None else "a deeper GD net or e2e"
        return Verdict(
            text=lead + f"Cannot say: the grid has no {missing} to compare. " + context,
            answer="unknown",
        )
    if base.best is None or deep is None:
        who = base.label if base.best is None else "every deep GD/e2e model"
        return Verdict(
            text=lead
            + f"Cannot say: every learning rate of {who} diverged; try smaller rates (--lrs). "
            + context,
            answer="unknown",
            base=base,
            deep=deep,
        )
    main = _pair(base, deep, thresholds, floor, names)
    score = main.factor
    if score >= 2:
        answer, head = "yes", "Yes, on this problem and with these settings"
    elif score >= SAME_FACTOR:
        answer, head = "modest", "Modestly, on this problem and with these settings"
    elif score > 1 / SAME_FACTOR:
        answer, head = "no difference", "No clear difference on this problem"
    else:
        answer, head = "slower", "No: here depth slowed gradient descent down"
    dl = f"{deep.label} (lr {format_lr(deep.best_lr)})"
    bl = f"depth-1 GD (lr {format_lr(base.best_lr)})"
    parts = [
        lead + f"{head}. The best deep model, {dl}, against {bl} in {iters} iterations: "
        f"{main.text}."
    ]
    baselines: dict[str, float] = {}
    phrases = []
    for m in models:
        if m.method not in ADAPTIVE_METHODS or m.depth != 1:
            continue
        if m.best is None:
            phrases.append(f"{m.label} diverged at every rate")
            continue
        pr = _pair(m, deep, thresholds, floor, names)
        baselines[m.method] = pr.factor
        phrases.append(f"vs {m.label} (lr {format_lr(m.best_lr)}): {pr.text}")
    if phrases:
        parts.append(
            f"Against adaptive optimizers on a single layer, {deep.label} "
            + "; ".join(phrases)
            + "."
        )
    helped = []
    for meth in ADAPTIVE_METHODS:
        one = next((m for m in models if m.method == meth and m.depth == 1 and m.best), None)
        deeper = [m for m in models if m.method == meth and m.depth > 1 and m.best]
        if one is None or not deeper:
            continue
        top = min(deeper, key=lambda m: _rank_key(m, floor))
        pr = _pair(one, top, thresholds, floor, names)
        word = (
            "helps"
            if pr.factor >= SAME_FACTOR
            else ("hurts" if pr.factor <= 1 / SAME_FACTOR else "makes no clear difference to")
        )
        helped.append(
            f"depth {word} {METHOD_NAMES[meth]} ({top.label}, lr {format_lr(top.best_lr)}, "
            f"vs depth 1, lr {format_lr(one.best_lr)}: {pr.text})"
        )
    if helped:
        parts.append("Within each adaptive method, " + "; ".join(helped) + ".")
    if any(m.best is not None and m.best.final_gap <= floor for m in models):
        parts.append(
            f"Final gaps at or below {_fmt(floor)}, the round-off floor of this data, count "
            "as the optimum reached and are not compared as ratios."
        )
    edge = [m.label for m in models if m.on_edge]
    caveat = (
        "Caveats: one seed and one initialisation, a finite grid of learning "
        f"rates, and {iters} iterations; the ranking can change with longer training."
    )
    if edge:
        caveat += (
            " The best rate sits on the edge of the grid (or every rate diverged) for "
            + ", ".join(edge)
            + ": a wider --lrs grid could change their numbers."
        )
    stalled = [
        m.label
        for m in models
        if m.best is not None and m.best.final_gap >= STALL_FRACTION * m.best.gap[0]
    ]
    if stalled:
        caveat += (
            f" Barely moved from the initial point in {iters} iterations (final gap >= "
            f"{STALL_FRACTION:g} x the initial one): "
            + ", ".join(stalled)
            + "; deep nets started near zero can stall for long (vanishing gradients, the "
            "paper's Fig. 5 left): try more --iters, --init identity or a larger --init-scale."
        )
    parts.append(caveat)
    if context:
        parts.append(context)
    return Verdict(
        text=" ".join(parts),
        answer=answer,
        deep=deep,
        base=base,
        final_ratio=main.final_ratio,
        speedup=main.speedup,
        speedup_threshold=main.threshold,
        baselines=baselines,
    )


# ---------------------------------------------------------------------------- running


@dataclass
class CompareResult:
    """Everything ``run_compare`` produced (``outputs`` maps names to written files)."""

    config: CompareConfig
    dataset: Dataset
    optimum: float
    initial_gap: float
    thresholds: tuple[float, ...]
    runs: list[Run]
    results: list[RunResult]
    keys: list[str]
    models: list[ModelBest]
    verdict: Verdict
    reused: int
    computed: int
    wall_time: float
    store_path: Path | None
    outputs: dict[str, Path] = field(default_factory=dict)
    resumed: dict[str, int] = field(default_factory=dict)
    floor: float = 0.0  # round-off floor of the gap (``roundoff_floor``)
    executor: str = "local (this process)"  # what trained the runs (``_executor_words``)


def _executor_words(executor: Any) -> str:
    st = executor.settings()
    if st.get("executor") == "ray":
        return (
            f"Ray ({st.get('cluster')}, {st.get('cluster_cpus')} CPUs, "
            f"{st.get('workers')} shards at a time)"
        )
    return str(st.get("executor", executor.name))


def _initial_gap(y: np.ndarray, p: float, optimum: float) -> float:
    """L(0) - L*: the gap of the zero model, which near-zero initialisation starts close to."""
    Y = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(len(y), -1)
    return float(lp_loss(torch.zeros_like(Y), Y, p)) - optimum


#: The outputs ``run_compare`` writes into ``cfg.out`` (besides the results store).
OUTPUT_NAMES = {
    "summary": "summary.csv",
    "curves": "curves.csv",
    "plot": "compare.png",
    "report": "REPORT.md",
}
#: The results store and SQLite's side files: always allowed in the output folder.
STORE_NAMES = tuple(STORE_FILENAME + s for s in ("", "-wal", "-shm", "-journal"))


#: How each output starts: recognises the outputs of a version without the manifest.
_OUTPUT_HEADS = {
    "summary.csv": b"run,method,depth,lr,final_gap,",
    "curves.csv": b"run,iteration,gap",
    "compare.png": b"\x89PNG\r\n\x1a\n",
    "REPORT.md": b"# Does depth accelerate this problem?",
}


def _adopt_legacy(rel: str, path: Path) -> bool:
    head = _OUTPUT_HEADS.get(rel)
    if head is None:
        return False
    with open(path, "rb") as fh:
        return fh.read(len(head)) == head


def output_folder(cfg: CompareConfig) -> OutputFolder:
    """The guarded output folder of ``cfg`` (see ``depthaccel.outdir``); outputs of an
    earlier version (no manifest yet) are recognised by how they start."""
    return OutputFolder(cfg.out, force=cfg.force, allowed=STORE_NAMES, adopt=_adopt_legacy)


def _threshold_names(thresholds: Sequence[float], g0: float, relative: bool) -> dict[float, str]:
    if not relative:
        return {t: f"a gap of {_fmt(t)}" for t in thresholds}
    return {
        float(f"{g0 * r:.3g}"): f"{format_lr(r)} of the initial gap"
        for r in DEFAULT_RELATIVE_THRESHOLDS
    }


def run_compare(
    cfg: CompareConfig,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    executor: Any = None,
) -> CompareResult:
    """Run the comparison described in the module docstring and write its outputs.

    Nothing is written before every check passed: the output folder (``OutputFolderError``:
    foreign files without ``cfg.force``, the input among the outputs, not writable), the
    data (``ValueError`` and friends from ``load_table``), the memory estimate
    (``MemoryEstimateError``). ``executor`` (``depthaccel.executors``; None: this process)
    trains the sweep's shards; the report says which one did."""
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    folder = output_folder(cfg)
    folder.check(outputs=[*OUTPUT_NAMES.values(), *STORE_NAMES], inputs=[cfg.data])
    ds = load_table(cfg.data, cfg.target, standardize=cfg.standardize, header=cfg.header)
    p = cfg.p
    runs = build_runs(cfg)
    Y = ds.y.reshape(len(ds.y), -1)
    dtype = getattr(torch, cfg.dtype)
    check_train_memory(
        runs,
        ds.X.shape[0],
        ds.X.shape[1],
        Y.shape[1],
        itemsize=dtype.itemsize,
        device=cfg.device,
    )
    opt = lp_optimum(ds.X, ds.y, p)
    g0 = _initial_gap(ds.y, p, opt.loss)
    floor = roundoff_floor(ds.X, ds.y, p, opt.w, eps=float(torch.finfo(dtype).eps))
    if cfg.thresholds is not None:
        thresholds = cfg.thresholds
    else:
        if not g0 > 0:
            raise ValueError(
                "the zero model is already optimal (initial gap <= 0): nothing to compare"
            )
        thresholds = tuple(float(f"{g0 * r:.3g}") for r in DEFAULT_RELATIVE_THRESHOLDS)
    thresholds = tuple(sorted(set(thresholds), reverse=True))  # easiest first
    names = _threshold_names(thresholds, g0, cfg.thresholds is None)
    folder.prepare()
    say(
        f"compare: {ds.X.shape[0]} rows x {ds.X.shape[1]} features, l{p:g} loss "
        f"(L* = {opt.loss:.6g}, round-off floor of the gap {floor:.3g}); {len(runs)} runs x "
        f"{cfg.iters} iterations"
    )
    below = [t for t in thresholds if t <= floor]
    if below:
        say(
            f"compare: thresholds {', '.join(_fmt(t) for t in below)} are at or below the "
            f"round-off floor {floor:.3g}: reaching them is not meaningful (the verdict ignores them)"
        )
    sw = sweep(
        ds.X,
        ds.y,
        p,
        runs,
        cfg.iters,
        store=cfg.out,
        thresholds=thresholds,
        log_points=cfg.log_points,
        device=cfg.device,
        dtype=dtype,
        checkpoint_every=cfg.checkpoint_every,
        progress=progress,
        log=say,
        executor=executor,
    )
    models = select_best(sw.results, tie_tol=floor)
    context = (
        f"(Data: {ds.X.shape[0]} rows x {ds.X.shape[1]} features"
        f"{', standardised' if cfg.standardize else ''}; l{p:g} loss; learning rates "
        f"{format_lr(cfg.lrs[0])}..{format_lr(cfg.lrs[-1])}, {len(cfg.lrs)} values, the best "
        "per model by final gap.)"
    )
    v = verdict(
        models,
        thresholds,
        cfg.iters,
        opt.loss,
        context=context,
        floor=floor,
        threshold_names=names,
    )
    res = CompareResult(
        config=cfg,
        dataset=ds,
        optimum=opt.loss,
        initial_gap=g0,
        thresholds=tuple(thresholds),
        runs=runs,
        results=sw.results,
        keys=sw.keys,
        models=models,
        verdict=v,
        reused=sw.reused,
        computed=sw.computed,
        wall_time=0.0,
        resumed=sw.resumed,
        store_path=sw.store_path,
        floor=floor,
        executor="local (this process)" if executor is None else _executor_words(executor),
    )
    res.wall_time = time.perf_counter() - t0
    res.outputs = write_outputs(res)
    return res


# ---------------------------------------------------------------------------- outputs


def _thr_col(t: float) -> str:
    return f"first_hit_{t:.3g}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return "nan" if not math.isfinite(x) else f"{x:.17g}"


def _summary_csv(res: CompareResult, fh) -> None:
    best_idx = {m.best_index for m in res.models if m.best_index is not None}
    w = csv.writer(fh)
    w.writerow(
        ["run", "method", "depth", "lr", "final_gap", "diverged", "diverged_at"]
        + [_thr_col(t) for t in res.thresholds]
        + ["best_for_model", "label", "key"]
    )
    for i, r in enumerate(res.results):
        w.writerow(
            [i, r.run.method, f"{r.run.depth:g}", repr(r.run.effective_lr), _num(r.final_gap)]
            + [int(r.diverged), "" if r.diverged_at is None else r.diverged_at]
            + ["" if r.first_hit[t] is None else r.first_hit[t] for t in res.thresholds]
            + [int(i in best_idx), f"{r.run.label()}, lr {format_lr(r.run.effective_lr)}"]
            + [res.keys[i]]
        )


def _curves_csv(res: CompareResult, fh) -> None:
    fh.write("run,iteration,gap\n")
    for i, r in enumerate(res.results):
        fh.writelines(
            f"{i},{int(it)},{_num(float(g))}\n" for it, g in zip(r.iters, r.gap, strict=True)
        )


def write_outputs(res: CompareResult) -> dict[str, Path]:
    """Write compare.png, summary.csv, curves.csv and REPORT.md into the output folder,
    all-or-nothing: each is staged in a temporary file and the four are renamed into
    place only once all were written (``depthaccel.outdir``), so an error, a kill or a
    full disk midway leaves the previous set as it was."""
    folder = output_folder(res.config)
    paths = {k: res.config.out / name for k, name in OUTPUT_NAMES.items()}
    with folder.staged() as stage:
        with stage.open(paths["summary"], "w", newline="") as fh:
            _summary_csv(res, fh)
        with stage.open(paths["curves"], "w", newline="") as fh:
            _curves_csv(res, fh)
        stage.write_with(paths["plot"], lambda fh: _plot(res, fh))
        stage.write(paths["report"], _report(res))
    return paths


def _plot(res: CompareResult, path) -> None:
    """Gap vs iteration of each model at its best rate (colour: method, line style:
    depth), log y; gaps below the round-off floor are drawn at the floor (a dashed grey
    line): below it the curves are rounding noise. The legend sits to the right of the
    axes, never over the curves."""
    plt = pyplot()

    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]
    depths = sorted({m.depth for m in res.models})
    fig, ax = plt.subplots(figsize=(9.5, 4.8), layout="constrained")
    floor = res.floor if res.floor > 0 else None
    lowest = np.inf
    for m in res.models:
        if m.best is None:
            continue
        x = np.asarray(m.best.iters, dtype=float)
        y = np.asarray(m.best.gap, dtype=float)
        if floor is not None:
            y = np.where(np.isfinite(y), np.maximum(y, floor), y)
        keep = np.isfinite(y) & (y > 0)
        if keep.any():
            lowest = min(lowest, float(y[keep].min()))
        ax.plot(
            x[keep],
            y[keep],
            color=colors.get(m.method),
            linestyle=styles[depths.index(m.depth) % len(styles)],
            label=f"{m.label}, lr {format_lr(m.best_lr)}",
        )
    if floor is not None and lowest <= FLOOR_SHOWN_WITHIN * floor:
        # only where a curve comes near it: a far-away line would squash every curve
        ax.axhline(floor, color="0.5", lw=0.8, ls=(0, (4, 3)), label=f"round-off floor {floor:.2g}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss - optimum")
    ax.set_title(
        f"{res.config.data.name}: l{res.config.p:g} loss, best learning rate per model", fontsize=10
    )
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7.5, frameon=False)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _report(res: CompareResult) -> str:
    cfg = res.config
    ds = res.dataset
    lines = [
        "# Does depth accelerate this problem?",
        "",
        f"Data: `{cfg.data}` ({ds.X.shape[0]} rows x {ds.X.shape[1]} features, target "
        f"`{ds.target_name}`, {'standardised' if cfg.standardize else 'raw values'}). "
        f"Loss: l{cfg.p:g}, optimum L* = {res.optimum:.10g}; initial gap L(0) - L* = "
        f"{res.initial_gap:.4g}; round-off floor of the gap {res.floor:.3g} (final gaps "
        "at or below it are the optimum reached; summary.csv keeps the raw numbers).",
        "",
        f"Grid: methods {', '.join(cfg.methods)}; depths {', '.join(map(str, cfg.depths))} "
        f"(e2e at depths > 1 only); hidden width {cfg.hidden}; {cfg.init} init"
        f"{'' if cfg.init_scale is None else f' (scale {cfg.init_scale:g})'}, seed "
        f"{cfg.seed}; adaptive optimizers with {cfg.convention} defaults; learning rates "
        f"{', '.join(format_lr(x) for x in cfg.lrs)}; {cfg.iters} full-batch iterations; "
        f"{cfg.device}, {cfg.dtype}. {len(res.results)} runs: {res.reused} reused from the "
        f"store, {res.computed} trained (executor: {res.executor}); {res.wall_time:.1f} s.",
        "",
        "## Verdict",
        "",
        res.verdict.text,
        "",
        "## Best learning rate per model",
        "",
        "Final gap and the first iteration at which the gap falls below each threshold "
        "(\u2014: not reached in the run).",
        "",
    ]
    head = ["model", "best lr", "final gap"] + [f"gap < {t:.3g}" for t in res.thresholds]
    head += ["diverged rates", "best on grid edge"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in res.models:
        if m.best is None:
            cells = [m.label, "\u2014", "all diverged"] + ["\u2014"] * len(res.thresholds)
        else:
            gap = m.best.final_gap
            shown = f"{gap:.4g}" if gap > res.floor else f"\u2264 {res.floor:.2g} (round-off)"
            cells = [m.label, format_lr(m.best_lr), shown] + [
                "\u2014" if m.best.first_hit[t] is None else str(m.best.first_hit[t])
                for t in res.thresholds
            ]
        cells += [f"{m.n_diverged}/{len(m.indices)}", "yes" if m.on_edge else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "![gap vs iteration](compare.png)",
        "",
        "Files: `compare.png` (gap vs iteration, best rate per model, log scale), "
        "`summary.csv` (one row per run; `best_for_model` marks each model's chosen rate), "
        "`curves.csv` (run, iteration, gap; `run` is the row of summary.csv), and the "
        "results store `" + (res.store_path.name if res.store_path else "") + "` "
        "(re-running the same command reuses its runs).",
        "",
    ]
    return "\n".join(lines)
