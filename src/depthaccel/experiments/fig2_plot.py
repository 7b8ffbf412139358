"""fig2's figures: the style of each curve (:func:`curve_styles`) and :func:`render`
(the gap panels, the stability edge along the Eq. 12 paths and the curves' CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from depthaccel.experiments.edge_paths import plot_edge_paths
from depthaccel.reporting import Curve, format_lr, gap_ylabel, plot_gap_panels, write_curves_csv

if TYPE_CHECKING:
    from depthaccel.experiments.results import Claim


_NET_COLORS = {2: "tab:blue", 3: "tab:red", 4: "tab:green"}
_SCHEME_COLORS = {2: "navy", 3: "darkred", 4: "darkgreen"}
_SCHEME_MARKERS = {2: "o", 3: "^", 4: "s"}


def curve_styles(depth: int, first_width: bool) -> tuple[dict, dict]:
    """Matplotlib styles of a depth's net and of its Eq. 12 scheme. Nets: the depth's
    colour, solid for the first width and dash-dot for the second. The scheme lies on its
    net's curve, so it is drawn dotted in a darker shade of the depth's colour with a
    marker per depth (circle N=2, triangle N=3, square N=4), hollow from the first
    width's initialisation and filled from the second's: every curve of the figure has
    its own style."""
    dark = _SCHEME_COLORS.get(depth, "k")
    net = {
        "color": _NET_COLORS.get(depth, "0.4"),
        "ls": "-" if first_width else "-.",
        "lw": 1.5,
    }
    scheme = {
        "color": dark,
        "ls": ":",
        "lw": 1.8,
        "marker": _SCHEME_MARKERS.get(depth, "D"),
        "markevery": (0.05 if first_width else 0.1, 0.1),
        "ms": 5,
        "mfc": "none" if first_width else dark,
    }
    return net, scheme


def render(measured: Any, claims: list[Claim], outdir: Path) -> list[Path]:
    m, config = measured, measured.config
    # one legend for all panels: the control row's nets are labelled like the others
    # (its panel title says they are the balanced ones)
    panels = [
        (
            title,
            [
                Curve(c.label.replace("net (balanced)", "net"), c.iters, c.values, c.panel, c.style)
                for c in cs
            ],
        )
        for title, cs in m.panels
    ]
    fig = plot_gap_panels(
        outdir / "fig2.png",
        panels,
        suptitle=f"GD on deep linear nets vs Eq. 12 (lr {format_lr(config.lr)}, Ethanol)",
        ylabel=gap_ylabel(m.loss_scale),
        ncols=len(config.losses),
        quick=m.quick,
    )
    edge_fig = plot_edge_paths(outdir / "fig2_edge.png", config, m.paths, m.diverged, quick=m.quick)
    # 1e6 iterations x 2000 logged points x 48 curves: megabytes of text, so gzip
    csv = write_curves_csv(outdir / "curves.csv.gz", m.curves)
    return [fig, edge_fig, csv]
