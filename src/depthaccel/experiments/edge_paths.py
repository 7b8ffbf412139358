"""The Eq. 12 paths of fig2's starts and the stability edge along them (a stored task,
kind ``fig2-edge-path/1``), their figure and their note; shared with the setup
sensitivity study, which runs the same task at other feature scales."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from depthaccel.reporting import format_lr, stamp_quick

if TYPE_CHECKING:
    from depthaccel.experiments.context import ExperimentContext, StoredTasks


@dataclass(frozen=True)
class EdgeJob:
    """One loss's Eq. 12 paths (a stored task): every start row x depth of the config at
    its rate and length, from the width-``width`` net's initial end-to-end vector."""

    X: np.ndarray
    y: np.ndarray
    p: float
    starts: tuple[tuple[str, float, int], ...]  # (init, init_scale, depth)
    width: int
    seed: int
    lr: float
    iters: int
    points: int


def _edge_job_config(job: EdgeJob) -> dict[str, Any]:
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(job.X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(job.y, dtype=np.float64).tobytes())
    return {
        "data": h.hexdigest(),
        "p": job.p,
        "starts": [list(s) for s in job.starts],
        "width": job.width,
        "seed": job.seed,
        "lr": job.lr,
        "iters": job.iters,
        "points": job.points,
    }


def run_edge_job(job: EdgeJob) -> dict[str, dict[str, Any]]:
    """The paths of ``job`` (:func:`depthaccel.stability.eq12_paths`): per start, the
    logged iterations, the edge along the path, the first logged iteration where the rate
    exceeds it and the iteration where the plain loop diverged."""
    from depthaccel.stability import eq12_paths
    from depthaccel.train import Run
    from depthaccel.train.groups import initial_factors

    w0, depths = [], []
    for init, scale, depth in job.starts:
        run = Run(
            "gd", job.lr, depth=depth, hidden=job.width, init=init, init_scale=scale, seed=job.seed
        )
        f = initial_factors(run, job.X.shape[1], 1)
        we = f[0]
        for W in f[1:]:
            we = W @ we
        w0.append(we.reshape(-1).numpy())
        depths.append(depth)
    out = {}
    res = eq12_paths(
        job.X, job.y, job.p, np.array(w0), depths, job.lr, job.iters, n_points=job.points
    )
    for (init, _, depth), path in zip(job.starts, res, strict=True):
        edge = np.asarray(path.edge, dtype=float)
        out[f"{init}/depth{depth}"] = {
            "iters": path.iters.tolist(),
            "edge": [None if not np.isfinite(e) else float(e) for e in edge],
            "loss": [None if not np.isfinite(v) else float(v) for v in path.loss],
            "first_unstable": path.first_unstable(job.lr),
            "diverged_at": path.diverged_at,
            "min_edge": float(np.nanmin(edge)) if np.isfinite(edge).any() else None,
        }
    return out


def edge_path_tasks(label: Callable[[EdgeJob], str]) -> StoredTasks:
    """How the results store keeps an :class:`EdgeJob`'s result: task kind
    ``fig2-edge-path/1``, keyed by :func:`_edge_job_config` (fig2 and the setup
    sensitivity study share these tasks); ``label`` names a task in progress lines."""
    from depthaccel.experiments.context import StoredTasks

    return StoredTasks(
        kind="fig2-edge-path/1",
        config=_edge_job_config,
        encode=lambda r: r,
        decode=lambda r: r,
        label=label,
    )


def edge_paths(
    ctx: ExperimentContext, config: Any, X: np.ndarray, y: np.ndarray, p: float
) -> dict[str, dict[str, Any]]:
    """:func:`run_edge_job` for the balanced and near-zero starts of ``config`` at loss
    ``p``, kept in the results store (task ``fig2-edge-path/1``)."""
    starts = tuple(
        (init, float(scale), int(depth)) for init, scale in config.inits for depth in config.depths
    )
    job = EdgeJob(
        np.asarray(X, dtype=np.float64),
        np.asarray(y, dtype=np.float64),
        float(p),
        starts,
        int(config.widths[0]),
        int(config.seed),
        float(config.lr),
        int(config.iters),
        int(config.edge_points),
    )
    stored = edge_path_tasks(lambda j: f"fig2: Eq. 12 paths and their stability edge, l{j.p:g}")
    (out,) = ctx.map(run_edge_job, [job], stored=stored)
    return out


def plot_edge_paths(
    path: Any,
    config: Any,
    paths: dict[str, Any],
    diverged: dict[str, Any],
    *,
    quick: bool = False,
):
    """One panel per loss: the stability edge along each Eq. 12 path against the rate
    (dashed); a cross where a batched net of that start and depth diverged."""
    from depthaccel.reporting import pyplot

    plt = pyplot()
    losses = list(paths)
    fig, axes = plt.subplots(
        1,
        max(1, len(losses)),
        figsize=(5.6 * max(1, len(losses)), 4.0),
        squeeze=False,
        layout="constrained",
    )
    colors = {2: "tab:blue", 3: "tab:red", 4: "tab:green"}
    for ax, loss in zip(axes[0], losses, strict=False):
        for start, rec in paths[loss].items():
            init, depth = start.split("/depth")
            it = np.asarray(rec["iters"], dtype=float)
            e = np.asarray([np.nan if v is None else v for v in rec["edge"]], dtype=float)
            ok = np.isfinite(e) & (e > 0)
            ls = "-" if init == "balanced" else "--"
            ax.plot(
                it[ok],
                e[ok],
                ls=ls,
                color=colors.get(int(depth), "0.3"),
                label=f"N={depth}, {init.replace('_', '-')} start",
            )
            for key, v in diverged.items():
                row, lkey, dkey = key.split("/")[:3]
                if lkey == loss and row == init and dkey == f"depth{depth}" and v["net"]:
                    ax.plot(
                        [v["net"]],
                        [config.lr],
                        "x",
                        color=colors.get(int(depth), "0.3"),
                        ms=9,
                        mew=2,
                    )
        ax.axhline(config.lr, color="k", ls=":", lw=1.2, label=f"lr {format_lr(config.lr)}")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(f"{loss}: stability edge along the Eq. 12 path")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(r"$2/\lambda_{\max}(P_w^{1/2} H_w P_w^{1/2})$")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if any(v["net"] for v in diverged.values()):  # a cross is drawn: say what it means
        handles.append(plt.Line2D([], [], ls="", marker="x", color="k", ms=8, mew=2))
        labels.append("a GD net diverged")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(5, len(labels)), fontsize=8)
    stamp_quick(fig, quick)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _path_note(config: Any, paths: dict[str, Any], diverged: dict[str, Any]) -> str:
    """The divergence predicted along the path against where the runs diverged."""
    parts = []
    for loss, per in paths.items():
        for start, rec in per.items():
            init, depth = start.split("/depth")
            nets = sorted(
                {
                    v["net"]
                    for k, v in diverged.items()
                    if k.split("/")[:3] == [init, loss, f"depth{depth}"] and v["net"] is not None
                }
            )
            pred = rec["first_unstable"]
            parts.append(
                f"{loss} N={depth} {init.replace('_', '-')}: "
                + (
                    f"lr above the edge from iteration {pred}"
                    if pred is not None
                    else f"edge >= {rec['min_edge']:.3g} > lr all along"
                )
                + (
                    f", plain Eq. 12 loop diverged at {rec['diverged_at']}"
                    if rec["diverged_at"] is not None
                    else ""
                )
                + (f", GD nets diverged at {', '.join(map(str, nets))}" if nets else "")
            )
    return (
        "Stability along the path (depthaccel.stability.eq12_paths: Eq. 12 from each net's "
        f"initial end-to-end vector at lr {format_lr(config.lr)}, with the edge "
        "2 / lambda_max(P_w^(1/2) H_w P_w^(1/2)) at the current w; fig2_edge.png): the edge "
        "falls as ||w|| grows towards w*, and a run diverges soon after the rate exceeds "
        "it. " + "; ".join(parts) + "."
    )
