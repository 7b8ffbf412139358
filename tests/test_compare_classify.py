"""Classification in `depthaccel compare` (--loss ce): the softmax cross-entropy loss, its
optimum, the batched trainer on it, and the command, against independent references."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from depthaccel.cli import main
from depthaccel.losses import SoftmaxCE, ce_accuracy, ce_loss_grad, ce_optimum
from depthaccel.preconditioner import end_to_end_direction
from depthaccel.train import Run, initial_factors, train

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def blobs(m=60, d=4, k=3, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(m) % k
    centres = rng.standard_normal((k, d)) * spread
    X = centres[y] + rng.standard_normal((m, d))
    return (X - X.mean(0)) / X.std(0), y


def np_ce(W, X, y, lam):
    """Plain float64 numpy loop: loss and gradient of the softmax cross-entropy."""
    m = X.shape[0]
    loss, G = 0.0, np.zeros_like(W)
    for i in range(m):
        z = W @ X[i]
        z = z - z.max()
        e = np.exp(z)
        s = e / e.sum()
        loss += np.log(e.sum()) - z[y[i]]
        s[y[i]] -= 1.0
        G += np.outer(s, X[i])
    return loss / m + 0.5 * lam * (W * W).sum(), G / m + lam * W


def test_batched_loss_and_gradient_match_the_numpy_loop_per_run():
    X, y = blobs(m=37, d=5, k=4)
    rng = np.random.default_rng(1)
    Ws = rng.standard_normal((2, 3, 4, 5))  # two leading batch dimensions
    lam = 0.03
    Wt = torch.from_numpy(Ws)
    out = torch.full_like(Wt, float("nan"))
    loss, G = ce_loss_grad(Wt, torch.from_numpy(X), torch.from_numpy(y), lam, out=out)
    assert G is out
    for i in range(2):
        for j in range(3):
            ref_loss, ref_G = np_ce(Ws[i, j], X, y, lam)
            assert float(loss[i, j]) == pytest.approx(ref_loss, rel=1e-13)
            np.testing.assert_allclose(G[i, j].numpy(), ref_G, rtol=1e-12, atol=1e-15)


def test_accuracy_matches_a_first_index_argmax_loop():
    X, y = blobs(m=41, d=3, k=5)
    rng = np.random.default_rng(2)
    Ws = rng.standard_normal((6, 5, 3))
    Ws[1] = 0.0  # every score ties: the first class wins
    Ws[2, 3] = Ws[2, 1]  # classes 1 and 3 tie on every row
    Ws[3, 0, 0] = np.nan  # class 0's score is NaN wherever x_0 != 0
    Ws[4] = np.round(Ws[4])  # scores tie on some rows
    Xr = np.round(X)
    acc = ce_accuracy(torch.from_numpy(Ws), torch.from_numpy(Xr), torch.from_numpy(y))
    for r in range(6):
        right = 0
        for i in range(len(y)):
            z = list(Ws[r] @ Xr[i])
            if any(np.isnan(z)):
                continue  # a NaN score counts as wrong
            right += z.index(max(z)) == y[i]  # first index of the largest score
        assert float(acc[r]) == right / len(y), r
    assert float(acc[1]) == np.mean(y == 0)
    # the loss kernel's accuracies come from its own logits: the same numbers
    from_loss = torch.full((6,), -1.0, dtype=torch.float64)
    Wt = torch.from_numpy(Ws)
    ce_loss_grad(Wt, torch.from_numpy(Xr), torch.from_numpy(y), 0.1, accuracy_out=from_loss)
    assert torch.equal(from_loss, acc)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logged_accuracy_survives_compaction_and_float32(dtype):
    """Runs that diverge leave the tensor program (compaction moves the others to new
    slots); the logged accuracies of those left are still those of a numpy loop, and in
    float32 they come from float64 end-to-end matrices."""
    X, y = blobs(m=30, d=4, k=3, seed=3)
    lam, T = 1e-2, 12
    lrs = [0.5, 1e9, 0.2, 1e9, 0.9, 0.05, 1e9, 0.3]
    runs = [Run("gd", lr, init_scale=0.3, seed=i) for i, lr in enumerate(lrs)]
    res = train(
        X,
        y.astype(float),
        SoftmaxCE(3, lam),
        runs,
        T,
        optimum=0.0,
        log_points=T + 1,
        compact_every=2,
        dtype=dtype,
    )
    assert [r.diverged for r in res] == [lr > 1 for lr in lrs]
    for r in res:
        if r.diverged:
            assert np.isnan(r.accuracy[-1])
            continue
        W = initial_factors(r.run, 4, 3)[0].numpy().astype(np.float64)
        acc = []
        for _ in range(T + 1):
            acc.append(np.mean((W @ X.T).argmax(0) == y))
            W = W - r.run.lr * np_ce(W, X, y, lam)[1]
        if dtype == torch.float64:
            np.testing.assert_array_equal(r.accuracy, acc)
        else:  # float32 iterates: the same classes but for near-ties
            assert np.abs(r.accuracy - acc).max() <= 2 / len(y)


def test_depth1_gd_matches_a_numpy_loop():
    X, y = blobs()
    lam, lr, T = 1e-2, 0.5, 30
    runs = [Run("gd", lr, init_scale=0.3, seed=s) for s in range(2)]
    res = train(X, y.astype(float), SoftmaxCE(3, lam), runs, T, optimum=0.0, log_points=T + 1)
    for r in res:
        W = initial_factors(r.run, 4, 3)[0].numpy().copy()
        want, acc = [], []
        for _ in range(T + 1):
            loss, G = np_ce(W, X, y, lam)
            want.append(loss)
            acc.append(np.mean((W @ X.T).argmax(0) == y))
            W = W - lr * G
        assert want[0] - want[-1] > 0.1 * want[0]
        np.testing.assert_allclose(r.gap, want, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(r.accuracy, acc)


@pytest.mark.parametrize("loader", ["load_wine", "load_breast_cancer"])
@pytest.mark.parametrize("lam", [1e-3, 1e-1])
def test_optimum_matches_scikit_learn(loader, lam):
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression

    X, y = getattr(datasets, loader)(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    m, k = X.shape[0], len(np.unique(y))
    opt = ce_optimum(X, y, k, lam)
    assert opt.bounded and opt.grad_norm < 1e-12
    # scikit-learn minimises (1/2)||W||^2 + C sum_i CE_i: C = 1/(lam m) gives our L. For
    # two classes it fits one vector w = w_1 - w_0 (a sigmoid) and our symmetric
    # optimum has w_0 = -w_1 = -w/2, whose L2 term is lam/4 ||w||^2: C = 2/(lam m).
    C = 1 / (lam * m) if k > 2 else 2 / (lam * m)
    clf = LogisticRegression(C=C, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y)
    W = clf.coef_ if k > 2 else np.vstack([-clf.coef_ / 2, clf.coef_ / 2])
    L_sk, _ = ce_loss_grad(torch.from_numpy(W), torch.from_numpy(X), torch.from_numpy(y), lam)
    assert opt.loss <= float(L_sk) + 1e-15  # ours is at least as low
    assert opt.loss == pytest.approx(float(L_sk), rel=1e-9)


def test_unregularised_separable_data_has_no_minimiser():
    X, y = blobs(spread=8.0)
    opt = ce_optimum(X, y, 3, 0.0)
    assert not opt.bounded and opt.loss == 0.0
    X2, y2 = blobs(spread=0.2, seed=3)  # overlapping classes: a minimiser exists
    opt2 = ce_optimum(X2, y2, 3, 0.0)
    assert opt2.bounded and opt2.loss > 0.1 and opt2.grad_norm < 1e-10


def test_batched_e2e_step_matches_end_to_end_direction():
    X, y = blobs(d=5)
    lam = 1e-2
    runs = [
        Run("e2e", lr, depth=N, hidden=3, init_scale=0.5, seed=s)
        for s, (lr, N) in enumerate([(0.2, 2), (0.5, 2), (0.3, 3)])
    ]
    res = train(X, y.astype(float), SoftmaxCE(3, lam), runs, 1, optimum=0.0, log_points=2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for r in res:
        f = initial_factors(r.run, 5, 3)
        W = f[0]
        for w in f[1:]:
            W = w @ W
        _, G = ce_loss_grad(W, Xt, yt, lam)
        W1 = W - r.run.lr * end_to_end_direction(W, G, r.run.depth)
        assert r.gap[1] == pytest.approx(float(ce_loss_grad(W1, Xt, yt, lam)[0]), rel=1e-12)


def test_balanced_net_follows_the_e2e_scheme_at_small_rates():
    """Theorem 1 on the ce loss: GD on a balanced depth-2 net (width k) and Eq. 10 agree to
    O(lr) over a fixed time lr x T: halving lr halves the difference."""
    X, y = blobs(d=5)
    diffs = []
    for lr, T in ((4e-3, 100), (2e-3, 200)):
        kw = dict(depth=2, hidden=3, init="balanced", init_scale=0.7, seed=0)
        net, e2e = train(
            X,
            y.astype(float),
            SoftmaxCE(3, 1e-2),
            [Run("gd", lr, **kw), Run("e2e", lr, **kw)],
            T,
            optimum=0.0,
        )
        assert net.gap[0] == pytest.approx(e2e.gap[0], rel=1e-14)
        assert net.final_gap < 0.95 * net.gap[0]
        diffs.append(abs(net.final_gap - e2e.final_gap))
    assert 1.6 < diffs[0] / diffs[1] < 2.4, diffs


def test_checkpoint_resume_is_bit_identical():
    X, y = blobs(d=5)
    ce = SoftmaxCE(3, 1e-2)
    runs = [
        Run("gd", 0.5, depth=2, hidden=3, init_scale=0.3),
        Run("adam", 0.05),
        Run("e2e", 0.5, depth=2, hidden=3),
    ]
    whole = train(X, y.astype(float), ce, runs, 40, log_points=9)
    saved = []
    train(
        X, y.astype(float), ce, runs, 40, log_points=9, checkpoint_every=15, checkpoint=saved.append
    )
    resumed = train(X, y.astype(float), ce, runs, 40, log_points=9, resume=saved[1])  # t = 30
    for a, b in zip(whole, resumed, strict=True):
        assert np.array_equal(a.gap, b.gap) and np.array_equal(a.accuracy, b.accuracy)
        assert a.first_hit == b.first_hit


# ------------------------------------------------------------------------- the command


def write_classes(path: Path, labels=None, m=60, d=4, seed=0, spread=1.5) -> Path:
    X, y = blobs(m=m, d=d, seed=seed, spread=spread)
    names = ["setosa", "versicolor", "virginica"]
    labels = [names[i] for i in y] if labels is None else labels
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"f{j}" for j in range(d)] + ["species"])
        for row, lab in zip(X, labels, strict=True):
            w.writerow([*(repr(float(v)) for v in row), lab])
    return path


def run_cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    return code, cap.out, cap.err


QUICK = ["--depths", "1,2", "--methods", "gd,e2e,adam", "--lrs", "0.1,0.3,1", "--iters", "150"]


def test_compare_ce_end_to_end(tmp_path, capsys):
    table = write_classes(tmp_path / "iris-like.csv")
    out = tmp_path / "o"
    argv = ["compare", "--data", table, "--target", "species", "--loss", "ce", "--out", out]
    argv += [*QUICK, "--no-progress"]
    code, text, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "softmax cross-entropy (3 classes, l2 1e-3)" in text
    report = (out / "REPORT.md").read_text()
    assert "3 classes: `setosa` (20), `versicolor` (20), `virginica` (20)" in report
    assert "final train accuracy" in report and "gradient norm there" in report
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 15 and all(0 <= float(r["final_accuracy"]) <= 1 for r in rows)
    # the numbers are the trainer's on the standardised features and class indices
    from depthaccel.compare.classes import load_class_table

    ct = load_class_table(table, "species")
    assert ct.classes == ["setosa", "versicolor", "virginica"]
    L = ce_optimum(ct.X, ct.labels, 3, 1e-3).loss
    (ref,) = train(
        ct.X, ct.labels.astype(float), SoftmaxCE(3, 1e-3), [Run("gd", 0.3, depth=2, hidden=3)], 150
    )
    (row,) = [r for r in rows if (r["method"], r["depth"], r["lr"]) == ("gd", "2", "0.3")]
    assert float(row["final_gap"]) == pytest.approx(ref.final_gap, rel=1e-9)
    assert ref.gap[0] == pytest.approx(
        float(
            ce_loss_grad(
                torch.zeros(3, 4, dtype=torch.float64),
                torch.from_numpy(ct.X),
                torch.from_numpy(ct.labels),
                1e-3,
            )[0]
        )
        - L,
        abs=1e-2,
    )
    curves = (out / "curves.csv").read_text()
    assert curves.splitlines()[0] == "run,iteration,gap,accuracy"
    # store and resume as for regression: the same command reuses every run, accuracies
    # included
    code, text, _ = run_cli(argv, capsys)
    assert code == 0 and "15 runs: 15 reused from the store, 0 trained" in text
    assert (out / "curves.csv").read_text() == curves


def test_l2_zero_on_separable_classes_reports_the_loss(tmp_path, capsys):
    table = write_classes(tmp_path / "sep.csv", spread=8.0)
    out = tmp_path / "o"
    argv = ["compare", "--data", table, "--loss", "ce", "--l2", "0", "--out", out, *QUICK]
    code, text, err = run_cli([*argv, "--no-progress"], capsys)
    assert code == 0, err
    assert "linearly separable" in text and "not a gap" in text
    report = (out / "REPORT.md").read_text()
    assert "every number below is the loss itself" in report and "| final loss |" in report


@pytest.mark.parametrize(
    "labels, extra, code, match",
    [
        (["a"] * 60, [], 1, "holds a single class 'a'"),
        (
            ["a"] * 30 + ["b"] * 29 + ["c"],
            [],
            1,
            "class(es) ['c'] of column 'species' have a single row",
        ),
        ([str(i % 3 + 0.5) for i in range(60)], [], 1, "are not integers (e.g. '0.5'"),
        ([str(i) for i in range(60)], [], 1, "60 classes for 60 rows"),
        (
            ["a", "nan"] + ["b"] * 58,
            [],
            1,
            "missing (NaN or empty) labels in column 'species', rows 2",
        ),
        (["a", ""] + ["b"] * 58, [], 1, "missing (NaN or empty) labels"),
        (None, ["--l2", "-1"], 2, "--l2 must be a finite number >= 0"),
        (None, ["--l2", "inf"], 2, "--l2 must be a finite number >= 0"),
        (None, ["--l2", "nan"], 2, "--l2 must be a finite number >= 0"),
        (None, ["--target", "f0,f0"], 2, "the ce loss takes one target column"),
    ],
)
def test_bad_classification_input_is_one_line_and_writes_nothing(
    tmp_path, capsys, labels, extra, code, match
):
    table = write_classes(tmp_path / "t.csv", labels=labels)
    out = tmp_path / "o"
    argv = ["compare", "--data", table, "--loss", "ce", "--out", out, *extra, "--iters", "5"]
    got, _, err = run_cli(argv, capsys)
    last = err.strip().splitlines()[-1]
    assert got == code and match in last, err
    assert not out.exists()


def test_l2_with_a_regression_loss_is_refused(tmp_path, capsys):
    table = write_classes(tmp_path / "t.csv", labels=[str(i % 3) for i in range(60)])
    code, _, err = run_cli(
        ["compare", "--data", table, "--l2", "0.1", "--out", tmp_path / "o"], capsys
    )
    assert code == 2 and "l2 applies to the ce loss only" in err


def test_ce_roundoff_floor_bounds_the_noise_at_the_optimum():
    from depthaccel.compare.floor import ce_roundoff_floor

    X, y = blobs(d=5)
    lam = 1e-2
    opt = ce_optimum(X, y, 3, lam)
    floor = ce_roundoff_floor(X, y, opt.W, lam)
    rng = np.random.default_rng(0)
    eps = np.finfo(np.float64).eps
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    noise = [
        abs(
            float(
                ce_loss_grad(
                    torch.from_numpy(opt.W * (1 + eps * rng.uniform(-1, 1, opt.W.shape))),
                    Xt,
                    yt,
                    lam,
                )[0]
            )
            - opt.loss
        )
        for _ in range(20)
    ]
    assert max(noise) < floor < 1e-12 * opt.loss  # above round-off, far below real gaps
    moved = float(ce_loss_grad(torch.from_numpy(opt.W + 1e-4), Xt, yt, lam)[0]) - opt.loss
    assert moved > 1e3 * floor


@pytest.mark.slow  # a Ray cluster: ~25 s on the busy 2-core machine
def test_ce_on_ray_equals_the_local_run(tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("ray")
    table = write_classes(tmp_path / "t.csv")
    env = dict(os.environ, RAY_ADDRESS="")
    outs = {}
    for name, extra in (("local", []), ("ray", ["--jobs", "2"])):
        cmd = [sys.executable, "-m", "depthaccel.cli", "compare", "--data", str(table)]
        cmd += ["--loss", "ce", "--out", str(tmp_path / name), *QUICK, "--no-progress", *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        outs[name] = tmp_path / name
    for f in ("curves.csv", "summary.csv"):
        assert (outs["local"] / f).read_bytes() == (outs["ray"] / f).read_bytes(), f
