"""The batched trainer against obvious one-run-at-a-time references, in float64.

References: an ``nn.Linear`` stack trained by the matching ``torch.optim`` optimizer
(or, for the TensorFlow-1 conventions, a hand-written loop of TF1's update rules), one
run at a time, with the loss read at every iteration; the end-to-end scheme as a loop
of ``depthaccel.preconditioner`` calls. ``optimum=0`` makes the recorded gap the loss.
"""

import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from depthaccel.preconditioner import end_to_end_direction, single_output_direction
from depthaccel.train import Run, initial_factors, log_iterations, train

T = 300


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one thread avoids OpenMP oversubscription on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def problem(k=1, m=50, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, d, generator=g, dtype=torch.float64)
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    Y = X @ W + 0.5 * torch.randn(m, k, generator=g, dtype=torch.float64)
    Y = Y / Y.std(0)
    return X, (Y[:, 0] if k == 1 else Y)


def loss_fn(pred, Y, p):
    return ((pred - Y).abs() ** p).sum(1).mean() / p


def tf1_step(params, state, run, t):
    """TF1's ApplyAdam / ApplyAdagrad / ApplyAdadelta, written out (t = 1-based step)."""
    hp = run.optimizer_hparams()
    lr = run.effective_lr
    for i, prm in enumerate(params):
        g = prm.grad + run.weight_decay * prm.data
        st = state.setdefault(i, {})
        if run.method == "adam":
            m = st.get("m", torch.zeros_like(g))
            v = st.get("v", torch.zeros_like(g))
            m = hp["beta1"] * m + (1 - hp["beta1"]) * g
            v = hp["beta2"] * v + (1 - hp["beta2"]) * g * g
            lr_t = lr * math.sqrt(1 - hp["beta2"] ** t) / (1 - hp["beta1"] ** t)
            prm.data -= lr_t * m / (v.sqrt() + hp["eps"])
            st.update(m=m, v=v)
        elif run.method == "adagrad":
            acc = st.get("acc", torch.full_like(g, hp["initial_accumulator"])) + g * g
            prm.data -= lr * g / (acc.sqrt() + hp["eps"])
            st.update(acc=acc)
        elif run.method == "adadelta":
            acc = st.get("acc", torch.zeros_like(g))
            acc_u = st.get("acc_u", torch.zeros_like(g))
            acc = hp["rho"] * acc + (1 - hp["rho"]) * g * g
            u = (acc_u + hp["eps"]).sqrt() / (acc + hp["eps"]).sqrt() * g
            acc_u = hp["rho"] * acc_u + (1 - hp["rho"]) * u * u
            prm.data -= lr * u
            st.update(acc=acc, acc_u=acc_u)


def torch_optimizer(run, params):
    hp = run.optimizer_hparams()
    lr, wd = run.effective_lr, run.weight_decay
    if run.method == "gd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if run.method == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], weight_decay=wd
        )
    if run.method == "adagrad":
        return torch.optim.Adagrad(
            params,
            lr=lr,
            initial_accumulator_value=hp["initial_accumulator"],
            eps=hp["eps"],
            weight_decay=wd,
        )
    return torch.optim.Adadelta(params, lr=lr, rho=hp["rho"], eps=hp["eps"], weight_decay=wd)


def reference_net(run, X, y, p, iters=T):
    """One run, the obvious way: nn.Linear stack + optimizer, loss read every step."""
    Y = y.reshape(len(y), -1)
    factors = initial_factors(run, X.shape[1], Y.shape[1])
    layers = []
    for f in factors:
        lin = nn.Linear(f.shape[1], f.shape[0], bias=False, dtype=torch.float64)
        lin.weight.data.copy_(f)
        layers.append(lin)
    model = nn.Sequential(*layers)
    params = list(model.parameters())
    tf = run.method != "gd" and run.convention == "tf"
    opt = None if tf else torch_optimizer(run, params)
    state: dict = {}
    losses = []
    for t in range(iters + 1):
        for prm in params:
            prm.grad = None
        loss = loss_fn(model(X), Y, p)
        losses.append(loss.item())
        if t == iters:
            break
        loss.backward()
        if tf:
            with torch.no_grad():
                tf1_step(params, state, run, t + 1)
        else:
            opt.step()
    return np.array(losses)


def reference_e2e(run, X, y, p, iters=T):
    """Eq. 12 (k = 1) / Eq. 10 (k > 1) as a loop of preconditioner calls."""
    Y = y.reshape(len(y), -1)
    factors = initial_factors(run, X.shape[1], Y.shape[1])
    W = factors[0]
    for f in factors[1:]:
        W = f @ W
    N = float(run.depth)
    losses = []
    for t in range(iters + 1):
        Wr = W.clone().requires_grad_(True)
        loss = loss_fn(X @ Wr.T, Y, p)
        losses.append(loss.item())
        if t == iters:
            break
        (G,) = torch.autograd.grad(loss, Wr)
        if Y.shape[1] == 1:
            D = single_output_direction(W[0], G[0], N)[None]
        else:
            D = end_to_end_direction(W, G, N)
        W = (1 - run.lr * run.weight_decay * N) * W - run.lr * D
    return np.array(losses)


def reference(run, X, y, p, iters=T):
    return (reference_e2e if run.method == "e2e" else reference_net)(run, X, y, p, iters)


def net_runs(method, convention, lr, hp=()):
    common = {"convention": convention, "init_scale": 0.5, "hparams": hp}
    return [
        Run(method, lr, depth=1, **common),
        Run(method, lr, depth=2, seed=1, **common),
        Run(method, lr * 0.5, depth=3, seed=2, weight_decay=0.01, **common),
        Run(method, lr, depth=2, hidden=3, seed=3, **common),
        Run(method, lr, depth=3, hidden=(4, 2), init="balanced", init_scale=0.3, seed=4,
            convention=convention, hparams=hp),
        Run(method, lr, depth=3, init="identity", init_scale=0.1, seed=5, convention=convention,
            hparams=hp),
    ]  # fmt: skip


NET_CASES = [
    ("gd", "tf", 0.02, ()),
    ("adam", "tf", 0.01, ()),
    ("adam", "torch", 0.01, (("beta2", 0.99),)),
    ("adagrad", "tf", 0.05, ()),
    ("adagrad", "torch", 0.05, ()),
    ("adadelta", "tf", 0.5, ()),
    ("adadelta", "torch", 0.3, (("rho", 0.95),)),
]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize(("method", "convention", "lr", "hp"), NET_CASES)
def test_nets_match_single_run_references(method, convention, lr, hp, k):
    X, y = problem(k=k, seed=k)
    p = 4
    runs = net_runs(method, convention, lr, hp)
    res = train(X, y, p, runs, T, optimum=0.0, log_points=T + 1)
    slow = train(X, y, p, runs, T, optimum=0.0, log_points=T + 1, fast_width1=False)
    for r, s in zip(res, slow, strict=True):
        ref = reference(r.run, X, y, p)
        assert np.array_equal(r.iters, np.arange(T + 1))
        np.testing.assert_allclose(r.gap, ref, rtol=0, atol=1e-10, err_msg=r.run.label())
        np.testing.assert_allclose(s.gap, ref, rtol=0, atol=1e-10, err_msg=r.run.label())
        assert ref[0] - ref[-1] > 1e-3, "the test must exercise some movement"
        assert not r.diverged


@pytest.mark.parametrize(("method", "convention", "lr"), [("gd", "tf", 0.01), ("adam", "tf", 0.01)])
def test_width1_nets_of_depth_4_and_5_match_general_path_and_reference(method, convention, lr):
    """The width-1 group's exclusive products of the scalars s_2..s_N (3 and 4 of them at
    depth 4 and 5, the nets of fig5-left) against the general bmm path and nn.Linear +
    autograd; depth 2 shares the group, so the padded slots are exercised too."""
    X, y = problem(seed=21)
    common = {"convention": convention}
    runs = [
        Run(method, lr, depth=4, init="identity", init_scale=0.3, seed=1, **common),
        Run(method, lr, depth=5, init="identity", init_scale=0.3, seed=2, **common),
        Run(method, lr, depth=5, init_scale=0.6, seed=3, **common),
        Run(method, lr, depth=4, init_scale=0.6, seed=4, **common),
        Run(method, lr, depth=2, init_scale=0.6, seed=5, **common),
    ]
    fast = train(X, y, 4, runs, T, optimum=0.0, log_points=T + 1)
    general = train(X, y, 4, runs, T, optimum=0.0, log_points=T + 1, fast_width1=False)
    for f, g in zip(fast, general, strict=True):
        ref = reference_net(f.run, X, y, 4)
        assert ref[0] - ref[-1] > 1e-2 * ref[0], f"the test must move: {f.run.label()}"
        np.testing.assert_allclose(g.gap, ref, rtol=0, atol=1e-10, err_msg=g.run.label())
        np.testing.assert_allclose(f.gap, ref, rtol=0, atol=1e-10, err_msg=f.run.label())
        np.testing.assert_allclose(f.gap, g.gap, rtol=1e-12, atol=0, err_msg=f.run.label())


@pytest.mark.parametrize(("p", "gram"), [(2, True), (2, False), (3, False), (4, False)])
@pytest.mark.parametrize("k", [1, 2])
def test_engine_loss_and_gradient_are_those_of_losses_module(p, gram, k):
    """The engine's losses derive from losses.py: a depth-1 GD run's logged losses equal
    lp_loss along the iterates W_{t+1} = W_t - lr * dlp_loss/dW (torch autograd)."""
    from depthaccel.losses import lp_loss

    X, y = problem(k=k, seed=30 + k)
    runs = [Run("gd", 0.05, init_scale=0.5, seed=s) for s in range(2)]
    iters = 5
    res = train(X, y, p, runs, iters, optimum=0.0, log_points=iters + 1, gram=gram)
    for r in res:
        W = initial_factors(r.run, X.shape[1], k)[0].clone().requires_grad_(True)
        want = []
        for _ in range(iters + 1):
            pred = X @ W.T
            loss = lp_loss(pred[:, 0] if k == 1 else pred, y, p)
            want.append(loss.item())
            (G,) = torch.autograd.grad(loss, W)
            W = (W - 0.05 * G).detach().requires_grad_(True)
        assert want[0] - want[-1] > 1e-3 * want[0]
        np.testing.assert_allclose(r.gap, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("k", [1, 2])
def test_e2e_matches_preconditioner_loop(k):
    X, y = problem(k=k, seed=10 + k)
    runs = [
        Run("e2e", 0.02, depth=1, init_scale=0.5),
        Run("e2e", 0.02, depth=2, init_scale=0.5, seed=1),
        Run("e2e", 0.01, depth=2.5, init_scale=0.5, seed=2, weight_decay=0.02),
        Run("e2e", 0.01, depth=3, hidden=4, init="balanced", init_scale=0.5, seed=3),
        Run("e2e", 0.01, depth=2.5, hidden=(4, 3), init="identity", init_scale=0.1, seed=4),
    ]
    res = train(X, y, 4, runs, T, optimum=0.0, log_points=T + 1)
    for r in res:
        ref = reference_e2e(r.run, X, y, 4)
        np.testing.assert_allclose(r.gap, ref, rtol=0, atol=1e-10, err_msg=r.run.label())
        assert ref[0] - ref[-1] > 1e-3


def test_gram_form_matches_residual_form_p2():
    X, y = problem(k=2, seed=3)
    runs = net_runs("gd", "tf", 0.05) + [Run("e2e", 0.05, depth=2, init_scale=0.5)]
    gram = train(X, y, 2, runs, T, optimum=0.0, log_points=T + 1, thresholds=(0.2, 0.15))
    resid = train(
        X, y, 2, runs, T, optimum=0.0, log_points=T + 1, thresholds=(0.2, 0.15), gram=False
    )
    for a, b in zip(gram, resid, strict=True):
        np.testing.assert_allclose(a.gap, b.gap, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.gap, reference(a.run, X, y, 2), rtol=0, atol=1e-10)
        assert a.first_hit == b.first_hit


@pytest.mark.parametrize("p", [2, 3, 3.5])
def test_other_exponents_match_references(p):
    X, y = problem(k=2, seed=9)
    runs = net_runs("gd", "tf", 0.01)[:4] + [Run("adam", 0.01, depth=2, init_scale=0.5)]
    res = train(X, y, p, runs, 100, optimum=0.0, log_points=101, gram=False)
    for r in res:
        ref = reference(r.run, X, y, p, iters=100)
        np.testing.assert_allclose(r.gap, ref, rtol=0, atol=1e-10, err_msg=r.run.label())


def test_first_hit_is_exact_and_logging_subsamples():
    X, y = problem(seed=4)
    runs = [Run("gd", lr, depth=d, init_scale=0.5) for lr in (0.01, 0.03) for d in (1, 2, 3)]
    res = train(X, y, 4, runs, T, optimum=0.0, log_points=7, thresholds=(0.3, 0.25, 0.2, 1e-9))
    for r in res:
        ref = reference(r.run, X, y, 4)
        assert list(r.iters) == list(log_iterations(T, 7))
        np.testing.assert_allclose(r.gap, ref[r.iters], rtol=0, atol=1e-10)
        for thr, hit in r.first_hit.items():
            below = np.flatnonzero(ref < thr)
            assert hit == (int(below[0]) if below.size else None), (r.run.label(), thr)
        assert r.final_gap == r.gap[-1]
    hits = [h for r in res for h in r.first_hit.values() if h is not None]
    assert any(h not in set(res[0].iters) for h in hits)  # hits between the logged points
    assert any(h is None for r in res for h in r.first_hit.values())


def divergence_grid():
    good = [
        Run("gd", 0.01, depth=1, init_scale=0.5),
        Run("gd", 0.02, depth=2, init_scale=0.5),
        Run("gd", 0.02, depth=3, init_scale=0.5),
        Run("e2e", 0.02, depth=2, init_scale=0.5),
        Run("adam", 0.01, depth=2, hidden=3, init_scale=0.5),
    ]
    bad = [
        Run("gd", 3.0, depth=1, init_scale=0.5),
        Run("gd", 50.0, depth=3, init_scale=0.5),
        Run("e2e", 5.0, depth=2, init_scale=0.5),
        Run("gd", 2.0, depth=2, hidden=3, init_scale=0.5),
    ]
    return good, bad


def test_divergent_runs_are_frozen_and_do_not_disturb_others():
    X, y = problem(seed=5)
    good, bad = divergence_grid()
    kw = {"optimum": 0.0, "log_points": 31, "thresholds": (0.3, 0.2)}
    # Same slots, once holding divergent runs and once tame ones: the other runs' curves
    # must be bit-identical (nothing of a divergent run leaks into another row).
    tame = [replace(r, lr=r.lr * 1e-3) for r in bad]
    slots = [0, 3, 5, 8]
    mixed, control = list(good), list(good)
    for s, b, c in zip(slots, bad, tame, strict=True):
        mixed.insert(s, b)
        control.insert(s, c)
    both = train(X, y, 4, mixed, T, **kw)
    ctrl = train(X, y, 4, control, T, **kw)
    alone = train(X, y, 4, good, T, **kw)
    by_run = {r.run: r for r in both}
    by_ctrl = {r.run: r for r in ctrl}
    for a in alone:
        b, c = by_run[a.run], by_ctrl[a.run]
        assert np.array_equal(b.gap, c.gap)  # bit-identical
        assert b.first_hit == c.first_hit == a.first_hit
        assert not b.diverged
        # without them the BLAS's GEMM blocking changes with the number of rows: equal
        # up to round-off (bit-identical where the blocking allows it)
        np.testing.assert_allclose(b.gap, a.gap, rtol=1e-12, atol=0)
    for run in bad:
        r = by_run[run]
        ref = reference(run, X, y, 4)
        bad_t = np.flatnonzero(~(ref <= 1e6 * ref[0]))
        assert r.diverged and r.diverged_at == int(bad_t[0]), run.label()
        assert np.isnan(r.gap[r.iters >= r.diverged_at]).all()
        before = r.iters < r.diverged_at
        np.testing.assert_allclose(r.gap[before], ref[r.iters[before]], rtol=1e-10)
        assert math.isnan(r.final_gap)
    assert not any(r.diverged for r in ctrl)


def test_always_masked_path_equals_lazy_path():
    """On accelerators the engine masks every step (no host sync); same numbers."""
    X, y = problem(seed=5)
    good, bad = divergence_grid()
    runs = [*good, *bad, Run("adagrad", 0.05, depth=2, init_scale=0.5)]
    kw = {"optimum": 0.0, "log_points": 31, "thresholds": (0.3, 0.2)}
    lazy = train(X, y, 4, runs, T, **kw)
    masked = train(X, y, 4, runs, T, mask_every_step=True, **kw)
    for a, b in zip(lazy, masked, strict=True):
        assert np.array_equal(a.gap, b.gap, equal_nan=True)
        assert a.first_hit == b.first_hit and a.diverged_at == b.diverged_at


def test_divergent_run_parameters_and_state_stop_changing():
    X, y = problem(seed=5)
    _, bad = divergence_grid()
    bad = [*bad, Run("adam", 30.0, depth=2, hidden=3, init_scale=0.5)]
    for run in bad:
        states = []
        (r,) = train(X, y, 4, [run], T, optimum=0.0, checkpoint_every=150, checkpoint=states.append)
        assert r.diverged and r.diverged_at < 150, run.label()
        a, b = states[0]["groups"][0], states[1]["groups"][0]
        assert a.keys() == b.keys()
        for name in a:
            # frozen at the first iterate over the limit: finite and unchanged since
            assert torch.isfinite(a[name]).all(), (run.label(), name)
            assert torch.equal(a[name], b[name]), (run.label(), name)


def test_resume_equals_uninterrupted():
    X, y = problem(k=2, seed=6)
    good, bad = divergence_grid()
    runs = good + bad + [Run("adagrad", 0.05, depth=2, init_scale=0.5)]
    kw = {"optimum": 0.0, "log_points": 40, "thresholds": (0.5, 0.3)}
    states = []
    full = train(X, y, 4, runs, T, checkpoint_every=70, checkpoint=states.append, **kw)
    assert [s["t"] for s in states] == [70, 140, 210, 280]
    for st in (states[0], states[2]):
        buf = io.BytesIO()
        torch.save(st, buf)
        buf.seek(0)
        st = torch.load(buf, weights_only=False)
        part = train(X, y, 4, runs, T, resume=st, **kw)
        for a, b in zip(full, part, strict=True):
            assert np.array_equal(a.gap, b.gap, equal_nan=True)
            assert a.first_hit == b.first_hit
            assert a.diverged_at == b.diverged_at
    with pytest.raises(ValueError, match="does not match"):
        train(X, y, 4, runs[:-1], T, resume=states[0], **kw)
    with pytest.raises(ValueError, match="does not match"):
        train(X, y, 4, runs, T + 1, resume=states[0], **kw)


def test_float32_tracks_float64():
    X, y = problem(seed=7)
    runs = net_runs("gd", "tf", 0.02)
    r64 = train(X, y, 4, runs, T, optimum=0.0, log_points=11)
    r32 = train(X, y, 4, runs, T, optimum=0.0, log_points=11, dtype=torch.float32)
    for a, b in zip(r64, r32, strict=True):
        assert b.gap.dtype == np.float64
        np.testing.assert_allclose(b.gap, a.gap, rtol=1e-4)


def test_gap_uses_optimum_and_default_optimum():
    from depthaccel.losses import lp_optimum

    X, y = problem(seed=8)
    runs = [Run("gd", 0.02, depth=2, init_scale=0.5)]
    opt = lp_optimum(X, y, 4)
    a = train(X, y, 4, runs, 50, log_points=51)[0]
    b = train(X, y, 4, runs, 50, optimum=opt, log_points=51)[0]
    c = train(X, y, 4, runs, 50, optimum=0.0, log_points=51)[0]
    np.testing.assert_array_equal(a.gap, b.gap)
    np.testing.assert_allclose(a.gap, c.gap - opt.loss, rtol=0, atol=1e-15)


def test_run_validation_key_and_label():
    r = Run("gd", 0.1, depth=3, hidden=(4, 5))
    assert json.loads(json.dumps(r.config_dict()))["hidden"] == [4, 5]
    assert r.label() == "depth-3 GD (width [4, 5])"
    assert Run("gd", 0.1, depth=3).label() == "depth-3 GD (width 1)"
    assert Run("adam", None).effective_lr == 1e-3
    assert Run("adadelta", None, convention="torch").effective_lr == 1.0
    assert Run("e2e", 0.1, depth=2.5).net_depth == 3
    with pytest.raises(ValueError, match="unknown method"):
        Run("sgd", 0.1)
    with pytest.raises(ValueError, match="integer"):
        Run("gd", 0.1, depth=2.5)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Run("adam", 0.1, hparams=(("rho", 0.9),))
    with pytest.raises(ValueError, match="lr"):
        Run("gd", None)
    with pytest.raises(ValueError, match="lr"):
        Run("gd", -1.0)
    with pytest.raises(ValueError, match="hidden"):
        Run("gd", 0.1, depth=3, hidden=(2,))
    with pytest.raises(ValueError, match="init"):
        Run("gd", 0.1, init="zeros")


def test_bad_inputs_are_clear_errors():
    X, y = problem()
    run = [Run("gd", 0.1)]
    Xn = X.clone()
    Xn[1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        train(Xn, y, 4, run, 10, optimum=0.0)
    with pytest.raises(ValueError, match="y must have shape"):
        train(X, y[:-2], 4, run, 10, optimum=0.0)
    with pytest.raises(ValueError, match="no runs"):
        train(X, y, 4, [], 10, optimum=0.0)
    with pytest.raises(ValueError, match="iters"):
        train(X, y, 4, run, -1, optimum=0.0)
    with pytest.raises(ValueError, match="thresholds"):
        train(X, y, 4, run, 10, optimum=0.0, thresholds=(0.0,))
    with pytest.raises(ValueError, match="p must be"):
        train(X, y, 1.0, run, 10, optimum=0.0)
    with pytest.raises(ValueError, match="Gram"):
        train(X, y, 4, run, 10, optimum=0.0, gram=True)


def test_silent_by_default_and_progress_bar(capsys):
    X, y = problem()
    train(X, y, 4, [Run("gd", 0.1)], 20, optimum=0.0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    train(X, y, 4, [Run("gd", 0.1)], 20, optimum=0.0, progress=True)
    assert "20/20" in capsys.readouterr().err


def test_log_iterations():
    it = log_iterations(1000, 11)
    assert list(it) == list(range(0, 1001, 100))
    it = log_iterations(10**6, 50, log_scale=True)
    assert it[0] == 0 and it[-1] == 10**6 and np.all(np.diff(it) > 0) and it[1] == 1
    assert list(log_iterations(3, 1000)) == [0, 1, 2, 3]
