"""fig2 experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments import fig2
from depthaccel.experiments.base import read_curves_csv
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig2 import Config, max_rel_dev

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_max_rel_dev():
    it = np.array([0, 10, 20, 30])
    a = np.array([1.0, 0.5, 0.3, 0.2])
    b = np.array([1.0, 0.4, 0.3, 0.25])
    assert max_rel_dev(a, b, it) == pytest.approx(0.25)
    assert max_rel_dev(a, b, it, start=20) == pytest.approx(0.2)
    assert max_rel_dev(np.array([1.0, np.nan]), np.array([1.0, 1.0]), it[:2]) == float("inf")


def test_every_curve_has_its_own_style():
    styles = [
        fig2.curve_styles(depth, first)[i]
        for depth in (2, 3)
        for first in (True, False)
        for i in (0, 1)
    ]
    keys = [(s["color"], s["ls"], s.get("marker"), s.get("mfc")) for s in styles]
    assert len(set(keys)) == len(keys) == 8
    # in particular the N = 2 and N = 3 schemes differ in colour and marker
    s2, s3 = fig2.curve_styles(2, True)[1], fig2.curve_styles(3, True)[1]
    assert s2["color"] != s3["color"] and s2["marker"] != s3["marker"]


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = fig2.run(cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir))
    devs = res.settings["deviations"]
    # balanced init (Theorem 1's assumption): the scheme tracks every net closely
    bal = [v for k, v in devs.items() if k.startswith("balanced/") and k.endswith("scheme_vs_net")]
    assert len(bal) == 8 and max(bal) < 1e-2
    # balanced claims assessed; near-zero ones (a transient at 2000 iterations) not
    assert [c.passed for c in res.claims] == [True, None, True, None]
    # the deviations in the settings are recomputable from the curves CSV
    curves = {(c.panel, c.label): c for c in read_curves_csv(tmp_path / "curves.csv")}
    assert len(curves) == 2 * 2 * 2 * 2 * 2  # inits x losses x depths x widths x (net, scheme)
    net = curves[("near_zero/l4", "depth-3 net, width 1, lr 1e-3")]
    sch = curves[("near_zero/l4", "Eq. 12, N=3 (from the width-1 net's init)")]
    assert max_rel_dev(sch.values, net.values, net.iters) == pytest.approx(
        devs["near_zero/l4/depth3/width1/scheme_vs_net"], rel=1e-12
    )
    # every curve starts at the same gap for the net and its scheme (same end-to-end start)
    for (panel, label), c in curves.items():
        if label.startswith("Eq. 12"):
            width = label.split("width-")[1].split(" ")[0]
            depth = label.split("N=")[1].split(" ")[0]
            twin = curves[(panel, f"depth-{depth} net, width {width}, lr 1e-3")]
            assert c.values[0] == pytest.approx(twin.values[0], rel=1e-12)
    assert (tmp_path / "fig2.png").read_bytes()[:4] == b"\x89PNG"
