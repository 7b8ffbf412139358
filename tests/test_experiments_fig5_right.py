"""Fig. 5 right: the MNIST tutorial net, its overparameterized twin, and the experiment."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from depthaccel.experiments import fig5_right as f5
from depthaccel.experiments import mnist_cnn
from depthaccel.experiments.base import read_curves_csv, run_experiment

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_dir() -> Path | None:
    import os

    env = os.environ.get("DEPTHACCEL_DATA_DIR", "").strip()
    for d in ([Path(env)] if env else []) + [DATA]:
        if (d / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return d
    return None


@pytest.fixture(autouse=True)
def _one_thread():
    # one intra-op thread: small nets, and far faster on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    fs = f5.dense_factors(over.fc1)
    assert [tuple(t.shape) for t in fs] == [(512, 3136), (512, 512)]
    assert f5.dense_factors(plain.fc1) is None


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
    for fct in f5.dense_factors(over.fc1):  # "tutorial" factor init: the same law
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
        w1, w2 = f5.dense_factors(over.fc1)
        assert torch.equal(w1, plain.fc1.weight) and torch.equal(w2, torch.eye(512).double())
    # the factors are really used: perturbing one changes the output
    with torch.no_grad():
        f5.dense_factors(over.fc2)[1].mul_(1.5)
    assert not torch.allclose(over(x), ref, atol=1e-6)


def test_factored_forward_matches_product_forward_and_gradients():
    cfg = _cfg(dropout=0.0)
    _, over, _ = f5.build_models(cfg, dtype=torch.float64)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64) - 0.5
    grads = []
    outs = []
    for factored in (True, False):
        over.zero_grad()
        over.factored_forward = factored
        out = over(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in over.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_l2_penalty_matches_hand_computation():
    plain, over, _ = f5.build_models(_cfg(), dtype=torch.float64)

    def half_sq(t):
        return 0.5 * float((t.detach().double() ** 2).sum())

    want = sum(
        half_sq(getattr(plain, n).weight) + half_sq(getattr(plain, n).bias) for n in ("fc1", "fc2")
    )
    assert f5.l2_penalty(plain, "factors").item() == pytest.approx(want, rel=1e-12)
    assert f5.l2_penalty(plain, "product").item() == pytest.approx(want, rel=1e-12)
    want_f = want_p = 0.0
    for n in ("fc1", "fc2"):
        layer = getattr(over, n)
        w1, w2 = (t.detach().numpy() for t in f5.dense_factors(layer))
        b = half_sq(layer.bias)
        want_f += 0.5 * (w1**2).sum() + 0.5 * (w2**2).sum() + b
        want_p += 0.5 * ((w2 @ w1) ** 2).sum() + b
    assert f5.l2_penalty(over, "factors").item() == pytest.approx(want_f, rel=1e-12)
    assert f5.l2_penalty(over, "product").item() == pytest.approx(want_p, rel=1e-12)
    assert want_f != pytest.approx(want_p, rel=1e-3)
    with pytest.raises(ValueError, match="l2 target"):
        f5.l2_penalty(over, "weights")


def test_staircase_lr_and_batch_order_follow_the_tutorial():
    # tf.train.exponential_decay(0.01, step*64, 55000, 0.95, staircase=True)
    for step in (0, 1, 858, 859, 860, 1718, 1719, 8592):
        want = 0.01 * 0.95 ** (step * 64 // 55000)
        assert mnist_cnn.staircase_lr(step) == pytest.approx(want, rel=1e-15)
    assert mnist_cnn.staircase_lr(859) == 0.01 and mnist_cnn.staircase_lr(860) == 0.01 * 0.95
    assert f5.Config.full().n_steps() == int(10 * 55000) // 64 == 8593
    assert mnist_cnn.batch_offset(0, 64, 55000) == 0
    assert mnist_cnn.batch_offset(859, 64, 55000) == (859 * 64) % (55000 - 64)
    with pytest.raises(ValueError):
        mnist_cnn.staircase_lr(-1)


def test_scale_images_and_smoothing_helpers():
    img = np.array([[[0, 255] + [127] * 26] * 28], dtype=np.uint8)
    out = mnist_cnn.scale_images(img)
    assert out.shape == (1, 1, 28, 28) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx(-0.5) and out[0, 0, 0, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="28, 28"):
        mnist_cnn.scale_images(np.zeros((2, 28, 27), np.uint8))
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
    splits = f5.Splits(x, y, x[:64], y[:64], x[:1], y[:1])
    hist, _, _ = f5.train_pair({"o": over, "v": var}, splits, cfg, l2_on={"v": "product"})
    ce0 = hist["v"].ce[0]
    # residual init: the variant starts as the original function; its L2 is on the product
    plain = f5.build_models(cfg, dtype=torch.float64)[0]
    want = ce0 + 5e-4 * f5.l2_penalty(plain, "factors").item()
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


def test_train_pair_same_batches_and_masks_make_twins_identical():
    """Two copies of the same net, trained side by side, stay bit-identical (same
    minibatches, same dropout masks); a different dropout seed per net would break it."""
    cfg = _cfg(epochs=0.2, train_size=640)
    plain, _, _ = f5.build_models(cfg)
    twin, _, _ = f5.build_models(cfg)
    g = torch.Generator().manual_seed(0)
    splits = f5.Splits(
        train_x=torch.rand(640, 1, 28, 28, generator=g) - 0.5,
        train_y=torch.randint(0, 10, (640,), generator=g),
        val_x=torch.rand(64, 1, 28, 28, generator=g) - 0.5,
        val_y=torch.randint(0, 10, (64,), generator=g),
        test_x=torch.zeros(1, 1, 28, 28),
        test_y=torch.zeros(1, dtype=torch.long),
    )
    hist, lrs, done = f5.train_pair({"a": plain, "b": twin}, splits, cfg)
    assert done == cfg.n_steps() == 2 and lrs == [0.01, 0.01]
    assert hist["a"].loss == hist["b"].loss and len(hist["a"].loss) == 2
    for p, q in zip(plain.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    # the recorded loss is cross-entropy + 5e-4 * l2 at the step's parameters
    assert all(lo > ce for lo, ce in zip(hist["a"].loss, hist["a"].ce, strict=True))


def test_one_sgd_step_matches_a_hand_written_momentum_update():
    """train_pair's step = TF MomentumOptimizer on CE + 5e-4 * l2 (float64, no dropout)."""
    cfg = _cfg(epochs=0.1, train_size=640, dropout=0.0)
    _, over, _ = f5.build_models(cfg, dtype=torch.float64)
    ref = {k: v.clone() for k, v in over.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(640, 1, 28, 28, generator=g) - 0.5).double()
    y = torch.randint(0, 10, (640,), generator=g)
    splits = f5.Splits(x, y, x[:64], y[:64], x[:1], y[:1])
    f5.train_pair({"o": over}, splits, cfg)  # one step, lr 0.01, fresh momentum = grad
    _, clone, _ = f5.build_models(cfg, dtype=torch.float64)
    clone.load_state_dict(ref)
    params = dict(clone.named_parameters())
    loss = F.cross_entropy(clone(x[:64]), y[:64])
    reg = 0.0
    for n in ("fc1", "fc2"):
        pre = f"{n}.parametrizations.weight."
        reg = reg + 0.5 * sum((params[pre + f"original{i}"] ** 2).sum() for i in range(2))
        reg = reg + 0.5 * (params[f"{n}.bias"] ** 2).sum()
    (loss + 5e-4 * reg).backward()
    got = dict(over.named_parameters())
    for name, p in params.items():
        torch.testing.assert_close(got[name], p.detach() - 0.01 * p.grad, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------- experiment


@pytest.mark.skipif(_data_dir() is None, reason="MNIST files not found (DEPTHACCEL_DATA_DIR)")
def test_quick_mode_runs_and_writes_outputs(tmp_path):
    cfg = dataclasses.replace(f5.Config.quick(), threads=1)
    res = run_experiment("fig5-right", tmp_path, config=cfg, quick=True, data_dir=_data_dir())
    out = tmp_path / "fig5-right"
    assert res.status == "ok" and res.mode == "quick"
    assert (out / "fig5_right.png").stat().st_size > 10_000
    assert (out / "result.json").is_file() and (tmp_path / "REPORT.md").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["steps_done"] == cfg.n_steps() == 30
    assert settings["params"] == {"original": 1_663_370, "overparameterized": 1_925_614}
    curves = {(c.panel, c.label): c for c in read_curves_csv(out / "curves.csv")}
    loss = curves[("batch_loss", "original")]
    assert list(loss.iters) == list(range(1, 31)) and np.all(np.isfinite(loss.values))
    assert (
        "batch_loss",
        "overparameterized (depth-2 dense; init tutorial, L2 on factors)",
    ) in curves
    # SGD on the tutorial net does learn in 30 steps (cross-entropy starts near ln 10)
    ce = curves[("batch_cross_entropy", "original")].values
    assert ce[-5:].mean() < ce[:5].mean()
    assert len(res.claims) == 2 and all(c.note for c in res.claims)
    assert any("test error" in n for n in res.notes)
