"""The engine's groups: grouping of runs, W_e = product of the factors (Eq. 5), and one
gradient step of each kind of group against torch autograd on the factors."""

import torch

from depthaccel.train import Run
from depthaccel.train.groups import (
    E2EGroup,
    NetGroup,
    Width1Group,
    batch_signature,
    build_groups,
    initial_factors,
)
from depthaccel.update import end_to_end_update

DEFAULT_DTYPE = torch.float64
D, LR = 5, 0.1


def product(factors):
    W = factors[0]
    for f in factors[1:]:
        W = f @ W
    return W


def test_batch_signature():
    w1 = [Run("gd", 0.1, depth=n) for n in (1, 2, 4, 5)]
    assert len({batch_signature(r, D, 1) for r in w1}) == 1  # one width-1 group
    assert len({batch_signature(r, D, 1, fast_width1=False) for r in w1}) == 4
    assert batch_signature(w1[2], D, 2)[0] == "net"  # two outputs: general path
    assert batch_signature(Run("gd", 0.1, depth=2, hidden=3), D, 1)[0] == "net"
    assert batch_signature(Run("adam", None, depth=2), D, 1) != batch_signature(
        Run("adam", None, depth=2, convention="torch"), D, 1
    )
    e = [Run("e2e", 0.1, depth=n) for n in (2, 2.5, 2.5)]
    assert len({batch_signature(r, D, 1) for r in e}) == 2  # e2e: one group per depth


def test_build_groups_rows_and_initial_we():
    runs = [
        Run("gd", 0.1, depth=3, init_scale=0.5),
        Run("e2e", 0.1, depth=2, init_scale=0.5, seed=1),
        Run("gd", 0.1, depth=2, init_scale=0.5, seed=2),
        Run("gd", 0.1, depth=2, hidden=3, init_scale=0.5, seed=3),
    ]
    groups, row_of = build_groups(runs, D, 1, device="cpu", dtype=torch.float64)
    assert [type(g) for g in groups] == [Width1Group, E2EGroup, NetGroup]
    assert sorted(row_of.tolist()) == [0, 1, 2, 3]
    We = torch.zeros(4, 1, D)
    for g in groups:
        g.write_we(We[g.rows])
        assert all(row_of[runs.index(r)] in range(g.rows.start, g.rows.stop) for r in g.runs)
    for i, r in enumerate(runs):
        want = product(initial_factors(r, D, 1))  # Eq. 5
        torch.testing.assert_close(We[row_of[i]], want, rtol=1e-14, atol=0)


def autograd_step(run, k, G):
    """GD on the factors for a loss with dL/dW_e = G: W_j - lr * dL/dW_j (autograd)."""
    fs = [f.clone().requires_grad_(True) for f in initial_factors(run, D, k)]
    (product(fs) * G).sum().backward()
    return [(f - LR * f.grad).detach() for f in fs]


def test_one_step_of_each_group_equals_autograd():
    g = torch.Generator().manual_seed(0)
    G1 = torch.randn(1, 1, D, generator=g)
    G2 = torch.randn(1, 2, D, generator=g)
    for depth in (2, 4, 5):  # width 1: the scalars' exclusive products
        run = Run("gd", LR, depth=depth, init_scale=0.7, seed=depth)
        (grp,), _ = build_groups([run], D, 1, device="cpu", dtype=torch.float64)
        grp.step(G1, None, 0)
        want = autograd_step(run, 1, G1[0])
        st = grp.tensors()
        torch.testing.assert_close(st["v"][0], want[0][0], rtol=1e-13, atol=1e-15)
        got_s = st["S"][0, : depth - 1]
        torch.testing.assert_close(got_s, torch.stack([w.reshape(()) for w in want[1:]]))
    run = Run("gd", LR, depth=3, hidden=(4, 3), init_scale=0.7, seed=9)
    (grp,), _ = build_groups([run], D, 2, device="cpu", dtype=torch.float64)
    grp.step(G2, None, 0)
    want = autograd_step(run, 2, G2[0])
    for j, w in enumerate(want):
        torch.testing.assert_close(grp.tensors()[f"W{j + 1}"][0], w, rtol=1e-13, atol=1e-15)
    run = Run("e2e", LR, depth=2.5, init_scale=0.7, seed=3, weight_decay=0.1)
    (grp,), _ = build_groups([run], D, 2, device="cpu", dtype=torch.float64)
    W0 = product(initial_factors(run, D, 2))
    grp.step(G2, None, 0)
    want = W0 - LR * end_to_end_update(W0, G2[0], depth=2.5, weight_decay=0.1)
    torch.testing.assert_close(grp.tensors()["W"][0], want, rtol=1e-14, atol=1e-16)


def test_masked_runs_do_not_move():
    runs = [Run("adam", 0.1, depth=3, init_scale=0.5, seed=s) for s in range(3)]
    (grp,), _ = build_groups(runs, D, 1, device="cpu", dtype=torch.float64)
    before = {n: t.clone() for n, t in grp.tensors().items()}
    active = torch.tensor([True, False, True])
    grp.step(torch.randn(3, 1, D, generator=torch.Generator().manual_seed(1)), active, 0)
    for n, t in grp.tensors().items():
        assert torch.equal(t[1], before[n][1]), n
        assert not torch.equal(t[0], before[n][0]), n


def test_near_zero_balanced_init_same_end_to_end_without_imbalance():
    # fig2's control: the balanced factors of the near-zero net's own W_e
    for depth, hidden in ((2, 1), (3, 1), (3, 4)):
        nz = initial_factors(Run("gd", LR, depth=depth, hidden=hidden, init_scale=0.05), D, 1)
        bal = initial_factors(
            Run("gd", LR, depth=depth, hidden=hidden, init="near_zero_balanced", init_scale=0.05),
            D,
            1,
        )
        W, Wb = product(nz), product(bal)
        assert torch.allclose(Wb, W, rtol=1e-12, atol=1e-15 * W.abs().max())
        # Eq. 7 for the control (to round-off), not for the near-zero net itself
        for j in range(depth - 1):
            lhs, rhs = bal[j + 1].T @ bal[j + 1], bal[j] @ bal[j].T
            assert torch.allclose(lhs, rhs, atol=1e-14 * rhs.abs().max())
            imbalance = (nz[j + 1].T @ nz[j + 1] - nz[j] @ nz[j].T).abs().max()
            assert imbalance > 1e-3 * (nz[j] @ nz[j].T).abs().max()
    # the Eq. 12 run of the control starts from the same W_e as the near-zero one
    e2e = initial_factors(Run("e2e", LR, depth=3, init="near_zero_balanced", init_scale=0.05), D, 1)
    assert torch.allclose(
        product(e2e),
        product(initial_factors(Run("e2e", LR, depth=3, init_scale=0.05), D, 1)),
        rtol=1e-12,
    )


def test_keep_selects_rows_and_full_tensors_keep_the_dropped_ones():
    """Compaction of a group: the kept runs step exactly as in the masked group, the
    dropped runs' tensors stay as they were, in their rows, in full_tensors."""
    g = torch.Generator().manual_seed(2)
    cases = [
        ([Run("adam", 0.05, depth=d, init_scale=0.5, seed=s) for s, d in enumerate((1, 2, 3, 4, 2))], 1),
        ([Run("gd", 0.05, depth=3, hidden=(4, 2), init_scale=0.5, seed=s, weight_decay=0.01 * s)
          for s in range(5)], 2),
        ([Run("adadelta", 1.0, depth=2, hidden=3, init_scale=0.5, seed=s,
              hparams=(("rho", 0.9 + 0.01 * s),)) for s in range(5)], 1),
        ([Run("e2e", 0.05, depth=2.5, init_scale=0.5, seed=s, weight_decay=0.01 * s)
          for s in range(5)], 2),
    ]  # fmt: skip
    for runs, k in cases:
        (a,), _ = build_groups(runs, D, k, device="cpu", dtype=torch.float64)
        (b,), _ = build_groups(runs, D, k, device="cpu", dtype=torch.float64)
        Gs = [torch.randn(5, k, D, generator=g, dtype=torch.float64) for _ in range(6)]
        for t in range(2):
            a.step(Gs[t], None, t)
            b.step(Gs[t], None, t)
        frozen = {n: v.clone() for n, v in a.tensors().items()}
        kept = torch.tensor([0, 2, 3])
        a.keep(kept)  # runs 1 and 4 leave
        assert a.size == 3
        mask = torch.tensor([True, False, True, True, False])
        for t in range(2, 5):
            a.step(Gs[t][kept], None, t)
            b.step(Gs[t], mask, t)
        a.keep(torch.tensor([0, 2]))  # run 2 leaves too, later
        frozen2 = {n: v.clone() for n, v in b.tensors().items()}
        mask[2] = False
        a.step(Gs[5][[0, 3]], None, 5)
        b.step(Gs[5], mask, 5)
        full, masked = a.full_tensors(), b.tensors()
        assert full.keys() == masked.keys() == frozen.keys()
        for n in full:
            assert full[n].shape == masked[n].shape, n
            torch.testing.assert_close(full[n], masked[n], rtol=1e-14, atol=0)
            for i in (1, 4):
                assert torch.equal(full[n][i], frozen[n][i]), (runs[0].method, n)
            assert torch.equal(full[n][2], frozen2[n][2]), (runs[0].method, n)
            assert not torch.equal(full[n][3], frozen[n][3]), (runs[0].method, n)  # moved
        We = torch.empty(2, k, D, dtype=torch.float64)
        a.write_we(We)
        Wb = torch.empty(5, k, D, dtype=torch.float64)
        b.write_we(Wb)
        torch.testing.assert_close(We, Wb[[0, 3]], rtol=1e-14, atol=0)
