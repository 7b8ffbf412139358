"""The common framework of ``depthaccel reproduce``: results, claims, the registry, reports
and plotting helpers.

An experiment is a module ``depthaccel.experiments.<module>`` that provides:

* ``Config``: a small typed (frozen) dataclass with ``Config.quick()`` (CI-sized) and
  ``Config.full()`` (the paper's setup) constructors; every choice the paper leaves open
  is a field.
* ``run(config, ctx) -> ExperimentResult``: runs it in the
  :class:`~depthaccel.experiments.context.ExperimentContext` ``ctx`` (all its training
  through ``ctx.train``), writes its figure(s) (PNG) and curves (CSV) into
  ``ctx.out_dir`` (created by the caller) and returns the result with the claim checks.

The registry (:data:`EXPERIMENTS`) maps command-line names to modules and one-line
descriptions. :func:`run_experiment` runs one by name and writes ``OUT/<name>/settings.json``
and ``OUT/<name>/result.json``; :func:`write_report` (re)builds ``OUT/REPORT.md`` from all
``result.json`` files under OUT, in registry order, so re-running an experiment replaces
its section and running a new one adds a section.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from depthaccel.atomic import atomic_open, write_atomic
from depthaccel.experiments.context import ExperimentContext
from depthaccel.outdir import OutputFolder

__all__ = [
    "EXPERIMENTS",
    "Claim",
    "Curve",
    "ExperimentError",
    "ExperimentResult",
    "ExperimentSpec",
    "config_for",
    "format_lr",
    "get_experiment",
    "log_grid",
    "plot_gap_panels",
    "run_experiment",
    "to_jsonable",
    "write_curves_csv",
    "write_report",
]

REPORT_NAME = "REPORT.md"
RESULT_NAME = "result.json"
SETTINGS_NAME = "settings.json"


# ----------------------------------------------------------------------------- results


@dataclass
class Claim:
    """One checked claim of the paper.

    ``text`` states the claim, ``measured`` our numbers, ``passed`` the verdict: True
    (PASS), False (FAIL) or None (not assessed: the run is too short to test it, e.g.
    quick mode; the measurement is still shown). ``note`` qualifies it (e.g. "quick
    mode: 5000 iterations, the paper's claim is about 1e6").
    """

    text: str
    measured: str
    passed: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "not assessed"}[self.passed]


@dataclass
class ExperimentResult:
    """What one experiment produced.

    ``settings`` is JSON-able and holds every choice made (grids, chosen learning rates,
    iterations, data preprocessing). ``figures``/``curves`` are paths of the PNG and CSV
    files written. ``notes`` list choices where the paper is silent and differences from
    the paper. ``wall_time`` is seconds; :func:`run_experiment` fills it when 0.
    """

    name: str
    title: str
    mode: str
    settings: dict[str, Any]
    figures: list[Path] = field(default_factory=list)
    curves: list[Path] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    wall_time: float = 0.0
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" or "error"
    error: str = ""
    started: str = ""
    device: str = ""

    @property
    def n_passed(self) -> int:
        return sum(c.passed is True for c in self.claims)

    @property
    def n_failed(self) -> int:
        return sum(c.passed is False for c in self.claims)

    @property
    def n_assessed(self) -> int:
        return sum(c.passed is not None for c in self.claims)

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """JSON form; paths are made relative to ``root`` when given."""

        def rel(p: Path) -> str:
            p = Path(p)
            if root is not None:
                try:
                    return str(p.resolve().relative_to(Path(root).resolve()))
                except ValueError:
                    pass
            return str(p)

        return {
            "name": self.name,
            "title": self.title,
            "mode": self.mode,
            "status": self.status,
            "error": self.error,
            "started": self.started,
            "device": self.device,
            "wall_time": self.wall_time,
            "settings": to_jsonable(self.settings),
            "figures": [rel(p) for p in self.figures],
            "curves": [rel(p) for p in self.curves],
            "claims": [dataclasses.asdict(c) for c in self.claims],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], root: Path | None = None) -> ExperimentResult:
        def ab(p: str) -> Path:
            return Path(root) / p if root is not None and not os.path.isabs(p) else Path(p)

        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            mode=data.get("mode", "?"),
            settings=dict(data.get("settings", {})),
            figures=[ab(p) for p in data.get("figures", [])],
            curves=[ab(p) for p in data.get("curves", [])],
            claims=[Claim(**c) for c in data.get("claims", [])],
            wall_time=float(data.get("wall_time", 0.0)),
            notes=list(data.get("notes", [])),
            status=data.get("status", "ok"),
            error=data.get("error", ""),
            started=data.get("started", ""),
            device=data.get("device", ""),
        )


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, numpy scalars/arrays, paths, tuples and non-finite floats
    into plain JSON values (non-finite floats become the strings "inf", "-inf", "nan")."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------- registry


class ExperimentError(RuntimeError):
    """An experiment name that is unknown, or a registered module that is missing or
    does not provide the experiment interface."""


@dataclass(frozen=True)
class ExperimentSpec:
    """Registry entry: command-line ``name``, ``module`` under depthaccel.experiments
    (or a full dotted module path),
    a one-line ``summary`` for ``--help`` (what it runs and what it claims), and whether
    it needs a data set (``data``: "ethanol", "mnist" or "")."""

    name: str
    module: str
    summary: str
    data: str = ""


_SPECS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec(
        "claim1",
        "claim1",
        "spectrum of the explicit preconditioner P_W on random (incl. rank-deficient) "
        "matrices vs Claim 1's eigenvalue formula; claims: they agree to round-off",
    ),
    ExperimentSpec(
        "thm2",
        "thm2",
        "line integral of Eq. 14's field F around the paper's closed curve near 0; "
        "claims: non-zero for N >= 3, zero to round-off for N = 1 (a true gradient)",
    ),
    ExperimentSpec(
        "sec7",
        "sec7",
        "Section 7's two-point l4 problem, GD vs Eq. 12 (N = 2, 3) over y1/y2; "
        "claims: Eq. 12 needs fewer iterations and the speed-up grows with y1/y2",
    ),
    ExperimentSpec(
        "fig2",
        "fig2",
        "Fig. 2: depth-2/3 nets (width 1 and 100, lr 1e-3) vs the Eq. 12 scheme, l2 and "
        "l4 on Ethanol; claims: the scheme emulates the nets, width does not matter",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig3",
        "fig3",
        "Fig. 3: depth 1/2/3, lr grid-searched per model, l2 and l4 on Ethanol; claims: "
        "l2 depth does not accelerate, l4 depth 3 < depth 2 < depth 1 in final gap",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig4-left",
        "fig4_left",
        "Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer, each "
        "grid-searched, l4 on Ethanol; claim: depth-3 GD ends lower than both",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig4-right",
        "fig4_right",
        "Fig. 4 right: Adam (TensorFlow defaults) on depth 1/2/3, l4 on Ethanol; "
        "claim: depth helps Adam too",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig5-left",
        "fig5_left",
        "Fig. 5 left: depth 4 and 8, near-zero vs near-identity init vs depth 1, l4 on "
        "Ethanol; claims: near-zero init stalls, identity init moves at once and wins",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig5-right",
        "fig5_right",
        "Fig. 5 right: MNIST conv tutorial vs the same net with each dense matrix a "
        "product of two; claim: the overparameterized net's batch loss falls faster",
        data="mnist",
    ),
    ExperimentSpec(
        "mnist-e2e",
        "mnist_e2e",
        "MNIST tutorial: original vs overparameterized vs the original with "
        "EndToEndSGD(depth=2) on its dense layers; claim: the preconditioner alone gives "
        "the overparameterized net's speed-up; wall-clock per step of all three",
        data="mnist",
    ),
)

#: Command-line name -> registry entry, in the order ``all`` runs them.
EXPERIMENTS: dict[str, ExperimentSpec] = {s.name: s for s in _SPECS}


def get_experiment(name: str) -> ModuleType:
    """Import the module of experiment ``name`` and check its interface.

    Raises :class:`ExperimentError` naming the problem for an unknown name, a registered
    module that cannot be imported, or a module without ``Config.quick``/``Config.full``
    and ``run``.
    """
    spec = EXPERIMENTS.get(name)
    if spec is None:
        raise ExperimentError(
            f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)} (or 'all')"
        )
    modname = spec.module if "." in spec.module else f"depthaccel.experiments.{spec.module}"
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            raise ExperimentError(
                f"experiment {name!r} is registered but its module {modname} is missing"
            ) from exc
        raise
    missing = [
        attr
        for attr, ok in (
            ("Config", hasattr(mod, "Config")),
            ("Config.quick", hasattr(getattr(mod, "Config", None), "quick")),
            ("Config.full", hasattr(getattr(mod, "Config", None), "full")),
            ("run", callable(getattr(mod, "run", None))),
        )
        if not ok
    ]
    if missing:
        raise ExperimentError(f"experiment module {modname} does not provide {', '.join(missing)}")
    return mod


def config_for(name: str, *, quick: bool) -> Any:
    """The experiment's ``Config.quick()`` or ``Config.full()``."""
    cfg_cls = get_experiment(name).Config
    return cfg_cls.quick() if quick else cfg_cls.full()


# ------------------------------------------------------------------------------ running


def run_experiment(
    name: str,
    out_root: str | os.PathLike,
    *,
    quick: bool = False,
    config: Any | None = None,
    report: bool = True,
    **context_options: Any,
) -> ExperimentResult:
    """Run experiment ``name`` into ``out_root/<name>/`` and record it.

    ``config`` overrides ``Config.quick()``/``Config.full()``. ``context_options`` are the
    other fields of the :class:`ExperimentContext` the experiment runs in (``device``,
    ``dtype``, ``progress``, ``data_dir``, ``store``, ``checkpoint_every``, ``executor``,
    ``log``, ``cache``); each call gets a fresh context, so its store counts are this
    run's. Writes ``settings.json`` and ``result.json`` into the experiment's folder
    and, with ``report``, rebuilds ``out_root/REPORT.md``. Errors propagate (after an
    error ``result.json`` recording the failure is written, so the report shows it).
    """
    out_root = Path(out_root)
    mod = get_experiment(name)
    if config is None:
        config = mod.Config.quick() if quick else mod.Config.full()
    out_dir = out_root / name
    ctx = ExperimentContext(out_dir=out_dir, quick=quick, **context_options)
    OutputFolder(out_root).own_dir(name)  # everything in OUT/<name>/ is ours (depthaccel.outdir)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    mode = "quick" if quick else "full"
    t0 = time.perf_counter()
    try:
        result = mod.run(config, ctx)
    except Exception as exc:
        failed = ExperimentResult(
            name=name,
            title=EXPERIMENTS[name].summary,
            mode=mode,
            settings={"config": to_jsonable(config)},
            wall_time=time.perf_counter() - t0,
            status="error",
            error="".join(traceback.format_exception_only(type(exc), exc)).strip(),
            started=started,
            device=ctx.device,
        )
        _write_json(out_dir / RESULT_NAME, failed.to_json(out_root))
        if report:
            write_report(out_root)
        raise
    if not result.wall_time:
        result.wall_time = time.perf_counter() - t0
    result.started = result.started or started
    result.device = result.device or ctx.device
    result.mode = result.mode or mode
    result.settings.setdefault("config", to_jsonable(config))
    store = ctx.store_summary()
    if store is not None:
        result.settings["results_store"] = store
    _write_json(out_dir / SETTINGS_NAME, result.settings)
    _write_json(out_dir / RESULT_NAME, result.to_json(out_root))
    if report:
        write_report(out_root)
    return result


def _write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


# ------------------------------------------------------------------------------ reports


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_section(result: ExperimentResult, root: Path) -> str:
    """The markdown section of one experiment (paths relative to ``root``)."""
    data = result.to_json(root)
    lines = [f"## {result.name}: {result.title}", ""]
    when = f"started {result.started}, " if result.started else ""
    store = result.settings.get("results_store")
    reuse = ""
    if store and store.get("runs_reused"):
        reuse = (
            f" ({store['runs_reused']} runs read from the results store, trained by an "
            f"earlier call; {store['runs_trained']} trained now; training time of all the "
            f"runs used: {_fmt_seconds(store.get('training_seconds', 0.0))})"
        )
    lines.append(
        f"*Mode: {result.mode}; device: {result.device or '?'}; {when}"
        f"took {_fmt_seconds(result.wall_time)}{reuse}.*"
    )
    lines.append("")
    if result.status != "ok":
        lines += ["**ERROR**: the experiment did not finish:", "", "```", result.error, "```", ""]
        return "\n".join(lines)
    run_desc = result.settings.get("what_was_run")
    if run_desc:
        lines += [str(run_desc), ""]
    for fig in data["figures"]:
        lines += [f"![{result.name}]({fig})", ""]
    if result.claims:
        lines += ["| claim | measured | verdict |", "|---|---|---|"]
        for c in result.claims:
            verdict = c.verdict
            measured = c.measured + (f" ({c.note})" if c.note else "")
            lines.append(f"| {_md_cell(c.text)} | {_md_cell(measured)} | **{verdict}** |")
        lines.append("")
    if result.notes:
        lines += ["Notes:", ""]
        lines += [f"- {n}" for n in result.notes]
        lines.append("")
    if data["curves"]:
        lines += ["Curves: " + ", ".join(f"[{c}]({c})" for c in data["curves"]), ""]
    settings = json.dumps(data["settings"], indent=1)
    lines += [
        "<details><summary>Settings</summary>",
        "",
        "```json",
        settings,
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def load_results(out_root: str | os.PathLike) -> list[ExperimentResult]:
    """All ``OUT/<name>/result.json`` of registered experiments, in registry order."""
    root = Path(out_root)
    found = []
    for name in EXPERIMENTS:
        path = root / name / RESULT_NAME
        if path.is_file():
            found.append(ExperimentResult.from_json(json.loads(path.read_text()), root))
    return found


def write_report(out_root: str | os.PathLike) -> Path:
    """(Re)build ``OUT/REPORT.md`` from every ``OUT/<name>/result.json``: a summary table
    (experiment, mode, time, claims passed, status) and one section per experiment."""
    root = Path(out_root)
    results = load_results(root)
    lines = [
        "# Reproduction report: Arora, Cohen & Hazan (ICML 2018)",
        "",
        "Generated by `depthaccel reproduce` on "
        f"{platform.node() or 'this machine'} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs). Each section: what was run, how long it took, the "
        "figure, the claims table (PASS/FAIL against our measured numbers), notes on "
        "choices where the paper is silent, and the settings.",
        "",
        "| experiment | mode | time | claims passed / assessed | status |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        status = "ok" if r.status == "ok" else "**ERROR**"
        if r.status == "ok" and r.n_failed:
            status = f"{r.n_failed} claim(s) FAIL"
        if r.status == "ok" and r.n_assessed < len(r.claims):
            status += f", {len(r.claims) - r.n_assessed} not assessed"
        took = _fmt_seconds(r.wall_time)
        store = r.settings.get("results_store") or {}
        if store.get("runs_reused"):
            took += (
                f" (reused runs; their training: {_fmt_seconds(store.get('training_seconds', 0))})"
            )
        lines.append(
            f"| [{r.name}](#{_anchor(r)}) | {r.mode} | {took} | {claims_cell(r)} | {status} |"
        )
    lines.append("")
    for r in results:
        lines.append(report_section(r, root))
    root.mkdir(parents=True, exist_ok=True)
    return OutputFolder(root).write(REPORT_NAME, "\n".join(lines))


def claims_cell(r: ExperimentResult) -> str:
    """ "passed/assessed", or words when nothing was assessed (never "0/0")."""
    if not r.claims:
        return "no claims"
    if r.n_assessed == 0:
        return "none assessed"
    return f"{r.n_passed}/{r.n_assessed}"


def _anchor(r: ExperimentResult) -> str:
    """GitHub's anchor of the heading ``## name: title``."""
    text = f"{r.name}: {r.title}".lower()
    out = []
    for ch in text:
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


# ----------------------------------------------------------------------- curves, plots


@dataclass
class Curve:
    """One plotted line: ``label`` (model and chosen lr), x = ``iters``, y = ``values``
    (usually the loss gap L - L*), drawn in panel ``panel`` (e.g. "l2", "l4")."""

    label: str
    iters: np.ndarray
    values: np.ndarray
    panel: str = ""
    style: dict[str, Any] = field(default_factory=dict)


def log_grid(lo: float, hi: float, per_decade: int = 2) -> tuple[float, ...]:
    """Learning rates ``lo .. hi`` on a log scale with ``per_decade`` points per decade
    (both ends included, rounded to 4 significant digits), e.g. ``log_grid(1e-4, 1, 2)``
    = 1e-4, 3.162e-4, ..., 1."""
    if not (0 < lo <= hi) or per_decade < 1:
        raise ValueError(f"need 0 < lo <= hi and per_decade >= 1, got {lo}, {hi}, {per_decade}")
    n = round(math.log10(hi / lo) * per_decade)
    vals = np.logspace(math.log10(lo), math.log10(hi), n + 1) if n else np.array([lo])
    return tuple(float(f"{v:.4g}") for v in vals)


def format_lr(lr: float) -> str:
    """A learning rate for a legend: ``1e-3``, ``3.16e-4``, ``0.5``."""
    if lr == 0:
        return "0"
    if 1e-2 <= abs(lr) < 1e3:
        return f"{lr:.3g}"
    exp = math.floor(math.log10(abs(lr)))
    mant = lr / 10**exp
    if abs(mant - round(mant)) < 1e-9:
        return f"{round(mant)}e{exp}"
    return f"{mant:.3g}e{exp}"


def write_curves_csv(path: str | os.PathLike, curves: Iterable[Curve]) -> Path:
    """Write curves in long form: columns ``panel,series,iteration,value``."""
    path = Path(path)
    with atomic_open(path, "w") as fh:
        fh.write("panel,series,iteration,value\n")
        for c in curves:
            label = c.label.replace('"', "'")
            for it, v in zip(np.asarray(c.iters), np.asarray(c.values), strict=True):
                fh.write(f'{c.panel},"{label}",{int(it)},{float(v):.17g}\n')
    return path


def read_curves_csv(path: str | os.PathLike) -> list[Curve]:
    """Read back what :func:`write_curves_csv` wrote (for tests and re-plotting)."""
    import csv

    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    with Path(path).open() as fh:
        for row in csv.DictReader(fh):
            key = (row["panel"], row["series"])
            its, vals = series.setdefault(key, ([], []))
            its.append(int(row["iteration"]))
            vals.append(float(row["value"]))
    return [
        Curve(label=k[1], panel=k[0], iters=np.array(v[0]), values=np.array(v[1]))
        for k, v in series.items()
    ]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_gap_panels(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, Sequence[Curve]]],
    *,
    suptitle: str = "",
    ylabel: str = "loss (distance from optimum)",
    xlabel: str = "iteration",
    logy: bool = True,
    logx: bool = False,
    panel_size: tuple[float, float] = (5.2, 3.8),
    ncols: int | None = None,
) -> Path:
    """Plot panels side by side in the paper's style and save a PNG.

    ``panels`` = [(panel title, curves), ...]; each curve is drawn against its
    iterations with a log y axis (non-positive values are dropped from a log plot), legend
    naming model and learning rate. ``ylabel`` may contain ``{panel}``. ``ncols``: panels
    per row (default: all in one row). Legends never cover curves: when every panel
    shows the same labels, one legend below the figure; otherwise one below each panel.
    """
    plt = _pyplot()
    n = max(1, len(panels))
    nc = min(n, ncols or n)
    nr = -(-n // nc)
    fig, axes = plt.subplots(
        nr,
        nc,
        figsize=(panel_size[0] * nc, panel_size[1] * nr),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    labels_of = []
    for ax, (ptitle, curves) in zip(axes.flat, panels, strict=False):
        for c in curves:
            x = np.asarray(c.iters, dtype=float)
            y = np.asarray(c.values, dtype=float)
            if logy:
                keep = np.isfinite(y) & (y > 0)
                x, y = x[keep], y[keep]
            ax.plot(x, y, label=c.label, **c.style)
        if logy:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel.format(panel=ptitle))
        ax.set_title(ptitle)
        ax.grid(True, which="major", alpha=0.3)
        labels_of.append([c.label for c in curves])
    shared = len(panels) > 1 and all(lab == labels_of[0] for lab in labels_of)
    if shared and labels_of[0]:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(nc, 2, len(labels)),
            fontsize=8,
            frameon=False,
        )
    else:
        for ax, labels in zip(axes.flat, labels_of, strict=False):
            if labels:
                ax.legend(
                    loc="upper center",
                    bbox_to_anchor=(0.5, -0.16),
                    ncol=2 if len(labels) > 4 else 1,
                    fontsize=7.5,
                    frameon=False,
                )
    if suptitle:
        fig.suptitle(suptitle)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------- trainer helpers
#
# Shared by the experiments on the Ethanol task (fig2 .. fig5-left).


def result_curve(res, label: str | None = None, panel: str = "") -> Curve:
    """A trainer ``RunResult`` as a :class:`Curve` (label: the run's label + its lr)."""
    if label is None:
        label = f"{res.run.label()}, lr {format_lr(res.run.effective_lr)}"
    return Curve(label, np.asarray(res.iters), np.asarray(res.gap, dtype=float), panel=panel)


def search(
    X: np.ndarray,
    y: np.ndarray,
    p: float,
    models: Sequence[Any],
    lrs: Sequence[float] | Sequence[Sequence[float]],
    iters: int,
    *,
    train_fn: Callable[..., Any],
    extend: bool = True,
    max_extensions: int = 4,
    rescue_diverged: int = 2,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """Grid search through ``train_fn`` (``ExperimentContext.train``): every model (a ``Run`` whose lr is
    replaced) at every lr of its grid, all in one batched call; per model the lr with
    the lowest final gap (``depthaccel.train.best_result``); with ``extend``, a model
    whose best lr is on its grid's edge gets rates beyond that edge (the grid's log
    step), one batched call per round, until the best is interior or ``max_extensions``
    rounds ran; a model whose every run diverged gets rates below its grid for up to
    ``max(max_extensions, rescue_diverged)`` rounds (so it has a curve at all).

    ``lrs`` is one grid for all models or one grid per model. Returns one dict per
    model: ``model`` (the Run), ``best`` (RunResult or None), ``best_lr``, ``results``
    (sorted by lr), ``lrs``, ``on_edge``, ``extensions``.
    """
    from dataclasses import replace

    from depthaccel.train import best_result

    if len(lrs) and not isinstance(lrs[0], (int, float)):
        grids = [sorted(float(v) for v in g) for g in lrs]
        if len(grids) != len(models):
            raise ValueError(f"{len(grids)} grids for {len(models)} models")
    else:
        grids = [sorted(float(v) for v in lrs)] * len(models)
    steps = [(g[-1] / g[0]) ** (1 / (len(g) - 1)) if len(g) > 1 else 10.0 for g in grids]
    runs = [replace(m, lr=lr) for m, g in zip(models, grids, strict=True) for lr in g]
    out = train_fn(X, y, p, runs, iters, **train_kwargs)
    per_model: list[list[Any]] = []
    k = 0
    for g in grids:
        per_model.append(list(out[k : k + len(g)]))
        k += len(g)
    extensions = [0] * len(models)
    for round_ in range(max(max_extensions, rescue_diverged) if extend else 0):
        new_runs, owners = [], []
        for i, res in enumerate(per_model):
            res.sort(key=lambda r: r.run.effective_lr)
            best = best_result(res)
            have = [r.run.effective_lr for r in res]
            if round_ >= (
                max_extensions if best is not None else max(max_extensions, rescue_diverged)
            ):
                continue
            if best is None:
                new = have[0] / steps[i]
            elif best.run.effective_lr == have[-1]:
                new = have[-1] * steps[i]
            elif best.run.effective_lr == have[0]:
                new = have[0] / steps[i]
            else:
                continue
            new_runs.append(replace(models[i], lr=float(f"{new:.4g}")))
            owners.append(i)
        if not new_runs:
            break
        for i, r in zip(owners, train_fn(X, y, p, new_runs, iters, **train_kwargs), strict=True):
            per_model[i].append(r)
            extensions[i] += 1
    found = []
    for i, res in enumerate(per_model):
        res.sort(key=lambda r: r.run.effective_lr)
        best = best_result(res)
        have = [r.run.effective_lr for r in res]
        found.append(
            {
                "model": models[i],
                "best": best,
                "best_lr": None if best is None else best.run.effective_lr,
                "results": res,
                "lrs": have,
                "on_edge": best is None or best.run.effective_lr in (have[0], have[-1]),
                "extensions": extensions[i],
            }
        )
    return found


def search_settings(found: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-able summary of :func:`search` output: per model its grid, the final gap at
    each lr (None: diverged), the chosen lr and whether it is on the grid's edge."""
    rows = []
    for f in found:
        rows.append(
            {
                "model": f["model"].label(),
                "grid": f["lrs"],
                "final_gap": [
                    None if r.diverged or not math.isfinite(r.final_gap) else r.final_gap
                    for r in f["results"]
                ],
                "chosen_lr": f["best_lr"],
                "chosen_final_gap": None if f["best"] is None else f["best"].final_gap,
                "on_edge": f["on_edge"],
                "extensions": f["extensions"],
            }
        )
    return rows


def narrow_grid(
    center: float, points: int, factor: float, above: int | None = None
) -> tuple[float, ...]:
    """``points`` rates spaced by ``factor`` on a log scale around ``center``, with
    ``above`` of them above it (default: symmetric, ``(points - 1) / 2``)."""
    top = (points - 1) / 2 if above is None else above
    return tuple(float(f"{center * factor ** (i - (points - 1 - top)):.4g}") for i in range(points))


def two_stage_search(
    X: np.ndarray,
    y: np.ndarray,
    p: float,
    models: Sequence[Any],
    broad: Sequence[float] | Sequence[Sequence[float]],
    iters: int,
    *,
    presearch_iters: int | None = None,
    narrow_points: int = 5,
    narrow_factor: float = 10**0.25,
    narrow_above: int = 0,
    narrow_extensions: int = 1,
    refine: bool = False,
    train_fn: Callable[..., Any],
    log_points: int = 1000,
    thresholds: Sequence[float] = (),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Grid search per model, in one or two stages.

    ``broad``: one grid for all models or one per model. Without ``presearch_iters``
    (or when it is >= ``iters``): :func:`search` over the ``broad`` grid for ``iters`` iterations. With it: a search over ``broad`` for
    ``presearch_iters`` iterations, then a search for ``iters`` iterations over
    ``narrow_points`` rates spaced by ``narrow_factor`` around each model's pre-search
    best, ``narrow_above`` of them above it (default 0: the best and rates below it, as
    a longer run tends to need a smaller rate: a rate stable for ``presearch_iters`` may
    diverge later) (extended beyond an edge at most ``narrow_extensions`` times: each extension is
    another full-length call) -- for budgets where the broad grid at full length does
    not fit; with ``refine``, one more call at half that spacing around each model's best
    (:func:`refine_search`). ``train_fn`` trains (``ExperimentContext.train``: it
    supplies device, dtype, progress and the cached optimum). Returns the per-model searches and a JSON-able
    record of every grid and chosen rate.
    """
    from dataclasses import replace

    kw = dict(train_fn=train_fn, log_points=log_points, thresholds=tuple(thresholds))
    record: dict[str, Any] = {"broad_grid": to_jsonable(broad), "iters": iters}
    if presearch_iters is None or presearch_iters >= iters:
        found = search(X, y, p, models, broad, iters, **kw)
        record["search"] = search_settings(found)
        return found, record
    pre = search(X, y, p, models, broad, presearch_iters, **kw)
    record["presearch_iters"] = presearch_iters
    record["presearch"] = search_settings(pre)
    grids = [
        narrow_grid(
            f["best_lr"] if f["best_lr"] is not None else min(f["lrs"]),
            narrow_points,
            narrow_factor,
            narrow_above,
        )
        for f in pre
    ]
    found = search(
        X,
        y,
        p,
        [replace(f["model"], lr=1.0) for f in pre],
        grids,
        iters,
        max_extensions=narrow_extensions,
        **kw,
    )
    if refine:
        found = refine_search(X, y, p, found, iters, math.sqrt(narrow_factor), **kw)
        record["refined"] = True
    record["search"] = search_settings(found)
    return found, record


def refine_search(
    X: np.ndarray,
    y: np.ndarray,
    p: float,
    found: Sequence[dict[str, Any]],
    iters: int,
    factor: float,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """One more batched call: every model with a best rate also runs at best/factor and
    best*factor (rates it has not run yet); the best is re-chosen over all its runs."""
    from dataclasses import replace

    from depthaccel.train import best_result

    models, grids, owners = [], [], []
    for i, f in enumerate(found):
        if f["best_lr"] is None:
            continue
        new = [
            lr
            for lr in (float(f"{f['best_lr'] / factor:.4g}"), float(f"{f['best_lr'] * factor:.4g}"))
            if all(abs(lr / have - 1) > 1e-3 for have in f["lrs"])
        ]
        if new:
            models.append(replace(f["model"], lr=1.0))
            grids.append(new)
            owners.append(i)
    out = [dict(f) for f in found]
    if not models:
        return out
    extra = search(X, y, p, models, grids, iters, extend=False, **train_kwargs)
    for i, e in zip(owners, extra, strict=True):
        res = sorted(out[i]["results"] + e["results"], key=lambda r: r.run.effective_lr)
        best = best_result(res)
        have = [r.run.effective_lr for r in res]
        out[i].update(
            results=res,
            best=best,
            best_lr=None if best is None else best.run.effective_lr,
            lrs=have,
            on_edge=best is None or best.run.effective_lr in (have[0], have[-1]),
        )
    return out
