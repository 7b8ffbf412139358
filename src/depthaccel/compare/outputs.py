"""The outputs of ``depthaccel compare``: summary.csv, curves.csv, compare.png and
REPORT.md, written all-or-nothing into the guarded output folder."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from depthaccel.compare.config import CompareConfig
from depthaccel.compare.result import CompareResult
from depthaccel.outdir import OutputFolder
from depthaccel.reporting import format_lr, pyplot
from depthaccel.store import DEFAULT_FILENAME as STORE_FILENAME
from depthaccel.train import METHODS

__all__ = ["OUTPUT_NAMES", "STORE_NAMES", "output_folder", "write_outputs"]

FLOOR_SHOWN_WITHIN = 1e3  # the plot draws the round-off floor when a gap comes this close

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


def _thr_col(t: float) -> str:
    return f"first_hit_{t:.3g}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return "nan" if not math.isfinite(x) else f"{x:.17g}"


def _is_ce(res: CompareResult) -> bool:
    return res.problem is not None and res.problem.is_ce


def _summary_csv(res: CompareResult, fh) -> None:
    """One row per run; the ce loss adds ``final_accuracy`` (train accuracy at the end)."""
    best_idx = {m.best_index for m in res.models if m.best_index is not None}
    ce = _is_ce(res)
    w = csv.writer(fh)
    w.writerow(
        ["run", "method", "depth", "lr", "final_gap", "diverged", "diverged_at"]
        + [_thr_col(t) for t in res.thresholds]
        + ["best_for_model", "label", "key"]
        + (["final_accuracy"] if ce else [])
    )
    for i, r in enumerate(res.results):
        w.writerow(
            [i, r.run.method, f"{r.run.depth:g}", repr(r.run.effective_lr), _num(r.final_gap)]
            + [int(r.diverged), "" if r.diverged_at is None else r.diverged_at]
            + ["" if r.first_hit[t] is None else r.first_hit[t] for t in res.thresholds]
            + [int(i in best_idx), f"{r.run.label()}, lr {format_lr(r.run.effective_lr)}"]
            + [res.keys[i]]
            + ([_num(_final_acc(r))] if ce else [])
        )


def _final_acc(r) -> float | None:
    return None if r.accuracy is None else float(r.accuracy[-1])


def _curves_csv(res: CompareResult, fh) -> None:
    """run, iteration, gap (and the train accuracy for the ce loss)."""
    if _is_ce(res):
        fh.write("run,iteration,gap,accuracy\n")
        for i, r in enumerate(res.results):
            acc = r.accuracy if r.accuracy is not None else np.full(len(r.iters), np.nan)
            fh.writelines(
                f"{i},{int(it)},{_num(float(g))},{_num(float(a))}\n"
                for it, g, a in zip(r.iters, r.gap, acc, strict=True)
            )
        return
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
    ce = _is_ce(res)
    if ce:  # the loss beside the train accuracy
        fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12.5, 4.8), layout="constrained")
    else:
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
        if ce and m.best.accuracy is not None:
            acc = np.asarray(m.best.accuracy, dtype=float)
            ok = np.isfinite(acc)
            ax_acc.plot(
                x[ok],
                acc[ok],
                color=colors.get(m.method),
                linestyle=styles[depths.index(m.depth) % len(styles)],
            )
    if floor is not None and lowest <= FLOOR_SHOWN_WITHIN * floor:
        # only where a curve comes near it: a far-away line would squash every curve
        ax.axhline(floor, color="0.5", lw=0.8, ls=(0, (4, 3)), label=f"round-off floor {floor:.2g}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    bounded = res.problem is None or res.problem.bounded
    ax.set_ylabel("loss - optimum" if bounded else "loss (no minimiser: L* = 0 is its infimum)")
    words = res.problem.loss_words if res.problem is not None else f"l{res.config.p:g} loss"
    ax.set_title(f"{res.config.data.name}: {words}, best learning rate per model", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if ce:
        ax_acc.set_xlabel("iteration")
        ax_acc.set_ylabel("train accuracy")
        ax_acc.set_title("train accuracy of the same runs", fontsize=10)
        ax_acc.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7.5, frameon=False)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _targets(name: str) -> str:
    names = name.split(",")
    if len(names) == 1:
        return f"target `{name}`"
    return f"{len(names)} targets (outputs) " + ", ".join(f"`{n}`" for n in names)


def _scales(res: CompareResult) -> str:
    """The setup axes (``depthaccel.data.scaling``) as words."""
    cfg, pb = res.config, res.problem
    X = pb.data.X if pb is not None else res.dataset.X
    k = cfg.setup.factors(X, 2.0)[0]
    fs = cfg.feature_scale
    text = f"feature scale {fs if isinstance(fs, str) else f'{fs:g}'} (k = {k:.4g})"
    if not cfg.is_ce:
        text += f", loss scale {cfg.loss_scale} (" + (
            "(1/p)|r|^p)" if cfg.loss_scale == "paper" else "|r|^p)"
        )
    return text


def _ce_data(res: CompareResult) -> list[str]:
    cfg, ct, pb = res.config, res.dataset, res.problem
    classes = ", ".join(f"`{c}` ({n})" for c, n in zip(ct.classes, ct.counts, strict=True))
    if pb.bounded:
        opt = (
            f"optimum L* = {res.optimum:.10g} (Newton's method in float64; gradient norm there "
            f"{res.certificate:.2g}); initial gap L(0) - L* = {res.initial_gap:.4g}; round-off "
            f"floor of the gap {res.floor:.3g} (final gaps at or below it are the optimum "
            "reached; summary.csv keeps the raw numbers)."
        )
    else:
        opt = (
            "with --l2 0 these classes are linearly separable: the loss has no minimiser (it "
            "goes to 0 as the weights grow), so every number below is the loss itself (L* = "
            "0, its infimum), not a gap."
        )
    return [
        f"Data: `{cfg.data}` ({ct.X.shape[0]} rows x {ct.X.shape[1]} features, "
        f"{'standardised' if ct.standardized else 'raw values'}; class labels in "
        f"`{ct.target_name}`, {ct.k} classes: {classes}).",
        "",
        "Loss: softmax cross-entropy of the k x d end-to-end matrix W, "
        "L(W) = (1/m) sum_i [log sum_c exp(w_c.x_i) - w_{y_i}.x_i] + (l2/2) ||W||^2, "
        f"l2 = {pb.loss.l2:g}; {opt}",
    ]


def _report(res: CompareResult) -> str:
    cfg = res.config
    ds = res.dataset
    lines = [
        "# Does depth accelerate this problem?",
        "",
        *(
            _ce_data(res)
            if _is_ce(res)
            else [
                f"Data: `{cfg.data}` ({ds.X.shape[0]} rows x {ds.X.shape[1]} features, "
                f"{_targets(ds.target_name)}, {'standardised' if cfg.standardize else 'raw values'}). "
                f"Loss: l{cfg.p:g}, optimum L* = {res.optimum:.10g} (float64; gradient norm there "
                f"{res.certificate:.2g}); initial gap L(0) - L* = "
                f"{res.initial_gap:.4g}; round-off floor of the gap {res.floor:.3g} (final gaps "
                "at or below it are the optimum reached; summary.csv keeps the raw numbers).",
            ]
        ),
        "",
        f"Grid: methods {', '.join(cfg.methods)}; depths {', '.join(map(str, cfg.depths))} "
        f"(e2e at depths > 1 only); hidden width {res.runs[0].hidden}; {cfg.init} init"
        f"{'' if cfg.init_scale is None else f' (scale {cfg.init_scale:g})'}, seed "
        f"{cfg.seed}; adaptive optimizers with {cfg.convention} defaults; learning rates "
        f"{', '.join(format_lr(x) for x in cfg.lrs)}; {cfg.iters} full-batch iterations; "
        f"{cfg.device}, {cfg.dtype}; {_scales(res)}. {len(res.results)} runs: {res.reused} reused from the "
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
    ce = _is_ce(res)
    word = "gap" if res.problem is None or res.problem.bounded else "loss"
    head = ["model", "best lr", f"final {word}"] + [f"{word} < {t:.3g}" for t in res.thresholds]
    head += ["diverged rates", "best on grid edge"] + (["final train accuracy"] if ce else [])
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
        if ce:
            acc = None if m.best is None else _final_acc(m.best)
            cells.append("\u2014" if acc is None else f"{acc:.4f}")
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
