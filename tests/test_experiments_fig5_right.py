"""Fig. 5 right: the MNIST tutorial net, its overparameterized twin, and the experiment."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from depthaccel.experiments import fig5_right as f5
from depthaccel.experiments import run_experiment
from depthaccel.models import mnist_tutorial as mt
from depthaccel.overparam import factors
from depthaccel.reporting import read_curves_csv

# one intra-op thread: small nets, and far faster on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> f5.Config:
    return dataclasses.replace(f5.Config.quick(), **kw)


# --------------------------------------------------------------------------- model


def _tutorial_param_count() -> int:
    # From the tutorial's variable shapes: conv1 [5,5,1,32]+[32], conv2 [5,5,32,64]+[64],
    # fc1 [7*7*64, 512]+[512], fc2 [512, 10]+[10].
    shapes = [(5, 5, 1, 32), (32,), (5, 5, 32, 64), (64,), (7 * 7 * 64, 512), (512,)]
    shapes += [(512, 10), (10,)]
    return sum(math.prod(s) for s in shapes)


def test_shapes_and_parameter_counts():
    plain, over, summary = f5.build_models(_cfg())
    x = torch.zeros(3, 1, 28, 28)
    assert plain(x).shape == (3, 10) and over(x).shape == (3, 10)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_over = sum(p.numel() for p in over.parameters())
    assert n_plain == _tutorial_param_count() == 1_663_370
    # each dense W (out x in) becomes (out x out) @ (out x in): out^2 more parameters
    assert n_over - n_plain == 512 * 512 + 10 * 10
    assert 0.15 < n_over / n_plain - 1 < 0.16  # "roughly 15%" (paper, Section 8)
    assert [c.name for c in summary.layers] == ["fc1", "fc2"]
    fs = factors(over.fc1)
    assert [tuple(t.shape) for t in fs] == [(512, 3136), (512, 512)]
    assert factors(plain.fc1) is None


def test_tutorial_init_statistics_and_same_convs():
    plain, over, _ = f5.build_models(_cfg())
    w = plain.fc1.weight.detach()
    # truncated normal N(0, 0.1^2) cut at +-2 std: |w| <= 0.2, std = 0.1 * 0.8796
    assert w.abs().max() <= 0.2 + 1e-7
    assert abs(w.std().item() - 0.1 * 0.87962) < 2e-3
    assert torch.all(plain.conv1.bias == 0) and torch.all(plain.conv2.bias == 0.1)
    assert torch.all(plain.fc1.bias == 0.1) and torch.all(plain.fc2.bias == 0.1)
    for name in ("conv1", "conv2"):
        assert torch.equal(getattr(plain, name).weight, getattr(over, name).weight)
    for fct in factors(over.fc1):  # "tutorial" factor init: the same law
        assert fct.abs().max() <= 0.2 + 1e-7
        assert abs(fct.std().item() - 0.1 * 0.87962) < 3e-3


@pytest.mark.parametrize("init", ["preserve", "residual"])
def test_function_keeping_inits_compute_the_same_function_float64(init):
    cfg = _cfg(factor_init=init, dropout=0.0)
    plain, over, _ = f5.build_models(cfg, dtype=torch.float64)
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64) - 0.5
    plain.eval(), over.eval()
    ref = plain(x)
    for factored in (True, False):
        over.factored_forward = factored
        torch.testing.assert_close(over(x), ref, rtol=1e-10, atol=1e-10)
    if init == "residual":
        w1, w2 = factors(over.fc1)
        assert torch.equal(w1, plain.fc1.weight) and torch.equal(w2, torch.eye(512).double())
    # the factors are really used: perturbing one changes the output
    with torch.no_grad():
        factors(over.fc2)[1].mul_(1.5)
    assert not torch.allclose(over(x), ref, atol=1e-6)


def test_scale_images_and_smoothing_helpers():
    img = np.array([[[0, 255] + [127] * 26] * 28], dtype=np.uint8)
    out = mt.scale_images(img)
    assert out.shape == (1, 1, 28, 28) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx(-0.5) and out[0, 0, 0, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="28, 28"):
        mt.scale_images(np.zeros((2, 28, 27), np.uint8))
    v = np.array([4.0, 2.0, 6.0, 0.0, 8.0])
    ref = [np.mean(v[max(0, t - 2) : t + 1]) for t in range(5)]  # window 3, trailing
    np.testing.assert_allclose(f5.smooth(v, 3), ref)
    assert f5.first_reach(np.array([5.0, 4.0, 3.0]), 4.0) == 2
    assert f5.first_reach(np.array([5.0, 4.0]), 1.0) is None
    rows = f5.speedups(np.array([9.0, 8, 7, 6]), np.array([9.0, 6, 5, 4]), (0.5, 1.0))
    assert [(r["iteration"], r["iteration_other"], r["speedup"]) for r in rows] == [
        (2, 2, 1.0),
        (4, 2, 2.0),
    ]


def test_variants_train_alongside_with_their_own_l2_target():
    cfg = _cfg(epochs=0.1, train_size=640, variants=(("residual", "product"),), dropout=0.0)
    _, over, _ = f5.build_models(cfg, dtype=torch.float64)
    var, _ = f5.overparameterized_net(cfg, "residual", dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(640, 1, 28, 28, generator=g) - 0.5).double()
    y = torch.randint(0, 10, (640,), generator=g)
    splits = mt.Splits(x, y, x[:64], y[:64], x[:1], y[:1])
    hist, _, _ = mt.train_side_by_side(
        {"o": over, "v": var}, splits, cfg.schedule(), l2_on={"v": "product"}
    )
    ce0 = hist["v"].ce[0]
    # residual init: the variant starts as the original function; its L2 is on the product
    plain = f5.build_models(cfg, dtype=torch.float64)[0]
    want = ce0 + 5e-4 * mt.l2_penalty(plain, "factors").item()
    assert hist["v"].loss[0] == pytest.approx(want, rel=1e-12)
    assert hist["o"].loss[0] - hist["o"].ce[0] != pytest.approx(want - ce0, rel=1e-3)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="factor_init"):
        _cfg(factor_init="zeros").validate()
    with pytest.raises(ValueError, match="l2_on"):
        _cfg(l2_on="both").validate()
    with pytest.raises(ValueError, match="train_size"):
        _cfg(train_size=56000).validate()
    with pytest.raises(ValueError, match="variants"):
        _cfg(variants=(("tutorial", "weights"),)).validate()
    with pytest.raises(ValueError, match="base_lr"):
        _cfg(base_lr=float("nan")).validate()


def test_quick_mode_runs_and_writes_outputs(tmp_path, mnist_data_dir):
    cfg = dataclasses.replace(f5.Config.quick(), threads=1)
    res = run_experiment("fig5-right", tmp_path, config=cfg, quick=True, data_dir=mnist_data_dir)
    out = tmp_path / "fig5-right"
    assert res.status == "ok" and res.mode == "quick"
    assert (out / "fig5_right.png").stat().st_size > 10_000
    assert (out / "result.json").is_file() and (tmp_path / "REPORT.md").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["steps_done"] == cfg.n_steps() == 30
    assert settings["params"] == {"original": 1_663_370, "overparameterized": 1_925_614}
    curves = {(c.panel, c.label): c for c in read_curves_csv(out / "curves.csv.gz")}
    loss = curves[("batch_loss", "original")]
    assert list(loss.iters) == list(range(1, 31)) and np.all(np.isfinite(loss.values))
    assert (
        "batch_loss",
        "overparameterized (depth-2 dense; init tutorial, L2 on product)",
    ) in curves
    # the literal edit (L2 on the product) is the primary configuration; factor-L2 and
    # residual init stay variants with their own claims
    full = f5.Config.full()
    assert full.l2_on == "product" and cfg.l2_on == "product"
    assert set(full.variants) == {("tutorial", "factors"), ("residual", "factors")}
    assert res.claims[0].statement.endswith("falls faster (the literal edit)")
    # SGD on the tutorial net does learn in 30 steps (cross-entropy starts near ln 10)
    ce = curves[("batch_cross_entropy", "original")].values
    assert ce[-5:].mean() < ce[:5].mean()
    assert [c.verdict for c in res.claims] == ["NOT ASSESSED", "NOT ASSESSED"]
    assert all(c.details["not assessed"] == "short run (30 steps)" for c in res.claims)
    assert set(settings["test_error_pct"]) == {"original", "overparameterized"}
    # the batch-loss claim says why, from the stored histories: the split equals one
    # recomputed from the curves written to the CSV
    over = curves[("batch_loss", "overparameterized (depth-2 dense; init tutorial, L2 on product)")]
    over_ce = curves[
        ("batch_cross_entropy", "overparameterized (depth-2 dense; init tutorial, L2 on product)")
    ]
    split = settings["loss_split"]["overparameterized"]
    want = f5.loss_split(
        loss.values,
        ce,
        over.values,
        over_ce.values,
        cfg.smooth_window,
        tuple(r["iteration"] for r in settings["speedups"]["loss"]),
    )
    assert split["l2_first"] == pytest.approx(want["l2_first"], rel=1e-6)
    assert split["l2_above_steps"] == want["l2_above_steps"]
    assert res.claims[0].details["why"].startswith("why, the L2 term")
    assert "why" not in res.claims[1].details  # the cross-entropy claim has no L2 term
    assert set(settings["l2_at_init"]) == {"original", "product", "factors"}


def test_each_net_as_its_own_task_equals_training_side_by_side():
    """fig5-right trains every net as a task of its own (ctx.map): with the dropout masks
    re-seeded per step, a net trained alone takes exactly the steps it takes beside the
    others (same batches, masks, init), bit for bit."""
    cfg = _cfg(epochs=0.6, train_size=640, batch_size=32, variants=(("residual", "product"),))
    assert cfg.same_dropout_masks and cfg.dropout > 0
    g = torch.Generator().manual_seed(3)
    x = torch.rand(640, 1, 28, 28, generator=g) - 0.5
    y = torch.randint(0, 10, (640,), generator=g)
    splits = mt.Splits(x, y, x[:64], y[:64], x[:1], y[:1])
    jobs = [
        f5.NetJob("original", "original", "", cfg.l2_on),
        f5.NetJob("overparameterized", "overparameterized", cfg.factor_init, cfg.l2_on),
        f5.NetJob("variant", "overparameterized", "residual", "product"),
    ]
    nets = {j.key: f5.build_net(cfg, j, "cpu", torch.float32) for j in jobs}
    together, lrs, done = mt.train_side_by_side(
        nets, splits, cfg.schedule(), l2_on={j.key: j.l2_on for j in jobs}
    )
    assert done == cfg.n_steps() > 5
    for j in jobs:
        alone, lrs1, _ = mt.train_side_by_side(
            {j.key: f5.build_net(cfg, j, "cpu", torch.float32)},
            splits,
            cfg.schedule(),
            l2_on={j.key: j.l2_on},
        )
        assert alone[j.key].loss == together[j.key].loss  # bit for bit
        assert alone[j.key].ce == together[j.key].ce and lrs1 == lrs


# ------------------------------------------------------------- why: L2 term vs data term


def _split_reference(bl, bc, ol, oc, window, iterations):
    """Slow obvious loops: the same quantities as f5.loss_split."""

    def sm(v, t):  # trailing mean over the window ending at 0-based index t
        lo = max(0, t - window + 1)
        return sum(v[lo : t + 1]) / (t + 1 - lo)

    n = len(bl)
    l2b = [bl[i] - bc[i] for i in range(n)]
    l2o = [ol[i] - oc[i] for i in range(n)]
    above = [t for t in range(n) if sm(l2o, t) > sm(l2b, t)]
    if not above:
        below_from = 1
    elif above[-1] == n - 1:
        below_from = None
    else:
        below_from = above[-1] + 2
    ce_below = sum(sm(oc, t) < sm(bc, t) for t in range(n)) / n
    e = n - 1
    return {
        "l2_first": [l2b[0], l2o[0]],
        "steps": n,
        "l2_above_steps": len(above),
        "l2_below_from": below_from,
        "ce_below_frac": ce_below,
        "end": {
            "l2": [sm(l2b, e), sm(l2o, e)],
            "ce": [sm(bc, e), sm(oc, e)],
            "l2_share": [sm(l2b, e) / sm(bl, e), sm(l2o, e) / sm(ol, e)],
        },
        "at": [
            {
                "iteration": t,
                "l2": [sm(l2b, t - 1), sm(l2o, t - 1)],
                "ce": [sm(bc, t - 1), sm(oc, t - 1)],
            }
            for t in iterations
        ],
    }


def _histories(n=120, seed=0, l2_start=4.0, l2_decay=0.03):
    """Synthetic (loss, ce) of an original and of an overparameterized net whose L2 term
    starts ``l2_start`` times higher and decays faster, and whose cross-entropy is lower."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    ce_b = 2.0 * np.exp(-t / 20) + 0.05 + 0.02 * rng.random(n)
    ce_o = 0.9 * ce_b
    l2_b = 3.0 * np.exp(-0.002 * t)
    l2_o = l2_start * 3.0 * np.exp(-l2_decay * t)
    return ce_b + l2_b, ce_b, ce_o + l2_o, ce_o


@pytest.mark.parametrize("l2_start,l2_decay", [(4.0, 0.03), (1.2, 0.0), (0.5, 0.0), (4.0, 0.002)])
def test_loss_split_matches_loops(l2_start, l2_decay):
    bl, bc, ol, oc = _histories(l2_start=l2_start, l2_decay=l2_decay)
    got = f5.loss_split(bl, bc, ol, oc, 7, (1, 30, 120))
    want = _split_reference(list(bl), list(bc), list(ol), list(oc), 7, (1, 30, 120))
    assert _nested_close(got, want)
    json.dumps(got)  # JSON-able: it goes into settings.json


def _nested_close(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_nested_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_nested_close(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        assert a is b
        return True
    assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    return True


def test_loss_split_crossing_cases_and_errors():
    bl, bc, ol, oc = _histories()  # starts 4x higher, decays fast: crosses below once
    s = f5.loss_split(bl, bc, ol, oc, 1)
    l2b, l2o = bl - bc, ol - oc
    cross = int(np.flatnonzero(l2o < l2b)[0]) + 1  # window 1: the raw terms
    assert s["l2_below_from"] == cross and s["l2_above_steps"] == cross - 1 > 0
    assert s["l2_first"] == pytest.approx([3.0, 12.0])
    assert f5.loss_split(*_histories(l2_start=0.5, l2_decay=0.0), 5)["l2_below_from"] == 1
    assert f5.loss_split(*_histories(l2_start=1.2, l2_decay=0.0), 5)["l2_below_from"] is None
    with pytest.raises(ValueError, match="one non-zero length"):
        f5.loss_split(bl, bc, ol[:-1], oc, 5)
    with pytest.raises(ValueError, match="iterations"):
        f5.loss_split(bl, bc, ol, oc, 5, (0,))


def test_why_text_names_the_l2_excess_at_the_checkpoints_not_passed():
    bl, bc, ol, oc = _histories()
    w = 5
    sb, so = f5.smooth(bl, w), f5.smooth(ol, w)
    rows = f5.speedups(sb, so, (0.05, 0.5, 1.0))
    slow = [r for r in rows if r["speedup"] <= 1.0]
    assert slow and len(slow) < len(rows)  # the case of fig5-right: only early ones fail
    split = f5.loss_split(bl, bc, ol, oc, w, tuple(r["iteration"] for r in rows))
    text = f5.why_text(split, rows, w)
    t = slow[0]["iteration"]
    l2b, l2o = f5.smooth(bl - bc, w)[t - 1], f5.smooth(ol - oc, w)[t - 1]
    assert f"it. {t}: L2 {l2o:.4g} vs {l2b:.4g} ({l2o - l2b:+.3g})" in text
    assert f"below it from step {split['l2_below_from']} on" in text
    assert "step 1: 12 (overparam.) vs 3 (original), 4.00x" in text
    # every checkpoint failing (more than two): ranges of the differences instead
    flat = f5.loss_split(*_histories(l2_start=1.2, l2_decay=0.0), w, (6, 60, 120))
    many = [{"iteration": t, "speedup": 0.5} for t in (6, 60, 120)]
    text = f5.why_text(flat, many, w)
    d = [flat["at"][i]["l2"][1] - flat["at"][i]["l2"][0] for i in range(3)]
    assert f"L2 {min(d):+.3g}..{max(d):+.3g}" in text and "(at every step)" in text
    with pytest.raises(ValueError, match="checkpoint"):
        f5.why_text(flat, [{"iteration": 7, "speedup": 0.5}], w)


def test_init_l2_note_matches_an_independent_sum_of_squares():
    cfg = _cfg()
    plain, over, _ = f5.build_models(cfg, dtype=torch.float64)

    def l2(ws):  # TF l2_loss = sum(x^2)/2, summed
        return cfg.l2_weight * sum(float((w.detach() ** 2).sum()) / 2 for w in ws)

    biases = [over.fc1.bias, over.fc2.bias]
    w1, w2 = (w.detach() for w in factors(over.fc1))
    v1, v2 = (w.detach() for w in factors(over.fc2))
    prod = l2([w2 @ w1, v2 @ v1, *biases])
    fac = l2([w1, w2, v1, v2, *biases])
    orig = l2([plain.fc1.weight, plain.fc2.weight, plain.fc1.bias, plain.fc2.bias])
    note = f5.init_l2_note(cfg, plain, over)
    assert f"original {orig:.4g}" in note
    assert f"on the product {prod:.4g} ({prod / orig:.2f}x)" in note
    assert f"on the factors {fac:.4g} ({fac / orig:.2f}x)" in note
    assert (
        f"fc1 {float((w2 @ w1).std()):.4g} vs {float(plain.fc1.weight.detach().std()):.4g}" in note
    )
    assert prod > 3 * orig  # two stddev-0.1 factors: a product with larger entries


def _synthetic(over_loss: np.ndarray, steps: int = 2000):
    """The original's loss falls as t^-0.2; the overparameterized net's as given."""
    cfg = f5.Config.full()
    cfg = dataclasses.replace(cfg, variants=())
    t = np.arange(1, steps + 1, dtype=float)
    base = 5.0 / t**0.2

    def h(loss):
        return SimpleNamespace(loss=loss, ce=loss / 2, val_error=[], seconds=1.0)

    hist = {"original": h(base), "overparameterized": h(over_loss)}
    m = f5.Measured(
        False, cfg, steps, hist, (0.01, 0.001), {"original": 0.8, "overparameterized": 0.7},
        {}, "", {}, {}, 1, "cpu", "float32", "",
    )  # fmt: skip
    return m, cfg


def test_judge_on_synthetic_histories():
    t = np.arange(1, 2001, dtype=float)
    m, cfg = _synthetic(5.0 / t**0.5)  # falls faster: reaches every level sooner
    claims = f5.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS", "PASS"]
    assert claims[0].measured.startswith("ahead at all 5 levels; ")
    m, cfg = _synthetic(6.0 / t**0.2)  # always above: never reaches the original's levels
    claims = f5.judge(m, cfg)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL", "PASS"]
    # the first level is the original's at 5% of the 2000 steps; the other gets there later
    hit = re.fullmatch(r"behind at 5 of 5 levels \(\S+: it\. (\d+) vs the original's 100\)",
                       claims[0].measured)  # fmt: skip
    assert hit and int(hit[1]) > 100, claims[0].measured
    # the cross-entropy is half the loss here, so the L2 term (loss - ce) is too: 3 vs 2.5
    assert claims[0].why.startswith("at the 5 levels it misses, its L2 term is larger than")
    assert claims[1].why == "it reaches 5 of the original's 5 levels late or never"


def test_levels_measured_and_l2_cause_against_hand_computed_rows():
    rows = [
        {"level": 3.0, "iteration": 10, "iteration_other": 12, "speedup": 10 / 12},
        {"level": 2.0, "iteration": 50, "iteration_other": 25, "speedup": 2.0},
        {"level": 1.0, "iteration": 100, "iteration_other": 20, "speedup": 5.0},
    ]
    assert f5.levels_measured(rows) == (
        "behind at 1 of 3 levels (3: it. 12 vs the original's 10); 5.00x sooner at the last"
    )
    assert f5.levels_measured(rows[1:]) == "ahead at all 2 levels; 5.00x sooner at the last"
    never = [{**rows[2], "iteration_other": None, "speedup": 0.0}]
    assert f5.levels_measured(never) == "behind at 1 of 1 levels (1: never vs the original's 100)"
    split = {"at": [
        {"iteration": 10, "l2": [1.0, 1.5], "ce": [0.2, 0.1]},
        {"iteration": 100, "l2": [0.5, 0.25], "ce": [0.1, 0.3]},
    ]}  # fmt: skip
    assert f5.l2_cause(split, rows) == (
        "at it. 10, its L2 term is larger than the original's (+0.5), and its cross-entropy "
        "is lower than the original's (-0.1)"
    )
    both = [{**rows[0]}, {**rows[2], "speedup": 0.5}]
    assert f5.l2_cause(split, both) == (
        "at the 2 levels it misses, its L2 term is within -0.25..+0.5 of the original's, and "
        "its cross-entropy is within -0.1..+0.2 of the original's"
    )
    assert f5.l2_cause(split, rows[1:2]) == ""  # nothing missed: no cause to give
    with pytest.raises(ValueError, match="checkpoint"):
        f5.l2_cause(split, [{**rows[1], "speedup": 0.5}])
