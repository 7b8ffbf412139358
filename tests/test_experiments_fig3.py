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
            assert not r["on_edge"]
            assert math.isclose(finals[f"{loss}/depth{depth}"], r["chosen_final_gap"])
    # independent check (l4): the chosen rate and its grid neighbours trained afresh by the
    # plain trainer, one call: the chosen one reproduces its recorded gap and beats both
    import warnings

    from depthaccel.data import load_ethanol
    from depthaccel.train import Run, train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = load_ethanol(ethanol_data_dir)
    runs, want = [], []
    for depth, r in zip((1, 2, 3), gs["l4"]["search"], strict=True):
        i = r["grid"].index(r["chosen_lr"])
        for lr in r["grid"][i - 1 : i + 2]:
            runs.append(Run("gd", lr, depth=depth, init="near_zero", init_scale=0.05))
        want.append(r["chosen_final_gap"])
    fresh = train(task.X, task.y, 4, runs, cfg.iters, log_points=cfg.log_points)
    for j, gap in enumerate(want):
        below, chosen, above = fresh[3 * j : 3 * j + 3]
        assert chosen.final_gap == pytest.approx(gap, rel=1e-9)
        for other in (below, above):
            assert other.diverged or chosen.final_gap < other.final_gap
    # what quick mode shows: with l4, depth 2 and 3 end well below depth 1
    assert finals["l4/depth2"] < 0.8 * finals["l4/depth1"]
    assert finals["l4/depth3"] < 0.9 * finals["l4/depth1"]
    # with l2, no depth is much faster than depth 1
    assert finals["l2/depth2"] > 0.9 * finals["l2/depth1"]
    assert finals["l2/depth3"] > 0.9 * finals["l2/depth1"]
    assert (tmp_path / "fig3.png").is_file() and (tmp_path / "curves.csv").is_file()
