"""fig3 experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import math

import pytest

from depthaccel.experiments import fig3
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig3 import Config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = fig3.run(cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir))
    gs = res.settings["grid_search"]
    finals = res.settings["final_gaps"]
    for loss in ("l2", "l4"):
        rows = gs[loss]["search"]
        assert [r["model"] for r in rows] == [
            "depth-1 GD",
            "depth-2 GD (width 1)",
            "depth-3 GD (width 1)",
        ]
        for depth, r in zip((1, 2, 3), rows, strict=True):
            # the chosen rate is the grid's lowest final gap, and it is interior
            ok = [(g, lr) for g, lr in zip(r["final_gap"], r["grid"], strict=True) if g is not None]
            best_gap, best_lr = min(ok)
            assert r["chosen_lr"] == best_lr and r["chosen_final_gap"] == best_gap
            assert not r["on_edge"]
            assert math.isclose(finals[f"{loss}/depth{depth}"], best_gap)
    # what quick mode shows: with l4, depth 2 and 3 end well below depth 1
    assert finals["l4/depth2"] < 0.8 * finals["l4/depth1"]
    assert finals["l4/depth3"] < 0.9 * finals["l4/depth1"]
    # with l2, no depth is much faster than depth 1
    assert finals["l2/depth2"] > 0.9 * finals["l2/depth1"]
    assert finals["l2/depth3"] > 0.9 * finals["l2/depth1"]
    assert (tmp_path / "fig3.png").is_file() and (tmp_path / "curves.csv").is_file()
