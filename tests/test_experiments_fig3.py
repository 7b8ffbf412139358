"""fig3 experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import math

import pytest

from depthaccel.data.scaling import DEFAULT_SETUP
from depthaccel.experiments import fig3
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig3 import Config
from depthaccel.experiments.runner import measure_judge_render

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    assert len(cfg.seeds) >= 2 and Config.full().seeds == (0, 1, 2)
    res = measure_judge_render(fig3, cfg, ExperimentContext(tmp_path, data_dir=ethanol_data_dir))
    gs = res.settings["grid_search"]
    finals = res.settings["final_gaps"]
    inits = res.settings["initial_gaps"]
    for loss in ("l2", "l4"):
        rows = gs[loss]["search"]
        assert [(r["model"], r["seed"]) for r in rows] == [
            (name, s)
            for s in cfg.seeds
            for name in ("depth-1 GD", "depth-2 GD (width 1)", "depth-3 GD (width 1)")
        ]
        for r in rows:
            depth = int(r["model"][6])
            # the chosen rate is the lowest final gap of the grid, it is interior, and
            # its neighbours are within the policy's spacing
            ok = [(g, lr) for g, lr in zip(r["final_gap"], r["grid"], strict=True) if g is not None]
            best_gap, best_lr = min(ok)
            assert r["chosen_lr"] == best_lr and r["chosen_final_gap"] == best_gap
            assert not r["on_edge"]
            assert r["spacing_at_best"] <= cfg.search.max_ratio * 1.001
            key = f"{loss}/depth{depth}/seed{r['seed']}"
            assert math.isclose(finals[key], best_gap)
            assert res.settings["final_gaps_plain"][key] == pytest.approx(float(loss[1]) * best_gap)
        # fair starts: every model's initial gap within 5% of the others' (near w = 0)
        g0 = [v for k, v in inits.items() if k.startswith(loss)]
        assert max(g0) / min(g0) < 1.05
    # independent check (l4, first seed): the chosen rate and its grid neighbours trained
    # afresh by the plain trainer, one call: the chosen one reproduces its recorded gap and
    # beats both
    import warnings

    from depthaccel.data import load_ethanol
    from depthaccel.train import Run, train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = load_ethanol(ethanol_data_dir)
    s0 = cfg.seeds[0]
    runs, want = [], []
    rows = [r for r in gs["l4"]["search"] if r["seed"] == s0]
    for depth, r in zip((1, 2, 3), rows, strict=True):
        i = r["grid"].index(r["chosen_lr"])
        scale = cfg.single_layer_scale if depth == 1 else cfg.init_scale
        for lr in r["grid"][i - 1 : i + 2]:
            runs.append(Run("gd", lr, depth=depth, init="near_zero", init_scale=scale, seed=s0))
        want.append(r["chosen_final_gap"])
    X, y = DEFAULT_SETUP.apply(task.X, task.y, 4.0)  # the data the experiment trains on
    fresh = train(X, y, 4, runs, cfg.iters, log_points=cfg.log_points)
    for j, gap in enumerate(want):
        below, chosen, above = fresh[3 * j : 3 * j + 3]
        assert chosen.final_gap == pytest.approx(gap, rel=1e-9)
        for other in (below, above):
            assert other.diverged or chosen.final_gap < other.final_gap
    # quick mode: numbers shown, no verdict
    assert [c.passed for c in res.claims] == [None, None]
    assert res.claims[1].details["not assessed"] == "5000 iterations (paper: 1e6)"
    assert all("plain" in v for v in res.claims[1].details["final gaps"].values())
    assert any(n.startswith("Initial gaps") for n in res.notes)
    assert (tmp_path / "fig3.png").is_file() and (tmp_path / "curves.csv").is_file()


def _synthetic(l2: dict, l4: dict):
    """Final gaps per depth (same for both seeds)."""
    cfg = fig3.Config.full()
    seeds = (0, 1)
    finals = {}
    for p, gaps in ((2.0, l2), (4.0, l4)):
        for d, g in gaps.items():
            for s in seeds:
                finals[(p, d, s)] = g
    return fig3.Measured(False, seeds, "", "paper", finals, {}, {}, {}, {}, []), cfg


def test_judge_on_synthetic_gaps():
    m, cfg = _synthetic({1: 1e-3, 2: 1.1e-3, 3: 1.2e-3}, {1: 1e-2, 2: 5e-3, 3: 1e-3})
    claims = fig3.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS"]
    assert claims[1].measured == "final-gap ratio depth 3 / depth 1: 0.1 over seeds"
    m, cfg = _synthetic({1: 1e-3, 2: 5e-4, 3: 1.2e-3}, {1: 1e-2, 2: 1e-3, 3: 5e-3})
    claims = fig3.judge(m, cfg)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL"]
    assert claims[0].why.endswith("for seed(s) 0, 1")
    assert claims[0].measured == "smallest final-gap ratio deeper / depth 1: 0.5 (every seed)"


def _row(depth: int, seed: int, grid: list[float], gaps: list[float | None], chosen: float):
    return {"model": f"depth-{depth} GD" + ("" if depth == 1 else " (width 1)"), "seed": seed,
            "grid": grid, "final_gap": gaps, "chosen_lr": chosen}  # fmt: skip


def _l4_search(g3: float, seeds=(0, 1)) -> dict:
    """Records where depth 2 and 3 sit one step below a diverged rate; a step down the
    grid multiplies depth 2's gap by 1.3 and depth 3's by 1.5."""
    rows = []
    for s in seeds:
        rows.append(_row(1, s, [0.1, 0.2, 0.4], [3e-2, 2e-2, 1e-2], 0.4))
        rows.append(_row(2, s, [1e-3, 2e-3, 4e-3], [1.3e-3 * 1.3, 1.3e-3, None], 2e-3))
        rows.append(_row(3, s, [1e-4, 2e-4, 4e-4], [g3 * 1.5, g3, None], 2e-4))
    return {"l4": {"search": rows}}


def test_order_why_names_the_pair_and_the_grid_resolution():
    # depth 3 ends 1.1x above depth 2: within one grid step of either (x1.3, x1.5)
    m, cfg = _synthetic({1: 1e-3, 2: 1.1e-3, 3: 1.2e-3}, {1: 1e-2, 2: 1.3e-3, 3: 1.43e-3})
    m.search = _l4_search(1.43e-3)
    claim = fig3.judge(m, cfg)[1]
    assert claim.verdict == "FAIL"
    assert claim.why == (
        "depth 3 ends at 1.10x depth 2's final gap (seeds 0, 1), a smaller difference than "
        "one lr-grid step makes to either (x1.30..x1.50); each chosen rate is the largest "
        "stable one"
    )
    # 2x apart: more than a grid step explains, and the why must not say otherwise
    m, cfg = _synthetic({1: 1e-3, 2: 1.1e-3, 3: 1.2e-3}, {1: 1e-2, 2: 1.3e-3, 3: 2.6e-3})
    m.search = _l4_search(2.6e-3)
    why = fig3.judge(m, cfg)[1].why
    assert why.startswith("depth 3 ends at 2.00x depth 2's final gap (seeds 0, 1); one lr-grid")
    assert "smaller difference" not in why
    # without search records: the pair and its ratio only
    m, cfg = _synthetic({1: 1e-3, 2: 1.1e-3, 3: 1.2e-3}, {1: 1e-2, 2: 2e-3, 3: 1e-2})
    assert fig3.judge(m, cfg)[1].why == "depth 3 ends at 5.00x depth 2's final gap (seeds 0, 1)"
    m, cfg = _synthetic({1: 1e-3, 2: 1.1e-3, 3: 1.2e-3}, {1: 1e-2, 2: 2e-2, 3: 4e-2})
    assert fig3.judge(m, cfg)[1].why == (
        "depth 3 ends at 2.00x depth 2's final gap; depth 2 ends at 2.00x depth 1's final gap"
        " (seeds 0, 1)"
    )
