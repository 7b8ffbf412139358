"""Learning-rate curves: windows of rates below a reference, the CSV, and how much one
grid step changes a chosen run's gap."""

from __future__ import annotations

import csv

import pytest

from depthaccel.experiments.lr_curves import (
    below_windows,
    grid_step_change,
    grid_steps,
    plot_lr_curves,
    resolution_text,
    windows_text,
    write_lr_curves_csv,
)


def test_below_windows():
    lrs = [0.01, 0.0133, 0.0178, 0.0237, 0.0316, 0.0422]
    gaps = [0.012, 0.0095, 0.0074, 0.0107, None, 0.009]
    # below 0.0097: 0.0133..0.0178, then 0.0422 alone (after a diverged rate)
    assert below_windows(lrs, gaps, 0.0097) == [(0.0133, 0.0178), (0.0422, 0.0422)]
    assert windows_text(below_windows(lrs, gaps, 0.0097)) == "0.0133..0.0178 and 0.0422"
    assert below_windows(lrs, gaps, 0.001) == [] and windows_text([]) == "no rate"
    assert below_windows(lrs, gaps, 1.0) == [(0.01, 0.0237), (0.0422, 0.0422)]
    # unsorted input is sorted by rate first
    assert below_windows([0.3, 0.1, 0.2], [1.0, 0.5, 0.5], 0.9) == [(0.1, 0.2)]
    with pytest.raises(ValueError):
        below_windows([0.1], [], 1.0)


def test_csv_and_plot(tmp_path):
    rows = [
        {
            "model": "1-layer AdaDelta",
            "seed": 0,
            "lr": 1e-3,
            "final_gap": 0.169,
            "final_gap_plain": 0.676,
            "diverged": False,
            "marker": "tf_default",
        },
        {
            "model": "1-layer AdaDelta",
            "seed": 0,
            "lr": 1.0,
            "final_gap": None,
            "final_gap_plain": None,
            "diverged": True,
            "marker": "",
        },
    ]
    path = write_lr_curves_csv(tmp_path / "lr.csv", rows)
    back = list(csv.DictReader(path.open()))
    assert back[0]["model"] == "1-layer AdaDelta" and float(back[0]["final_gap"]) == 0.169
    assert back[0]["marker"] == "tf_default" and back[1]["final_gap"] == ""
    assert back[1]["diverged"] == "1"
    png = plot_lr_curves(
        tmp_path / "lr.png",
        [("AdaDelta", [1e-3, 1.0], [0.169, None], [1e-3])],
        title="t",
        ylabel="gap",
    )
    assert png.stat().st_size > 1000


def test_grid_step_change_is_the_largest_factor_to_a_stable_neighbour():
    lrs, gaps = [0.4, 0.1, 0.2, 0.8], [1.5, 3.0, 1.2, None]  # unsorted on purpose
    # chosen 0.4: neighbours 0.2 (1.2/1.5 -> x1.25 either way round) and 0.8 (diverged)
    assert grid_step_change(lrs, gaps, 0.4) == pytest.approx((1.25, True))
    # chosen 0.2: neighbours 0.1 (x2.5) and 0.4 (x1.25); the rate above is stable
    assert grid_step_change(lrs, gaps, 0.2) == pytest.approx((2.5, False))
    assert grid_step_change(lrs, gaps, 0.3) is None  # not on the grid
    assert grid_step_change(lrs, gaps, 0.8) is None  # diverged
    assert grid_step_change([0.1, 0.2], [1.0, None], 0.1) is None  # no stable neighbour
    with pytest.raises(ValueError, match="differ in length"):
        grid_step_change([0.1], [1.0, 2.0], 0.1)


def test_resolution_text_compares_the_ratio_with_the_smallest_step():
    assert resolution_text(1.1, [1.3, 1.5], False) == (
        ", a smaller difference than one lr-grid step makes to either (x1.30..x1.50)"
    )
    # either way round: 1/1.1 is the same difference
    assert resolution_text(1 / 1.1, [1.3], True) == (
        ", a smaller difference than one lr-grid step makes to either (x1.30); each chosen "
        "rate is the largest stable one"
    )
    assert resolution_text(1.4, [1.3, 1.5], False) == (
        "; one lr-grid step changes either's final gap by x1.30..x1.50"
    )
    assert resolution_text(1.4, [], True) == ""


def test_grid_steps_gathers_every_search_or_none():
    stable_above = ([0.1, 0.2, 0.4], [2.0, 1.0, 1.5], 0.2)  # x2 below, x1.5 above
    edge = ([0.1, 0.2, 0.4], [1.3, 1.0, None], 0.2)  # the rate above diverged
    steps, largest_stable = grid_steps([edge, edge])
    assert steps == pytest.approx([1.3, 1.3]) and largest_stable is True
    steps, largest_stable = grid_steps([edge, stable_above])
    assert steps == pytest.approx([1.3, 2.0]) and largest_stable is False
    assert grid_steps([edge, None]) is None  # a search without a record
    assert grid_steps([edge, ([0.1, 0.2], [1.0, None], 0.1)]) is None  # no stable step
    assert grid_steps([]) == ([], True)
