"""fig3 experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from depthaccel.experiments import fig3
from depthaccel.experiments.fig3 import Config

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


@pytest.mark.skipif(_data_dir() is None, reason="Ethanol data not found")
def test_quick_run(tmp_path):
    cfg = Config.quick()
    res = fig3.run(cfg, tmp_path, data_dir=_data_dir())
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
