"""Formatting, curve CSV and plotting helpers shared by ``depthaccel reproduce`` and
``depthaccel compare``: learning rates and durations as text, curves in long-form CSV,
the paper-style gap-vs-iteration panels, and matplotlib's non-interactive pyplot."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthaccel.atomic import atomic_open

__all__ = [
    "Curve",
    "finish_figure",
    "format_lr",
    "QUICK_STAMP",
    "format_seconds",
    "gap_ylabel",
    "plot_gap_panels",
    "plot_loss_panel",
    "pyplot",
    "read_curves_csv",
    "stamp_quick",
    "run_curve",
    "write_curves_csv",
]


#: What a quick-mode figure says in its title.
QUICK_STAMP = "QUICK MODE: CI-sized run, not the paper's setup"


def stamp_quick(fig: Any, quick: bool) -> None:
    """Mark a quick-mode figure in its title (a line under the suptitle, if any), so that
    nobody takes it for the paper's result; call before ``tight_layout``."""
    if not quick:
        return
    sup = getattr(fig, "_suptitle", None)
    text = sup.get_text() if sup is not None else ""
    if text:
        fig.suptitle(f"{text}\n[{QUICK_STAMP}]")
    else:
        fig.suptitle(QUICK_STAMP, color="firebrick")


def finish_figure(
    fig: Any, path: str | os.PathLike, quick: bool, rect: tuple[float, ...] | None = None
) -> str | os.PathLike:
    """The last steps of an experiment's figure: :func:`stamp_quick`, ``tight_layout``
    (within ``rect`` if given), saved atomically at 110 dpi and closed; returns ``path``."""
    from depthaccel.atomic import save_figure

    stamp_quick(fig, quick)
    if rect is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=rect)
    save_figure(fig, path, dpi=110)
    pyplot().close(fig)
    return path


def gap_ylabel(loss_scale: str = "paper") -> str:
    """The y-label of an l_p loss-gap plot in mathtext: the paper's scale
    ``(1/m) sum (1/p)|r|^p - L*`` or the plain ``(1/m) sum |r|^p - L*``."""
    if loss_scale == "plain":
        return r"$\frac{1}{m}\sum |r|^p - L^*$"
    return r"$\frac{1}{m}\sum \frac{1}{p}|r|^p - L^*$"


def format_seconds(s: float) -> str:
    """A duration for a report: ``12.3 s``, ``4.5 min``, ``2.10 h``."""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


@dataclass
class Curve:
    """One plotted line: ``label`` (model and chosen lr), x = ``iters``, y = ``values``
    (usually the loss gap L - L*), drawn in panel ``panel`` (e.g. "l2", "l4")."""

    label: str
    iters: np.ndarray
    values: np.ndarray
    panel: str = ""
    style: dict[str, Any] = field(default_factory=dict)


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
    """Write curves in long form: columns ``panel,series,iteration,value``; a path ending
    in ``.gz`` is gzip-compressed (reproducibly: no time or name in the gzip header),
    for per-step curves that would make megabytes of text."""
    import gzip
    import io

    path = Path(path)
    buf = io.StringIO()
    buf.write("panel,series,iteration,value\n")
    for c in curves:
        label = c.label.replace('"', "'")
        for it, v in zip(np.asarray(c.iters), np.asarray(c.values), strict=True):
            buf.write(f'{c.panel},"{label}",{int(it)},{float(v):.17g}\n')
    text = buf.getvalue()
    with atomic_open(path, "wb") as fh:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(text.encode())
        else:
            fh.write(text.encode())
    return path


def read_curves_csv(path: str | os.PathLike) -> list[Curve]:
    """Read back what :func:`write_curves_csv` wrote (for tests and re-plotting; ``.gz``
    is decompressed)."""
    import csv
    import gzip

    path = Path(path)
    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            key = (row["panel"], row["series"])
            its, vals = series.setdefault(key, ([], []))
            its.append(int(row["iteration"]))
            vals.append(float(row["value"]))
    return [
        Curve(label=k[1], panel=k[0], iters=np.array(v[0]), values=np.array(v[1]))
        for k, v in series.items()
    ]


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend (unless one is set)."""
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
    quick: bool = False,
) -> Path:
    """Plot panels side by side in the paper's style and save a PNG (``quick``: stamp
    the title, :func:`stamp_quick`).

    ``panels`` = [(panel title, curves), ...]; each curve is drawn against its
    iterations with a log y axis (non-positive values are dropped from a log plot), legend
    naming model and learning rate. ``ylabel`` may contain ``{panel}``. ``ncols``: panels
    per row (default: all in one row). Legends never cover curves: when every panel
    shows the same labels, one legend below the figure; otherwise one below each panel.
    """
    plt = pyplot()
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
        ax.set_ylabel(ylabel.replace("{panel}", ptitle))
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
    stamp_quick(fig, quick)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def run_curve(res: Any, label: str | None = None, panel: str = "") -> Curve:
    """A trainer ``RunResult`` as a :class:`Curve` of its gap (label: the run's label +
    its lr)."""
    if label is None:
        label = f"{res.run.label()}, lr {format_lr(res.run.effective_lr)}"
    return Curve(label, np.asarray(res.iters), np.asarray(res.gap, dtype=float), panel=panel)


def plot_loss_panel(
    out_dir: str | os.PathLike, name: str, p: float, curves: Sequence[Curve], suptitle: str
) -> tuple[Path, Path]:
    """One l_p panel (gap vs iteration, log y, 7 x 4.6 in) as ``out_dir/name`` and the
    curves as ``out_dir/curves.csv``; returns both paths."""
    fig = plot_gap_panels(
        Path(out_dir) / name,
        [(f"l{p:g} loss", curves)],
        suptitle=suptitle,
        ylabel=f"l{p:g} loss (distance from optimum)",
        panel_size=(7.0, 4.6),
    )
    return fig, write_curves_csv(Path(out_dir) / "curves.csv", curves)
