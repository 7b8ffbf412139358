"""fig4-left experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import pytest

from depthaccel.experiments import fig4_left
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig4_left import Config
from depthaccel.reporting import read_curves_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = fig4_left.run(cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir))
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
