"""EndToEndSGD against explicit Eq. 10, torch.optim.SGD, and GD on deep linear nets (Theorem 1)."""

import math

import numpy as np
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


def test_claim1_direct_reference_is_the_sum_at_integer_depth():
    W, G = rand(3, 5, seed=1), rand(3, 5, seed=2)
    torch.testing.assert_close(
        claim1_direct(W, G, 3), explicit_eq10(W, G, 3), rtol=1e-10, atol=1e-12
    )


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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 7, 33, 4099])
def test_nonfinite_check_finds_every_position_and_layout(dtype, n):
    """The fused check (aminmax on the CPU) finds NaN, inf and -inf at the first, middle
    and last entry of gradients of several sizes (vectorised body and scalar tail),
    contiguous or not, and passes huge finite values of either sign; the culprit is named."""
    from depthaccel.optim_step import first_nonfinite

    big = torch.finfo(dtype).max
    ok = [torch.ones(3, dtype=dtype), torch.full((n,), big, dtype=dtype)]
    assert first_nonfinite([*ok, -ok[1]]) is None
    for pos in sorted({0, n // 2, n - 1}):
        for bad in (float("nan"), float("inf"), -float("inf")):
            g = torch.randn(n).to(dtype)
            g[pos] = bad
            for layout in (g, g.view(n, 1).expand(n, 2).t(), g.flip(0)):
                assert first_nonfinite([*ok, layout, ok[0]]) == 2, (pos, bad)


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


# ---------------------------------------------------------------- torch.optim parity (issue 13)

SGD_COMBOS = [
    (m, dmp, nest, mx)
    for m in (0.0, 0.9)
    for dmp in (0.0, 0.3)
    for nest in (False, True)
    for mx in (False, True)
    if not (nest and (m == 0 or dmp != 0))  # torch.optim.SGD refuses these too
]


def small_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 3),
        torch.nn.Tanh(),
        torch.nn.Linear(3, 1),
    ).to(dtype)


def train_steps(model, opt, steps, x, y, sched=None):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


# torch.optim's keyword arguments that EndToEndSGD accepts (with torch's meaning)
TORCH_OPTS = [
    dict(),
    dict(foreach=False),
    dict(foreach=True),
    dict(foreach=None, fused=False, differentiable=False, capturable=False),
    dict(foreach=True, fused=None),
]


@pytest.mark.parametrize("momentum,dampening,nesterov,maximize", SGD_COMBOS)
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("tensor_lr", [False, True])
@pytest.mark.parametrize("torch_opts", TORCH_OPTS, ids=str)
def test_depth_one_is_sgd_bit_for_bit_with_momentum(
    momentum, dampening, nesterov, maximize, wd, tensor_lr, torch_opts
):
    model, ref = small_model(1), small_model(1)
    x, y = rand(16, 5, seed=1).float(), rand(16, 1, seed=2).float()
    lr = torch.tensor(0.05) if tensor_lr else 0.05
    kw = dict(
        momentum=momentum,
        dampening=dampening,
        weight_decay=wd,
        nesterov=nesterov,
        maximize=maximize,
        **torch_opts,
    )
    # second group: its own settings (lr, momentum, no Nesterov)
    other = dict(lr=0.02, momentum=0.5, dampening=0.1, nesterov=False)

    def groups(m):
        ps = list(m.parameters())
        return [{"params": ps[:4]}, {"params": ps[4:], **other}]

    opt = EndToEndSGD(groups(model), lr=lr, depth=1, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != "capturable"}  # (SGD has no capturable)
    opt_ref = torch.optim.SGD(groups(ref), lr=lr.clone() if tensor_lr else lr, **ref_kw)
    for _ in range(4):
        train_steps(model, opt, 1, x, y)
        train_steps(ref, opt_ref, 1, x, y)
        for a, b in zip(model.parameters(), ref.parameters(), strict=True):
            assert torch.equal(a, b)
    moved = sum(
        (a - b).abs().sum().item()
        for a, b in zip(model.parameters(), small_model(1).parameters(), strict=True)
    )
    assert moved > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(differentiable=True), "differentiable=True is not supported"),
        (dict(capturable=True), "capturable=True is not supported"),
        (dict(fused=True), "fused=True is not supported"),
        (dict(foreach="yes"), "foreach must be"),
    ],
)
def test_torch_options_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1, depth=2, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("every", [1, 3])
def test_foreach_is_the_single_tensor_step_at_depth_two(every):
    """foreach=True runs SGD's momentum and update with torch._foreach_* over the Eq. 10
    directions: the same numbers as the per-parameter loop, bit for bit."""
    x, y = rand(16, 5, seed=1).float(), rand(16, 1, seed=2).float()
    runs = []
    for foreach in (False, True):
        model = small_model(1)
        opt = EndToEndSGD(
            model.parameters(),
            lr=0.05,
            depth=2,
            momentum=0.9,
            nesterov=True,
            weight_decay=0.01,
            precondition_every=every,
            foreach=foreach,
        )
        train_steps(model, opt, 4, x, y)
        runs.append([p.detach().clone() for p in model.parameters()])
        assert opt.param_groups[0]["foreach"] is foreach
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def claim1_direct(W: torch.Tensor, G: torch.Tensor, N: float) -> torch.Tensor:
    """Eq. 10 for any real N through Claim 1 written directly: full SVD, eigenvalue
    K(a, b) = (a^2 - b^2) / (a^(2/N) - b^(2/N)), K(a, a) = N a^(2(N-1)/N), K(a, 0) =
    a^(2(N-1)/N), K(0, 0) = 0, one entry at a time."""
    U, s, Vh = torch.linalg.svd(W)
    k, d = W.shape
    sr = [s[i].item() if i < len(s) else 0.0 for i in range(k)]
    sc = [s[j].item() if j < len(s) else 0.0 for j in range(d)]

    def K(a, b):
        if a == b:
            return N * a ** (2 * (N - 1) / N) if a > 0 else 0.0
        if min(a, b) == 0:
            return max(a, b) ** (2 * (N - 1) / N)
        return (a**2 - b**2) / (a ** (2 / N) - b ** (2 / N))

    Kmat = torch.tensor([[K(a, b) for b in sc] for a in sr])
    return U @ ((U.T @ G @ Vh.T) * Kmat) @ Vh


def sgd_reference(
    W0, grad_fn, steps, *, lr, depth, momentum, dampening, nesterov, maximize, wd, every=1
):
    """float64 SGD-with-momentum on the explicit Eq. 10 sum (eigh powers), written out.
    With ``every`` > 1 the sum uses the matrix of the last refresh step (the amortised rule)."""
    W, buf, Wc = W0.clone(), None, None
    for t in range(steps):
        G = grad_fn(W)
        if maximize:
            G = -G
        if t % every == 0:
            Wc = W.clone()
        P = explicit_eq10 if float(depth).is_integer() else claim1_direct
        D = P(Wc, G, depth) + wd * depth * W
        if momentum:
            buf = D.clone() if buf is None else momentum * buf + (1 - dampening) * D
            D = D + momentum * buf if nesterov else buf
        W = W - lr * D
    return W


@pytest.mark.parametrize("momentum,dampening,nesterov,maximize", SGD_COMBOS)
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (1, 6), (6, 1)])
def test_depth_n_momentum_matches_float64_reference(momentum, dampening, nesterov, maximize, shape):
    X = rand(20, shape[1], seed=3)
    Y = rand(20, shape[0], seed=4)

    sign = -1.0 if maximize else 1.0  # maximize -0.5/n ||X W^T - Y||^2 (stays bounded)

    def grad_fn(W):  # gradient of sign * 0.5/n ||X W^T - Y||^2
        return sign * (X @ W.T - Y).T @ X / X.shape[0]

    W0 = 0.7 * rand(*shape, seed=5)
    kw = dict(momentum=momentum, dampening=dampening, nesterov=nesterov, maximize=maximize)
    p = torch.nn.Parameter(W0.clone())
    opt = EndToEndSGD([p], lr=0.05, depth=3, weight_decay=0.01, **kw)
    for _ in range(6):
        p.grad = grad_fn(p.detach())
        opt.step()
    ref = sgd_reference(W0, grad_fn, 6, lr=0.05, depth=3, wd=0.01, **kw)
    torch.testing.assert_close(p.detach(), ref, rtol=1e-10, atol=1e-12)
    assert (ref - W0).abs().max() > 1e-2


def test_param_groups_with_different_settings_match_reference():
    X = rand(20, 4, seed=6)
    Ys = [rand(20, 3, seed=7), rand(20, 2, seed=8)]
    W0s = [0.5 * rand(3, 4, seed=9), 0.5 * rand(2, 4, seed=10)]
    settings = [
        dict(lr=0.05, depth=2, momentum=0.9, dampening=0.0, nesterov=True, maximize=False, wd=0.0),
        dict(
            lr=0.02, depth=2.5, momentum=0.5, dampening=0.2, nesterov=False, maximize=False, wd=0.1
        ),
    ]
    ps = [torch.nn.Parameter(W.clone()) for W in W0s]
    groups = [
        {"params": [p], **{("weight_decay" if k == "wd" else k): v for k, v in s.items()}}
        for p, s in zip(ps, settings, strict=True)
    ]
    opt = EndToEndSGD(groups, lr=1.0, depth=1)
    fns = [lambda W, Y=Y: (X @ W.T - Y).T @ X / 20 for Y in Ys]
    for _ in range(5):
        for p, f in zip(ps, fns, strict=True):
            p.grad = f(p.detach())
        opt.step()
    for p, W0, f, s in zip(ps, W0s, fns, settings, strict=True):
        ref = sgd_reference(W0, f, 5, **s)  # depth 2.5: Claim 1 entry by entry
        torch.testing.assert_close(p.detach(), ref, rtol=1e-10, atol=1e-12)


def test_tensor_lr_same_as_float_lr():
    W0, G = rand(3, 4, seed=1), rand(3, 4, seed=2)
    out = []
    for lr in (0.1, torch.tensor(0.1), torch.tensor([0.1])):
        p = torch.nn.Parameter(W0.clone())
        opt = EndToEndSGD([p], lr=lr, depth=3, momentum=0.9)
        for _ in range(3):
            p.grad = G.clone()
            opt.step()
        out.append(p.detach())
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_one_cycle_lr_with_defaults():
    """OneCycleLR's cycle_momentum needs 'momentum' in defaults; depth 1 follows SGD exactly."""
    x, y = rand(16, 5, seed=1).float(), rand(16, 1, seed=2).float()
    finals = []
    for cls, kw in (
        (EndToEndSGD, dict(depth=1)),
        (torch.optim.SGD, {}),
        (EndToEndSGD, dict(depth=2)),
    ):
        model = small_model(2)
        opt = cls(model.parameters(), lr=0.1, **kw)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=12)
        moms = []
        for _ in range(12):
            train_steps(model, opt, 1, x, y)
            sched.step() if len(moms) < 11 else None
            moms.append(opt.param_groups[0]["momentum"])
        assert min(moms) < 0.9 < max(moms)  # the momentum cycles
        finals.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(finals[0], finals[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(finals[0], finals[2], strict=True))


# ---------------------------------------------------------------- validation at step time


def _one_weight_opt(**kw):
    p = torch.nn.Parameter(torch.ones(2, 2))
    p.grad = torch.full((2, 2), 0.5)
    return p, EndToEndSGD([p], **(dict(lr=0.1, depth=2, momentum=0.9) | kw))


def test_hyperparameters_edited_after_construction_are_refused_by_step():
    """A group edited in place (as schedulers do) is checked at the next step, which then
    changes nothing."""
    for key, bad in [
        ("lr", -1.0),
        ("lr", float("nan")),
        ("lr", torch.tensor([0.1, 0.2])),
        ("lr", torch.tensor(-0.1)),
        ("lr", torch.tensor(float("inf"))),
        ("lr", torch.tensor(1)),
        ("depth", 0.9),
        ("momentum", -0.1),
        ("dampening", float("nan")),
        ("weight_decay", -1.0),
        ("nesterov", 1),
        ("maximize", "yes"),
        ("precondition_every", 0),
        ("precondition_every", 2.0),
        ("matrix_params", "3d"),
        ("foreach", "yes"),
    ]:
        p, opt = _one_weight_opt()
        opt.param_groups[0][key] = bad
        with pytest.raises(ValueError, match=key):
            opt.step()
        assert torch.equal(p, torch.ones(2, 2)), key
    p, opt = _one_weight_opt(nesterov=True)
    opt.param_groups[0]["momentum"] = 0.0
    with pytest.raises(ValueError, match="nesterov"):
        opt.step()
    p, opt = _one_weight_opt()
    opt.param_groups[0]["lr"] = torch.tensor(0.01)  # schedulers may set a tensor
    opt.step()
    assert not torch.equal(p, torch.ones(2, 2))


def test_replaced_param_group_is_validated_at_step():
    """A whole group replaced by a plain dict with lr=-5 used to skip validation, so the
    step ascended; now the step refuses it before changing anything."""
    p, opt = _one_weight_opt()
    g = opt.param_groups[0]
    opt.param_groups[0] = dict(g, lr=-5.0)
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    assert torch.equal(p, torch.ones(2, 2))
    opt.param_groups[0] = dict(g, lr=0.1)  # a good replacement steps
    opt.step()
    assert torch.equal(p, torch.ones(2, 2) - 0.1 * opt.state[p]["momentum_buffer"])


def test_tensor_lr_value_checked_once_per_change(monkeypatch):
    """A tensor lr is read on the host once per change of its value (its version counter)
    or object, not on every step; an in-place change to a bad value is caught."""
    p, opt = _one_weight_opt(lr=torch.tensor(0.01))
    lr = opt.param_groups[0]["lr"]
    reads = []
    orig = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: reads.append(1) or orig(t))
    opt.step()
    opt.step()
    assert len(reads) == 1
    lr.fill_(0.02)  # as LRScheduler does for a tensor lr
    opt.step()
    assert len(reads) == 2
    lr.fill_(-5.0)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    assert torch.equal(p, before)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(momentum=-0.5), "momentum"),
        (dict(nesterov=True), "nesterov"),
        (dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
        (dict(precondition_every=0), "precondition_every"),
        (dict(matrix_params="rows"), "matrix_params"),
        (dict(lr=torch.ones(2)), "lr"),
        (dict(precondition_every=5, precondition_dtype=torch.float16), "precondition_dtype"),
        (dict(precondition_every=5, precondition_dtype="bfloat16"), "precondition_dtype"),
        (dict(precondition_every=5, precondition_dtype=torch.int32), "precondition_dtype"),
        (dict(precondition_dtype=torch.bfloat16), "precondition_every > 1"),
    ],
)
def test_new_options_validated_at_construction(kwargs, match):
    kw = dict(lr=0.1, depth=2) | kwargs
    with pytest.raises(ValueError, match=match):
        EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], **kw)
    opt = EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1, depth=2)
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], **kwargs})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "key,bad,message",
    [
        ("lr", -1, "lr must be a finite number >= 0 or a 1-element tensor, got -1"),
        ("lr", True, "lr must be a finite number >= 0 or a 1-element tensor, got True"),
        ("depth", 0.5, "depth must be a finite number >= 1, got 0.5"),
        ("depth", True, "depth must be a finite number >= 1, got True"),
        ("momentum", float("inf"), "momentum must be a finite number >= 0, got inf"),
        ("dampening", float("nan"), "dampening must be a finite number, got nan"),
        ("weight_decay", -0.1, "weight_decay must be a finite number >= 0, got -0.1"),
        ("nesterov", 1, "nesterov must be True or False, got 1"),
        ("maximize", np.bool_(True), f"maximize must be True or False, got {np.bool_(True)!r}"),
        ("precondition_every", 2.0, "precondition_every must be an integer >= 1, got 2.0"),
        ("precondition_every", True, "precondition_every must be an integer >= 1, got True"),
        ("matrix_params", "3d", "matrix_params must be one of 'all', '2d', 'none', got '3d'"),
        ("foreach", 0, "foreach must be None, True or False, got 0"),
        (
            "precondition_dtype",
            torch.float16,
            "precondition_dtype must be one of None, torch.float32, torch.float64, "
            "torch.bfloat16, got torch.float16 (float16 is refused: Claim 1's eigenvalues "
            "can exceed its range)",
        ),
    ],
)
def test_hyperparameter_messages_are_the_shared_declarations(key, bad, message):
    """Every hyperparameter is checked by its declaration in optim_checks.CONSTRAINTS
    (depthaccel.validation's Interval / Options): the same one-line message at
    construction, in add_param_group and at step time; bools are never numbers."""
    from depthaccel.optim_checks import CONSTRAINTS
    from depthaccel.validation import Interval, Options

    assert all(isinstance(c, (Interval, Options)) for c in CONSTRAINTS.values())
    kw = dict(lr=0.1, depth=2, precondition_every=5) | {key: bad}
    with pytest.raises(ValueError) as err:
        EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], **kw)
    assert str(err.value) == message
    p, opt = _one_weight_opt(precondition_every=5)
    with pytest.raises(ValueError) as err:
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], key: bad})
    assert str(err.value) == message and len(opt.param_groups) == 1
    opt.param_groups[0][key] = bad
    with pytest.raises(ValueError) as err:
        opt.step()
    assert str(err.value) == message and torch.equal(p, torch.ones(2, 2))


def test_numpy_scalar_hyperparameters_step_as_python_numbers():
    """numpy integers and floats are numbers like Python's (validation's rule): the same
    steps, bit for bit (values exact in float32)."""
    res = []
    for cast in (lambda v: v, np.float64, np.float32):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
        opt = EndToEndSGD(
            [w],
            lr=cast(0.125),
            depth=cast(2.5),
            momentum=cast(0.5),
            precondition_every=np.int64(2) if cast is np.float32 else 2,
        )
        for _ in range(4):
            opt.zero_grad()
            (w.sum() ** 2).backward()
            opt.step()
        res.append(w.detach().clone())
    assert torch.equal(res[0], res[1]) and torch.equal(res[0], res[2])


def test_a_replaced_group_without_every_key_is_refused_in_one_line():
    p, opt = _one_weight_opt()
    opt.param_groups[0] = {"params": [p], "lr": 0.1, "depth": 2}
    with pytest.raises(ValueError, match=r"^a param group lacks momentum, dampening, .*lr=0.1\)$"):
        opt.step()
    assert torch.equal(p, torch.ones(2, 2))


@pytest.mark.parametrize("every", [1, 2])
def test_one_host_read_per_step(monkeypatch, every):
    """The fast path reads one value from the device per step (the fused finite check),
    not one per parameter; hyperparameters are not re-read. With precondition_every=2 a
    refresh step (steps 0 and 2) also reads one value per refreshed matrix: the route of
    amortised_svd (the SVD synchronises anyway); only the 5 x 6 weight has one (the
    others are a row and a column: Eq. 12)."""
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 1), torch.nn.Linear(1, 4))
    with torch.no_grad():  # a well-conditioned weight (orthogonal rows): the Gram route
        model[0].weight.copy_(0.5 * torch.linalg.qr(rand(6, 5, seed=2))[0].T)
    opt = EndToEndSGD(model.parameters(), lr=0.1, depth=2, momentum=0.9, precondition_every=every)
    x = rand(8, 6, seed=1)
    reads = []
    for name in ("__bool__", "item", "__float__", "tolist"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _o=orig, _n=name: reads.append(_n) or _o(self, *a)
        )
    for t in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        reads.clear()
        opt.step()
        refresh = every > 1 and t % every == 0
        assert reads == ["__bool__"] * (2 if refresh else 1), reads


# ---------------------------------------------------------------- robustness (issue 12)


def test_nonfinite_gradient_in_second_group_changes_nothing():
    a, b = torch.nn.Parameter(rand(2, 3, seed=1)), torch.nn.Parameter(rand(3, 2, seed=2))
    opt = EndToEndSGD([{"params": [a]}, {"params": [b], "depth": 1}], lr=0.1, depth=2, momentum=0.9)
    a.grad, b.grad = rand(2, 3, seed=3), rand(3, 2, seed=4)
    opt.step()
    before = [a.detach().clone(), b.detach().clone(), opt.state[a]["momentum_buffer"].clone()]
    a.grad, b.grad = rand(2, 3, seed=5), rand(3, 2, seed=6)
    b.grad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="parameter 0 of group 1.*NaN or inf"):
        opt.step()
    after = [a.detach(), b.detach(), opt.state[a]["momentum_buffer"]]
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,), (2, 0, 3)])
def test_empty_parameters_work(shape):
    e = torch.nn.Parameter(torch.zeros(shape))
    w = torch.nn.Parameter(rand(2, 3, seed=1))
    opt = EndToEndSGD([e, w], lr=0.1, depth=3, momentum=0.9, weight_decay=0.1, precondition_every=2)
    for _ in range(3):
        e.grad, w.grad = torch.zeros(shape), rand(2, 3, seed=2)
        opt.step()
    assert e.shape == shape and torch.isfinite(w).all()


def test_complex_parameters_refused():
    with pytest.raises(ValueError, match="complex"):
        EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2, dtype=torch.complex64))], lr=0.1, depth=2)
    opt = EndToEndSGD([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1, depth=1)
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3, dtype=torch.cdouble))]})
    with pytest.raises(ValueError, match="complex"):
        end_to_end_sgd_step(
            [torch.ones(2, 2, dtype=torch.cdouble)],
            [torch.ones(2, 2, dtype=torch.cdouble)],
            lr=0.1,
            depth=2,
        )


def test_loading_a_foreign_state_dict_is_refused_at_load_time():
    model = small_model(0, torch.float64)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, sgd, 1, rand(4, 5), rand(4, 1))
    opt = EndToEndSGD(model.parameters(), lr=0.1, depth=2)
    with pytest.raises(ValueError, match="not an EndToEndSGD state_dict"):
        opt.load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict({"param_groups": []})
    bad = opt.state_dict()
    bad["param_groups"][0]["depth"] = 0.5
    with pytest.raises(ValueError, match="depth"):
        opt.load_state_dict(bad)


def test_state_dict_of_the_previous_version_loads_with_defaults():
    p = torch.nn.Parameter(rand(3, 4, seed=1))
    opt = EndToEndSGD([p], lr=0.1, depth=2, momentum=0.9)
    old = {
        "state": {},
        "param_groups": [{"lr": 0.05, "depth": 3, "weight_decay": 0.0, "params": [0]}],
    }
    opt.load_state_dict(old)
    g = opt.param_groups[0]
    # what the old version meant: no momentum, exact Eq. 10 (not this optimizer's momentum)
    assert (g["lr"], g["depth"], g["momentum"], g["precondition_every"]) == (0.05, 3, 0.0, 1)
    assert g["foreach"] is None
    p.grad = rand(3, 4, seed=2)
    g["lr"] = -1.0  # still validated after a load
    with pytest.raises(ValueError, match="lr"):
        opt.step()


def test_pickle_and_deepcopy_keep_validated_groups():
    import copy
    import pickle

    p = torch.nn.Parameter(rand(3, 4, seed=1))
    p.grad = rand(3, 4, seed=2)
    opt = EndToEndSGD([{"params": [p], "nesterov": True, "momentum": 0.9}], lr=0.1, depth=2)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        clone.param_groups[0]["lr"] = -1.0
        with pytest.raises(ValueError, match="lr"):
            clone.step()


# ---------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (6, 40), (8, 3, 3, 3)])
@pytest.mark.parametrize("every", [1, 3])
def test_half_precision_step_is_the_float32_computation(dtype, shape, every):
    """The direction is Eq. 10 of the half weight and gradient evaluated in high precision,
    rounded once to the half dtype; the update then runs in the half dtype."""
    W0 = (0.3 * rand(*shape, seed=1)).to(dtype)
    G = rand(*shape, seed=2).to(dtype)
    p = torch.nn.Parameter(W0.clone())
    p.grad = G.clone()
    EndToEndSGD([p], lr=0.05, depth=3, precondition_every=every).step()
    assert p.dtype == dtype
    W2, G2 = W0.double().reshape(shape[0], -1), G.double().reshape(shape[0], -1)
    D = explicit_eq10(W2, G2, 3).reshape(shape)
    D_half = D.to(dtype)
    # one rounding of D (float32 vs float64 differ far below half's eps), then the half axpy
    expected = W0.clone().add_(D_half, alpha=-0.05)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(p.detach().double(), expected.double(), rtol=2 * eps, atol=0)
    assert not torch.equal(p.detach(), W0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.Linear(12, 1),
        lambda: torch.nn.Linear(1, 12),
        lambda: torch.nn.Linear(12, 5),
        lambda: torch.nn.Conv2d(2, 4, 3),
    ],
    ids=["1xd", "dx1", "kxd", "conv"],
)
def test_half_precision_layers_train(dtype, make):
    torch.manual_seed(0)
    layer = make().to(dtype)
    conv = isinstance(layer, torch.nn.Conv2d)
    x = torch.randn(32, 2, 5, 5) if conv else torch.randn(32, layer.in_features)
    with torch.no_grad():
        target = make()(x) * 0.5  # a reachable float32 target of the same architecture
    x = x.to(dtype)
    opt = EndToEndSGD(layer.parameters(), lr=0.05, depth=2, momentum=0.9, precondition_every=5)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (layer(x).float() - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


# ---------------------------------------------------------------- amortised preconditioning


def conditioned(k: int, d: int, seed: int, s_min: float = 0.4) -> torch.Tensor:
    """A k x d matrix with singular values from 1.2 down to s_min (condition <= 32 for
    the default: amortised_svd's Gram route when k != d)."""
    m = min(k, d)
    U = torch.linalg.qr(rand(k, m, seed=seed))[0]
    V = torch.linalg.qr(rand(d, m, seed=seed + 1))[0]
    return (U * torch.linspace(1.2, s_min, m)) @ V.T


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (4, 9), (9, 4)])
@pytest.mark.parametrize("every", [2, 3])
@pytest.mark.parametrize("depth", [2, 2.5, 3])
@pytest.mark.parametrize("start", ["random", "conditioned", "rank2"])
def test_precondition_every_matches_cached_reference(shape, every, depth, start):
    """K > 1 == SGD with momentum on Eq. 10 of the matrix at the last refresh (float64
    reference: the explicit sum, or Claim 1 entry by entry at depth 2.5), for refreshes by
    the Gram route (conditioned, rectangular) and the SVD route (square, rank 2); depth 2
    is the kernel's own closed form."""
    X, Y = rand(20, shape[1], seed=3), rand(20, shape[0], seed=4)

    def grad_fn(W):
        return (X @ W.T - Y).T @ X / X.shape[0]

    W0 = {
        "random": lambda: 0.7 * rand(*shape, seed=5),
        "conditioned": lambda: conditioned(*shape, seed=5),
        "rank2": lambda: rand(shape[0], 2, seed=5) @ rand(2, shape[1], seed=6) / 2,
    }[start]()
    kw = dict(momentum=0.9, dampening=0.0, nesterov=True, maximize=False)
    p = torch.nn.Parameter(W0.clone())
    opt = EndToEndSGD([p], lr=0.05, depth=depth, weight_decay=0.01, precondition_every=every, **kw)
    for _ in range(7):
        p.grad = grad_fn(p.detach())
        opt.step()
    ref = sgd_reference(W0, grad_fn, 7, lr=0.05, depth=depth, wd=0.01, every=every, **kw)
    torch.testing.assert_close(p.detach(), ref, rtol=1e-10, atol=1e-12)
    exact = sgd_reference(W0, grad_fn, 7, lr=0.05, depth=depth, wd=0.01, **kw)
    assert (exact - ref).abs().max() > 1e-6  # the approximation is a different rule


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_state_dict_round_trip_mid_cycle(dtype):
    """Save after 7 steps of K = 5 (mid-cycle), load into a fresh optimizer: the
    continuation is identical to the uninterrupted run, also for half weights."""
    import copy

    x, y = rand(16, 5, seed=1).to(dtype), rand(16, 1, seed=2).to(dtype)
    kw = dict(lr=0.05, depth=2, momentum=0.9, precondition_every=5)
    model = small_model(3, dtype)
    opt = EndToEndSGD(model.parameters(), **kw)
    train_steps(model, opt, 7, x, y)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train_steps(model, opt, 6, x, y)
    fresh = small_model(4, dtype)
    fresh.load_state_dict(saved_model)
    opt2 = EndToEndSGD(fresh.parameters(), lr=1.0, depth=5)
    opt2.load_state_dict(saved_opt)
    st = opt2.state[fresh[0].weight]
    assert st["precond_step"] == 7 and st["precond_U"].dtype == (
        torch.float32 if dtype == torch.float16 else dtype
    )
    train_steps(fresh, opt2, 6, x, y)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- which parameters


def test_matrix_params_selects_what_is_preconditioned():
    torch.manual_seed(0)
    conv, lin = torch.nn.Conv2d(2, 3, 3), torch.nn.Linear(12, 4)
    ref_conv, ref_lin = torch.nn.Conv2d(2, 3, 3), torch.nn.Linear(12, 4)
    ref_conv.load_state_dict(conv.state_dict())
    ref_lin.load_state_dict(lin.state_dict())
    x, z = torch.randn(4, 2, 4, 4), torch.randn(4, 12)

    def run(c, l_, opt):
        for _ in range(3):
            opt.zero_grad()
            (c(x).pow(2).sum() + l_(z).pow(2).sum()).backward()  # independent parts
            opt.step()

    run(
        conv,
        lin,
        EndToEndSGD(
            [*conv.parameters(), *lin.parameters()],
            lr=0.01,
            depth=2,
            momentum=0.9,
            matrix_params="2d",
        ),
    )
    run(
        ref_conv,
        ref_lin,
        torch.optim.SGD([*ref_conv.parameters(), *ref_lin.parameters()], lr=0.01, momentum=0.9),
    )
    assert torch.equal(conv.weight, ref_conv.weight)  # 4-D: plain SGD under "2d"
    assert not torch.allclose(lin.weight, ref_lin.weight, atol=1e-6)  # 2-D: Eq. 10
    emb = torch.nn.Parameter(rand(10, 3, seed=1))
    emb0, g = emb.detach().clone(), rand(10, 3, seed=2)
    emb.grad = g.clone()
    EndToEndSGD([emb], lr=0.1, depth=3, matrix_params="none").step()
    assert torch.equal(emb.detach(), emb0.add(g, alpha=-0.1))


def test_fsdp_flattened_parameter_warns_once():
    flat = [torch.nn.Parameter(torch.ones(12)) for _ in range(3)]
    flat[0]._is_flat_param = True
    flat[1]._fsdp_flattened = True
    with pytest.warns(UserWarning, match="flattened by FSDP") as rec:
        opt = EndToEndSGD([flat[0], flat[2]], lr=0.1, depth=2)
        opt.add_param_group({"params": [flat[1]]})
    assert len([w for w in rec if "FSDP" in str(w.message)]) == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EndToEndSGD([flat[0]], lr=0.1, depth=2, matrix_params="none")
        EndToEndSGD([flat[0]], lr=0.1, depth=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cached_step_syncs_once():
    """On CUDA a cached step (precondition_every > 1, between SVDs) with a tensor lr on the
    device synchronises exactly once: the fused finite check."""
    import warnings

    dev = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 1)).to(dev)
    lr = torch.tensor(0.01, device=dev)
    opt = EndToEndSGD(model.parameters(), lr=lr, depth=2, momentum=0.9, precondition_every=100)
    x = torch.randn(16, 64, device=dev)
    for step in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        if step == 0:
            opt.step()  # the SVD refresh (cuSOLVER may synchronise)
            continue
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        syncs = [w for w in rec if "synchroniz" in str(w.message)]
        assert len(syncs) == 1, [str(w.message) for w in syncs]


def test_single_row_weight_of_extreme_scale_stays_finite():
    """Issue 12: a 1 x d weight of size 1e160 (its squares overflow float64) steps finitely
    and as Eq. 10 (through the general SVD path) says."""
    w = rand(1, 6, seed=1) * 1e160
    g = rand(1, 6, seed=2)
    p = torch.nn.Parameter(w.clone())
    p.grad = g.clone()
    EndToEndSGD([p], lr=1e-56, depth=3).step()
    ref = w - 1e-56 * end_to_end_direction(w, g, 3)
    assert torch.isfinite(p).all() and not torch.equal(p.detach(), w)
    torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=0)


def test_huge_finite_float64_gradient_is_not_refused():
    """The fused check tests each gradient's inf-norm in its own dtype: 1e300 is finite."""
    p = torch.nn.Parameter(rand(3, 4, seed=1))
    p0 = p.detach().clone()
    p.grad = rand(3, 4, seed=2) * 1e300
    EndToEndSGD([p], lr=1e-310, depth=1).step()
    assert torch.isfinite(p).all() and not torch.equal(p.detach(), p0)


def test_no_state_without_momentum_or_cache():
    a, b = torch.nn.Parameter(rand(3, 4, seed=1)), torch.nn.Parameter(rand(4, seed=2))
    a.grad, b.grad = rand(3, 4, seed=3), rand(4, seed=4)
    opt = EndToEndSGD([a, b], lr=0.1, depth=2)
    opt.step()
    assert len(opt.state) == 0  # like torch.optim.SGD without momentum
    opt2 = EndToEndSGD([a, b], lr=0.1, depth=2, precondition_every=3)
    opt2.step()
    assert set(opt2.state) == {a} and "precond_U" in opt2.state[a]


DTENSOR_SCRIPT = """
import tempfile, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import distribute_tensor, Shard
from depthaccel.optim import EndToEndSGD
dist.init_process_group("gloo", store=dist.FileStore(tempfile.mktemp(), 1), rank=0, world_size=1)
mesh = init_device_mesh("cpu", (1,))
p = torch.nn.Parameter(distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)]))
try:
    EndToEndSGD([p], lr=0.1, depth=2)
    print("NOT REFUSED")
except ValueError as e:
    print("refused:", e)
opt = EndToEndSGD([p], lr=0.1, depth=2, matrix_params="none")  # plain SGD is fine
p.grad = distribute_tensor(torch.ones(4, 4), mesh, [Shard(0)])
opt.step()
print("plain ok")
dist.destroy_process_group()
"""


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)
def test_dtensor_weight_refused_as_a_matrix():
    """FSDP2 / tensor-parallel weights are DTensors: the SVD of a shard is not the matrix's."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", DTENSOR_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert "refused: EndToEndSGD cannot precondition a DTensor" in out.stdout, out.stderr[-2000:]
    assert "plain ok" in out.stdout


def test_depth_changed_mid_cycle_uses_the_new_depth_with_the_cached_svd():
    X, Y = rand(20, 5, seed=3), rand(20, 3, seed=4)

    def grad_fn(W):
        return (X @ W.T - Y).T @ X / X.shape[0]

    W0 = 0.7 * rand(3, 5, seed=5)
    p = torch.nn.Parameter(W0.clone())
    opt = EndToEndSGD([p], lr=0.05, depth=2, precondition_every=5)
    W = W0.clone()
    for t in range(4):
        depth = 2 if t < 2 else 3
        opt.param_groups[0]["depth"] = depth
        p.grad = grad_fn(p.detach())
        opt.step()
        W = W - 0.05 * explicit_eq10(W0, grad_fn(W), depth)  # W0: the cached matrix
    torch.testing.assert_close(p.detach(), W, rtol=1e-10, atol=1e-12)


def test_state_dict_with_the_previous_cache_layout_recomputes_its_parts():
    """A state_dict of the version that cached Claim 1's K, c and C (keys precond_K,
    precond_c, precond_C) continues with the cached SVD and freshly derived parts: the
    same steps as an uninterrupted run."""
    import copy

    from depthaccel.preconditioner import claim1_parts

    X, Y = rand(20, 7, seed=3), rand(20, 4, seed=4)

    def grad_fn(W):
        return (X @ W.T - Y).T @ X / X.shape[0]

    W0 = conditioned(4, 7, seed=8)
    kw = dict(lr=0.05, depth=3, momentum=0.9, precondition_every=5)
    p = torch.nn.Parameter(W0.clone())
    opt = EndToEndSGD([p], **kw)
    for _ in range(3):
        p.grad = grad_fn(p.detach())
        opt.step()
    sd = copy.deepcopy(opt.state_dict())  # (its state dicts are the optimizer's own)
    st = sd["state"][0]
    K, c, C = claim1_parts(st["precond_U"], st["precond_s"], st["precond_V"], 3)
    for key in ("precond_M", "precond_C", "precond_gram_skip"):
        del st[key]
    st.update(precond_K=K, precond_c=c, precond_C=C)  # the previous layout
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = EndToEndSGD([q], **kw)
    opt2.load_state_dict(sd)
    for _ in range(4):
        p.grad, q.grad = grad_fn(p.detach()), grad_fn(q.detach())
        opt.step()
        opt2.step()
    assert torch.equal(p, q)
    assert "precond_K" not in opt2.state[q] and "precond_c" not in opt2.state[q]


def test_gram_route_retried_every_gram_retry_refreshes(monkeypatch):
    """An ill-conditioned rectangular weight fails the Gram route; the next GRAM_RETRY - 1
    refreshes go straight to the SVD (no eigh), then the Gram route is tried again; a
    conditioned one takes it at every refresh."""
    from depthaccel.optim import GRAM_RETRY

    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda A: calls.append(A.shape) or eigh(A))
    ill = conditioned(4, 9, seed=1, s_min=1e-3)
    good = conditioned(4, 9, seed=2)
    for W0, tried in ((ill, [0, GRAM_RETRY, 2 * GRAM_RETRY]), (good, list(range(20)))):
        p = torch.nn.Parameter(W0.clone())
        opt = EndToEndSGD([p], lr=1e-9, depth=2, precondition_every=1_000_000)
        got = []
        for r in range(2 * GRAM_RETRY + 4):
            opt.state[p]["precond_step"] = 0  # every step a refresh
            calls.clear()
            p.grad = rand(4, 9, seed=r)
            opt.step()
            if calls:
                got.append(r)
        assert got == [r for r in tried if r < 2 * GRAM_RETRY + 4]


@pytest.mark.parametrize("shape", [(4, 9), (9, 4), (5, 5)])
@pytest.mark.parametrize("depth", [2, 2.5, 3])
def test_precondition_dtype_bfloat16_follows_the_amortised_rule(shape, depth):
    """precondition_dtype=bfloat16: the cache is bfloat16 and the trajectory is the
    amortised rule's (float64 reference) up to bfloat16's rounding of the direction:
    within 1% of the distance travelled, and farther from it than a float32 cache (which
    also checks that the bfloat16 products are really used); the weights stay float64."""
    X, Y = rand(20, shape[1], seed=3), rand(20, shape[0], seed=4)

    def grad_fn(W):
        return (X @ W.T - Y).T @ X / X.shape[0]

    W0 = conditioned(*shape, seed=6)
    kw = dict(momentum=0.9, dampening=0.0, nesterov=False, maximize=False)
    ref = sgd_reference(W0, grad_fn, 7, lr=0.05, depth=depth, wd=0.01, every=3, **kw)
    err = {}
    for dtype in (torch.bfloat16, torch.float32):
        p = torch.nn.Parameter(W0.clone())
        opt = EndToEndSGD(
            [p],
            lr=0.05,
            depth=depth,
            weight_decay=0.01,
            precondition_every=3,
            precondition_dtype=dtype,
            **kw,
        )
        for _ in range(7):
            p.grad = grad_fn(p.detach())
            opt.step()
        assert p.dtype == torch.float64
        st = opt.state[p]
        assert {st[k].dtype for k in ("precond_U", "precond_s", "precond_V")} == {dtype}
        err[dtype] = ((p.detach() - ref).norm() / (ref - W0).norm()).item()
    assert err[torch.float32] < 1e-5
    assert 1e-4 < err[torch.bfloat16] < 1e-2, err


def test_precondition_dtype_none_and_the_working_dtype_are_the_same():
    """None means the working dtype: bit-identical to naming it; a group can switch to
    bfloat16 (as a scheduler would set it) and the next refresh caches in bfloat16."""
    x, y = rand(16, 5, seed=1).float(), rand(16, 1, seed=2).float()
    runs = []
    for dtype in (None, torch.float32):
        model = small_model(3)
        opt = EndToEndSGD(
            model.parameters(),
            lr=0.05,
            depth=2,
            momentum=0.9,
            precondition_every=3,
            precondition_dtype=dtype,
        )
        train_steps(model, opt, 5, x, y)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    opt.param_groups[0]["precondition_dtype"] = torch.bfloat16
    opt.param_groups[0]["precondition_every"] = 1
    with pytest.raises(ValueError, match="precondition_every > 1"):
        train_steps(model, opt, 1, x, y)
    opt.param_groups[0]["precondition_every"] = 3
    st = opt.state[model[0].weight]
    train_steps(model, opt, 1, x, y)  # step 5: cached, still the float32 cache
    assert st["precond_U"].dtype == torch.float32
    train_steps(model, opt, 1, x, y)  # step 6: a refresh, in bfloat16 from now on
    assert st["precond_U"].dtype == st["precond_M"].dtype == torch.bfloat16


def test_bfloat16_cache_survives_a_state_dict_round_trip():
    """torch's load_state_dict casts state tensors to the parameter's dtype; the cache
    keeps its bfloat16, and the continuation equals the uninterrupted run."""
    import copy

    x, y = rand(16, 5, seed=1), rand(16, 1, seed=2)
    kw = dict(lr=0.05, depth=2, momentum=0.9, precondition_every=4)
    model = small_model(3, torch.float64)
    opt = EndToEndSGD(model.parameters(), precondition_dtype=torch.bfloat16, **kw)
    train_steps(model, opt, 5, x, y)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train_steps(model, opt, 5, x, y)
    fresh = small_model(4, torch.float64)
    fresh.load_state_dict(saved_model)
    opt2 = EndToEndSGD(fresh.parameters(), **kw)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["precondition_dtype"] == torch.bfloat16
    st = opt2.state[fresh[0].weight]
    assert st["precond_U"].dtype == st["precond_C"].dtype == torch.bfloat16
    train_steps(fresh, opt2, 5, x, y)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- documentation


def test_help_shows_the_update_args_and_example_first():
    """help(EndToEndSGD) leads with Eq. 10's update, then Args, then one example, all
    within its first 40 lines; no benchmark timings in the docstrings (they go stale)."""
    import pydoc
    import re

    from depthaccel.preconditioner import amortised_svd

    lines = pydoc.render_doc(EndToEndSGD, renderer=pydoc.plaintext).splitlines()

    def at(text):
        return next(i for i, line in enumerate(lines) if text in line)

    assert at("D = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}") < at("Args:")
    assert at("Args:") < at("precondition_every: K") < at("Example") < at("opt.step()") < 40
    for doc in (EndToEndSGD.__doc__, amortised_svd.__doc__):
        assert not re.search(r"\d\s*ms\b", doc)
