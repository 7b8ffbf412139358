"""Train one shard and report what happens as events: the code that runs on a worker.

``run_shard(spec, shard, emit)`` is one ``depthaccel.train.train`` call on the shard's
runs. It never sees the results store: checkpoints leave as bytes in ``Checkpoint``
events and results in the final ``Done`` event; the driver writes them.

Event timing: with a progress bar (``spec.progress``) ``train`` calls back every
``c = callback_every(K, iters)`` iterations, without one every K iterations (never
without checkpoints); a callback at a multiple of K (below ``iters``) sends a
``Checkpoint``, the others a ``Progress``. ``c`` divides K, so checkpoints are taken at
exactly the iterations K, 2K, ... below ``iters`` whatever the bar, and a lost worker
costs at most K iterations of work. (Calling back does not change the numbers: it only
reads the trainer's state.)

Resume fallback: a resume state that ``train`` refuses (a ValueError before the first
iteration, e.g. a checkpoint written by another version of the trainer) is reported as
a ``Note`` and the shard starts over at iteration 0. This is the only copy of that
rule: every executor, this process's included, trains through ``run_shard``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from depthaccel.executors.base import Checkpoint, Done, Note, Progress, Shard, Started, SweepSpec
from depthaccel.records import checkpoint_blob, loads_state
from depthaccel.train import RunResult, train

__all__ = ["callback_every", "run_shard"]

#: About this many progress events per shard (when K allows it): enough for an ETA; each
#: builds the trainer's state (copies of every tensor) and crosses the object store.
PROGRESS_TICKS = 50


def callback_every(checkpoint_every: int | None, iters: int, ticks: int = PROGRESS_TICKS) -> int:
    """How often (in iterations) the trainer calls back: about ``iters / ticks``, and a
    divisor of ``checkpoint_every`` (K) so that every K-th iteration is a callback.

    K <= iters/ticks: K itself. Otherwise the largest divisor of K in
    [tick/4, tick] (tick = max(1, iters // ticks)), or K when there is none (then
    progress is reported at checkpoints only)."""
    tick = max(1, int(iters) // ticks)
    if checkpoint_every is None:
        return tick
    K = int(checkpoint_every)
    if K <= tick:
        return K
    for c in range(tick, max(1, tick // 4) - 1, -1):
        if K % c == 0:
            return c
    return K


def run_shard(spec: SweepSpec, shard: Shard, emit: Callable[[Any], None]) -> None:
    """Train ``shard`` with the settings of ``spec``; report events through ``emit``.

    Emits ``Started`` first, then ``Progress``/``Checkpoint`` events while training and
    ``Done`` last. A resume blob that the trainer refuses (e.g. written by another
    version of it) is reported as a ``Note`` and the shard starts over at iteration 0.
    An exception of ``emit`` (e.g. the store could not save a checkpoint) propagates.
    """
    K = spec.checkpoint_every
    state = loads_state(shard.resume) if shard.resume is not None else None
    start = int(state["iteration"]) if state is not None else 0
    thresholds = list(shard.thresholds)
    if spec.progress:
        every: int | None = callback_every(K, spec.iters)
    else:
        every = K  # checkpoints only
    called_back = False
    emit(Started.here(start))

    def callback(trainer_state: dict[str, Any]) -> None:
        nonlocal called_back
        called_back = True
        t = int(trainer_state["t"])
        if K is not None and t % K == 0 and t < spec.iters:
            emit(Checkpoint(t, checkpoint_blob(trainer_state, thresholds)))
        else:
            emit(Progress(t))

    def run(resume: dict[str, Any] | None) -> list[RunResult]:
        return train(
            spec.X,
            spec.y,
            spec.p,
            list(shard.runs),
            spec.iters,
            optimum=spec.optimum,
            thresholds=thresholds,
            log_points=spec.log_points,
            device=spec.device,
            dtype=spec.dtype,
            progress=False,
            checkpoint_every=every,
            checkpoint=callback if every is not None else None,
            resume=resume,
            **spec.options,
        )

    if state is None:
        results = run(None)
    else:
        try:
            results = run(state["trainer"])
        except ValueError as e:  # e.g. saved by another version of the trainer
            if called_back:  # training had resumed: not the state's fault
                raise
            emit(
                Note(f"cannot resume from the checkpoint ({e}); training these runs from the start")
            )
            emit(Started.here(0))
            results = run(None)
    emit(Done(results))
