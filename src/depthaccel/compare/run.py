"""``run_compare``: load the table, train the grid through the results store, pick each
model's best rate, judge, write the outputs (the steps of :mod:`depthaccel.compare`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from depthaccel.compare.config import DEFAULT_RELATIVE_THRESHOLDS, CompareConfig, build_runs
from depthaccel.compare.floor import initial_gap, roundoff_floor
from depthaccel.compare.outputs import OUTPUT_NAMES, STORE_NAMES, output_folder, write_outputs
from depthaccel.compare.result import CompareResult
from depthaccel.compare.select import select_best
from depthaccel.compare.verdict import verdict
from depthaccel.data import load_table
from depthaccel.losses import lp_optimum
from depthaccel.reporting import format_lr
from depthaccel.resources import check_train_memory
from depthaccel.sweep import sweep

__all__ = ["run_compare"]


def _executor_words(executor: Any) -> str:
    st = executor.settings()
    if st.get("executor") == "ray":
        return (
            f"Ray ({st.get('cluster')}, {st.get('cluster_cpus')} CPUs, "
            f"{st.get('workers')} shards at a time)"
        )
    return str(st.get("executor", executor.name))


def _threshold_names(thresholds: Sequence[float], g0: float, relative: bool) -> dict[float, str]:
    if not relative:
        return {t: f"a gap of {t:.3g}" for t in thresholds}
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
    Y = ds.y.reshape(len(ds.y), -1)
    runs = build_runs(cfg, k=Y.shape[1])
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
    g0 = initial_gap(ds.y, p, opt.loss)
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
        f"compare: {ds.X.shape[0]} rows x {ds.X.shape[1]} features"
        f"{'' if Y.shape[1] == 1 else f' x {Y.shape[1]} outputs'}, l{p:g} loss "
        f"(L* = {opt.loss:.6g}, round-off floor of the gap {floor:.3g}); {len(runs)} runs x "
        f"{cfg.iters} iterations"
    )
    below = [t for t in thresholds if t <= floor]
    if below:
        say(
            f"compare: thresholds {', '.join(f'{t:.3g}' for t in below)} are at or below the "
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
    # gaps within the round-off floor tie: fewer iterations to the thresholds decide
    models = select_best(sw.results, tie_tol=floor)
    v = verdict(models, thresholds, cfg.iters, opt.loss, floor=floor, threshold_names=names)
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
        certificate=opt.grad_norm,
        executor="local (this process)" if executor is None else _executor_words(executor),
    )
    res.wall_time = time.perf_counter() - t0
    res.outputs = write_outputs(res)
    return res
