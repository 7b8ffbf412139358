"""fig4-left experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from depthaccel.experiments import fig4_left
from depthaccel.experiments.base import read_curves_csv
from depthaccel.experiments.fig4_left import Config

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
    res = fig4_left.run(cfg, tmp_path, data_dir=_data_dir())
    # quick mode is far shorter than the paper's 1e6 iterations: no verdicts, numbers shown
    assert res.claims and all(c.passed is None for c in res.claims)
    assert all("final gap" in c.measured for c in res.claims)
    rows = res.settings["grid_search"]["search"]
    assert [r["model"] for r in rows] == [
        "depth-3 GD (width 1)",
        "depth-1 GD",
        "depth-1 AdaGrad [tf]",
        "depth-1 AdaDelta [tf]",
    ]
    for r in rows:
        ok = [(g, lr) for g, lr in zip(r["final_gap"], r["grid"], strict=True) if g is not None]
        assert r["chosen_final_gap"] == min(ok)[0]
    labels = [c.label for c in read_curves_csv(tmp_path / "curves.csv")]
    assert labels[0].startswith("3-layer GD, lr ") and labels[2].startswith("1-layer AdaGrad")
