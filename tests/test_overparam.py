"""Tests for depthaccel.overparam (float64, against independent references)."""

from __future__ import annotations

import contextlib
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from depthaccel import collapse, overparameterize
from depthaccel.optim import EndToEndSGD
from depthaccel.overparam import ProductWeight
from depthaccel.preconditioner import end_to_end_direction

DT = torch.float64


def small_model(seed: int = 0) -> nn.Sequential:
    """Conv (stride, padding) -> conv (rectangular kernel, dilation) -> two Linear layers."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, stride=2, padding=1),  # 9x9 -> 5x5
        nn.Tanh(),
        nn.Conv2d(5, 4, (3, 2), stride=1, padding=(1, 0), dilation=(1, 2)),  # 5x5 -> 5x3
        nn.Flatten(),
        nn.Linear(4 * 5 * 3, 7),
        nn.Tanh(),
        nn.Linear(7, 3),
    ).to(DT)


def inputs(seed: int = 1, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 9, 9, generator=g, dtype=DT)


def factors(layer: nn.Module) -> list[torch.Tensor]:
    pl = layer.parametrizations.weight
    return [getattr(pl, f"original{i}") for i in range(pl.ntensors)]


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def chain(mats: list[torch.Tensor], size: int) -> torch.Tensor:
    """W_b ... W_a as a plain loop (identity of `size` when empty)."""
    out = torch.eye(size, dtype=DT)
    for m in mats:
        out = m @ out
    return out


def product(layer: nn.Module) -> torch.Tensor:
    """Reference product W_N ... W_1 by a plain loop, reshaped to the weight shape."""
    fs = factors(layer)
    w = flat(fs[0])
    for f in fs[1:]:
        w = f @ w
    return w.reshape(fs[-1].shape[0], *fs[0].shape[1:])


def overparam_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if parametrize.is_parametrized(m, "weight")]


# ---------------------------------------------------------------- preserve


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("hidden", ["out", "min", 9])
def test_preserve_keeps_outputs_and_weights(depth, hidden):
    model = small_model()
    x = inputs()
    ref = copy.deepcopy(model)
    y0 = ref(x)
    model, summary = overparameterize(
        model, depth=depth, hidden=hidden, include=("Linear", "Conv2d")
    )
    assert len(summary.layers) == 4
    assert (model(x) - y0).abs().max() <= 1e-10
    for (name, layer), (_, orig) in zip(
        overparam_layers(model),
        [(n, m) for n, m in ref.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)],
        strict=True,
    ):
        assert len(factors(layer)) == depth
        scale = orig.weight.abs().max()
        assert (layer.weight - orig.weight).abs().max() <= 1e-12 * scale, name
        assert (product(layer) - orig.weight).abs().max() <= 1e-12 * scale, name
        # the stride / padding / dilation of the layer are untouched
        if isinstance(orig, nn.Conv2d):
            assert (layer.stride, layer.padding, layer.dilation) == (
                orig.stride,
                orig.padding,
                orig.dilation,
            )


@pytest.mark.parametrize("depth", [2, 3])
def test_conv_is_kernel_then_1x1_convolutions(depth):
    """The overparameterized conv equals the k x k conv with h_1 channels followed by
    N-1 1x1 convolutions (bias added at the end), computed with F.conv2d directly."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=1).to(DT)
    overparameterize(conv, depth=depth, hidden=6, init="random", include="Conv2d")
    x = torch.randn(2, 3, 11, 10, dtype=DT)
    fs = factors(conv)
    assert [tuple(f.shape) for f in fs] == [(6, 3, 3, 3)] + [(6, 6)] * (depth - 2) + [(4, 6)]
    y = F.conv2d(x, fs[0], None, stride=2, padding=2)
    for f in fs[1:]:
        y = F.conv2d(y, f[:, :, None, None])
    y = y + conv.bias[None, :, None, None]
    assert (conv(x) - y).abs().max() <= 1e-12


def test_preserve_conv1d():
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv1d(2, 3, 5, padding=2), nn.ReLU(), nn.Conv1d(3, 2, 3)).to(DT)
    x = torch.randn(4, 2, 12, dtype=DT)
    y0 = m(x)
    _, s = overparameterize(m, depth=3, include="Conv1d")
    assert [c.name for c in s.layers] == ["0", "2"]
    assert (m(x) - y0).abs().max() <= 1e-10


def eq7_gap(fs: list[torch.Tensor]) -> float:
    """max_j ||W_{j+1}^T W_{j+1} - W_j W_j^T|| relative to ||W_j||^2 (Eq. 7)."""
    mats = [flat(f.detach()) for f in fs]
    gaps = [
        (b.T @ b - a @ a.T).abs().max() / max(a.abs().max() ** 2, 1e-300)
        for a, b in zip(mats, mats[1:], strict=False)
    ]
    return float(max(gaps)) if gaps else 0.0


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("hidden", ["out", "min", 9])
def test_preserve_factors_are_balanced(depth, hidden):
    model = small_model()
    overparameterize(model, depth=depth, hidden=hidden, include=("Linear", "Conv2d"))
    for name, layer in overparam_layers(model):
        assert eq7_gap(factors(layer)) <= 1e-12, name


@pytest.mark.parametrize("depth", [2, 3])
def test_preserve_rank_deficient_weight(depth):
    """A rank-2 weight factors exactly and balanced even with hidden = 2 < min(out, in)."""
    torch.manual_seed(5)
    lin = nn.Linear(8, 6).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(6, 2, dtype=DT) @ torch.randn(2, 8, dtype=DT))
    w0 = lin.weight.detach().clone()
    for hidden in [2, "min", "out", 11]:
        layer = copy.deepcopy(lin)
        overparameterize(layer, depth=depth, hidden=hidden)
        assert (layer.weight - w0).abs().max() <= 1e-12 * w0.abs().max()
        assert eq7_gap(factors(layer)) <= 1e-12
    with pytest.raises(ValueError, match=r"rank"):
        overparameterize(copy.deepcopy(lin), depth=depth, hidden=1)


def test_assigning_weight_refactors_it():
    torch.manual_seed(6)
    lin = nn.Linear(5, 4).to(DT)
    overparameterize(lin, depth=3, init="random")
    target = torch.randn(4, 5, dtype=DT)
    lin.weight = target
    assert (lin.weight - target).abs().max() <= 1e-12
    assert eq7_gap(factors(lin)) <= 1e-12


def test_float32_model_keeps_dtype():
    torch.manual_seed(7)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 6)
    y0 = lin(x)
    overparameterize(lin, depth=2)
    assert all(f.dtype == torch.float32 for f in factors(lin))
    assert (lin(x) - y0).abs().max() <= 1e-5


# ---------------------------------------------------------------- random / identity


def test_random_init_distribution_and_generator():
    lin = nn.Linear(400, 300).to(DT)
    overparameterize(
        lin, depth=3, hidden=200, init="random", generator=torch.Generator().manual_seed(0)
    )
    fs = factors(lin)
    assert [tuple(f.shape) for f in fs] == [(200, 400), (200, 200), (300, 200)]
    for f in fs:
        bound = 1 / math.sqrt(f.shape[1])  # PyTorch's nn.Linear default: U(-b, b)
        assert f.abs().max() <= bound
        assert abs(f.std().item() / (bound / math.sqrt(3)) - 1) < 0.02
    again = nn.Linear(400, 300).to(DT)
    overparameterize(
        again, depth=3, hidden=200, init="random", generator=torch.Generator().manual_seed(0)
    )
    assert all(torch.equal(a, b) for a, b in zip(fs, factors(again), strict=True))
    small = nn.Linear(400, 300).to(DT)
    overparameterize(
        small, depth=2, init="random", scale=1e-3, generator=torch.Generator().manual_seed(1)
    )
    for f in factors(small):
        assert abs(f.std().item() / 1e-3 - 1) < 0.02
        assert abs(f.mean().item()) < 1e-4


def test_identity_init():
    lin = nn.Linear(5, 3).to(DT)
    overparameterize(lin, depth=3, hidden=4, init="identity")
    fs = factors(lin)
    assert torch.equal(fs[0], torch.eye(4, 5, dtype=DT))
    assert torch.equal(fs[1], torch.eye(4, dtype=DT))
    assert torch.equal(fs[2], torch.eye(3, 4, dtype=DT))
    assert torch.equal(lin.weight, torch.eye(3, 5, dtype=DT))
    # conv: Dirac first factor -> the layer copies its input channels (bias set to 0)
    conv = nn.Conv2d(3, 3, 3, padding=1).to(DT)
    nn.init.zeros_(conv.bias)
    overparameterize(conv, depth=2, init="identity", include="Conv2d")
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    assert (conv(x) - x).abs().max() <= 1e-15
    noisy = nn.Linear(50, 40).to(DT)
    overparameterize(
        noisy, depth=2, init="identity", scale=0.01, generator=torch.Generator().manual_seed(2)
    )
    dev = factors(noisy)[1] - torch.eye(40, dtype=DT)
    assert abs(dev.std().item() / 0.01 - 1) < 0.05


# ---------------------------------------------------------------- collapse


def test_collapse_restores_class_and_outputs():
    model = small_model()
    plain_types = [type(m) for m in model.modules()]
    x = inputs()
    overparameterize(model, depth=3, init="random", include=("Linear", "Conv2d"))
    assert type(model[4]) is not nn.Linear and isinstance(model[4], nn.Linear)
    y = model(x).detach()
    products = {n: m.weight.detach().clone() for n, m in overparam_layers(model)}
    assert collapse(model) is model
    assert [type(m) for m in model.modules()] == plain_types
    assert type(model[4]) is nn.Linear and type(model[0]) is nn.Conv2d
    for n, m in model.named_modules():
        assert not parametrize.is_parametrized(m)
        if n in products:
            assert isinstance(m.weight, nn.Parameter)
            assert torch.equal(m.weight, products[n])
    assert torch.equal(model(x), y)
    assert all("parametrizations" not in k for k in model.state_dict())
    collapse(model)  # idempotent
    assert torch.equal(model(x), y)
    plain = small_model()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    collapse(plain)  # nothing to do
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_collapse_of_a_deepcopy_leaves_the_original_intact():
    """deepcopy shares the injected Parametrized* class; collapsing the copy must not
    delete the original's weight property."""
    model = small_model()
    overparameterize(model, depth=2, init="random", include=("Linear", "Conv2d"))
    x = inputs()
    y = model(x).detach()
    deployed = collapse(copy.deepcopy(model))
    assert type(deployed[0]) is nn.Conv2d and type(model[0]) is not nn.Conv2d
    assert torch.equal(model(x), y)
    assert (deployed(x) - y).abs().max() <= 1e-13
    collapse(model)
    assert torch.equal(model(x), deployed(x))


def test_collapse_leaves_other_parametrizations_alone():
    class Sym(nn.Module):
        def forward(self, x):
            return (x + x.T) / 2

    a, b = nn.Linear(4, 4).to(DT), nn.Linear(4, 4).to(DT)
    model = nn.Sequential(a, b)
    parametrize.register_parametrization(a, "weight", Sym())
    overparameterize(model, include="1")
    collapse(model)
    assert parametrize.is_parametrized(a, "weight") and type(b) is nn.Linear
    # a layer with a parametrized bias keeps it through overparameterize + collapse
    c = nn.Linear(4, 3).to(DT)
    parametrize.register_parametrization(c, "bias", nn.Identity())
    twin = copy.deepcopy(c)
    x = torch.randn(2, 4, dtype=DT)
    y = c(x).detach()
    overparameterize(c, depth=2)
    assert (c(x) - y).abs().max() <= 1e-12 and torch.equal(twin(x), y)
    collapse(c)
    assert parametrize.is_parametrized(c, "bias") and not parametrize.is_parametrized(c, "weight")
    assert (c(x) - y).abs().max() <= 1e-12 and torch.equal(twin(x), y)


# ---------------------------------------------------------------- training


def mse_loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


def manual_factor_grads(layer, G):
    """dL/dW_j = (W_N ... W_{j+1})^T G (W_{j-1} ... W_1)^T (chain rule, plain loops)."""
    mats = [flat(f.detach()) for f in factors(layer)]
    G = flat(G)
    grads = []
    for j in range(len(mats)):
        left = chain(mats[j + 1 :], mats[j].shape[0])
        right = chain(mats[:j], mats[0].shape[1])
        grads.append((left.T @ G @ right.T).reshape(factors(layer)[j].shape))
    return grads


def plain_weight_grads(model, x, y):
    """G = dL/dW of each overparameterized layer, by autograd on a plain copy of the model
    whose weights are the current products (independent of parametrize)."""
    plain = copy.deepcopy(model)
    collapse(plain)
    loss = mse_loss(plain, x, y)
    loss.backward()
    mods = dict(plain.named_modules())
    return {n: mods[n].weight.grad for n, _ in overparam_layers(model)}, loss


@pytest.mark.parametrize("depth", [2, 3])
def test_sgd_step_matches_manual_factor_gradients(depth):
    model = small_model()
    overparameterize(
        model,
        depth=depth,
        hidden=6,
        init="random",
        include=("Linear", "Conv2d"),
        generator=torch.Generator().manual_seed(0),
    )
    x, y = inputs(), torch.randn(6, 3, dtype=DT)
    G, _ = plain_weight_grads(model, x, y)
    lr, wd = 0.1, 0.01
    before = {n: [f.detach().clone() for f in factors(m)] for n, m in overparam_layers(model)}
    expected = {
        n: [
            f.detach() - lr * (g + wd * f.detach())
            for f, g in zip(factors(m), manual_factor_grads(m, G[n]), strict=True)
        ]
        for n, m in overparam_layers(model)
    }
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    opt.zero_grad()
    mse_loss(model, x, y).backward()
    opt.step()
    for n, m in overparam_layers(model):
        for f, e in zip(factors(m), expected[n], strict=True):
            assert (f - e).abs().max() <= 1e-12, n
            assert not torch.equal(f, before[n].pop(0))  # the factor moved


@pytest.mark.parametrize("depth", [2, 3])
def test_end_to_end_sgd_step_on_factors(depth):
    """EndToEndSGD(depth=M) sees the factors as ordinary matrices: each moves by
    -lr * P_{W_j}^{(M)}(dL/dW_j), with the manual chain-rule gradient."""
    model = small_model()
    overparameterize(
        model,
        depth=depth,
        hidden=6,
        init="random",
        include=("Linear", "Conv2d"),
        generator=torch.Generator().manual_seed(1),
    )
    x, y = inputs(), torch.randn(6, 3, dtype=DT)
    G, _ = plain_weight_grads(model, x, y)
    lr, m_depth = 0.05, 2.5
    expected, before = {}, {}
    for n, m in overparam_layers(model):
        before[n] = [f.detach().clone() for f in factors(m)]
        expected[n] = [
            f.detach()
            - lr * end_to_end_direction(flat(f.detach()), flat(g), m_depth).reshape(f.shape)
            for f, g in zip(factors(m), manual_factor_grads(m, G[n]), strict=True)
        ]
    opt = EndToEndSGD(model.parameters(), lr=lr, depth=m_depth)
    opt.zero_grad()
    mse_loss(model, x, y).backward()
    opt.step()
    for n, m in overparam_layers(model):
        for f, b, e in zip(factors(m), before[n], expected[n], strict=True):
            assert (f - b).abs().max() > 1e-6  # the factor moved
            assert (f - e).abs().max() <= 1e-12, n


def test_balanced_sgd_follows_end_to_end_rule():
    """Theorem 1: SGD on the balanced (preserve) depth-N factors moves each product by
    -lr * P^{(N)}(G) + O(lr^2) -- what EndToEndSGD(depth=N) does to the plain model."""
    depth = 3
    plain = small_model()
    deep = overparameterize(copy.deepcopy(plain), depth=depth, include=("Linear", "Conv2d"))[0]
    x, y = inputs(), torch.randn(6, 3, dtype=DT)
    gaps = []
    for lr in (1e-4, 5e-5):
        a, b = copy.deepcopy(plain), copy.deepcopy(deep)
        w0 = {n: m.weight.detach().clone() for n, m in overparam_layers(b)}
        for model, opt in (
            (a, EndToEndSGD(a.parameters(), lr=lr, depth=depth)),
            (b, torch.optim.SGD(b.parameters(), lr=lr)),
        ):
            opt.zero_grad()
            mse_loss(model, x, y).backward()
            opt.step()
        mods = dict(a.named_modules())
        rel = []
        for n, m in overparam_layers(b):
            step_plain = mods[n].weight.detach() - w0[n]
            step_deep = m.weight.detach() - w0[n]
            rel.append(((step_deep - step_plain).norm() / step_plain.norm()).item())
        gaps.append(max(rel))
    assert gaps[0] < 1e-3, gaps
    assert 1.6 < gaps[0] / gaps[1] < 2.4  # the gap is first order in lr


# ---------------------------------------------------------------- state_dict


def test_state_dict_round_trip():
    src = small_model(seed=0)
    overparameterize(
        src,
        depth=3,
        hidden="min",
        init="random",
        include=("Linear", "Conv2d"),
        generator=torch.Generator().manual_seed(0),
    )
    x, y = inputs(), torch.randn(6, 3, dtype=DT)
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    mse_loss(src, x, y).backward()
    opt.step()
    keys = src.state_dict().keys()
    assert "4.parametrizations.weight.original2" in keys and "4.weight" not in keys
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    dst = small_model(seed=9)
    overparameterize(
        dst,
        depth=3,
        hidden="min",
        init="random",
        include=("Linear", "Conv2d"),
        generator=torch.Generator().manual_seed(5),
    )
    assert not torch.equal(dst(x), src(x))
    buf.seek(0)
    dst.load_state_dict(torch.load(buf))
    assert torch.equal(dst(x), src(x))


# ---------------------------------------------------------------- selection


def named_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Module()
    m.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    m.encoder = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 5))
    m.head = nn.Linear(5, 2)
    m.depthwise = nn.Conv2d(4, 4, 3, groups=4)
    return m.to(DT)


def selected(**kw) -> list[str]:
    _, s = overparameterize(named_model(), **kw)
    return [c.name for c in s.layers]


def test_include_exclude_select_the_right_layers():
    assert selected() == ["encoder.0", "encoder.1", "head"]
    assert selected(include=nn.Linear) == ["encoder.0", "encoder.1", "head"]
    assert selected(include="Conv2d", exclude="depthwise") == ["features.0", "features.2"]
    assert selected(include=("Linear", "features.0")) == [
        "features.0",
        "encoder.0",
        "encoder.1",
        "head",
    ]
    assert selected(include="encoder") == ["encoder.0", "encoder.1"]
    assert selected(include="encoder.*", exclude="*.1") == ["encoder.0"]
    assert selected(include=("Linear", "Conv2d"), exclude=("head", "depthwise", "features.2")) == [
        "features.0",
        "encoder.0",
        "encoder.1",
    ]
    assert selected(include=("features", "encoder"), exclude="Linear") == [
        "features.0",
        "features.2",
    ]
    assert selected(include="Linear", exclude="Linear") == []


# ---------------------------------------------------------------- errors


def test_bad_arguments_give_clear_errors():
    m = named_model()
    with pytest.raises(ValueError, match="depth"):
        overparameterize(m, depth=0)
    with pytest.raises(ValueError, match="depth"):
        overparameterize(m, depth=2.5)
    with pytest.raises(ValueError, match="depth"):
        overparameterize(m, depth=True)
    with pytest.raises(ValueError, match=r"'Conv2D'.*Linear, Conv1d, Conv2d, Conv3d"):
        overparameterize(m, include=("Conv2D",))
    with pytest.raises(ValueError, match="exclude.*'heads'"):
        overparameterize(m, exclude="heads")
    with pytest.raises(ValueError, match="unsupported layer class ReLU"):
        overparameterize(m, include=nn.ReLU)
    with pytest.raises(ValueError, match="hidden"):
        overparameterize(m, hidden="max")
    with pytest.raises(ValueError, match="hidden"):
        overparameterize(m, hidden=0)
    with pytest.raises(ValueError, match="init"):
        overparameterize(m, init="zeros")
    with pytest.raises(ValueError, match="scale"):
        overparameterize(m, init="random", scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        overparameterize(m, init="preserve", scale=0.1)
    with pytest.raises(ValueError, match=r"'depthwise'.*groups=4"):
        overparameterize(m, include="Conv2d")
    with pytest.raises(ValueError, match=r"'encoder.0'.*rank-4.*hidden width >= 4"):
        overparameterize(m, hidden=2, include="encoder")
    # nothing was changed by the failed calls
    assert not any(parametrize.is_parametrized(x) for x in m.modules())
    overparameterize(m)
    with pytest.raises(ValueError, match="already overparameterized"):
        overparameterize(m)
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match="shares its weight"):
        overparameterize(tied)
    with pytest.raises(ValueError, match="lazy"):
        overparameterize(nn.Sequential(nn.LazyLinear(3)))


# ---------------------------------------------------------------- summary


def test_summary_parameter_counts():
    m = nn.Sequential(nn.Conv2d(3, 8, 5), nn.Flatten(), nn.Linear(8 * 4 * 4, 10), nn.Linear(10, 4))
    _, s = overparameterize(
        m.to(DT), depth=3, hidden="out", init="random", include=("Linear", "Conv2d")
    )
    # weights: conv 8x3x5x5 (+8 bias), dense 10x128 (+10), dense 4x10 (+4)
    before = 8 * 75 + 8 + 10 * 128 + 10 + 4 * 10 + 4
    after = (8 * 75 + 8 * 8 * 2 + 8) + (10 * 128 + 10 * 10 * 2 + 10) + (4 * 10 + 4 * 4 * 2 + 4)
    assert (s.params_before, s.params_after) == (before, after)
    assert s.params_after == sum(p.numel() for p in m.parameters())
    assert [c.name for c in s.layers] == ["0", "2", "3"]
    assert [c.layer_type for c in s.layers] == ["Conv2d", "Linear", "Linear"]
    assert s.layers[0].weight_shape == (8, 3, 5, 5)
    assert s.layers[0].factor_shapes == ((8, 3, 5, 5), (8, 8), (8, 8))
    assert s.layers[1].factor_shapes == ((10, 128), (10, 10), (10, 10))
    assert (s.layers[1].params_before, s.layers[1].params_after) == (1280, 1480)
    text = str(s)
    assert "depth=3" in text and "Conv2d" in text and f"{before:,} -> {after:,}" in text
    _, s2 = overparameterize(nn.Linear(4, 3), depth=2, hidden="min")
    assert s2.layers[0].factor_shapes == ((3, 4), (3, 3))


def test_product_weight_module_shapes():
    pw = ProductWeight(4, (3, 2, 2), depth=3, hidden=5)
    assert pw.factor_shapes() == [(5, 3, 2, 2), (5, 5), (4, 5)]
    assert ProductWeight(4, (3,), depth=1, hidden=9).factor_shapes() == [(4, 3)]


# ---------------------------------------------------------------- refusals leave the model intact


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sd, [type(m).__name__ for m in model.modules()]


def assert_unchanged(model: nn.Module, snap) -> None:
    sd, classes = snap
    now = model.state_dict()
    assert list(now) == list(sd)
    assert all(torch.equal(now[k], sd[k]) for k in sd)
    assert [type(m).__name__ for m in model.modules()] == classes
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # weight tying (language models)


def test_weight_tied_to_an_embedding_is_refused_and_model_unchanged():
    m = TiedLM().to(DT)
    snap = snapshot(m)
    with pytest.raises(ValueError, match=r"'head' shares its weight with emb.weight.*tied"):
        overparameterize(m, depth=2)
    assert_unchanged(m, snap)
    assert m.head.weight is m.emb.weight
    # excluding the tied layer works, and the tie survives
    _, s = overparameterize(m, depth=2, exclude="head")
    assert [c.name for c in s.layers] == ["body"] and m.head.weight is m.emb.weight


def unsupported_model() -> nn.Module:
    m = nn.Module()
    m.fc = nn.Linear(3, 3)
    m.deconv = nn.ConvTranspose2d(2, 3, 3)
    m.bil = nn.Bilinear(2, 3, 4)
    m.rnn = nn.LSTM(2, 3)
    m.block = nn.Sequential(nn.LayerNorm(3), nn.ReLU())
    return m.to(DT)


@pytest.mark.parametrize(
    "include, match",
    [
        ("deconv", r"'deconv' \(ConvTranspose2d\).*does not support"),
        ("bil", r"'bil' \(Bilinear\).*does not support"),
        ("rnn", r"'rnn' \(LSTM\).*does not support"),
        (("fc", "rnn"), r"'rnn' \(LSTM\)"),
        ("block", r"'block' matches no supported layer.*LayerNorm"),
        ("ConvTranspose2d", r"unsupported layer type 'ConvTranspose2d'"),
        ("LSTM", r"unsupported layer type 'LSTM'"),
        (nn.ConvTranspose2d, "unsupported layer class ConvTranspose2d"),
        (nn.Bilinear, "unsupported layer class Bilinear"),
        (nn.LSTM, "unsupported layer class LSTM"),
    ],
)
def test_unsupported_layers_selected_explicitly_are_refused(include, match):
    m = unsupported_model()
    snap = snapshot(m)
    with pytest.raises(ValueError, match=match):
        overparameterize(m, depth=2, include=include)
    assert_unchanged(m, snap)


def test_a_pattern_over_a_container_skips_its_unsupported_children():
    m = nn.Module()
    m.encoder = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 3))
    _, s = overparameterize(m.to(DT), depth=2, include="encoder")
    assert [c.name for c in s.layers] == ["encoder.0", "encoder.2"]


@pytest.mark.parametrize("hook", ["weight_norm", "spectral_norm"])
def test_old_api_weight_hooks_are_refused_before_any_change(hook):
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    with pytest.warns(FutureWarning) if hook == "weight_norm" else contextlib.nullcontext():
        getattr(nn.utils, hook)(m[2])
    snap = snapshot(m)
    with pytest.raises(ValueError, match=rf"layer '2'.*old-API torch.nn.utils.{hook}"):
        overparameterize(m, depth=2)
    assert_unchanged(m, snap)  # layer 0 was NOT factored first


def test_failure_during_registration_restores_the_changed_layers(monkeypatch):
    m = small_model()
    x = inputs()
    before = m(x)
    params = {n: p for n, p in m.named_parameters()}
    snap = snapshot(m)
    real = parametrize.register_parametrization
    calls = []

    def flaky(module, name, p, **kw):
        calls.append(module)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return real(module, name, p, **kw)

    monkeypatch.setattr(parametrize, "register_parametrization", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        overparameterize(m, depth=3, include=("Linear", "Conv2d"))
    assert_unchanged(m, snap)
    # the very same Parameter objects are back (an optimizer built before still works)
    assert all(p is params[n] for n, p in m.named_parameters())
    assert torch.equal(m(x), before)


def test_torch_save_of_the_model_fails_but_state_dict_round_trips():
    """README: save state_dict, not the model (PyTorch refuses to pickle parametrized
    modules)."""
    m = small_model()
    overparameterize(m, depth=2, include=("Linear", "Conv2d"))
    with pytest.raises(RuntimeError, match="only supported through state_dict"):
        torch.save(m, io.BytesIO())
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = small_model(seed=3)
    overparameterize(fresh, depth=2, include=("Linear", "Conv2d"))
    fresh.load_state_dict(torch.load(buf))
    x = inputs()
    assert torch.equal(fresh(x), m(x))


def test_factors_accessor_returns_the_layer_parameters_in_order():
    from depthaccel.overparam import factors as public_factors

    model, _ = overparameterize(small_model(), depth=3, hidden=4, init="random")
    for layer in (model[4], model[6]):
        got = public_factors(layer)
        want = factors(layer)  # the parametrization's storage, read directly
        assert len(got) == 3 and all(a is b for a, b in zip(got, want, strict=True))
        prod = flat(got[0])
        for f in got[1:]:
            prod = f @ prod
        torch.testing.assert_close(prod, flat(layer.weight), rtol=1e-12, atol=1e-12)
        assert all(isinstance(f, nn.Parameter) for f in got)
    assert public_factors(nn.Linear(3, 2)) is None
    assert public_factors(collapse(model)[4]) is None


@pytest.mark.parametrize("how", ["script", "trace", "scripted_submodule"])
def test_torchscript_model_is_refused(how):
    """A scripted or traced model used to come back unchanged ("0 layers changed")."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    if how == "script":
        model = torch.jit.script(model)
    elif how == "trace":
        model = torch.jit.trace(model, torch.randn(1, 3))
    else:
        model[2] = torch.jit.script(model[2])
    with pytest.raises(ValueError, match="TorchScript"):
        overparameterize(model, depth=2)


def test_scripted_helper_without_layers_is_not_refused():
    model = nn.Sequential(nn.Linear(3, 4), torch.jit.script(nn.Tanh()), nn.Linear(4, 2))
    _, summary = overparameterize(model, depth=2)
    assert len(summary.layers) == 2
