"""l_p loss and its Newton optimum against independent float64 references."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch

from depthaccel.losses import lp_loss, lp_optimum, lp_sum, lp_sum_and_phi_

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def problem(m=50, d=6, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    w = rng.standard_normal((d, k))
    y = X @ w + 0.5 * rng.standard_normal((m, k))
    return X, (y[:, 0] if k == 1 else y)


def loop_loss(pred, y, p):
    pred = np.asarray(pred).reshape(len(y), -1)
    y = np.asarray(y).reshape(len(y), -1)
    total = 0.0
    for i in range(pred.shape[0]):
        for c in range(pred.shape[1]):
            total += abs(pred[i, c] - y[i, c]) ** p / p
    return total / pred.shape[0]


@pytest.mark.parametrize("p", [2, 3.5, 4, 6])
@pytest.mark.parametrize("k", [1, 2])
def test_lp_loss_matches_loop(p, k):
    X, y = problem(k=k)
    pred = X @ np.ones((6, k)) * 0.3
    pred = pred[:, 0] if k == 1 else pred
    got = lp_loss(torch.from_numpy(pred), torch.from_numpy(y), p)
    assert got.item() == pytest.approx(loop_loss(pred, y, p), rel=1e-13)


def test_lp_loss_batched_and_errors():
    X, y = problem(k=2)
    yt = torch.from_numpy(y)
    preds = torch.stack([yt + 1, yt * 0.5])
    got = lp_loss(preds, yt, 4)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(2 * 1 / 4, rel=1e-14)  # |1|^4/4 summed over 2 outputs
    with pytest.raises(ValueError, match="p must be"):
        lp_loss(yt, yt, 1.5)
    with pytest.raises(ValueError, match="shape"):
        lp_loss(yt[:, :1], yt, 4)


@pytest.mark.parametrize("p", [2, 3, 3.5, 4])
@pytest.mark.parametrize("with_aux", [False, True])
def test_lp_sum_and_phi_match_loops(p, with_aux):
    r = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 7)))
    want_sum = [sum(abs(v) ** p for v in row) for row in r.tolist()]
    want_phi = [[abs(v) ** (p - 2) * v for v in row] for row in r.tolist()]
    np.testing.assert_allclose(lp_sum(r, p).numpy(), want_sum, rtol=1e-14)
    # phi is the derivative of (1/p)|r|^p (central differences)
    h = 1e-6
    fd = ((r + h).abs() ** p - (r - h).abs() ** p) / (2 * h * p)
    np.testing.assert_allclose(want_phi, fd.numpy(), rtol=1e-8, atol=1e-12)
    work = r.clone()
    aux = torch.empty_like(r) if with_aux else None
    total, phi = lp_sum_and_phi_(work, p, aux=aux)
    np.testing.assert_allclose(total.numpy(), want_sum, rtol=1e-13)
    np.testing.assert_allclose(phi.numpy(), want_phi, rtol=1e-14)
    if p in (2, 4):
        assert phi.data_ptr() == work.data_ptr()  # in place
    elif with_aux:
        assert phi.data_ptr() == aux.data_ptr()


def grad_autograd(X, y, w, p):
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    wt = torch.tensor(w, requires_grad=True)
    pred = Xt @ wt
    loss = lp_loss(pred, yt, p)
    loss.backward()
    return loss.item(), wt.grad.numpy()


@pytest.mark.parametrize("p", [2, 3, 4])
@pytest.mark.parametrize("k", [1, 2])
def test_lp_optimum_certificate_and_scipy(p, k):
    X, y = problem(k=k, seed=p)
    opt = lp_optimum(X, y, p)
    assert opt.w.shape == ((6,) if k == 1 else (6, k))
    loss, g = grad_autograd(X, y, opt.w, p)
    assert np.linalg.norm(g) < 1e-10
    assert opt.grad_norm < 1e-10
    assert opt.loss == pytest.approx(loss, rel=1e-13)

    # scipy's BFGS on the same objective, column by column (independent algorithm)
    Y = y.reshape(len(y), -1)
    ref_loss = 0.0
    for c in range(Y.shape[1]):

        def f(w, c=c):
            r = X @ w - Y[:, c]
            return np.mean(np.abs(r) ** p) / p, X.T @ (np.abs(r) ** (p - 2) * r) / len(r)

        res = scipy.optimize.minimize(
            f, np.zeros(6), jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10000}
        )
        wc = opt.w if k == 1 else opt.w[:, c]
        np.testing.assert_allclose(wc, res.x, atol=1e-6)
        ref_loss += res.fun
    assert opt.loss == pytest.approx(ref_loss, rel=1e-10)
    assert opt.loss <= ref_loss + 1e-15


def test_lp_optimum_p2_is_normal_equations():
    X, y = problem()
    opt = lp_optimum(X, y, 2)
    w = np.linalg.solve(X.T @ X, X.T @ y)
    np.testing.assert_allclose(opt.w, w, rtol=1e-11)
    assert opt.iterations == 0


def test_lp_optimum_errors():
    X, y = problem()
    Xd = X.copy()
    Xd[:, 3] = 2 * Xd[:, 1]
    with pytest.raises(ValueError, match="rank deficient"):
        lp_optimum(Xd, y, 4)
    with pytest.raises(ValueError, match="rank deficient"):
        lp_optimum(X[:4], y[:4], 4)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lp_optimum(Xn, y, 4)
    with pytest.raises(ValueError, match="y must have shape"):
        lp_optimum(X, y[:-1], 4)
    with pytest.raises(ValueError, match="p must be"):
        lp_optimum(X, y, 1)


@pytest.mark.skipif(not (DATA / "gas_sensor_drift").is_dir(), reason="shared data absent")
def test_lp_optimum_ethanol_l4():
    from depthaccel.data import load_ethanol

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared folder lacks two official batch files
        ds = load_ethanol(DATA)
    opt = lp_optimum(ds.X, ds.y, 4)
    _, g = grad_autograd(ds.X, ds.y, opt.w, 4)
    assert np.linalg.norm(g) < 1e-10
    assert opt.loss == pytest.approx(0.0554, abs=5e-4)  # GUIDE.md section 2


@pytest.mark.parametrize("p", [2.0, 3.0, 4.0])
def test_lp_hessian_matches_central_differences_of_the_loop_gradient(p):
    X, y = problem(m=30, d=4, seed=3)
    w = np.random.default_rng(4).standard_normal(4)

    def grad(v):  # the loop loss's gradient by central differences of the loss itself
        h = 1e-5
        return np.array(
            [
                (loop_loss(X @ (v + h * e), y, p) - loop_loss(X @ (v - h * e), y, p)) / (2 * h)
                for e in np.eye(4)
            ]
        )

    h = 1e-4
    fd = np.stack([(grad(w + h * e) - grad(w - h * e)) / (2 * h) for e in np.eye(4)])
    from depthaccel.losses import lp_hessian

    H = lp_hessian(X, y, w, p)
    assert H.shape == (4, 4) and H.dtype == np.float64
    np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-6 * np.abs(H).max())
    np.testing.assert_allclose(H, H.T, rtol=1e-14, atol=0)


def test_lp_hessian_rejects_bad_input():
    from depthaccel.losses import lp_hessian

    X, y = problem(m=10, d=3)
    with pytest.raises(ValueError, match="one output"):
        lp_hessian(X, np.stack([y, y], 1), np.zeros(3), 4)
    with pytest.raises(ValueError, match="w must have shape"):
        lp_hessian(X, y, np.zeros(4), 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        lp_hessian(X, y, np.array([0.0, np.nan, 0.0]), 4)
    with pytest.raises(ValueError):
        lp_hessian(X, y, np.zeros(3), 1.5)


def test_read_only_arrays_are_copied_without_torch_s_warning():
    # Arrays from Ray's object store are read-only: torch warns (once per process, so
    # checked in a fresh one) when a tensor shares their memory.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import warnings
        import numpy as np
        from depthaccel.experiments.sec7 import trajectory
        from depthaccel.losses import as_float64

        warnings.simplefilter("error")
        a = np.arange(6.0).reshape(2, 3)
        a.flags.writeable = False
        t = as_float64("a", a)
        assert t.tolist() == a.tolist()
        t[0, 0] = 7.0  # a copy: the array is untouched
        assert a[0, 0] == 0.0
        w0 = np.full(3, 0.5)
        w0.flags.writeable = False
        trajectory(np.array([1.0, -0.5, 2.0]), 1e-3, 2, w0, p=2, iters=3, points=4)
        b = np.ones(3)
        assert as_float64("b", b).data_ptr() == b.ctypes.data  # writable: shared
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
