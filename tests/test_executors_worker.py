"""Tests of depthaccel.executors.worker: one shard trained, its events, its checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from depthaccel.executors.base import Checkpoint, Done, Note, Progress, Shard, Started, SweepSpec
from depthaccel.executors.worker import callback_every, run_shard
from depthaccel.losses import lp_optimum
from depthaccel.sweep import checkpoint_blob, dumps_state, loads_state
from depthaccel.train import train
from executor_fixtures import THRESHOLDS, assert_same, grid, problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("iters", [1, 50, 999, 10_000, 1_000_000])
@pytest.mark.parametrize("K", [None, 1, 7, 97, 100, 5_000, 50_000, 65_537])
def test_callback_every_divides_K_and_ticks_about_1_in_50(iters, K):
    c = callback_every(K, iters)
    tick = max(1, iters // 50)
    if K is None:
        assert c == tick
        return
    assert K % c == 0  # every K-th iteration is a callback
    # reference: the largest divisor of K that is <= tick and >= tick // 4, else K
    divisors = [x for x in range(1, min(K, tick) + 1) if K % x == 0 and x >= max(1, tick // 4)]
    assert c == (K if K <= tick else (max(divisors) if divisors else K))


def spec_and_shard(iters=300, K=40):
    X, y = problem()
    runs = grid()
    spec = SweepSpec(
        X=X, y=y, p=4.0, iters=iters, optimum=lp_optimum(X, y, 4).loss, log_points=50,
        checkpoint_every=K,
    )  # fmt: skip
    shard = Shard(index=0, runs=tuple(runs), keys=tuple(f"k{i}" for i in range(len(runs))),
                  thresholds=THRESHOLDS)  # fmt: skip
    return spec, shard


def reference(spec, shard):
    return train(
        spec.X, spec.y, spec.p, list(shard.runs), spec.iters, optimum=spec.optimum,
        thresholds=shard.thresholds, log_points=spec.log_points,
    )  # fmt: skip


def test_events_and_results_equal_a_plain_train_call():
    spec, shard = spec_and_shard()
    events = []
    run_shard(spec, shard, events.append)
    assert isinstance(events[0], Started) and events[0].iteration == 0
    assert isinstance(events[-1], Done)
    cks = [e.iteration for e in events if isinstance(e, Checkpoint)]
    assert cks == list(range(40, 300, 40))  # multiples of K below iters, as the sweep's
    prog = [e.iteration for e in events if isinstance(e, (Progress, Checkpoint))]
    assert prog == sorted(prog) and prog[-1] <= spec.iters
    assert_same(events[-1].results, reference(spec, shard))
    st = loads_state(events[1 + prog.index(40)].blob)
    assert st["iteration"] == 40 and st["thresholds"] == list(THRESHOLDS)


def test_no_checkpoint_at_the_last_iteration():
    # iters a multiple of K: the state after the last iteration is the result (Done),
    # never a checkpoint (which would be stored only to be deleted, or resumed from)
    spec, shard = spec_and_shard(iters=320, K=40)
    events = []
    run_shard(spec, shard, events.append)
    assert [e.iteration for e in events if isinstance(e, Checkpoint)] == list(range(40, 320, 40))
    assert [e for e in events if isinstance(e, Progress)][-1].iteration == 320
    assert isinstance(events[-1], Done)


def test_resume_from_a_streamed_checkpoint_is_bit_exact():
    spec, shard = spec_and_shard()
    events = []
    run_shard(spec, shard, events.append)
    ck = [e for e in events if isinstance(e, Checkpoint)][3]
    again = []
    run_shard(spec, Shard(**{**shard.__dict__, "resume": ck.blob}), again.append)
    assert again[0] == Started(pid=again[0].pid, node=again[0].node, iteration=ck.iteration)
    assert [e.iteration for e in again if isinstance(e, Checkpoint)][0] == ck.iteration + 40
    assert_same(again[-1].results, events[-1].results)


def test_unusable_resume_state_restarts_with_a_note():
    spec, shard = spec_and_shard()
    events = []
    run_shard(spec, shard, events.append)
    ck = loads_state([e for e in events if isinstance(e, Checkpoint)][0].blob)
    ck["trainer"]["run_configs"] = ck["trainer"]["run_configs"][::-1]  # not this shard's state
    again = []
    run_shard(spec, Shard(**{**shard.__dict__, "resume": dumps_state(ck)}), again.append)
    notes = [e for e in again if isinstance(e, Note)]
    assert len(notes) == 1 and "cannot resume" in notes[0].message
    assert [e.iteration for e in again if isinstance(e, Started)] == [40, 0]
    assert_same(again[-1].results, events[-1].results)


def test_checkpoint_blob_is_what_the_sweep_stores():
    state = {"t": 12, "x": torch.arange(3.0), "a": np.arange(2)}
    back = loads_state(checkpoint_blob(state, [1e-3]))
    assert back["iteration"] == 12 and back["thresholds"] == [1e-3]
    assert torch.equal(back["trainer"]["x"], state["x"])


def test_an_error_of_the_driver_after_a_resume_is_not_taken_for_a_bad_state():
    """The fallback is for a state the trainer refuses before it trains; a ValueError
    raised by ``emit`` once training has resumed (e.g. the store could not save the
    next checkpoint) propagates: no 'cannot resume' note, no restart from 0."""
    spec, shard = spec_and_shard()
    events = []
    run_shard(spec, shard, events.append)
    ck = [e for e in events if isinstance(e, Checkpoint)][0]
    seen = []

    def emit(event):
        seen.append(event)
        if isinstance(event, Checkpoint):
            raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        run_shard(spec, Shard(**{**shard.__dict__, "resume": ck.blob}), emit)
    assert not [e for e in seen if isinstance(e, Note)]
    assert [e.iteration for e in seen if isinstance(e, Started)] == [ck.iteration]


@pytest.mark.parametrize("progress", [False, True])
def test_progress_events_only_for_a_progress_bar(progress):
    """Without a bar the trainer calls back at the checkpoints only (K = 40: 40, ...,
    280; 300 is no multiple of K); with one about 50 times (every 5 iterations)."""
    spec, shard = spec_and_shard()
    spec = dataclasses.replace(spec, progress=progress)
    events = []
    run_shard(spec, shard, events.append)
    cks = [e.iteration for e in events if isinstance(e, Checkpoint)]
    ticks = [e.iteration for e in events if isinstance(e, Progress)]
    assert cks == list(range(40, 300, 40))
    if progress:
        assert ticks == [t for t in range(5, 301, 5) if t % 40]  # callback_every(40, 300) = 5
    else:
        assert ticks == []
    assert_same(events[-1].results, reference(spec, shard))
