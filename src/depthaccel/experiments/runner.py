"""Run one experiment by name in a fresh context and record its result."""

from __future__ import annotations

import datetime as _dt
import os
import time
import traceback
from pathlib import Path
from typing import Any

from depthaccel.data.ethanol import N_FEATURES, N_ROWS
from depthaccel.experiments import registry
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.report import write_report
from depthaccel.experiments.results import (
    RESULT_NAME,
    SETTINGS_NAME,
    ExperimentResult,
    to_jsonable,
    write_json,
)
from depthaccel.experiments.spec import describe_run
from depthaccel.outdir import OutputFolder

__all__ = ["judge_and_render", "measure_judge_render", "run_experiment"]


def _staged(mod: Any) -> bool:
    return all(callable(getattr(mod, f, None)) for f in ("measure", "judge", "render"))


def judge_and_render(mod: Any, config: Any, measured: Any, out_dir: Path) -> ExperimentResult:
    """An experiment's result from its ``Measured`` values: ``judge`` them, ``render``
    the figures and curves into ``out_dir``, and record what was run, the settings
    (the config and every measured number that is not a curve) and the notes."""
    claims = list(mod.judge(measured, config))
    paths = [Path(p) for p in mod.render(measured, claims, Path(out_dir))]
    fields = getattr(mod, "describe_fields", None)
    settings = getattr(mod, "settings", None)
    return ExperimentResult(
        name=mod.SPEC.name,
        title=mod.SPEC.title,
        summary=describe_run(
            getattr(mod, "DESCRIBE", ""),
            measured,
            config,
            fields(measured, config) if callable(fields) else {},
        ),
        settings={
            "config": to_jsonable(config),
            **(settings(measured, config) if callable(settings) else {}),
            "measured": compact(measured),
        },
        figures=[p for p in paths if p.suffix == ".png"],
        curves=[p for p in paths if p.suffix != ".png"],
        claims=claims,
        notes=list(getattr(mod, "NOTES", ()))
        + (list(mod.notes(measured, config)) if callable(getattr(mod, "notes", None)) else []),
    )


def measure_judge_render(mod: Any, config: Any, ctx: ExperimentContext) -> ExperimentResult:
    """``measure`` in ``ctx``, then :func:`judge_and_render` into ``ctx.out_dir``."""
    return judge_and_render(mod, config, mod.measure(config, ctx), ctx.out_dir)


#: Lists and arrays longer than this are curves: settings.json gives their length only
#: (the values are in the experiment's CSV files).
_CURVE_LEN = 64


def compact(measured: Any) -> Any:
    """``to_jsonable(measured)`` with every list longer than 64 values replaced by a
    short note (curves belong in CSV files, not in settings.json)."""

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            if len(v) > _CURVE_LEN:
                return f"<{len(v)} values: see the CSV files>"
            return [walk(x) for x in v]
        return v

    return walk(to_jsonable(measured))


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
    mod = registry.get_experiment(name)
    if config is None:
        config = mod.Config.quick() if quick else mod.Config.full()
    out_dir = out_root / name
    ctx = ExperimentContext(out_dir=out_dir, quick=quick, **context_options)
    OutputFolder(out_root).own_dir(name)  # everything in OUT/<name>/ is ours (depthaccel.outdir)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    mode = "quick" if quick else "full"
    t0 = time.perf_counter()
    try:
        result = measure_judge_render(mod, config, ctx) if _staged(mod) else mod.run(config, ctx)
    except Exception as exc:
        failed = ExperimentResult(
            name=name,
            title=registry.EXPERIMENTS[name].title or registry.EXPERIMENTS[name].summary,
            mode=mode,
            settings={"config": to_jsonable(config)},
            wall_time=time.perf_counter() - t0,
            status="error",
            error="".join(traceback.format_exception_only(type(exc), exc)).strip(),
            started=started,
            device=ctx.device,
        )
        write_json(out_dir / RESULT_NAME, failed.to_json(out_root))
        if report:
            write_report(out_root)
        raise
    result.name = result.name or name
    spec = registry.EXPERIMENTS[name]
    result.title = result.title or spec.title or getattr(mod, "TITLE", "") or spec.summary
    if not result.wall_time:
        result.wall_time = time.perf_counter() - t0
    result.started = result.started or started
    result.device = result.device or ctx.device
    result.mode = result.mode or mode
    result.settings.setdefault("config", to_jsonable(config))
    result.settings["ran_on"] = ctx.ran_on()
    if registry.EXPERIMENTS[name].data == "ethanol":
        ps = getattr(config, "losses", None) or (getattr(config, "p", 4.0),)
        result.settings["setup"] = ctx.setup_settings((N_ROWS, N_FEATURES), ps)
    store = ctx.store_summary()
    if store is not None:
        result.settings["results_store"] = store
    result.settings["executor"] = (
        ctx.executor.settings()
        if ctx.executor is not None
        else {"executor": "local", "where": "in this process"}
    )
    write_json(out_dir / SETTINGS_NAME, result.settings)
    write_json(out_dir / RESULT_NAME, result.to_json(out_root))
    if report:
        write_report(out_root)
    return result
