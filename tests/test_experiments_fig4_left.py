"""fig4-left experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import csv

import pytest

from depthaccel.experiments import fig4_left
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig4_left import Config
from depthaccel.experiments.lr_curves import below_windows
from depthaccel.experiments.runner import measure_judge_render
from depthaccel.reporting import read_curves_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = measure_judge_render(
        fig4_left, cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir)
    )
    # quick mode is far shorter than the paper's 1e6 iterations: no verdicts, numbers shown
    assert res.claims and all(c.passed is None for c in res.claims)
    assert all("final gap" in c.details and "windows of rates" in c.details for c in res.claims)
    rows = res.settings["grid_search"]["search"]
    assert [r["model"] for r in rows[:4]] == [
        "depth-3 GD (width 1)",
        "depth-1 GD",
        "depth-1 AdaGrad [tf]",
        "depth-1 AdaDelta [tf]",
    ]
    for r in rows:
        ok = [(g, lr) for g, lr in zip(r["final_gap"], r["grid"], strict=True) if g is not None]
        assert r["chosen_final_gap"] == min(ok)[0]
        assert not r["on_edge"]
    # TensorFlow's default rates are in the grids
    assert 1e-3 in rows[2]["grid"] and 1e-2 in rows[2]["grid"] and 1e-3 in rows[3]["grid"]
    # the learning-rate curve CSV has every trained rate of every model and seed
    lr_rows = list(csv.DictReader((tmp_path / "lr_curves.csv").open()))
    assert len(lr_rows) == sum(len(r["grid"]) for r in rows)
    assert {r["marker"] for r in lr_rows} == {"", "tf_default"}
    # the windows recorded are those of the CSV's curve (independent recomputation)
    s0 = cfg.seeds[0]
    ada = [r for r in lr_rows if r["model"] == "1-layer AdaDelta" and r["seed"] == str(s0)]
    gd3 = res.settings["final_gaps"][f"gd/depth3/seed{s0}"]
    win = below_windows(
        [float(r["lr"]) for r in ada],
        [float(r["final_gap"]) if r["final_gap"] else None for r in ada],
        gd3,
    )
    key = f"1-layer AdaDelta below 3-layer GD's best/seed{s0}"
    assert [tuple(w) for w in res.settings["windows"][key]] == win
    labels = [c.label for c in read_curves_csv(tmp_path / "curves.csv")]
    assert labels[0].startswith("3-layer GD, lr ") and labels[2].startswith("1-layer AdaGrad")
    assert (tmp_path / "fig4_left_lr.png").is_file()


def _synthetic(gd3: float, gd1: float, adagrad: float, adadelta: float):
    cfg = Config.full()
    seeds = (0, 1)
    finals = {}
    for s in seeds:
        for key, g in ((("gd", 3), gd3), (("gd", 1), gd1), (("adagrad", 1), adagrad),
                       (("adadelta", 1), adadelta)):  # fmt: skip
            finals[(*key, s)] = g
    rates = {k: ([1e-3, 1e-2], [2 * g, g]) for k, g in finals.items()}
    m = fig4_left.Measured(
        False, 4.0, 10, seeds, "", "paper", finals, {}, {}, [], rates, [], {}, []
    )
    return m, cfg


def test_judge_on_synthetic_gaps():
    m, cfg = _synthetic(gd3=1e-3, gd1=2e-2, adagrad=1e-2, adadelta=5e-3)
    claims = fig4_left.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS", "FAIL"]  # AdaGrad beats GD-1
    assert claims[0].measured == "final-gap ratio 3-layer GD / 1-layer AdaGrad: 0.1 over seeds"
    # no chosen rates recorded: the pair and its ratio only
    assert claims[2].why == "1-layer GD ends at 2.00x 1-layer AdaGrad's final gap (seeds 0, 1)"
    m, cfg = _synthetic(gd3=1e-2, gd1=1e-3, adagrad=1e-2, adadelta=5e-3)
    claims = fig4_left.judge(m, cfg)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL", "PASS"]
    assert claims[1].details["windows of rates"]["seed 0"].startswith("1-layer AdaDelta ends")


def test_why_weighs_the_ratio_against_one_grid_step():
    # GD-1 ends 1.05x above AdaGrad; one step along either grid moves the gap by x1.2
    # (GD-1: the rate above diverged, so its chosen rate is the largest stable one;
    # AdaGrad: the rate above is stable)
    m, cfg = _synthetic(gd3=1e-3, gd1=1.05e-2, adagrad=1e-2, adadelta=5e-3)
    for s in m.seeds:
        m.chosen[("gd", 1, s)] = m.chosen[("adagrad", 1, s)] = 1e-2
        m.rates[("gd", 1, s)] = ([1e-3, 1e-2, 1e-1], [1.2 * 1.05e-2, 1.05e-2, None])
        m.rates[("adagrad", 1, s)] = ([1e-3, 1e-2, 1e-1], [1.2e-2, 1e-2, 1.1e-2])
    why = fig4_left.judge(m, cfg)[2].why
    assert why == (
        "1-layer GD ends at 1.05x 1-layer AdaGrad's final gap (seeds 0, 1), a smaller "
        "difference than one lr-grid step makes to either (x1.20)"
    )
    # 1.5x apart is more than a step; and with AdaGrad's rate above diverged too, every
    # chosen rate is the largest stable one
    m, cfg = _synthetic(gd3=1e-3, gd1=1.5e-2, adagrad=1e-2, adadelta=5e-3)
    for s in m.seeds:
        m.chosen[("gd", 1, s)] = m.chosen[("adagrad", 1, s)] = 1e-2
        m.rates[("gd", 1, s)] = ([1e-3, 1e-2, 1e-1], [1.2 * 1.5e-2, 1.5e-2, None])
        m.rates[("adagrad", 1, s)] = ([1e-3, 1e-2, 1e-1], [1.2e-2, 1e-2, None])
    assert fig4_left.judge(m, cfg)[2].why == (
        "1-layer GD ends at 1.50x 1-layer AdaGrad's final gap (seeds 0, 1); one lr-grid "
        "step changes either's final gap by x1.20; each chosen rate is the largest stable one"
    )
