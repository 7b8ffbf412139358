"""depthaccel.reporting: learning rates and durations as text, curve CSVs, gap plots."""

from __future__ import annotations

import math

import numpy as np

from depthaccel.reporting import (
    Curve,
    format_lr,
    format_seconds,
    plot_gap_panels,
    read_curves_csv,
    write_curves_csv,
)


def test_curves_csv_roundtrip(tmp_path):
    curves = [
        Curve("depth 2, lr 1e-3", np.array([0, 10, 20]), np.array([1.0, 0.5, 1e-17]), panel="l2"),
        Curve('a "quoted", label', np.array([0, 5]), np.array([2.0, math.pi]), panel="l4"),
    ]
    p = write_curves_csv(tmp_path / "c.csv", curves)
    back = read_curves_csv(p)
    assert [c.panel for c in back] == ["l2", "l4"]
    assert back[0].label == "depth 2, lr 1e-3"
    np.testing.assert_array_equal(back[0].iters, [0, 10, 20])
    np.testing.assert_array_equal(back[0].values, curves[0].values)
    np.testing.assert_array_equal(back[1].values, curves[1].values)


def test_curves_csv_gz_is_the_same_table_compressed_and_reproducible(tmp_path):
    """``.gz``: the same text, gzip-compressed, byte-identical on every write (no time or
    file name in the header), read back transparently."""
    import gzip

    curves = [Curve("s", np.arange(400), np.linspace(1.0, 0.0, 400) ** 3, panel="p")]
    plain = write_curves_csv(tmp_path / "c.csv", curves)
    packed = write_curves_csv(tmp_path / "c.csv.gz", curves)
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert packed.stat().st_size < plain.stat().st_size / 2
    first = packed.read_bytes()
    # the gzip header (RFC 1952): magic, method, flags (no FNAME, FCOMMENT, FEXTRA), and
    # MTIME 0, so no file name and no time stamp: every write gives the same bytes
    assert first[:3] == b"\x1f\x8b\x08" and first[3] & 0b11100 == 0
    assert first[4:8] == b"\x00\x00\x00\x00"
    assert write_curves_csv(tmp_path / "c.csv.gz", curves).read_bytes() == first
    back = read_curves_csv(packed)[0]
    np.testing.assert_array_equal(back.values, curves[0].values)


def test_plot_gap_panels_writes_png(tmp_path):
    c = Curve("x", np.arange(5), np.array([1.0, 0.1, 0.0, -1.0, 1e-3]))
    p = plot_gap_panels(tmp_path / "f.png", [("l2", [c]), ("l4", [])], suptitle="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_lr_and_seconds():
    assert [format_lr(x) for x in (1e-3, 3.162e-4, 0.5, 2e-3, 1e-5, 0.0)] == [
        "1e-3",
        "3.16e-4",
        "0.5",
        "2e-3",
        "1e-5",
        "0",
    ]
    assert [format_seconds(s) for s in (5.0, 386.5, 9000.0)] == ["5.0 s", "6.4 min", "2.50 h"]


def _figures_of(monkeypatch):
    import matplotlib.pyplot as plt

    figs = []
    real = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figs.append(fig), real(fig)))
    return figs


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the closed figure, drawn again as saved
    canvas.draw()
    return canvas.get_renderer()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_plot_gap_panels_legends_never_cover_the_axes(tmp_path, monkeypatch):
    figs = _figures_of(monkeypatch)
    it = np.arange(100)
    same = [Curve(f"model {j}", it, np.geomspace(1, 10.0 ** -(j + 1), 100)) for j in range(8)]
    plot_gap_panels(tmp_path / "a.png", [("l2", same), ("l4", same)], ncols=1)
    fig = figs[-1]
    assert len(fig.legends) == 1  # one shared legend below the figure
    r = _renderer(fig)
    leg = fig.legends[0].get_window_extent(r)
    assert all(not _overlaps(leg, ax.get_window_extent(r)) for ax in fig.axes)
    other = [Curve(f"other {j}", it, np.geomspace(1, 1e-3, 100)) for j in range(3)]
    plot_gap_panels(tmp_path / "b.png", [("l2", same), ("l4", other)])
    fig = figs[-1]
    r = _renderer(fig)
    assert not fig.legends
    for ax in fig.axes:  # a legend per panel, below it
        assert not _overlaps(ax.get_legend().get_window_extent(r), ax.get_window_extent(r))
