"""The verdict of `depthaccel compare` on synthetic results (no training): the headline
answers honestly in each situation, and every comparative word agrees with the numbers
quoted beside it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from depthaccel.compare import ModelBest, verdict
from depthaccel.compare.comparison import compare_models
from depthaccel.compare.verdict import HEADLINE_CHARS, MAX_BULLETS
from depthaccel.train import Run, RunResult

LRS = (1e-3, 1e-2, 1e-1, 1.0)
THR = (1e-1, 1e-3, 1e-5)
NAMES = {
    1e-1: "1e-1 of the initial gap",
    1e-3: "1e-3 of the initial gap",
    1e-5: "1e-5 of the initial gap",
}


def fake(method, depth, final, hits, lr=1e-2, gap0=1.0, T=1000):
    r = Run(method, lr, depth=depth)
    return RunResult(
        run=r,
        iters=np.array([0, T]),
        gap=np.array([gap0, final]),
        first_hit={t: hits.get(t) for t in THR},
        final_gap=final,
        diverged=False,
        diverged_at=None,
    )


LABELS = {"gd": "GD", "e2e": "e2e", "adagrad": "AdaGrad", "adadelta": "AdaDelta", "adam": "Adam"}


def model(method, depth, final=None, hits=(), lr=1e-2, gap0=1.0, on_edge=False) -> ModelBest:
    label = f"depth-{depth} {LABELS[method]}"
    if final is None:  # every rate diverged
        return ModelBest(method, depth, label, [0], None, None, True, len(LRS), LRS)
    res = fake(method, depth, final, dict(hits), lr=lr, gap0=gap0)
    return ModelBest(method, depth, label, [0], 0, res, on_edge, 0, LRS)


def judge(models, floor=None, optimum=0.05):
    return verdict(models, THR, 1000, optimum, floor=floor, threshold_names=NAMES)


# ------------------------------------------------------- every comparative word checked

NUM = r"(-?[\d.]+(?:e[-+]?\d+)?)"


def assert_words_match_numbers(text: str) -> None:
    """Each "Nx fewer/more/lower/higher" and "about as many/the same" agrees with the two
    numbers quoted with it; raises on the first one that does not."""
    checks = 0
    for x, b, a in re.findall(rf"needs {NUM}x fewer iterations than [^(]*\((\d+) vs (\d+)\)", text):
        assert int(b) < int(a) and float(x) == pytest.approx(int(a) / int(b), rel=5e-3), text
        checks += 1
    for x, b, a in re.findall(rf"needs {NUM}x more iterations than [^(]*\((\d+) vs (\d+)\)", text):
        assert int(b) > int(a) and float(x) == pytest.approx(int(b) / int(a), rel=5e-3), text
        checks += 1
    for b, a, x in re.findall(rf"(\d+) vs (\d+) \({NUM}x fewer\)", text):
        assert int(b) < int(a) and float(x) == pytest.approx(int(a) / int(b), rel=5e-3), text
        checks += 1
    for b, a, x in re.findall(rf"(\d+) vs (\d+) \({NUM}x more\)", text):
        assert int(b) > int(a) and float(x) == pytest.approx(int(b) / int(a), rel=5e-3), text
        checks += 1
    for b, a, x, word in re.findall(rf"final gap {NUM} vs {NUM} \({NUM}x (lower|higher)\)", text):
        lo, hi = sorted((float(b), float(a)))
        assert (float(b) < float(a)) == (word == "lower"), text
        assert float(x) == pytest.approx(hi / lo, rel=2e-2), text
        checks += 1
    for x, word, b, a in re.findall(
        rf"ends at a {NUM}x (lower|higher) gap than [^(]*\({NUM} vs {NUM}\)", text
    ):
        assert (float(b) < float(a)) == (word == "lower"), text
        lo, hi = sorted((float(b), float(a)))
        assert float(x) == pytest.approx(hi / lo, rel=2e-2), text
        checks += 1
    for b, a in re.findall(r"about as many iterations to reach [^(]*\((\d+) vs (\d+)\)", text):
        assert 1 / 1.1 < int(a) / int(b) < 1.1, text
        checks += 1
    return checks


def test_the_word_checker_catches_a_wrong_word():
    assert (
        assert_words_match_numbers("a: 300 vs 900 (3x fewer); final gap 1e-4 vs 1e-3 (10x lower)")
        == 2
    )
    for wrong in (
        "900 vs 300 (3x fewer)",
        "300 vs 900 (2x fewer)",
        "final gap 1e-3 vs 1e-4 (10x lower)",
    ):
        with pytest.raises(AssertionError):
            assert_words_match_numbers(wrong)


def assert_shape(v):
    assert len(v.headline) <= HEADLINE_CHARS, (len(v.headline), v.headline)
    assert 1 <= len(v.bullets) <= MAX_BULLETS
    assert v.text.splitlines()[0] == v.headline
    assert "no a " not in v.text and "  " not in v.text
    assert_words_match_numbers(v.text)


# ------------------------------------------------------------------------ the tables


def test_depth_wins():
    base = model("gd", 1, 1e-3, {1e-1: 100, 1e-3: 900}, lr=1e-2)
    deep = model("gd", 3, 1e-4, {1e-1: 40, 1e-3: 300}, lr=1e-3)
    e2e = model("e2e", 2, 5e-4, {1e-1: 50, 1e-3: 500})
    ada = model("adagrad", 1, 2e-2, {1e-1: 60})
    v = judge([base, deep, e2e, ada])
    assert_shape(v)
    assert assert_words_match_numbers(v.text) >= 5
    assert v.answer == "yes" and v.deep is deep and v.base is base and not v.adaptive_wins
    assert v.headline == (
        "Yes, depth accelerates GD here: depth-3 GD needs 3x fewer iterations than depth-1 GD "
        "to reach 1e-3 of the initial gap (300 vs 900)."
    )
    assert v.speedup == pytest.approx(3.0) and v.speedup_threshold == 1e-3
    assert v.final_ratio == pytest.approx(10.0)
    # first bullet: iterations to each threshold, then the final gaps
    assert v.bullets[0].startswith("depth-3 GD (lr 1e-3) vs depth-1 GD (lr 0.01), 1000 iterations:")
    assert (
        "1e-1: 40 vs 100 (2.5x fewer), 1e-3: 300 vs 900 (3x fewer), 1e-5: neither" in v.bullets[0]
    )
    assert v.bullets[0].endswith("final gap 0.0001 vs 0.001 (10x lower).")
    # the adaptive single layer trails: said in its bullet, with its numbers
    assert v.bullets[1].startswith(
        "Adaptive optimizers on a single layer: the best, depth-1 AdaGrad"
    )
    assert "trails depth-3 GD" in v.bullets[1] and "reaches 1e-3" not in v.bullets[1]
    # a modest lead (1.125x fewer iterations, 1.67x lower)
    d = model("gd", 2, 6e-4, {1e-1: 80, 1e-3: 800})
    vm = judge([base, d])
    assert vm.answer == "modest" and vm.headline.startswith("Modestly, depth accelerates GD")
    assert_shape(vm)


def test_depth_loses():
    base = model("gd", 1, 1e-4, {1e-1: 40, 1e-3: 300})
    deep = model("gd", 2, 2e-4, {1e-1: 100, 1e-3: 900})
    v = judge([base, deep])
    assert_shape(v)
    assert v.answer == "slower"
    assert v.headline == (
        "No, depth slows GD down here: depth-2 GD needs 3x more iterations than depth-1 GD to "
        "reach 1e-3 of the initial gap (900 vs 300)."
    )
    assert "(3x more)" in v.bullets[0] and "(2x higher)" in v.bullets[0]
    # depth-1 GD reaches a threshold depth never does
    never = model("gd", 2, 1e-2, {1e-1: 40})
    v2 = judge([model("gd", 1, 1e-6, {1e-1: 40, 1e-3: 300, 1e-5: 800}), never])
    assert v2.answer == "slower" and "never reaches 1e-3 of the initial gap" in v2.headline
    assert_shape(v2)


def test_no_clear_difference_and_mixed():
    base = model("gd", 1, 1e-4, {1e-1: 100, 1e-3: 900})
    same = model("gd", 2, 1.05e-4, {1e-1: 95, 1e-3: 880})
    v = judge([base, same])
    assert v.answer == "no difference" and v.headline.startswith("No clear difference")
    assert "about as many iterations to reach 1e-3 of the initial gap (880 vs 900)" in v.headline
    assert_shape(v)
    # faster to 1e-3 but ends 3x higher: mixed, both sides quoted
    mixed = model("gd", 2, 3e-4, {1e-1: 50, 1e-3: 300})
    vm = judge([base, mixed])
    assert vm.answer == "mixed" and vm.headline.startswith("Mixed: depth-2 GD needs 3x fewer")
    assert "but depth-2 GD ends at a 3x higher gap than depth-1 GD" in vm.headline
    assert_shape(vm)


def test_adaptive_single_layer_wins_and_the_headline_says_so():
    # the case of the old paragraph: "Yes" although single-layer Adam beat every deep model
    base = model("gd", 1, 1e-3, {1e-1: 400, 1e-3: 5000})
    deep = model("gd", 2, 1e-4, {1e-1: 200, 1e-3: 1626})
    adam = model("adam", 1, 1e-7, {1e-1: 30, 1e-3: 347, 1e-5: 900})
    v = judge([base, deep, adam, model("adadelta", 1)])
    assert_shape(v)
    assert v.answer == "yes" and v.adaptive_wins and v.adaptive is adam
    assert "; but depth-1 Adam" in v.headline
    assert "the best, depth-1 Adam (lr 0.01), beats depth-2 GD" in v.bullets[1]
    assert "1e-3: 347 vs 1626 (4.69x fewer)" in v.bullets[1]
    assert "depth-1 AdaDelta diverged at every rate" in v.bullets[1]
    # depth slower than depth-1 GD, and Adam beats the deep model: both in the headline
    slow = model("gd", 2, 2e-3, {1e-1: 800, 1e-3: 9000})
    v2 = judge([base, slow, adam])
    assert v2.answer == "slower" and v2.headline.startswith("No, depth slows GD down here")
    assert "; but depth-1 Adam" in v2.headline
    assert_shape(v2)


def test_depth_within_an_adaptive_method_never_says_helps_when_slower():
    # the old text said "depth helps AdaDelta" while quoting 1819 vs 1374 iterations
    base = model("gd", 1, 1e-3, {1e-1: 100, 1e-3: 900})
    deep = model("gd", 2, 1e-4, {1e-1: 40, 1e-3: 300})
    one = model("adadelta", 1, 1e-4, {1e-1: 300, 1e-3: 1374})
    two = model("adadelta", 2, 5e-5, {1e-1: 500, 1e-3: 1819})
    v = judge([base, deep, one, two])
    (within,) = [b for b in v.bullets if b.startswith("Depth with adaptive optimizers")]
    assert "depth helps" not in within and "depth is mixed for AdaDelta" in within
    assert (
        "1.32x more iterations than depth-1 AdaDelta to reach 1e-3 of the initial gap (1819 vs 1374)"
        in within
    )
    assert "depth-2 AdaDelta ends at a 2x lower gap" in within
    assert_shape(v)
    faster = model("adadelta", 2, 5e-5, {1e-1: 100, 1e-3: 700})
    within = judge([base, deep, one, faster]).bullets[2]
    assert "depth helps AdaDelta: depth-2 AdaDelta needs 1.96x fewer iterations" in within


def test_everything_diverges():
    v = judge([model("gd", 1), model("gd", 2), model("e2e", 2), model("adam", 1)])
    assert_shape(v)
    assert v.answer == "unknown"
    assert v.headline == (
        "Cannot say: every learning rate diverged for depth-1 GD and every deep GD model; "
        "try smaller rates (--lrs)."
    )
    assert "add smaller rates to --lrs (4 of 4 models)" in v.bullets[-1]
    only_base = judge([model("gd", 1), model("gd", 2, 1e-3, {1e-1: 5})])
    assert only_base.headline.startswith("Cannot say: every learning rate diverged for depth-1 GD;")


def test_an_exact_fit_compares_iterations_never_gap_ratios():
    floor = 1e-29
    base = model("gd", 1, 3.7e-32, {1e-1: 90, 1e-3: 660, 1e-5: 900})
    deep = model("gd", 2, 4e-31, {1e-1: 30, 1e-3: 220, 1e-5: 300})
    v = judge([base, deep], floor=floor, optimum=2.7e-30)
    assert_shape(v)
    assert v.answer == "yes" and v.speedup == pytest.approx(3.0)
    assert v.headline == (
        "Yes, depth accelerates GD here: depth-2 GD needs 3x fewer iterations than depth-1 GD "
        "to reach 1e-5 of the initial gap (300 vs 900)."
    )
    assert v.bullets[0].endswith("final gaps both at the optimum to round-off.")
    assert "Final gaps at or below 1e-29, the round-off floor of this data" in v.text
    assert not re.search(r"e\+\d+x", v.text) and "x lower" not in v.text
    # one at the floor, the other not: reach and final, no ratio of a round-off gap
    stuck = model("gd", 2, 1e-10, {1e-1: 30, 1e-3: 220})
    v2 = judge([base, stuck], floor=floor, optimum=2.7e-30)
    assert v2.answer == "mixed"  # 3x faster to 1e-3, never reaches 1e-5
    assert v2.headline == (
        "Mixed (depth-2 GD vs depth-1 GD): 3x fewer iterations to 1e-3 of the initial gap, but "
        "never reaches 1e-5 of the initial gap."
    )
    assert "1e-3: 220 vs 660 (3x fewer), 1e-5: never vs 900" in v2.bullets[0]
    assert "final gap 1e-10 vs the optimum to round-off" in v2.bullets[0]
    assert not re.search(r"e\+\d+x", v2.text)
    assert_shape(v2)
    # thresholds at or below the floor are ignored
    v3 = verdict([base, deep], (1e-30,), 1000, 2.7e-30, floor=floor)
    assert "iterations to" not in v3.text and v3.answer == "no difference"


def test_missing_models_are_named_with_their_own_article():
    v = judge([model("adam", 1, 1e-3, {1e-1: 5})])
    assert v.headline == (
        "Cannot say: the grid lacks depth-1 GD (method gd at depth 1) and a deep GD model "
        "(gd or e2e at a depth > 1) to compare."
    )
    v = judge([model("gd", 1, 1e-3, {1e-1: 5})])
    assert (
        v.headline
        == "Cannot say: the grid lacks a deep GD model (gd or e2e at a depth > 1) to compare."
    )
    assert v.answer == "unknown"
    v = judge([model("gd", 2, 1e-3, {1e-1: 5})])
    assert v.headline == "Cannot say: the grid lacks depth-1 GD (method gd at depth 1) to compare."


def test_caveats_and_next_steps():
    base = model("gd", 1, 1e-3, {1e-1: 100}, lr=1.0, on_edge=True)
    stuck = model("gd", 3, 0.95, {})  # gap[0] = 1.0: barely moved
    moving = model("gd", 2, 0.5, {}, lr=1e-3, on_edge=True)
    v = judge([base, stuck, moving])
    caveats, steps = v.bullets[-2], v.bullets[-1]
    assert "edge of the grid (or every rate diverged) for depth-1 GD, depth-2 GD" in caveats
    assert "Barely moved from the initial point in 1000 iterations" in caveats
    assert "depth-3 GD" in caveats.split("Barely moved")[1]
    assert "depth-2 GD" not in caveats.split("Barely moved")[1]
    assert "add smaller rates to --lrs (depth-2 GD)" in steps
    assert "add larger rates to --lrs (depth-1 GD)" in steps
    assert "--init identity" in steps and "(depth-3 GD)" in steps
    assert "Barely moved" not in judge([base, moving]).text
    assert_shape(v)


def test_headline_stays_short_with_long_labels():
    base = model("gd", 1, 1e-3, {1e-1: 400, 1e-3: 5000})
    e2e = ModelBest(
        "e2e",
        3,
        "Eq. 10/12 scheme (N=3)",
        [0],
        0,
        fake("e2e", 3, 1e-4, {1e-1: 200, 1e-3: 1626}),
        False,
        0,
        LRS,
    )
    adam = ModelBest(
        "adam",
        1,
        "depth-1 Adam",
        [0],
        0,
        fake("adam", 1, 1e-7, {1e-1: 30, 1e-3: 347, 1e-5: 900}),
        False,
        0,
        LRS,
    )
    names = {t: f"{t:g} of the initial gap, a rather long threshold name" for t in THR}
    v = verdict([base, e2e, adam], THR, 1000, 0.05, threshold_names=names)
    assert len(v.headline) <= HEADLINE_CHARS and v.adaptive_wins
    assert "depth-1 Adam" in v.headline


def test_comparison_signs():
    a = model("gd", 1, 1e-3, {1e-1: 100, 1e-3: 900})
    b = model("gd", 2, 1e-3, {1e-1: 100, 1e-3: 450, 1e-5: 990})
    c = compare_models(a, b, THR, 0.0)
    assert c.signs == (1, 1, 0) and c.outcome == "better" and c.speedup == 2.0
    assert c.only_b == 1e-5 and c.only_a is None and c.factor == 2.0
    assert compare_models(b, a, THR, 0.0).outcome == "worse"
