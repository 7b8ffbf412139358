"""fig5-left experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments import fig5_left
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig5_left import Config, move_iteration

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_move_iteration():
    it = np.array([0, 5, 10, 15])
    assert move_iteration(it, np.array([1.0, 0.995, 0.98, 0.5]), 0.01) == 10
    assert move_iteration(it, np.array([1.0, 1.0, 0.999, 0.995]), 0.01) is None
    assert move_iteration(it, np.array([1.0, np.nan, 0.5, 0.4]), 0.01) == 10


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = fig5_left.run(cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir))
    moves = res.settings["move_iteration"]
    finals = res.settings["final_gaps"]
    # near-zero depth 8 has not moved in the quick run; identity-initialised nets move at
    # once and are ahead of depth 1 (fair start: the single layer near w = 0), every seed
    for s in cfg.seeds:
        assert moves[f"depth8/near_zero/seed{s}"] is None
        assert moves[f"depth1/near_zero/seed{s}"] <= 0.01 * cfg.iters
        for d in (4, 8):
            assert moves[f"depth{d}/identity/seed{s}"] <= 0.01 * cfg.iters
            assert finals[f"depth{d}/identity/seed{s}"] < finals[f"depth1/near_zero/seed{s}"]
    assert res.settings["initial_gaps"][f"depth1/near_zero/seed{cfg.seeds[0]}"] < 1.4
    verdicts = [c.passed for c in res.claims]
    assert verdicts == [None, None, True, True]
    assert all(
        not r["on_edge"] or r["model"].startswith("depth-8 GD (width 1)")
        for r in res.settings["grid_search"]["search"]
    )
