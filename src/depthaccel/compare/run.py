"""``run_compare``: load the table, train the grid through the results store, pick each
model's best rate, judge, write the outputs (the steps of :mod:`depthaccel.compare`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from depthaccel.compare.config import DEFAULT_RELATIVE_THRESHOLDS, CompareConfig, build_runs
from depthaccel.compare.outputs import OUTPUT_NAMES, STORE_NAMES, output_folder, write_outputs
from depthaccel.compare.problem import prepare
from depthaccel.compare.result import CompareResult
from depthaccel.compare.select import select_best
from depthaccel.compare.verdict import verdict
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


def _threshold_names(
    thresholds: Sequence[float], g0: float, relative: bool, word: str = "gap"
) -> dict[float, str]:
    if not relative:
        return {t: f"a {word} of {t:.3g}" for t in thresholds}
    return {
        float(f"{g0 * r:.3g}"): f"{format_lr(r)} of the initial {word}"
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
    dtype = getattr(torch, cfg.dtype)
    pb = prepare(cfg, dtype)
    ds, k = pb.data, pb.k
    runs = build_runs(cfg, k=k)
    check_train_memory(
        runs, pb.X.shape[0], pb.X.shape[1], k, itemsize=dtype.itemsize, device=cfg.device
    )
    g0, floor = pb.initial_gap, pb.floor
    if cfg.thresholds is not None:
        thresholds = cfg.thresholds
    else:
        if not g0 > 0:
            raise ValueError(
                "the zero model is already optimal (initial gap <= 0): nothing to compare"
            )
        thresholds = tuple(float(f"{g0 * r:.3g}") for r in DEFAULT_RELATIVE_THRESHOLDS)
    thresholds = tuple(sorted(set(thresholds), reverse=True))  # easiest first
    names = _threshold_names(thresholds, g0, cfg.thresholds is None, pb.gap_word)
    folder.prepare()
    say(
        f"compare: {pb.X.shape[0]} rows x {pb.X.shape[1]} features{pb.outputs_words}, "
        f"{pb.loss_words} (L* = {pb.optimum:.6g}, round-off floor of the {pb.gap_word} "
        f"{floor:.3g}); {len(runs)} runs x {cfg.iters} iterations"
    )
    below = [t for t in thresholds if t <= floor]
    if below:
        say(
            f"compare: thresholds {', '.join(f'{t:.3g}' for t in below)} are at or below the "
            f"round-off floor {floor:.3g}: reaching them is not meaningful (the verdict ignores them)"
        )
    if not pb.bounded:
        say(
            "compare: with --l2 0 these classes are linearly separable: the loss has no "
            "minimiser (it goes to 0 as the weights grow), so the loss itself is reported, "
            "not a gap"
        )
    sw = sweep(
        pb.X,
        pb.y,
        pb.loss,
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
    v = verdict(
        models,
        thresholds,
        cfg.iters,
        pb.optimum,
        floor=floor,
        threshold_names=names,
        gap_word=pb.gap_word,
        notes=pb.notes,
    )
    res = CompareResult(
        config=cfg,
        dataset=ds,
        optimum=pb.optimum,
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
        certificate=pb.certificate,
        problem=pb,
        executor="local (this process)" if executor is None else _executor_words(executor),
    )
    res.wall_time = time.perf_counter() - t0
    res.outputs = write_outputs(res)
    return res
