"""fig4-right experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.experiments import fig4_right
from depthaccel.experiments.base import read_curves_csv
from depthaccel.experiments.fig4_right import Config

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
    res = fig4_right.run(Config.quick(), tmp_path, data_dir=_data_dir())
    assert res.settings["lr"] == 1e-3  # TensorFlow's Adam default
    finals = res.settings["final_gaps"]
    # what quick mode shows: depth-2/3 Adam ahead of the single layer
    assert finals["depth2"] < finals["depth1"] and finals["depth3"] < finals["depth1"]
    assert [c.passed for c in res.claims] == [True, True]
    # first hits are consistent with the logged curves: at a logged point below a
    # threshold, the exact first hit has already happened
    curves = read_curves_csv(tmp_path / "curves.csv")
    for c, depth in zip(curves, (1, 2, 3), strict=True):
        for thr, hit in res.settings["first_hit"][f"depth{depth}"].items():
            below = np.flatnonzero(c.values < float(thr))
            if below.size:
                assert hit is not None and hit <= c.iters[below[0]]
            elif hit is not None:
                assert hit > 0
