"""fig5-left experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments import fig5_left
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig5_left import Config, move_iteration
from depthaccel.experiments.runner import measure_judge_render

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_move_iteration():
    it = np.array([0, 5, 10, 15])
    assert move_iteration(it, np.array([1.0, 0.995, 0.98, 0.5]), 0.01) == 10
    assert move_iteration(it, np.array([1.0, 1.0, 0.999, 0.995]), 0.01) is None
    assert move_iteration(it, np.array([1.0, np.nan, 0.5, 0.4]), 0.01) == 10


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = measure_judge_render(
        fig5_left, cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir)
    )
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


def _synthetic(near4: int | None, near8: int | None, ident: int, ident_gap: float):
    cfg = fig5_left.Config.full()
    seeds = (0, 1)
    moves, finals = {}, {}
    for s in seeds:
        moves.update({(1, "near_zero", s): 100, (4, "near_zero", s): near4,
                      (8, "near_zero", s): near8, (4, "identity", s): ident,
                      (8, "identity", s): ident})  # fmt: skip
        finals.update({(1, "near_zero", s): 1e-2, (4, "identity", s): ident_gap,
                       (8, "identity", s): ident_gap})  # fmt: skip
    m = fig5_left.Measured(
        False, 4.0, 100_000, seeds, "", "paper", finals, {}, {}, [], moves, {}, {}
    )
    return m, cfg


def test_judge_on_synthetic_moves():
    m, cfg = _synthetic(near4=60_000, near8=None, ident=100, ident_gap=1e-3)
    claims = fig5_left.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS", "PASS", "PASS"]
    assert claims[0].measured == "starts to move at iteration 60000, 60000"
    assert claims[2].measured == "moves at iteration 100, 100; final-gap ratio 0.1"
    assert claims[1].measured == "does not move within the run (any seed)"
    m, cfg = _synthetic(near4=None, near8=None, ident=None, ident_gap=1e-3)
    claims = fig5_left.judge(m, cfg)
    assert claims[2].measured.startswith("does not move within the run (any seed); ")
    assert claims[2].verdict == "FAIL"
    m, cfg = _synthetic(near4=500, near8=90_000, ident=5_000, ident_gap=2e-2)
    claims = fig5_left.judge(m, cfg)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL", "FAIL", "FAIL"]
    assert claims[2].why == "it moves late or ends above depth 1 for seed(s) 0, 1"


def test_rebound_note_names_runs_that_climb_back():
    from depthaccel.reporting import Curve

    m, _ = _synthetic(near4=60_000, near8=None, ident=100, ident_gap=1e-3)
    iters = np.arange(0, 1000, 100)
    falls = np.linspace(1.3, 0.2, 10)  # keeps falling: no note
    back = np.array([1.3, 1.3, 1.2, 0.5, 0.13, 1.1, 1.1, 1.1, 1.1, 1.1])
    m.curves = [((4, "near_zero", 0), Curve("a", iters, back, "l4")),
                ((4, "identity", 0), Curve("b", iters, falls, "l4"))]  # fmt: skip
    m.chosen[(4, "near_zero", 0)] = 0.01
    assert fig5_left.rebound_note(m) == [
        "Runs that fall and climb back without diverging (the chosen rate is the best of its "
        "grid at the last iteration only): depth 4 near-zero seed 0 (lr 0.01): down to 0.13 "
        "at iteration 400, then back up to 1.1 at the end."
    ]
    # ending at 2x the lowest point or less is not a rebound
    m.curves = [((4, "near_zero", 0), Curve("a", iters, np.minimum(back, 0.26), "l4"))]
    assert fig5_left.rebound_note(m) == []
