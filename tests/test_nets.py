"""DeepLinear, balanced_factors and balancedness against float64 references."""

import pytest
import torch

from depthaccel.nets import DeepLinear, balanced_factors, balancedness, layer_widths

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)


def product(factors):
    """W_N ... W_1 by an explicit loop over the list (independent of DeepLinear)."""
    W = torch.eye(factors[0].shape[1])
    for f in factors:
        W = f @ W
    return W


def eq7_deviation(factors):
    """max_j ||W_{j+1}^T W_{j+1} - W_j W_j^T||_F, written out."""
    out = 0.0
    for j in range(len(factors) - 1):
        a, b = factors[j], factors[j + 1]
        out = max(out, float(((b.T @ b - a @ a.T) ** 2).sum().sqrt()))
    return out


def low_rank(k, d, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, r, generator=g) @ torch.randn(r, d, generator=g)


def test_forward_equals_end_to_end_and_loop():
    net = DeepLinear(6, 3, depth=4, hidden=[5, 2, 7], init="near_zero", scale=0.5, seed=0)
    x = torch.randn(11, 6, generator=torch.Generator().manual_seed(1))
    W_e = product([p.detach() for p in net.factors])
    torch.testing.assert_close(net.end_to_end().detach(), W_e, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(net(x).detach(), x @ W_e.T, rtol=1e-13, atol=1e-14)
    assert [tuple(p.shape) for p in net.factors] == [(5, 6), (2, 5), (7, 2), (3, 7)]
    assert net.widths == [6, 5, 2, 7, 3]


def test_forward_with_bias_and_batch_dims():
    net = DeepLinear(4, 2, depth=2, hidden=3, bias=True, scale=0.3, seed=2)
    with torch.no_grad():
        net.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    ref = x @ product(list(net.factors)).detach().T + torch.tensor([0.5, -1.0])
    torch.testing.assert_close(net(x).detach(), ref, rtol=1e-13, atol=1e-14)
    assert {n for n, _ in net.named_parameters()} == {"factors.0", "factors.1", "bias"}


def test_near_zero_init_statistics_and_seed():
    net = DeepLinear(200, 100, depth=2, hidden=150, init="near_zero", scale=0.01, seed=0)
    w = torch.cat([p.detach().reshape(-1) for p in net.factors])
    assert abs(w.std().item() - 0.01) < 2e-4 and abs(w.mean().item()) < 2e-4
    again = DeepLinear(200, 100, depth=2, hidden=150, init="near_zero", scale=0.01, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.factors, again.factors, strict=True))


@pytest.mark.parametrize(
    "k,d,hidden,depth",
    [(2, 5, 4, 3), (5, 2, [3, 7], 3), (4, 4, 4, 2), (1, 6, 1, 5), (3, 6, [3, 8, 5, 3], 5)],
)
def test_balanced_init_random_target(k, d, hidden, depth):
    net = DeepLinear(d, k, depth=depth, hidden=hidden, init="balanced", scale=0.7, seed=4)
    factors = [p.detach() for p in net.factors]
    assert eq7_deviation(factors) < 1e-12
    assert balancedness(net) == pytest.approx(eq7_deviation(factors), abs=1e-15)
    # rank fits the narrowest layer
    r = min(k, d, *net.widths[1:-1])
    assert torch.linalg.matrix_rank(product(factors)).item() == r


@pytest.mark.parametrize("generator", [None, 5])
@pytest.mark.parametrize(
    "target,depth,hidden",
    [
        (low_rank(3, 5, 3), 3, 4),
        (low_rank(5, 3, 2, seed=1), 4, [2, 6, 3]),
        (low_rank(4, 6, 1, seed=2), 2, 1),
        (torch.zeros(3, 4), 3, 2),
        (low_rank(6, 6, 6, seed=3), 2, 6),
    ],
)
def test_balanced_factors_reproduce_target(target, depth, hidden, generator):
    gen = None if generator is None else torch.Generator().manual_seed(generator)
    factors = balanced_factors(target, depth, hidden, generator=gen)
    widths = layer_widths(target.shape[1], target.shape[0], depth, hidden)
    assert [tuple(f.shape) for f in factors] == [(widths[j + 1], widths[j]) for j in range(depth)]
    assert all(f.dtype == torch.float64 for f in factors)
    scale = max(1.0, target.abs().max().item())
    torch.testing.assert_close(product(factors), target, rtol=0, atol=1e-13 * scale)
    assert eq7_deviation(factors) < 1e-12 * scale
    # each factor has the N-th roots of W_e's singular values
    s = torch.linalg.svdvals(target)
    s = s[s > 1e-12 * scale]
    for f in factors:
        sf = torch.linalg.svdvals(f)[: s.numel()]
        torch.testing.assert_close(sf, s.pow(1 / depth), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "k,d,hidden,depth", [(4, 5, [2, 3], 3), (3, 3, 1, 4), (5, 4, [4, 2, 6], 4), (2, 6, 1, 2)]
)
def test_balanced_init_with_hidden_narrower_than_min_k_d(k, d, hidden, depth):
    """A hidden layer narrower than min(k, d) caps the rank: the net starts from the best
    rank-r approximation (r = the narrowest width) of the Gaussian draw, balanced."""
    scale, seed = 0.7, 6
    net = DeepLinear(d, k, depth=depth, hidden=hidden, init="balanced", scale=scale, seed=seed)
    factors = [p.detach() for p in net.factors]
    r = min(net.widths)
    assert r < min(k, d)
    # reference: the same draw (first use of the seeded generator), truncated by eigh of Z^T Z
    Z = scale * torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    lam, V = torch.linalg.eigh(Z.T @ Z)  # ascending
    top = V[:, -r:]
    target = Z @ top @ top.T  # Eckart-Young: Z projected on its top r right singular vectors
    torch.testing.assert_close(product(factors), target, rtol=0, atol=1e-12)
    assert torch.linalg.matrix_rank(product(factors)).item() == r
    assert eq7_deviation(factors) < 1e-12
    # and balanced_factors itself with such a width, on a rank-r target, random R_j
    gen = torch.Generator().manual_seed(1)
    again = balanced_factors(target, depth, hidden, generator=gen)
    torch.testing.assert_close(product(again), target, rtol=0, atol=1e-12)
    assert eq7_deviation(again) < 1e-12


def test_balanced_init_with_target_and_float32():
    target = low_rank(2, 5, 2)
    net = DeepLinear(5, 2, depth=3, hidden=4, init="balanced", target=target)
    torch.testing.assert_close(net.end_to_end().detach(), target, rtol=0, atol=1e-13)
    assert balancedness(net) < 1e-12
    net32 = DeepLinear(5, 2, depth=3, hidden=4, init="balanced", target=target, dtype=torch.float32)
    assert net32.factors[0].dtype == torch.float32
    torch.testing.assert_close(net32.end_to_end().detach().double(), target, rtol=1e-5, atol=1e-5)
    f32 = balanced_factors(target.float(), 3, 4)
    assert f32[0].dtype == torch.float32


def test_balanced_factors_depth_one_is_copy():
    W = low_rank(3, 4, 2)
    (f,) = balanced_factors(W, 1)
    assert torch.equal(f, W) and f is not W
    assert balancedness([f]) == 0.0


def test_balanced_width_too_small_raises():
    with pytest.raises(ValueError, match="hidden width >= 3"):
        balanced_factors(low_rank(3, 5, 3), 3, [4, 2])
    with pytest.raises(ValueError, match="hidden width >= 2"):
        DeepLinear(5, 2, depth=2, hidden=1, init="balanced", target=low_rank(2, 5, 2))


def test_balanced_factors_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        balanced_factors(torch.zeros(2, 3, 4), 2)
    with pytest.raises(ValueError, match="NaN"):
        balanced_factors(torch.tensor([[1.0, float("nan")]]), 2)
    with pytest.raises(ValueError, match="depth"):
        balanced_factors(torch.ones(2, 2), 0)


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_identity_init(scale):
    net = DeepLinear(4, 6, depth=3, hidden=[5, 3], init="identity", scale=scale, seed=0)
    shapes = [(5, 4), (3, 5), (6, 3)]
    for p, sh in zip(net.factors, shapes, strict=True):
        eye = torch.zeros(sh)
        for i in range(min(sh)):
            eye[i, i] = 1.0
        noise = p.detach() - eye
        if scale == 0.0:
            assert torch.equal(noise, torch.zeros(sh))
        else:
            assert 0.02 < noise.std().item() < 0.2
    sq = DeepLinear(5, 5, depth=4, hidden=5, init="identity", scale=0.0)
    torch.testing.assert_close(sq.end_to_end().detach(), torch.eye(5))
    assert balancedness(sq) == 0.0


def test_balancedness_detects_imbalance():
    factors = [torch.eye(2), 2 * torch.eye(2)]
    # ||4I - I||_F = 3 sqrt(2)
    assert balancedness(factors) == pytest.approx(3 * 2**0.5, rel=1e-14)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=0), "depth"),
        (dict(depth=2.0), "depth"),
        (dict(depth=True), "depth"),
        (dict(depth=3, hidden=[2]), "depth - 1 = 2"),
        (dict(depth=3, hidden=[2, 0]), "hidden widths"),
        (dict(depth=2, init="orthogonal"), "unknown init"),
        (dict(depth=2, scale=-1.0), "scale"),
        (dict(depth=2, scale=float("nan")), "scale"),
        (dict(depth=2, init="near_zero", target=torch.zeros(2, 3)), "target"),
        (dict(depth=2, init="balanced", hidden=2, target=torch.zeros(3, 2)), "target must have"),
        (dict(depth=2, seed=0, generator=torch.Generator()), "at most one"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepLinear(3, 2, **kwargs)


def test_bad_features():
    with pytest.raises(ValueError, match="in_features"):
        DeepLinear(0, 2, depth=2)
