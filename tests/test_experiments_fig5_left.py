"""fig5-left experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.experiments import fig5_left
from depthaccel.experiments.fig5_left import Config, move_iteration

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_dir() -> str | None:
    env = os.environ.get("DEPTHACCEL_DATA_DIR", "").strip()
    for d in ([Path(env)] if env else []) + [DATA]:
        if (d / "gas_sensor_drift" / "ethanol_2565.csv.gz").is_file():
            return str(d)
    return None


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_move_iteration():
    it = np.array([0, 5, 10, 15])
    assert move_iteration(it, np.array([1.0, 0.995, 0.98, 0.5]), 0.01) == 10
    assert move_iteration(it, np.array([1.0, 1.0, 0.999, 0.995]), 0.01) is None
    assert move_iteration(it, np.array([1.0, np.nan, 0.5, 0.4]), 0.01) == 10


@pytest.mark.skipif(_data_dir() is None, reason="Ethanol data not found")
def test_quick_run(tmp_path):
    cfg = Config.quick()
    res = fig5_left.run(cfg, tmp_path, data_dir=_data_dir())
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
