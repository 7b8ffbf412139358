"""fig4-right experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments import fig4_right
from depthaccel.experiments.base import read_curves_csv
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig4_right import Config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_run(tmp_path, ethanol_data_dir):
    res = fig4_right.run(Config.quick(), ExperimentContext(tmp_path, data_dir=ethanol_data_dir))
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
