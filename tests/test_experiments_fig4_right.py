"""fig4-right experiment (quick config on the real Ethanol data)."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.data.scaling import SetupAxes
from depthaccel.experiments import fig4_right
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.fig4_right import Config
from depthaccel.experiments.runner import measure_judge_render

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_run(tmp_path, ethanol_data_dir):
    cfg = Config.quick()
    res = measure_judge_render(
        fig4_right,
        cfg,
        # k = 1 (z-scores): 5e3 Adam iterations reach the first thresholds there
        ExperimentContext(tmp_path, data_dir=ethanol_data_dir, setup=SetupAxes("zscore")),
    )
    assert res.settings["lr"] == 1e-3  # TensorFlow's Adam default
    finals = res.settings["final_gaps"]
    # what quick mode shows: depth-2/3 Adam ahead of the single layer, for every seed
    for s in cfg.seeds:
        assert finals[f"depth2/seed{s}"] < finals[f"depth1/seed{s}"]
        assert finals[f"depth3/seed{s}"] < finals[f"depth1/seed{s}"]
    # quick mode (5e3 of the paper's 2e5 iterations): not assessed
    assert [c.passed for c in res.claims] == [None, None]
    assert res.claims[0].details["per seed"] == "holds for every seed (0, 1)"
    # fair start: the single layer starts near w = 0, as the deep nets
    g0 = res.settings["initial_gaps"]
    assert max(g0.values()) / min(g0.values()) < 1.05
    # the reported first hits equal an independent reading of the same runs logged at
    # every iteration (the first t with gap < threshold); at least one is a real hit
    import warnings

    from depthaccel.data import load_ethanol
    from depthaccel.train import Run, train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = load_ethanol(ethanol_data_dir)
    s0 = cfg.seeds[0]
    runs = [
        Run(
            "adam",
            None,
            depth=d,
            hidden=1,
            init="near_zero",
            init_scale=cfg.single_layer_scale if d == 1 else cfg.init_scale,
            seed=s0,
            convention="tf",
        )
        for d in cfg.depths
    ]
    dense = train(task.X, task.y, cfg.p, runs, cfg.iters, log_points=cfg.iters + 1)
    real = 0
    for r in dense:
        assert list(r.iters) == list(range(cfg.iters + 1))
        for thr, hit in res.settings["first_hit"][f"depth{r.run.depth}/seed{s0}"].items():
            below = np.flatnonzero(np.asarray(r.gap) < float(thr))
            assert hit == (int(below[0]) if below.size else None), (r.run.depth, thr)
            real += hit is not None and hit > 0
    assert real >= 2
    # the tail diagnostics in the settings are those of the logged curves, per run
    ev = res.settings["tail_evidence"]
    assert set(ev) == set(finals)
    for key, e in ev.items():
        assert e["final"] == finals[key]
        assert e["curve_min"] <= e["final"]
    assert any("Tail of the curves" in n for n in res.notes)
    assert res.claims[0].details["seed 0"].count("first below") == 1


# ------------------------------------------------------------------ tail diagnostics


def _tail_reference(iters, gap, ref, tail_fraction, spike_factor):
    """Slow obvious loops: the same quantities as fig4_right.tail_evidence."""
    import math

    best, spikes, below_tail, n_tail, last = math.inf, 0, 0, 0, None
    cmin, cmin_it = math.inf, None
    for it, g, r in zip(iters, gap, ref, strict=True):
        if not math.isnan(g):
            best = min(best, g)
            if g < cmin:
                cmin, cmin_it = g, it
            if g > spike_factor * best:
                spikes += 1
        is_below = (not math.isnan(g)) and (not math.isnan(r)) and g < r
        if is_below:
            last = it
        if it >= (1 - tail_fraction) * iters[-1]:
            n_tail += 1
            below_tail += is_below
    return {
        "final": gap[-1],
        "curve_min": cmin,
        "min_iter": cmin_it,
        "spikes": spikes,
        "below_ref_frac": below_tail / n_tail,
        "last_below_ref": last,
    }


@pytest.mark.parametrize("tail_fraction,spike_factor", [(0.1, 2.0), (0.3, 1.5), (1.0, 3.0)])
def test_tail_evidence_matches_loops(tail_fraction, spike_factor):
    rng = np.random.default_rng(7)
    iters = np.arange(0, 2001, 20)
    ref = 1.0 / (1.0 + iters / 50.0)  # a smooth falling curve, like the single layer's
    gap = 0.8 * ref.copy()
    spikes_at = rng.choice(np.arange(5, len(iters)), size=12, replace=False)
    gap[spikes_at] *= rng.uniform(1.2, 30.0, size=12)  # short spikes, some small
    gap[-1] = 6.0 * gap[-2]  # the run ends inside a spike
    gap[40] = np.nan  # a NaN counts as nothing
    got = fig4_right.tail_evidence(
        iters, gap, ref, tail_fraction=tail_fraction, spike_factor=spike_factor
    )
    want = _tail_reference(list(iters), list(gap), list(ref), tail_fraction, spike_factor)
    import dataclasses

    assert dataclasses.asdict(got) == pytest.approx(want)
    assert got.spikes >= 1 and got.final_over_min > 2  # the case this measures
    assert got.final_over_min == pytest.approx(gap[-1] / np.nanmin(gap))


def test_tail_evidence_hand_case_and_errors():
    it = [0, 100, 200, 300, 400]
    ev = fig4_right.tail_evidence(it, [5.0, 1.0, 3.0, 0.5, 2.0], [4.0, 2.0, 2.0, 1.0, 1.0])
    # running minima 5, 1, 1, 0.5, 0.5: spikes (> 2x) at 200 (3 > 2) and 400 (2 > 1)
    assert ev.spikes == 2 and ev.curve_min == 0.5 and ev.min_iter == 300
    assert ev.final == 2.0 and ev.final_over_min == 4.0
    # tail = it >= 0.9 * 400 = 360: only it. 400, where 2.0 > 1.0
    assert ev.below_ref_frac == 0.0 and ev.last_below_ref == 300
    never = fig4_right.tail_evidence(it, [5.0] * 5, [1.0] * 5, tail_fraction=1.0)
    assert never.last_below_ref is None and never.spikes == 0 and never.final_over_min == 1
    with pytest.raises(ValueError, match="shapes"):
        fig4_right.tail_evidence(it, [1.0] * 4, [1.0] * 5)
    with pytest.raises(ValueError, match="tail_fraction"):
        fig4_right.tail_evidence(it, [1.0] * 5, [1.0] * 5, tail_fraction=0)
    with pytest.raises(ValueError, match="spike_factor"):
        fig4_right.tail_evidence(it, [1.0] * 5, [1.0] * 5, spike_factor=1.0)


def test_earlier_hits_counts_never_as_infinity():
    a = {"0.1": 10, "0.01": 50, "0.001": None, "1e-4": None}
    b = {"0.1": 20, "0.01": 50, "0.001": 900, "1e-4": None}
    assert fig4_right.earlier_hits(a, b) == (1, 3)  # 10 < 20; 50 = 50; never > 900
    assert fig4_right.earlier_hits(b, a) == (1, 3)  # 900 < never
    with pytest.raises(ValueError, match="thresholds"):
        fig4_right.earlier_hits({"0.1": 1}, {"0.2": 1})


def _evidence(final, curve_min, spikes=0):
    return fig4_right.TailEvidence(final, curve_min, 100, spikes, 0.9, 100)


def test_diagnosis_note_tells_a_spike_from_no_help():
    hits = {k: {"0.1": 10 * k[0]} for k in [(1, 0), (2, 0), (1, 1), (2, 1)]}
    hits[(1, 0)], hits[(1, 1)] = {"0.1": 50}, {"0.1": 50}
    base = {(1, 0): _evidence(1.0, 1.0), (1, 1): _evidence(1.0, 1.0)}
    kw = dict(depths=(1, 2), seeds=(0, 1), log_every=200, lr=1e-3)
    holds = {(2, 0): True, (2, 1): False}
    # seed 1 ends at 3x its minimum, which was below the single layer's end: a spike
    spike = base | {(2, 0): _evidence(0.5, 0.5, 4), (2, 1): _evidence(1.5, 0.5, 7)}
    text = fig4_right.diagnosis_note(spike, hits, holds, **kw)
    assert "depth 2: 4, 7" in text and "depth 1: 0, 0" in text
    assert "final/min 3.00" in text and "a cost that depth brings" in text
    assert "2 of the 2" in text  # 20 < 50 for both seeds
    # the same FAIL where the deep net never got below the single layer's end
    flat = base | {(2, 0): _evidence(0.5, 0.5), (2, 1): _evidence(1.5, 1.2)}
    text = fig4_right.diagnosis_note(flat, hits, holds, **kw)
    assert "depth 2, seed 1 never got below" in text and "a cost" not in text
    # nothing fails: no diagnosis of failures
    ok = fig4_right.diagnosis_note(spike, hits, {(2, 0): True, (2, 1): True}, **kw)
    assert "Where the claim fails" not in ok


def _synthetic(d2: float, d3: float):
    cfg = fig4_right.Config.full()
    seeds = (0, 1)
    finals = {(d, s): g for s in seeds for d, g in ((1, 1e-3), (2, d2), (3, d3))}
    ev = fig4_right.TailEvidence(1e-3, 1e-3, 10, 0, 1.0, 10)
    m = fig4_right.Measured(
        False, 4.0, seeds, 1e-3, "", "paper", finals, {}, {k: {"0.1": 5} for k in finals},
        {k: ev for k in finals}, 10.0, [],
    )  # fmt: skip
    return m, cfg


def test_judge_on_synthetic_gaps():
    m, cfg = _synthetic(d2=5e-4, d3=8e-4)
    claims = fig4_right.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS"]
    assert claims[0].measured == "final-gap ratio depth 2 / depth 1: 0.5 over seeds"
    m, cfg = _synthetic(d2=5e-4, d3=2e-3)
    claims = fig4_right.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "FAIL"]
    assert claims[1].why == "depth 3 ends above the single layer for seed(s) 0, 1"
