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
    # near-zero deep nets have not moved in the quick run; identity-initialised ones move
    # at once and are ahead of depth 1
    assert moves["depth4/near_zero"] is None and moves["depth8/near_zero"] is None
    assert moves["depth1/near_zero"] <= 0.01 * cfg.iters
    for d in (4, 8):
        assert moves[f"depth{d}/identity"] <= 0.01 * cfg.iters
        assert finals[f"depth{d}/identity"] < finals["depth1/near_zero"]
    verdicts = [c.passed for c in res.claims]
    assert verdicts == [None, None, True, True]
