"""Run a list of training runs through the results store: reuse, checkpoint, resume.

``sweep(X, y, p, runs, iters, store=...)`` is ``depthaccel.train.train`` with memory:

* every run is keyed by ``store.run_key(run.config_dict(), fingerprint, MATH_VERSION)`` where
  the fingerprint (``data_fingerprint``) is the sha256 of X and y (float64 bytes and
  shapes), p, the number of iterations, the logging settings and the compute dtype;
* runs already in the store (with first-hit iterations for every requested threshold)
  are read back, not trained; the result says how many (``SweepResult.reused``);
* the other runs are split into shards (``depthaccel.executors.shards.split_runs``: by
  the trainer's batching group, pieces of at most ``shard_runs`` runs; a function of the
  runs only) and each shard is trained as one ``train`` call (a "group"), which saves
  its state into the store every ``checkpoint_every`` iterations; when it finishes, its
  runs are stored and its checkpoint deleted in one transaction. In this process the
  groups train one after another; an executor trains the same groups, several at once;
* after a crash or ``kill -9``, the same call finds the checkpoint of its group and
  resumes from it: at most ``checkpoint_every`` iterations are redone, no finished run
  is recomputed, and the curves equal those of an uninterrupted run (float64, same
  device: the trainer's resume guarantee). A checkpoint also serves a later call whose
  pending runs include all of the checkpointed group's runs (e.g. a re-run with one
  more depth): that group resumes, the new runs train in a group of their own.

``MATH_VERSION`` names the version of the numbers the code computes: bump it whenever a
change to the trainer, the losses or the optimum can change any run's curve, so stale
results are not reused.
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

from depthaccel.losses import LpOptimum, loss_token
from depthaccel.records import checkpoint_blob, dumps_state, loads_state
from depthaccel.store import Store, StoredRun, canonical_json, group_key, run_key
from depthaccel.train import Run, RunResult, train
from depthaccel.train.runs import check_runs

if TYPE_CHECKING:
    from depthaccel.executors import Executor

__all__ = [
    "MATH_VERSION",
    "StoreTrainer",
    "SweepResult",
    "checkpoint_blob",
    "data_fingerprint",
    "dumps_state",
    "loads_state",
    "sweep",
]

#: Version of the math behind every stored number (trainer, losses, optimum, logging).
MATH_VERSION = "2"  # 2: Eq. 12 uses a scaled norm (last-bit changes for k = 1)

# Keyword arguments of depthaccel.train.train that sweep passes on (and fingerprints).
_TRAIN_OPTIONS = {"log_scale", "diverge_factor", "gram", "fast_width1"}


def data_fingerprint(
    X: Any,
    y: Any,
    p: float,
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


def _dtype_name(dtype: Any) -> str:
    if dtype is None:
        return "default"
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return str(dtype)


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


def _stored_to_result(run: Run, s: StoredRun, thresholds: Sequence[float]) -> RunResult:
    acc = s.extra.get("accuracy")
    return RunResult(
        run=run,
        iters=s.iters,
        gap=s.gap,
        first_hit={t: s.first_hit[t] for t in thresholds},
        final_gap=s.final_gap,
        diverged=s.diverged,
        diverged_at=s.diverged_at,
        wall_time=s.wall_time,
        accuracy=None if acc is None else np.array(acc, dtype=np.float64),  # None -> NaN
    )


def _result_to_stored(key: str, r: RunResult, fingerprint: str, extra: dict[str, Any]) -> StoredRun:
    return StoredRun(
        key=key,
        config=r.run.config_dict(),
        data_fingerprint=fingerprint,
        math_version=MATH_VERSION,
        label=r.run.label(),
        iters=np.asarray(r.iters, dtype=np.int64),
        gap=np.asarray(r.gap, dtype=np.float64),
        first_hit={float(t): i for t, i in r.first_hit.items()},
        final_gap=float(r.final_gap),
        diverged=bool(r.diverged),
        diverged_at=r.diverged_at,
        wall_time=float(r.wall_time),
        extra=extra if r.accuracy is None else {**extra, "accuracy": _json_floats(r.accuracy)},
    )


def _json_floats(a: np.ndarray) -> list[float | None]:
    """Floats for JSON, NaN as None (JSON has no NaN)."""
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=np.float64)]


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

    ``executor`` (``depthaccel.executors``): None trains the groups here, one after
    another; an executor trains the same groups where it runs tasks (this process, a Ray
    cluster), ``executor.workers`` at once. The shard plan never depends on the executor,
    so every executor gives bit-identical float64 results. Either way this process is
    the only one that writes to the store (``depthaccel.executors.driver``).

    Round-off note: a reused run was computed in the batch it was first trained in; the
    trainer's float64 results can differ in the last bits between batch compositions
    (e.g. a run reused by another experiment, or stored by an older version).

    Raises:
        ValueError: ``shard_runs`` or ``checkpoint_every`` < 1, unknown train options.
    """
    runs = check_runs(runs)
    iters = int(iters)
    if checkpoint_every is not None and int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every!r}")
    from depthaccel.executors.shards import SHARD_RUNS, check_max_runs

    shard_runs = check_max_runs(SHARD_RUNS if shard_runs is None else shard_runs)
    thresholds = sorted({float(t) for t in thresholds})
    if isinstance(optimum, LpOptimum):
        optimum = optimum.loss
    unknown = set(train_options) - _TRAIN_OPTIONS
    if unknown:
        raise ValueError(
            f"unknown train option(s) {sorted(unknown)}; sweep passes on {sorted(_TRAIN_OPTIONS)}"
        )
    call = _SweepCall(
        X=_c_order(X),
        y=_c_order(y),
        p=p,
        iters=iters,
        optimum=optimum,
        thresholds=thresholds,
        log_points=log_points,
        device=device,
        dtype=dtype,
        checkpoint_every=checkpoint_every,
        progress=progress,
        say=log or (lambda msg: None),
        options=train_options,
        executor=executor,
        shard_runs=shard_runs,
    )
    own = not isinstance(store, Store)
    st = Store(store) if own else store
    try:
        return _sweep(st, call, runs)
    finally:
        if own:
            st.close()


def _c_order(a: Any) -> Any:
    """``a`` in C order (same dtype and device): the memory layout of the data decides
    which GEMM kernel runs and so the last bits of the results; the executors' workers
    get C-order float64 arrays (``executors.driver``), and the in-process path must
    train on the same layout to give the same numbers (e.g. a Fortran-order X)."""
    if isinstance(a, torch.Tensor):
        return a.contiguous()
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a)
    return a


@dataclass(frozen=True)
class _SweepCall:
    """One sweep call's data and settings: everything but the runs and the store."""

    X: Any
    y: Any
    p: float
    iters: int
    optimum: float | None
    thresholds: list[float]  # the requested ones, sorted
    log_points: int
    device: Any
    dtype: Any
    checkpoint_every: int | None
    progress: bool
    say: Callable[[str], None]
    options: dict[str, Any]  # the trainer options that change numbers (fingerprinted)
    shard_runs: int  # most runs per group (default ``executors.shards.SHARD_RUNS``)
    executor: Executor | None = None

    def fingerprint(self) -> str:
        return data_fingerprint(
            self.X,
            self.y,
            self.p,
            self.iters,
            log_points=self.log_points,
            dtype=_dtype_name(self.dtype),
            optimum=self.optimum,
            options=self.options,
        )

    def train(
        self,
        runs: list[Run],
        thresholds: Sequence[float],
        *,
        checkpoint: Callable[[dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> list[RunResult]:
        """``depthaccel.train.train`` on ``runs`` with this call's settings; ``checkpoint``
        is called every ``checkpoint_every`` iterations (when that is set)."""
        every = {}
        if checkpoint is not None and self.checkpoint_every is not None:
            every = {"checkpoint_every": int(self.checkpoint_every), "checkpoint": checkpoint}
        return train(
            self.X,
            self.y,
            self.p,
            runs,
            self.iters,
            optimum=self.optimum,
            thresholds=list(thresholds),
            log_points=self.log_points,
            device=self.device,
            dtype=self.dtype,
            progress=self.progress,
            resume=resume,
            **self.options,
            **every,
        )


def _sweep(st: Store, call: _SweepCall, runs: list[Run]) -> SweepResult:
    fp = call.fingerprint()
    thresholds, say = call.thresholds, call.say
    keys = [run_key(r.config_dict(), fp, MATH_VERSION) for r in runs]
    by_key: dict[str, Run] = dict(zip(keys, runs, strict=True))
    stored = st.get_runs(by_key)
    done: dict[str, RunResult] = {}
    extra_thresholds: set[float] = set()
    for k, s in stored.items():
        if all(t in s.first_hit for t in thresholds):
            done[k] = _stored_to_result(by_key[k], s, thresholds)
        else:  # stored without some threshold: retrain, keeping the thresholds it had
            extra_thresholds.update(s.first_hit)
    reused = len(done)
    pending = [k for k in by_key if k not in done]
    say(
        f"store {st.path}: reused {reused} of {len(by_key)} runs"
        + (f", {len(pending)} to train" if pending else "")
    )
    all_thresholds = sorted(set(thresholds) | extra_thresholds)
    groups = _plan_groups(st, pending, all_thresholds)
    if call.executor is None:  # the same shards as an executor's (``driver.plan_shards``)
        split: list[tuple[list[str], dict[str, Any] | None]] = []
        for gkeys, ck_state in groups:
            if ck_state is not None:  # a checkpointed group resumes as it was
                split.append((gkeys, ck_state))
            else:
                split.extend((keys, None) for keys in _split_fresh(call, gkeys, by_key))
        groups = split
    resumed: dict[str, int] = {}
    if call.executor is not None and groups:
        from depthaccel.executors.driver import sweep_on_executor

        trained = sweep_on_executor(
            st, call.executor, call.X, call.y, call.p, call.iters, groups, by_key,
            optimum=call.optimum, thresholds=all_thresholds, log_points=call.log_points,
            device=call.device, dtype=call.dtype, dtype_name=_dtype_name(call.dtype),
            checkpoint_every=call.checkpoint_every, progress=call.progress, say=say,
            options=call.options, fingerprint=fp, shard_runs=call.shard_runs,
            to_stored=_result_to_stored,
            reused=reused, resumed=resumed,
        )  # fmt: skip
        for k, r in trained.items():
            done[k] = replace(r, first_hit={t: r.first_hit[t] for t in thresholds})
        groups = []
    for gkeys, ck_state in groups:
        gk = group_key(gkeys)
        group_thresholds = ck_state["thresholds"] if ck_state is not None else all_thresholds
        if ck_state is not None:
            resumed[gk] = int(ck_state["iteration"])
            say(
                f"resuming {len(gkeys)} runs from iteration {ck_state['iteration']} of {call.iters}"
            )
        else:
            say(f"training {len(gkeys)} runs for {call.iters} iterations")
        results = _train_group(
            st, call, fp, gkeys, [by_key[k] for k in gkeys], group_thresholds, ck_state
        )
        for k, r in zip(gkeys, results, strict=True):
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
    into shards afterwards: ``_split_fresh``, ``executors.driver.plan_shards``)."""
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


def _split_fresh(call: _SweepCall, keys: list[str], by_key: dict[str, Run]) -> list[list[str]]:
    """The fresh runs ``keys`` cut into the shards an executor would train
    (``executors.driver.plan_shards``: same ``split_runs``, same engine groups)."""
    from depthaccel.executors.shards import engine_group, split_runs

    d = int(np.shape(call.X)[1])
    k = 1 if len(np.shape(call.y)) == 1 else int(np.shape(call.y)[1])
    fast = bool(call.options.get("fast_width1", True))
    runs = [by_key[key] for key in keys]
    pieces = split_runs(runs, lambda r: engine_group(r, d, k, fast), call.shard_runs)
    return [[keys[i] for i in idx] for idx in pieces]


def _train_group(
    st: Store,
    call: _SweepCall,
    fp: str,
    gkeys: list[str],
    runs: list[Run],
    thresholds: list[float],
    ck_state: dict[str, Any] | None,
) -> list[RunResult]:
    """Train one group of pending runs (store keys ``gkeys``), from its checkpoint
    ``ck_state`` when there is one, checkpointing into the store; store its results."""
    gk = group_key(gkeys)

    def save(state: dict[str, Any]) -> None:
        st.save_checkpoint(gk, gkeys, int(state["t"]), checkpoint_blob(state, thresholds))

    if ck_state is None:
        results = call.train(runs, thresholds, checkpoint=save)
    else:
        try:
            results = call.train(runs, thresholds, checkpoint=save, resume=ck_state["trainer"])
        except ValueError as e:  # e.g. saved by another version of the trainer
            warnings.warn(
                f"cannot resume from the checkpoint ({e}); training these runs from the start",
                stacklevel=3,
            )
            results = call.train(runs, thresholds, checkpoint=save)
    extra = {"device": str(call.device), "dtype": _dtype_name(call.dtype), "group_size": len(runs)}
    st.finish_group(
        gk, [_result_to_stored(k, r, fp, extra) for k, r in zip(gkeys, results, strict=True)]
    )
    return results


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

    def __call__(self, X: Any, y: Any, p: float, runs: Sequence[Run], iters: int, **kwargs: Any):
        for name in ("checkpoint", "resume"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"StoreTrainer handles checkpoints itself; do not pass {name}=")
        kwargs.setdefault("checkpoint_every", self.checkpoint_every)
        res = sweep(X, y, p, runs, iters, store=self.store, log=self.log, **kwargs)
        self.reused += res.reused
        self.computed += res.computed
        return res.results
