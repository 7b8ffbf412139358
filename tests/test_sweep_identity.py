"""The sweep's store keys and numbers on a mixed grid, pinned: depths 1-3, GD on nets of
width 1 and 2, the end-to-end scheme (Eq. 10), the adaptive methods, rates up to one
that diverges, the l2 and the l4 loss, several shards, checkpoints and a resume.

* Store keys: the data are small integers (exact in float64 on every machine), so the
  data fingerprint and every run key are machine-independent; they are compared with
  the keys this code stored when the test was written. A refactor of the sweep that
  changed a key would make every stored result unreachable (and retrain it).
* Numbers: every path of the sweep (in this process, a local executor of any width,
  after a crash and a resume) equals, bit for bit, the independent reference: one
  plain ``train`` call per shard (``shards.split_runs``), no store, no driver.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from depthaccel.executors import LocalExecutor
from depthaccel.executors.shards import engine_group, split_runs
from depthaccel.store import Store
from depthaccel.sweep import MATH_VERSION, sweep
from depthaccel.train import Run, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ITERS, K, SHARD = 120, 40, 5
THRESHOLDS = (1e-1, 1e-3)
KW = dict(thresholds=THRESHOLDS, log_points=25, checkpoint_every=K, shard_runs=SHARD)

#: sha256 of the newline-joined run keys of ``grid()`` on ``problem()``, and the data
#: fingerprint, per loss exponent p (recorded with MATH_VERSION "2").
KEYS_SHA256 = {
    2: "a0684375114b4421969289f1f8970940f85d3fbd974261a28f355b6967d4a321",
    4: "0eaaf327c9af869de7fa1601c52bcf2fdb01184867b41f64360addf0798b2fac",
}
FINGERPRINT = {
    2: "0e516678a657191c594da3454cf7ac220714888d3ae382532369bd614c3b0bf9",
    4: "4a99f4c364e3e40b6ff7694272a7ef5db873ec51344caed47b211665da75c38c",
}


def problem(m: int = 40, d: int = 5):
    """Small integers (exact, machine-independent bytes), X of full rank."""
    rng = np.random.default_rng(2026)
    X = rng.integers(-4, 5, size=(m, d)).astype(np.float64)
    y = rng.integers(-6, 7, size=m).astype(np.float64)
    return X, y


def grid() -> list[Run]:
    runs = []
    for dp in (1, 2, 3):
        runs += [Run("gd", lr, depth=dp) for lr in (1e-3, 1e-2, 30.0)]  # 30: diverges
        runs.append(Run("gd", 1e-2, depth=dp, hidden=2))
        if dp > 1:
            runs += [Run("e2e", lr, depth=dp) for lr in (1e-2, 30.0)]
        runs += [Run(m, None, depth=dp) for m in ("adam", "adagrad", "adadelta")]
    return runs


def reference(X, y, p, runs):
    """One plain ``train`` call per shard: the batches every sweep path must train."""
    outputs = 1 if np.ndim(y) == 1 else np.shape(y)[1]
    out: list = [None] * len(runs)
    for idx in split_runs(runs, lambda r: engine_group(r, X.shape[1], outputs), SHARD):
        res = train(
            X, y, p, [runs[i] for i in idx], ITERS, thresholds=THRESHOLDS, log_points=25
        )  # fmt: skip
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.run == rb.run
        assert np.array_equal(ra.iters, rb.iters)
        assert ra.gap.tobytes() == rb.gap.tobytes(), ra.run
        assert ra.first_hit == rb.first_hit
        assert (ra.diverged, ra.diverged_at) == (rb.diverged, rb.diverged_at)
        assert np.float64(ra.final_gap).tobytes() == np.float64(rb.final_gap).tobytes()


def _keys_sha(keys) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


@pytest.mark.parametrize("p", [2, 4])
def test_keys_and_numbers_of_a_mixed_grid(tmp_path, p):
    X, y = problem()
    runs = grid()
    ref = reference(X, y, p, runs)
    assert any(r.diverged for r in ref) and not all(r.diverged for r in ref)
    here = sweep(X, y, p, runs, ITERS, store=tmp_path / "here.sqlite", **KW)
    assert MATH_VERSION == "2"
    assert here.fingerprint == FINGERPRINT[p]
    assert _keys_sha(here.keys) == KEYS_SHA256[p]
    assert here.computed == len(runs) and len(set(here.keys)) == len(runs)
    assert_same(here.results, ref)
    two = sweep(
        X, y, p, runs, ITERS, store=tmp_path / "two.sqlite", executor=LocalExecutor(2), **KW
    )
    assert two.keys == here.keys
    assert_same(two.results, ref)
    # read back from the store: the same numbers
    again = sweep(X, y, p, runs, ITERS, store=tmp_path / "here.sqlite", **KW)
    assert again.reused == len(runs) and again.keys == here.keys
    assert_same(again.results, ref)


class Crash(Exception):
    pass


def test_a_crash_and_a_resume_give_the_same_numbers_and_keys(tmp_path, monkeypatch):
    p = 4
    X, y = problem()
    runs = grid()
    store = tmp_path / "s.sqlite"
    real = Store.save_checkpoint
    n = [0]

    def crash_at_the_second_shards_second_checkpoint(self, group, keys, iteration, state):
        n[0] += iteration == 2 * K
        if n[0] == 2:
            raise Crash
        real(self, group, keys, iteration, state)

    monkeypatch.setattr(Store, "save_checkpoint", crash_at_the_second_shards_second_checkpoint)
    with pytest.raises(Crash):
        sweep(X, y, p, runs, ITERS, store=store, **KW)
    monkeypatch.undo()
    with Store(store) as st:
        assert [it for _, it in st.checkpoints()] == [K]  # shard 2 after K iterations
        done = st.count_runs()
    assert done == SHARD  # shard 1 was stored before the crash
    res = sweep(X, y, p, runs, ITERS, store=store, **KW)
    assert res.reused == done and list(res.resumed.values()) == [K]
    assert _keys_sha(res.keys) == KEYS_SHA256[p]
    assert_same(res.results, reference(X, y, p, runs))
