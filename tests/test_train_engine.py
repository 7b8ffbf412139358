"""Compaction in the engine (``depthaccel.train.engine``): frozen runs leave the tensor
program, and nothing of any run's result changes, bit for bit.

The reference is the same call with ``compact=False`` (every frozen run carried, masked,
to the end: the engine before compaction). The engine's other tests (against one-run
references) are in ``test_train.py``. Grids mix every kind of group (width-1 nets of
depths 1-3, general nets, GD / Adam / AdaGrad / AdaDelta in both conventions, e2e at
depths 2 and 2.5) over rates across the stability edge, so runs diverge at many
different iterations; some groups have per-run hyperparameters (Adam's beta2,
AdaDelta's rho).
"""

import io

import numpy as np
import pytest
import torch

from depthaccel.sweep import dumps_state, loads_state
from depthaccel.train import Run, engine, train
from test_train import problem as train_problem

T = 200


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def problem(k=1, m=50, d=6, seed=5):
    """test_train's random regression problem, seed 5 by default."""
    return train_problem(k=k, m=m, d=d, seed=seed)


def grid(n_rates=12, lo=0.02, hi=3.0):
    runs = []
    for i, lr in enumerate(np.geomspace(lo, hi, n_rates)):
        lr = float(f"{lr:.3g}")
        c = {"init_scale": 0.5, "seed": i}
        rho = 0.95 if i % 2 else 0.9  # per-run hyperparameters within one group
        runs += [
            Run("gd", lr, depth=1, **c),
            Run("gd", lr, depth=3, **c),
            Run("gd", lr, depth=2, hidden=3, weight_decay=0.01, **c),
            Run("e2e", lr, depth=2, **c),
            Run("e2e", lr, depth=2.5, weight_decay=0.01, **c),
            Run("adam", lr / 4, depth=2, hidden=3, hparams=(("beta2", 0.99 + i % 2 / 200),), **c),
            Run("adam", lr / 4, depth=2, convention="torch", **c),
            Run("adagrad", lr, depth=3, hidden=(4, 2), **c),
            Run("adadelta", lr * 30, depth=2, convention="torch", hparams=(("rho", rho),), **c),
        ]
    return runs


KW = {"optimum": 0.0, "log_points": 41, "thresholds": (0.5, 0.3, 0.1)}


def assert_same_results(got, want):
    """Every result field equal; gaps bit-identical."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.run == b.run
        assert a.diverged == b.diverged and a.diverged_at == b.diverged_at, a.run.label()
        assert a.first_hit == b.first_hit, a.run.label()
        assert np.array_equal(a.iters, b.iters)
        assert np.array_equal(a.gap, b.gap, equal_nan=True), a.run.label()
        assert np.array_equal(a.final_gap, b.final_gap, equal_nan=True)


class Programs:
    """Records the size of every tensor program (``_Forward``) a call builds and how many
    iterations it ran: the compaction schedule, whatever the arithmetic."""

    def __init__(self, monkeypatch):
        self.log: list[list[int]] = []  # [rows, forward calls]
        outer = self
        base = engine._Forward

        class Recording(base):
            def __init__(self, prob, R, slots=None):
                super().__init__(prob, R, slots)
                self.entry = [R, 0]
                outer.log.append(self.entry)

            def __call__(self, accuracy=False):
                self.entry[1] += 1
                return super().__call__(accuracy)

        monkeypatch.setattr(engine, "_Forward", Recording)

    def take(self):
        out, self.log[:] = list(self.log), []
        return [tuple(e) for e in out]


def expected_programs(results, C, t0=0, iters=T, k=1):
    """The rule: after the update of iteration t (t a multiple of C, t < T), the runs
    frozen at or before t leave the program, unless 1 to 3 GEMM rows (runs x k) would be
    left; [(rows, iterations run)] from t0 on (a resumed call: after its first drop)."""
    div = np.array([r.diverged_at if r.diverged else np.iinfo(np.int64).max for r in results])
    out, start = [], 0
    size = len(div)
    for t in range(iters):
        left = int((div > t).sum())
        if t % C == 0 and left < size and (left == 0 or left * k >= 4):
            if t + 1 > t0:  # the programs of the iterations a resumed call runs
                out.append((size, t + 1 - max(start, t0)))
            size, start = left, t + 1
        if size == 0:
            break
    if size:
        out.append((size, iters + 1 - max(start, t0)))
    return out


@pytest.mark.parametrize(
    "k, p, options",
    [
        (1, 4, {}),
        (2, 4, {}),
        (1, 2, {}),  # Gram form
        (2, 3, {}),
        (1, 2, {"gram": False, "fast_width1": False}),
        (2, 4, {"dtype": torch.float32}),
        (1, 4, {"dtype": torch.float32}),  # sgemm rounds a row by its parity (d = 6)
        (1, 4, {"mask_every_step": True}),  # the accelerators' path, on the CPU
    ],
)
@pytest.mark.parametrize("C", [1, 7])
def test_compacted_equals_uncompacted_on_mixed_grids(k, p, options, C, monkeypatch):
    X, y = problem(k=k)
    runs = grid()
    progs = Programs(monkeypatch)
    want = train(X, y, p, runs, T, compact=False, **KW, **options)
    assert progs.take() == [(len(runs), T + 1)]
    got = train(X, y, p, runs, T, compact_every=C, **KW, **options)
    sizes = progs.take()
    assert_same_results(got, want)  # bit for bit, float32 included
    div = sorted(r.diverged_at for r in want if r.diverged)
    assert len(div) >= 10 and len(set(div)) >= 5, div  # many runs, at many iterations
    assert sizes == expected_programs(want, C, k=k)
    assert len(sizes) >= 3 and sizes[-1][0] == len(runs) - len(div)  # it compacted


def test_default_period_and_a_grid_where_nothing_diverges(monkeypatch):
    X, y = problem()
    runs = grid(n_rates=4, lo=0.002, hi=0.04)
    progs = Programs(monkeypatch)
    states_a, states_b = [], []
    a = train(X, y, 4, runs, T, checkpoint_every=60, checkpoint=states_a.append, **KW)
    assert progs.take() == [(len(runs), T + 1)]  # one program, never rebuilt
    b = train(
        X, y, 4, runs, T, compact=False, checkpoint_every=60, checkpoint=states_b.append, **KW
    )
    progs.take()
    assert not any(r.diverged for r in a)
    assert_same_results(a, b)
    assert [_bytes(s, elapsed=0) for s in states_a] == [_bytes(s, elapsed=0) for s in states_b]
    # the default check period, on both masking paths: one check at t=0 within T < 1000
    assert engine.COMPACT_EVERY == 1000
    runs = grid()
    for mask in (False, True):
        got = train(X, y, 4, runs, 1500, log_points=31, optimum=0.0, mask_every_step=mask)
        sizes = progs.take()
        assert sizes == expected_programs(got, 1000, iters=1500)
        dropped = sum(r.diverged and r.diverged_at <= 1000 for r in got)
        assert dropped >= 10 and [s for s, _ in sizes] == [len(runs), len(runs) - dropped]


@pytest.mark.parametrize("mask", [False, True])
def test_every_run_diverges(mask, monkeypatch):
    X, y = problem(k=2)
    runs = [r for r in grid(n_rates=4, lo=20.0, hi=100.0) if r.method != "adadelta"]
    progs = Programs(monkeypatch)
    sa, sb = [], []
    kw = {**KW, "checkpoint_every": 30, "mask_every_step": mask}
    want = train(X, y, 4, runs, T, compact=False, checkpoint=sb.append, **kw)
    progs.take()
    got = train(X, y, 4, runs, T, compact_every=2, checkpoint=sa.append, **kw)
    assert all(r.diverged for r in want)
    assert_same_results(got, want)
    sizes = progs.take()
    assert sizes == expected_programs(want, 2, k=2) and sizes[-1][1] < 10  # then no program
    # the checkpoints of the empty program: same iterations and contents
    assert [s["t"] for s in sa] == [s["t"] for s in sb] == list(range(30, T + 1, 30))
    for a, b in zip(sa, sb, strict=True):
        assert_same_state(a, b)
    # resuming from one of them finishes the call the same way
    part = train(X, y, 4, runs, T, compact_every=2, resume=_reload(sa[2]), **kw)
    assert_same_results(part, got)


def assert_same_state(a, b):
    """Two checkpoints of one call: same layout; same numbers, bit for bit."""
    assert a.keys() == b.keys() and a["t"] == b["t"]
    for name in ("first_hit", "diverged_at", "loss0"):
        assert torch.equal(a[name], b[name]), name
    torch.testing.assert_close(a["log_vals"], b["log_vals"], rtol=0, atol=0, equal_nan=True)
    assert len(a["groups"]) == len(b["groups"])
    for ga, gb in zip(a["groups"], b["groups"], strict=True):
        assert ga.keys() == gb.keys()
        for n in ga:
            assert ga[n].dtype == gb[n].dtype and ga[n].shape == gb[n].shape, n
            torch.testing.assert_close(ga[n], gb[n], rtol=0, atol=0, equal_nan=True)


def _reload(state):
    """Through the results store's serialisation (what a resumed sweep reads)."""
    return loads_state(dumps_state(state))


def _bytes(state, **override):
    buf = io.BytesIO()
    torch.save({**state, **override}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("mask", [False, True])
def test_checkpoint_after_compaction_resumes_as_uninterrupted(mask, monkeypatch):
    X, y = problem(k=2)
    runs = grid()
    kw = {**KW, "checkpoint_every": 20, "compact_every": 10, "mask_every_step": mask}
    progs = Programs(monkeypatch)
    states = []
    full = train(X, y, 4, runs, T, checkpoint=states.append, **kw)
    full_sizes = progs.take()
    assert [s["t"] for s in states] == list(range(20, T + 1, 20))
    assert len(full_sizes) >= 3  # compacted before some checkpoints
    ref = []
    nocompact = train(X, y, 4, runs, T, checkpoint=ref.append, **{**kw, "compact": False})
    assert_same_results(full, nocompact)
    progs.take()
    # t=20 and t=120: a run froze after the last check (t=10, t=110) and is still in
    # the program, masked; it leaves at the next check (t=20, t=120) as uninterrupted
    late = {r.diverged_at for r in full if r.diverged}
    assert 18 in late and 119 in late
    for i in (0, 1, 5, len(states) - 1):
        st = states[i]
        # the layout of the uncompacted engine's checkpoint at the same iteration
        assert_same_state(st, ref[i])
        later = []
        part = train(X, y, 4, runs, T, resume=_reload(st), checkpoint=later.append, **kw)
        assert_same_results(part, full)
        # the resumed call runs the uninterrupted call's programs from st["t"] on, after
        # one forward of all runs (the dropped runs' frozen losses, for the log)
        assert progs.take() == [(len(runs), 1), *expected_programs(full, 10, t0=st["t"], k=2)]
        for a, b in zip(later, states[i + 1 :], strict=True):
            assert _bytes(a, elapsed=0) == _bytes(b, elapsed=0)  # bit for bit


def test_frozen_runs_keep_their_tensors_in_checkpoints():
    """A dropped run's tensors in later checkpoints are those it had when it froze."""
    X, y = problem(k=2)
    runs = grid()
    sa, sb = [], []
    kw = {**KW, "checkpoint_every": 20}
    res = train(X, y, 4, runs, T, compact_every=1, checkpoint=sa.append, **kw)
    train(X, y, 4, runs, T, compact=False, checkpoint=sb.append, **kw)
    groups, row_of = engine.build_groups(runs, 6, 2, device="cpu", dtype=torch.float64)
    early = [i for i, r in enumerate(res) if r.diverged and r.diverged_at < 20]
    assert len(early) >= 10
    for a, b in zip(sa, sb, strict=True):
        assert_same_state(a, b)
    # rows frozen before the first checkpoint: bit for bit the masked engine's, and
    # unchanged from one checkpoint to the next
    first = sa[0]
    for i in early:
        (gi,) = [j for j, g in enumerate(groups) if g.rows.start <= row_of[i] < g.rows.stop]
        row = row_of[i] - groups[gi].rows.start
        for a, b in zip(sa, sb, strict=True):
            ga, gb = a["groups"][gi], b["groups"][gi]
            for n in ga:
                assert torch.equal(ga[n][row], first["groups"][gi][n][row]), n
                assert torch.equal(ga[n][row], gb[n][row]), n


def test_uncompacted_checkpoint_with_frozen_runs_resumes(monkeypatch):
    """A checkpoint of the engine before compaction (frozen runs still in the program)
    resumes with compaction: the frozen runs leave at the resumed call's first check."""
    X, y = problem(k=2)
    runs = grid()
    states = []
    kw = {**KW, "checkpoint_every": 50}
    full = train(X, y, 4, runs, T, compact=False, checkpoint=states.append, **kw)
    frozen = (states[0]["diverged_at"] < 50).sum().item()
    assert frozen >= 10
    progs = Programs(monkeypatch)
    part = train(X, y, 4, runs, T, resume=_reload(states[0]), compact_every=3, **kw)
    assert_same_results(part, full)
    sizes = progs.take()
    # one forward of all runs (the frozen runs' losses for the log), then without them
    # (those frozen at or before the last check, t=48), as an uninterrupted call would
    at_48 = (states[0]["diverged_at"] <= 48).sum().item()
    assert at_48 >= 10 and sizes[0] == (len(runs), 1) and sizes[1][0] == len(runs) - at_48
    assert sizes[1:] == expected_programs(full, 3, t0=50, k=2)
    # default period: no check since t=0, so the frozen runs stay in the program (masked)
    # and the call continues exactly as the engine that wrote the checkpoint
    part = train(X, y, 4, runs, T, resume=_reload(states[0]), **kw)
    assert progs.take() == [(len(runs), T + 1 - 50)]
    assert_same_results(part, full)


def test_bad_compaction_options():
    X, y = problem()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="compact_every"):
            train(X, y, 4, [Run("gd", 0.1)], 10, optimum=0.0, compact_every=bad)


def test_no_compaction_to_fewer_than_four_gemm_rows(monkeypatch):
    """Frozen runs stay (masked) rather than leave 1-3 GEMM rows, until none is left;
    a checkpoint taken under that floor resumes as uninterrupted."""
    X, y = problem()
    ref = train(X, y, 4, grid(), T, compact=False, **KW)
    runs = [r.run for r in ref if r.diverged][::2] + [r.run for r in ref if not r.diverged][:2]
    progs = Programs(monkeypatch)
    want = train(X, y, 4, runs, T, compact=False, **KW)
    progs.take()
    states = []
    kw = {**KW, "compact_every": 1, "checkpoint_every": 20}
    got = train(X, y, 4, runs, T, checkpoint=states.append, **kw)
    sizes = progs.take()
    assert_same_results(got, want)
    assert sizes == expected_programs(want, 1)
    assert len(sizes) >= 2 and sizes[-1][0] >= 4  # compacted, then stopped at the floor
    assert sum(not r.diverged for r in want) == 2  # the floor kept frozen runs
    for st in (states[0], states[-1]):
        part = train(X, y, 4, runs, T, resume=_reload(st), **kw)
        assert_same_results(part, got)
        assert progs.take() == [(len(runs), 1), *expected_programs(want, 1, t0=st["t"])]
    # with two outputs, two runs are four rows: they may be left alone
    X2, y2 = problem(k=2)
    want = train(X2, y2, 4, runs, T, compact=False, **KW)
    progs.take()
    got = train(X2, y2, 4, runs, T, compact_every=1, **KW)
    assert_same_results(got, want)
    sizes = progs.take()
    assert sizes == expected_programs(want, 1, k=2)
    assert sizes[-1][0] == sum(not r.diverged for r in want) == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "k, p, gram", [(1, 4, False), (2, 2.5, False), (1, 2, True), (3, "ce", False)]
)
def test_a_runs_forward_does_not_depend_on_the_program_size(k, p, gram, dtype):
    """The cause compaction has to beat: BLAS GEMMs and torch's vectorised loops round
    a row in a remainder panel (rows past the last whole block) differently, so without
    padding a run's loss and gradient changed with the number of runs in the program
    (MKL: the last R k mod 4 rows of a float64 GEMM). The forward pads its buffers to
    a whole number of blocks, so the same run gives the same bits in programs of any
    size, at any position."""
    from depthaccel.losses import SoftmaxCE

    X, y = problem(k=1 if p == "ce" else k)
    if p == "ce":
        y = (np.arange(len(y)) % k).astype(np.float64)
        p = SoftmaxCE(k)
    prob = engine._Problem(X, y, p, torch.device("cpu"), dtype, gram or None)
    gen = torch.Generator().manual_seed(0)
    Ws = torch.randn(60, k, prob.d, generator=gen, dtype=torch.float64).to(dtype)
    step = engine._block_runs(prob, dtype)  # runs per block: compaction keeps slot % step
    ref = None
    for R in (1, 3, 6, 18, 41):
        for slots in (None, torch.arange(R) * 3, torch.arange(R) * (step + 1)):
            fwd = engine._Forward(prob, R, slots)
            assert fwd.S % step == 0 and fwd.S - (R if slots is None else slots[-1] + 1) < step
            for pos in {0, R // 2, R - 1}:
                s = pos if slots is None else int(slots[pos])
                if s % step:
                    continue  # a run in another lane of its block may round differently
                fwd.We.copy_(Ws[:R])
                fwd.We[pos] = Ws[59]  # the run under test, at row pos of R
                loss = fwd()
                got = (loss[pos].clone(), fwd.G[pos].clone())
                if ref is None:
                    ref = got
                assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), (R, pos)
                assert torch.equal(prob.loss64(fwd.We)[pos], prob.loss64(Ws[59:60])[0])


def test_big_groups_with_per_run_powers_compact_bit_for_bit(monkeypatch):
    """A group of over 32 runs whose update takes elementwise powers of per-run tensors
    (Adam's bias corrections with per-run betas): compaction shrinks the group across a
    vectorised loop's remainder, and the padded powers keep every run's bits (fails
    with ``kernels._BLOCK = 1``; the e2e scheme's padded fractional powers are checked
    by the mixed grids with k = 2)."""
    X, y = problem()
    runs = []
    rates = zip(np.geomspace(1, 3000, 40), np.geomspace(5, 0.05, 40), strict=True)
    for i, (la, le) in enumerate(rates):
        hp = (("beta1", 0.8 + i / 400), ("beta2", 0.99 + i / 8000))
        runs += [
            Run("adam", float(f"{la:.3g}"), depth=2, hidden=3, hparams=hp),
            Run("e2e", float(f"{le:.3g}"), depth=2.5, init_scale=0.5, seed=i),
        ]
    progs = Programs(monkeypatch)
    want = train(X, y, 4, runs, 120, compact=False, **KW)
    progs.take()
    got = train(X, y, 4, runs, 120, compact_every=1, **KW)
    sizes = progs.take()
    div = [r.diverged_at for r in want if r.diverged]
    assert 30 <= len(div) <= 60, div
    assert sizes[0][0] == 80 and sizes[-1][0] < 60  # both groups shrank below 32 runs
    for method in ("adam", "e2e"):
        assert sum(r.run.method == method and not r.diverged for r in want) < 32
    assert_same_results(got, want)
