"""Run a list of training runs through the results store: reuse, checkpoint, resume.

``sweep(X, y, p, runs, iters, store=...)`` is ``depthaccel.train.train`` with memory:

* every run is keyed by ``store.run_key(run.config_dict(), fingerprint, MATH_VERSION)`` where
  the fingerprint (``data_fingerprint``) is the sha256 of X and y (float64 bytes and
  shapes), p, the number of iterations, the logging settings and the compute dtype;
* runs already in the store (with first-hit iterations for every requested threshold)
  are read back, not trained; the result says how many (``SweepResult.reused``);
* the call's data and settings become one ``SweepSpec`` (``depthaccel.executors.base``);
  the other runs go to the driver (``depthaccel.executors.driver``), which splits them
  into shards (``depthaccel.executors.shards.split_runs``: by the trainer's batching
  group, pieces of at most ``shard_runs`` runs; a function of the runs only) and has an
  executor train each shard as one ``train`` call (a "group"); the driver saves the
  group's state into the store every ``checkpoint_every`` iterations and, when it
  finishes, stores its runs and deletes its checkpoint in one transaction. The default
  executor (``LocalExecutor``) trains the groups in this process, one after another;
  ``RayExecutor`` trains the same groups, several at once;
* after a crash or ``kill -9``, the same call finds the checkpoint of its group and
  resumes from it: at most ``checkpoint_every`` iterations are redone, no finished run
  is recomputed, and the curves equal those of an uninterrupted run (float64, same
  device: the trainer's resume guarantee). A checkpoint also serves a later call whose
  pending runs include all of the checkpointed group's runs (e.g. a re-run with one
  more depth): that group resumes, the new runs train in a group of their own.

``MATH_VERSION`` (``depthaccel.records``) names the version of the numbers the code
computes: bump it whenever a change to the trainer, the losses or the optimum can change
any run's curve, so stale results are not reused.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from depthaccel.executors.base import SweepSpec
from depthaccel.executors.driver import train_pending
from depthaccel.executors.local import LocalExecutor
from depthaccel.executors.shards import SHARD_RUNS
from depthaccel.losses import SoftmaxCE, loss_token
from depthaccel.records import MATH_VERSION, checkpoint_blob, dumps_state, loads_state, run_result
from depthaccel.store import Store, canonical_json, run_key
from depthaccel.train import Run, RunResult
from depthaccel.train.runs import check_runs

if TYPE_CHECKING:
    from depthaccel.executors import Executor

__all__ = [
    "MATH_VERSION",
    "StoreTrainer",
    "SweepResult",
    "SweepSpec",
    "checkpoint_blob",
    "data_fingerprint",
    "dumps_state",
    "loads_state",
    "spec_fingerprint",
    "sweep",
]


def data_fingerprint(
    X: Any,
    y: Any,
    p: float | SoftmaxCE,
    iters: int,
    *,
    log_points: int,
    dtype: str,
    optimum: float | None = None,
    options: dict[str, Any] | None = None,
) -> str:
    """sha256 hex identifying the data and every trainer setting that shapes a curve.

    Hashed: X and y as float64 C-order bytes with their shapes, p, iters, log_points,
    the compute dtype's name, the other trainer ``options`` that change numbers
    (``log_scale``, ``diverge_factor``, ``gram``, ...) and, when the caller fixed it, the
    optimum L* (otherwise L* is ``lp_optimum(X, y, p)``, a function of the data; a
    float given here is hashed bit-exactly). Thresholds are not part of
    it: a stored run is reused when it holds first-hit iterations for every requested
    threshold.
    """
    h = hashlib.sha256(b"depthaccel-data-fingerprint-v1\0")
    for name, a in (("X", X), ("y", y)):
        t = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        arr = np.ascontiguousarray(np.asarray(t, dtype=np.float64))
        h.update(f"{name}{arr.shape}\0".encode())
        h.update(arr.tobytes())
    opt = "computed" if optimum is None else repr(float(optimum))
    h.update(
        f"{loss_token(p)};iters={int(iters)};log_points={int(log_points)};"
        f"dtype={dtype};optimum={opt};options=".encode()
    )
    h.update(canonical_json(options or {}).encode())
    return h.hexdigest()


def spec_fingerprint(spec: SweepSpec) -> str:
    """``data_fingerprint`` of a sweep's data and settings, the optimum as the caller
    gave it (``SweepSpec.optimum`` before the driver fills in L*; None hashes as
    "computed")."""
    return data_fingerprint(
        spec.X,
        spec.y,
        spec.p,
        spec.iters,
        log_points=spec.log_points,
        dtype=spec.dtype_name,
        optimum=spec.optimum,
        options=dict(spec.options),
    )


# ---------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """What ``sweep`` returns.

    Attributes:
        results: one RunResult per requested run, in the order given (duplicates of one
            configuration share a result).
        reused: how many distinct runs were read from the store instead of trained.
        computed: how many distinct runs were trained by this call.
        resumed: group key -> iteration a checkpointed group resumed from.
        fingerprint: the data fingerprint used in the run keys.
        keys: the store key of each requested run (same order as ``results``).
        store_path: the store file.
    """

    results: list[RunResult]
    reused: int
    computed: int
    resumed: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    keys: list[str] = field(default_factory=list)
    store_path: Path | None = None

    @property
    def total(self) -> int:
        return self.reused + self.computed


def sweep(
    X: Any,
    y: Any,
    p: float,
    runs: Sequence[Run],
    iters: int,
    *,
    store: Store | str | Path,
    optimum: float | None = None,
    thresholds: Iterable[float] = (),
    log_points: int = 1000,
    device: str | torch.device = "cpu",
    dtype: Any = None,
    checkpoint_every: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    executor: Executor | None = None,
    shard_runs: int | None = None,
    **train_options: Any,
) -> SweepResult:
    """Train ``runs`` (see ``depthaccel.train.train``) through the results ``store``.

    Runs already stored are reused; the rest are split into groups (shards) of at most
    ``shard_runs`` runs (None: ``executors.shards.SHARD_RUNS``), each trained as one
    batch that checkpoints every ``checkpoint_every`` iterations (None: never) and
    resumes from its checkpoint when the same sweep is started again. ``store`` is a
    Store or a path (a directory gets ``store.DEFAULT_FILENAME`` inside it). ``log`` receives one-line progress
    messages (how many runs were reused, resumed, trained). ``train_options`` are passed
    to ``train`` (``log_scale``, ``diverge_factor``, ``gram``, ``fast_width1``) and are
    part of the data fingerprint. ``optimum`` (a float or an ``LpOptimum``) fixes L*;
    by default ``train`` computes it.

    ``executor`` (``depthaccel.executors``): where the groups train; None is a
    ``LocalExecutor()`` (this process, one group after another); a ``RayExecutor``
    trains the same groups on a Ray cluster, ``executor.workers`` at once. The shard
    plan never depends on the executor, so every executor gives bit-identical float64
    results. Either way this process is the only one that writes to the store
    (``depthaccel.executors.driver``).

    Round-off note: a reused run was computed in the batch it was first trained in; the
    trainer's float64 results can differ in the last bits between batch compositions
    (e.g. a run reused by another experiment, or stored by an older version).

    Raises:
        ValueError: ``shard_runs`` or ``checkpoint_every`` < 1, unknown train options
            (``SweepSpec``), bad runs, or what ``train`` refuses.
    """
    runs = check_runs(runs)
    spec = SweepSpec(
        X=X,
        y=y,
        p=p,
        iters=iters,
        optimum=optimum,
        thresholds=tuple(thresholds),
        log_points=log_points,
        device=str(device),
        dtype=dtype,
        options=train_options,
        checkpoint_every=checkpoint_every,
        shard_runs=SHARD_RUNS if shard_runs is None else shard_runs,
        progress=progress,
    )
    st = store if isinstance(store, Store) else Store(store)
    try:
        return _sweep(
            st,
            spec,
            runs,
            executor if executor is not None else LocalExecutor(),
            log or (lambda msg: None),
        )
    finally:
        if st is not store:
            st.close()


def _sweep(
    st: Store, spec: SweepSpec, runs: list[Run], executor: Executor, say: Callable[[str], None]
) -> SweepResult:
    fp = spec_fingerprint(spec)
    thresholds = list(spec.thresholds)
    keys = [run_key(r.config_dict(), fp, MATH_VERSION) for r in runs]
    by_key: dict[str, Run] = dict(zip(keys, runs, strict=True))
    stored = st.get_runs(by_key)
    done: dict[str, RunResult] = {}
    extra_thresholds: set[float] = set()
    for k, s in stored.items():
        if all(t in s.first_hit for t in thresholds):
            done[k] = run_result(by_key[k], s, thresholds)
        else:  # stored without some threshold: retrain, keeping the thresholds it had
            extra_thresholds.update(s.first_hit)
    reused = len(done)
    pending = [k for k in by_key if k not in done]
    say(
        f"store {st.path}: reused {reused} of {len(by_key)} runs"
        + (f", {len(pending)} to train" if pending else "")
    )
    all_thresholds = sorted(set(thresholds) | extra_thresholds)
    trained, resumed = train_pending(
        st,
        executor,
        spec,
        _plan_groups(st, pending, all_thresholds),
        by_key,
        thresholds=all_thresholds,
        fingerprint=fp,
        say=say,
        reused=reused,
    )
    for k, r in trained.items():
        done[k] = replace(r, first_hit={t: r.first_hit[t] for t in thresholds})
    return SweepResult(
        results=[done[k] for k in keys],
        reused=reused,
        computed=len(pending),
        resumed=resumed,
        fingerprint=fp,
        keys=keys,
        store_path=st.path,
    )


def _plan_groups(
    st: Store, pending: list[str], thresholds: list[float]
) -> list[tuple[list[str], dict[str, Any] | None]]:
    """Split the pending runs into groups: first every stored checkpoint whose runs are
    all pending (and which tracks every threshold needed), then the rest, fresh (split
    into shards by the driver: ``executors.driver.plan_shards``)."""
    left = set(pending)
    groups: list[tuple[list[str], dict[str, Any] | None]] = []
    for gk, _ in sorted(st.checkpoints(of_runs=True), key=lambda c: -c[1]):
        ck = st.load_checkpoint(gk)
        if ck is None or not ck.run_keys or not set(ck.run_keys) <= left:
            continue
        try:
            state = loads_state(ck.state)
            ok = set(thresholds) <= set(state["thresholds"])
        except Exception as e:  # an unreadable blob is skipped, never fatal
            warnings.warn(f"ignoring unreadable checkpoint {gk[:12]}: {e}", stacklevel=3)
            continue
        if ok:
            groups.append((list(ck.run_keys), state))
            left -= set(ck.run_keys)
    rest = [k for k in pending if k in left]
    if rest:
        groups.append((rest, None))
    return groups


class StoreTrainer:
    """A drop-in for ``depthaccel.train.train`` that goes through a results store.

    ``trainer = StoreTrainer(store, checkpoint_every=K)`` then
    ``trainer(X, y, p, runs, iters, **train_kwargs)`` returns what ``train`` would,
    reusing stored runs and checkpointing as ``sweep`` does; ``trainer.reused`` and
    ``trainer.computed`` count runs over all calls. For code (an experiment, a grid
    search) that takes its training function as a parameter.
    """

    def __init__(
        self,
        store: Store | str | Path,
        *,
        checkpoint_every: int | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.checkpoint_every = checkpoint_every
        self.log = log
        self.reused = 0
        self.computed = 0

    def __call__(
        self, X: Any, y: Any, p: float, runs: Sequence[Run], iters: int, **kwargs: Any
    ) -> list[RunResult]:
        for name in ("checkpoint", "resume"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"StoreTrainer handles checkpoints itself; do not pass {name}=")
        kwargs.setdefault("checkpoint_every", self.checkpoint_every)
        res = sweep(X, y, p, runs, iters, store=self.store, log=self.log, **kwargs)
        self.reused += res.reused
        self.computed += res.computed
        return res.results
