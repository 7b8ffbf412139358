"""EndToEndSGD against explicit Eq. 10, torch.optim.SGD, and GD on deep linear nets (Theorem 1)."""

import math

import pytest
import torch

from depthaccel.nets import DeepLinear, balancedness
from depthaccel.optim import EndToEndSGD, end_to_end_sgd_step
from depthaccel.preconditioner import end_to_end_direction

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)


def psd_power(A: torch.Tensor, q: float) -> torch.Tensor:
    """[A]^q of a PSD matrix via eigh; [A]^0 = I, round-off eigenvalues set to 0."""
    if q == 0:
        return torch.eye(A.shape[0])
    lam, Q = torch.linalg.eigh(A)
    tol = 10 * A.shape[0] * torch.finfo(A.dtype).eps * max(lam.abs().max().item(), 1e-300)
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    return (Q * lam.pow(q)) @ Q.T


def explicit_eq10(W: torch.Tensor, G: torch.Tensor, N: int) -> torch.Tensor:
    A, B = W @ W.T, W.T @ W
    return sum(psd_power(A, (j - 1) / N) @ G @ psd_power(B, (N - j) / N) for j in range(1, N + 1))


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- one step vs explicit Eq. 10


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (1, 6), (6, 1), (4, 3, 2, 2)])
@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_step_equals_explicit_eq10(shape, depth, wd):
    W0 = rand(*shape, seed=1)
    G = rand(*shape, seed=2)
    p = torch.nn.Parameter(W0.clone())
    p.grad = G.clone()
    lr = 0.05
    EndToEndSGD([p], lr=lr, depth=depth, weight_decay=wd).step()
    W2, G2 = W0.reshape(shape[0], -1), G.reshape(shape[0], -1)
    ref = (1 - lr * wd * depth) * W2 - lr * explicit_eq10(W2, G2, depth)
    torch.testing.assert_close(p.detach(), ref.reshape(shape), rtol=1e-12, atol=1e-13)


def test_step_rank_deficient_and_zero_weight():
    U = rand(4, 2, seed=3)
    W0 = U @ rand(2, 6, seed=4)  # rank 2
    G = rand(4, 6, seed=5)
    for W in (W0, torch.zeros(4, 6), torch.zeros(1, 6), torch.zeros(6, 1)):
        p = torch.nn.Parameter(W.clone())
        p.grad = G.clone() if W.shape == G.shape else rand(*W.shape, seed=6)
        EndToEndSGD([p], lr=0.1, depth=3).step()
        ref = W - 0.1 * explicit_eq10(W, p.grad, 3)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-10, atol=1e-12)


def test_fractional_depth_uses_closed_form():
    W0, G = rand(3, 4, seed=6), rand(3, 4, seed=7)
    p = torch.nn.Parameter(W0.clone())
    p.grad = G.clone()
    EndToEndSGD([p], lr=0.1, depth=2.5, weight_decay=0.2).step()
    ref = (1 - 0.1 * 0.2 * 2.5) * W0 - 0.1 * end_to_end_direction(W0, G, 2.5)
    torch.testing.assert_close(p.detach(), ref, rtol=1e-13, atol=1e-14)


def test_bias_gets_plain_sgd_with_plain_decay():
    w, b = torch.nn.Parameter(rand(2, 3, seed=8)), torch.nn.Parameter(rand(2, seed=9))
    b0, gb = b.detach().clone(), rand(2, seed=10)
    w.grad, b.grad = rand(2, 3, seed=11), gb.clone()
    EndToEndSGD([w, b], lr=0.1, depth=4, weight_decay=0.5).step()
    torch.testing.assert_close(b.detach(), (1 - 0.1 * 0.5) * b0 - 0.1 * gb, rtol=1e-15, atol=0)


# ---------------------------------------------------------------- depth 1 is SGD exactly


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_depth_one_is_sgd_exactly(wd):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    ref = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    ref.load_state_dict(model.state_dict())
    opt = EndToEndSGD(model.parameters(), lr=0.1, depth=1, weight_decay=wd)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, weight_decay=wd)
    x, y = rand(16, 5, seed=1), rand(16, 2, seed=2)
    for _ in range(10):
        for m, o in ((model, opt), (ref, opt_ref)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- optimizer mechanics


def test_per_group_depth_and_lr():
    W1, W2, G1, G2 = (rand(3, 4, seed=s) for s in range(4))
    p1, p2 = torch.nn.Parameter(W1.clone()), torch.nn.Parameter(W2.clone())
    p1.grad, p2.grad = G1.clone(), G2.clone()
    opt = EndToEndSGD([{"params": [p1]}, {"params": [p2], "depth": 4, "lr": 0.02}], lr=0.1, depth=2)
    opt.step()
    torch.testing.assert_close(p1.detach(), W1 - 0.1 * explicit_eq10(W1, G1, 2))
    torch.testing.assert_close(p2.detach(), W2 - 0.02 * explicit_eq10(W2, G2, 4))


def test_closure_returns_loss_and_none_grad_skipped():
    W = torch.nn.Parameter(rand(2, 3, seed=1))
    frozen = torch.nn.Parameter(rand(2, 3, seed=2))
    frozen0 = frozen.detach().clone()
    x, y = rand(7, 3, seed=3), rand(7, 2, seed=4)
    opt = EndToEndSGD([W, frozen], lr=0.1, depth=3)
    W0 = W.detach().clone()

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((x @ W.T - y) ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    G = (x @ W0.T - y).T @ x
    assert loss.item() == pytest.approx(0.5 * ((x @ W0.T - y) ** 2).sum().item(), rel=1e-14)
    torch.testing.assert_close(W.detach(), W0 - 0.1 * explicit_eq10(W0, G, 3))
    assert frozen.grad is None and torch.equal(frozen.detach(), frozen0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_raises_and_leaves_params(bad):
    a, b = torch.nn.Parameter(rand(2, 3, seed=1)), torch.nn.Parameter(rand(2, 3, seed=2))
    a0, b0 = a.detach().clone(), b.detach().clone()
    a.grad = rand(2, 3, seed=3)
    b.grad = rand(2, 3, seed=4)
    b.grad[0, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        EndToEndSGD([a, b], lr=0.1, depth=2).step()
    assert torch.equal(a.detach(), a0) and torch.equal(b.detach(), b0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1, depth=2), "lr"),
        (dict(lr=float("nan"), depth=2), "lr"),
        (dict(lr=float("inf"), depth=2), "lr"),
        (dict(lr=0.1, depth=0.5), "depth"),
        (dict(lr=0.1, depth=float("inf")), "depth"),
        (dict(lr=0.1, depth=float("nan")), "depth"),
        (dict(lr=0.1, depth=2, weight_decay=-1.0), "weight_decay"),
        (dict(lr=0.1, depth=2, weight_decay=float("nan")), "weight_decay"),
    ],
)
def test_hyperparameter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], **kwargs)


def test_param_group_validation_and_functional_errors():
    opt = EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1, depth=2)
    with pytest.raises(ValueError, match="depth"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "depth": 0})
    with pytest.raises(ValueError, match="shape"):
        end_to_end_sgd_step([torch.ones(2, 2)], [torch.ones(2, 3)], lr=0.1, depth=2)
    with pytest.raises(ValueError, match="params"):
        end_to_end_sgd_step([torch.ones(2, 2)], [], lr=0.1, depth=2)


def test_float32_step_close_to_float64():
    W0, G = rand(5, 7, seed=1), rand(5, 7, seed=2)
    p = torch.nn.Parameter(W0.float())
    p.grad = G.float()
    EndToEndSGD([p], lr=0.05, depth=3).step()
    ref = W0 - 0.05 * explicit_eq10(W0, G, 3)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.detach().double(), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- Theorem 1 numerically

D_IN, K_OUT, DEPTH, WIDTH = 5, 2, 3, 4


def regression_problem():
    X = rand(30, D_IN, seed=20)
    W_star = rand(K_OUT, D_IN, seed=21)
    Y = X @ W_star.T + 0.1 * rand(30, K_OUT, seed=22)
    W0 = 0.5 * rand(K_OUT, D_IN, seed=23)
    return X, Y, W0


def lsq(W, X, Y):
    return 0.5 * ((X @ W.T - Y) ** 2).sum() / X.shape[0]


def run_gd_net(lr, steps, wd, X, Y, W0):
    net = DeepLinear(D_IN, K_OUT, DEPTH, hidden=WIDTH, init="balanced", target=W0, seed=1)
    opt = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        lsq(net.end_to_end(), X, Y).backward()
        opt.step()
    return net.end_to_end().detach()


def run_optimizer(opt_cls, lr, steps, wd, X, Y, W0, **kw):
    W = torch.nn.Parameter(W0.clone())
    opt = opt_cls([W], lr=lr, weight_decay=wd, **kw)
    for _ in range(steps):
        opt.zero_grad()
        lsq(W, X, Y).backward()
        opt.step()
    return W.detach()


@pytest.mark.parametrize("wd", [0.0, 0.2])
def test_theorem1_gd_on_balanced_net_tracks_end_to_end_sgd(wd):
    """At fixed time t = lr*steps the gap between GD on the factors and Eq. 10 is O(lr)."""
    X, Y, W0 = regression_problem()
    t = 1.0
    gaps, moved = [], None
    for lr in (0.04, 0.01):
        steps = round(t / lr)
        W_net = run_gd_net(lr, steps, wd, X, Y, W0)
        W_e2e = run_optimizer(EndToEndSGD, lr, steps, wd, X, Y, W0, depth=DEPTH)
        gaps.append(torch.linalg.matrix_norm(W_net - W_e2e).item())
        moved = torch.linalg.matrix_norm(W_net - W0).item()
        # the plain single-layer SGD path (depth 1) is far from the net's: Eq. 10 matters
        W_sgd = run_optimizer(torch.optim.SGD, lr, steps, wd, X, Y, W0)
        sgd_gap = torch.linalg.matrix_norm(W_net - W_sgd).item()
        assert gaps[-1] < 0.1 * sgd_gap
    assert moved > 0.5  # the trajectory goes somewhere
    assert gaps[1] < 0.02 * moved
    ratio = gaps[0] / gaps[1]
    assert 3.5 < ratio < 4.6, (gaps, ratio)  # first order: 4x smaller lr, 4x smaller gap


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_gd_keeps_balancedness_to_second_order(wd):
    """From a balanced start one GD step leaves a deviation of O(lr^2); halving lr quarters it."""
    X, Y, W0 = regression_problem()
    devs = []
    for lr in (0.04, 0.02, 0.01):
        net = DeepLinear(D_IN, K_OUT, DEPTH, hidden=WIDTH, init="balanced", target=W0, seed=1)
        assert balancedness(net) < 1e-13
        lsq(net.end_to_end(), X, Y).backward()
        grads = [p.grad.clone() for p in net.factors]
        torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd).step()
        dev = balancedness(net)
        # first-order terms cancel (W_{j+1}^T g_{j+1} = g_j W_j^T); the rest is lr^2 * O(|g|^2)
        gw = [g + wd * p.detach() for g, p in zip(grads, net.factors, strict=True)]
        C = max(
            (a**2).sum().item() + (b**2).sum().item() for a, b in zip(gw[:-1], gw[1:], strict=True)
        )
        assert dev <= 2 * C * lr**2
        devs.append(dev)
    assert devs[-1] > 0
    for a, b in zip(devs[:-1], devs[1:], strict=True):
        assert math.isclose(a / b, 4.0, rel_tol=0.05), devs
