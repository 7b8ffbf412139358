"""The explicit context every experiment measures in: ``measure(config, ctx) -> Measured``.

An :class:`ExperimentContext` carries what an experiment needs from its caller (output
folder, quick or full mode, device, dtype, data folder, progress bars, a results store, an
executor for independent tasks, a log for messages) and is the single path through which
experiments train linear runs (:meth:`ExperimentContext.train`) and map independent tasks
(:meth:`ExperimentContext.map`). There is no module-level state: two contexts never share
anything unless the caller hands them the same :class:`ContextCache` (``depthaccel
reproduce all`` does, so the Ethanol table and each l_p optimum are computed once).
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from depthaccel.data.scaling import DEFAULT_SETUP, SetupAxes

if TYPE_CHECKING:  # pragma: no cover
    from depthaccel.data import Dataset
    from depthaccel.losses import LpOptimum
    from depthaccel.train import Run, RunResult

__all__ = ["ContextCache", "ExperimentContext", "StoredTasks", "TrainingStats", "parse_dtype"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``None`` (the trainer's default), ``"float32"``/``"float64"`` or a torch dtype of
    those two -> the torch dtype; anything else is a ValueError."""
    if dtype is None or dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def _stderr(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


@dataclass
class ContextCache:
    """Data and optima computed once and shared by the contexts that hold this object.

    Keys are explicit: Ethanol tables by (resolved data folder, standardize), optima by
    the sha256 of the data's float64 bytes and p.
    """

    tasks: dict[tuple[str, bool], Any] = field(default_factory=dict)
    optima: dict[tuple[str, float], Any] = field(default_factory=dict)


@dataclass
class TrainingStats:
    """What :meth:`ExperimentContext.train` did through the results store: runs reused
    and trained, and the wall times of the batched calls that produced the runs it
    returned (a stored run keeps its original call's time)."""

    reused: int = 0
    trained: int = 0
    call_times: set[float] = field(default_factory=set)
    tasks_reused: int = 0
    tasks_run: int = 0

    @property
    def training_seconds(self) -> float:
        return float(sum(self.call_times))


@dataclass(frozen=True)
class StoredTasks:
    """How :meth:`ExperimentContext.map` keeps its tasks' results in the results store, so
    that a finished task (e.g. one MNIST net, minutes to hours) is never run twice.

    A result is stored under ``store.task_key(kind, config(item), MATH_VERSION)``; these
    callables run in the driver only (they are never sent to a worker).

    Attributes:
        kind: names the task function and its result format; part of the key, so change
            it when either changes.
        config: item -> JSON-able dict naming everything the result depends on (the
            item, the experiment's settings, device, dtype, the data's checksum).
        encode: result -> JSON-able object; ``decode`` is its inverse.
        decode: JSON object -> result.
        label: item -> short human-readable name (stored beside the result).
        keep: result -> whether it may be stored (e.g. not a run cut short by a time
            limit, which another machine would cut elsewhere).
        resumable: the task checkpoints: it is called as ``fn(item, start, emit)``, with
            ``start`` the bytes of its latest stored checkpoint (None: from the
            beginning), and each ``emit(step, state_bytes)`` is stored at once (the
            store's ``checkpoints`` table, under the task's key; deleted when its result
            is stored). A task killed mid-way then loses only what it did since its last
            checkpoint.
    """

    kind: str
    config: Callable[[Any], dict[str, Any]]
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    label: Callable[[Any], str] = str
    keep: Callable[[Any], bool] = lambda result: True
    resumable: bool = False


@dataclass
class ExperimentContext:
    """Everything an experiment gets from its caller.

    Attributes:
        out_dir: the experiment's output folder (created by the caller).
        quick: CI-sized run (``Config.quick()``) rather than the paper's setup.
        device: torch device for training ("cpu" or "cuda").
        dtype: training dtype (None: the trainer's default); strings are parsed.
        data_dir: data folder (None: ``$DEPTHACCEL_DATA_DIR`` or the default).
        progress: show progress bars (stderr).
        store: results store (sqlite file or folder) or None: train directly.
        checkpoint_every: with a store, long runs checkpoint every this many iterations.
        executor: runs independent tasks (``map``) and, with a store, the sweep's shards;
            None: in this process (nothing else is imported).
        log: one-line messages (stderr by default).
        cache: data and optima shared with other contexts given the same object.
        setup: the setup axes the paper leaves unstated
            (:class:`depthaccel.data.scaling.SetupAxes`): the global feature scale of the
            standardised Ethanol features (applied by :meth:`ethanol`) and the scale of
            the l_p loss that is minimised (applied by :meth:`lp_data`); every gap and
            figure is in that loss. Default: :data:`depthaccel.data.scaling.DEFAULT_SETUP`.
        stats: what the results store did for this context (filled by ``train``).
    """

    out_dir: Path
    quick: bool = False
    device: str = "cpu"
    dtype: torch.dtype | None = None
    data_dir: Path | None = None
    progress: bool = False
    store: Path | None = None
    checkpoint_every: int = 50_000
    executor: Any = None
    log: Callable[[str], None] = _stderr
    cache: ContextCache = field(default_factory=ContextCache)
    setup: SetupAxes = field(default_factory=lambda: DEFAULT_SETUP)
    stats: TrainingStats = field(default_factory=TrainingStats)

    def __post_init__(self) -> None:
        if not isinstance(self.setup, SetupAxes):
            raise ValueError(f"setup must be a SetupAxes, got {type(self.setup).__name__}")
        self.out_dir = Path(self.out_dir)
        self.dtype = parse_dtype(self.dtype)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        if self.store is not None:
            self.store = Path(self.store)
        if isinstance(self.checkpoint_every, bool) or int(self.checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")

    # ------------------------------------------------------------------ training

    def train(
        self, X: Any, y: Any, p: float, runs: Sequence[Run], iters: int, **train_options: Any
    ) -> list[RunResult]:
        """Train linear ``runs`` (see ``depthaccel.train.train``): THE path for every
        linear-run training of an experiment.

        ``device``, ``dtype``, ``progress`` default to the context's; ``optimum`` to the
        cached :meth:`optimum`. Without a store: ``depthaccel.train.train``. With one:
        ``depthaccel.sweep.sweep`` (stored runs are reused, long runs checkpoint every
        ``checkpoint_every`` iterations and resume; the executor, if any, trains the
        shards), and :attr:`stats` records what was reused and trained.
        """
        train_options.setdefault("device", self.device)
        train_options.setdefault("dtype", self.dtype)
        train_options.setdefault("progress", self.progress)
        if train_options.get("optimum") is None:
            train_options["optimum"] = self.optimum(X, y, p)
        if self.store is None:
            from depthaccel.train import train

            return train(X, y, p, runs, iters, **train_options)
        from depthaccel.sweep import sweep

        for name in ("checkpoint", "resume"):
            if train_options.pop(name, None) is not None:
                raise ValueError(f"the results store handles checkpoints; do not pass {name}=")
        train_options.setdefault("checkpoint_every", self.checkpoint_every)
        if self.executor is not None:
            train_options["executor"] = self.executor
        res = sweep(X, y, p, runs, iters, store=self.store, log=self._store_log, **train_options)
        self.stats.reused += res.reused
        self.stats.trained += res.computed
        self.stats.call_times.update(float(r.wall_time) for r in res.results)
        return res.results

    def _store_log(self, message: str) -> None:
        # beside the progress bars: what was reused and where a killed run resumed
        self.log(message if message.startswith("store ") else f"store: {message}")

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        gpu: bool = False,
        stored: StoredTasks | None = None,
    ) -> list:
        """``[fn(item) for item in items]``, through the executor when there is one
        (``gpu``: each task wants an accelerator). Tasks must be independent.

        With ``stored`` and a results store, results already stored are read back instead
        of being recomputed, and each new result is stored (by this process, the store's
        only writer) as soon as its task ends, so a killed sweep loses only the tasks
        that were running; :attr:`stats` counts both."""
        items = list(items)
        if stored is None or self.store is None:
            if self.executor is not None:
                return list(self.executor.map(fn, items, gpu=gpu))
            return [fn(item) for item in items]
        return self._map_stored(fn, items, gpu, stored)

    def _map_stored(
        self, fn: Callable[[Any], Any], items: list, gpu: bool, stored: StoredTasks
    ) -> list:
        import json

        from depthaccel.executors.tasks import TaskHooks
        from depthaccel.store import Store, task_key
        from depthaccel.sweep import MATH_VERSION

        keys = [task_key(stored.kind, stored.config(item), MATH_VERSION) for item in items]
        out: list[Any] = [None] * len(items)
        with Store(self.store) as st:
            todo = []
            for i, key in enumerate(keys):
                value = st.get_task(key)
                if value is None:
                    todo.append(i)
                else:
                    out[i] = stored.decode(json.loads(value))
            reused = len(items) - len(todo)
            self.stats.tasks_reused += reused
            self.log(
                f"store {self.store}: reused {reused} of {len(items)} {stored.kind} tasks"
                + (f", {len(todo)} to run" if todo else "")
            )

            if stored.resumable:  # a result stored after its last checkpoint: drop that
                saved = {g for g, _ in st.checkpoints()}
                for i in set(range(len(items))) - set(todo):
                    if keys[i] in saved:
                        st.delete_checkpoint(keys[i])

            def finished(j: int, result: Any) -> None:
                i = todo[j]
                out[i] = result
                self.stats.tasks_run += 1
                if stored.keep(result):
                    value = json.dumps(stored.encode(result))
                    st.put_task(keys[i], stored.label(items[i]), value)
                if stored.resumable:
                    st.delete_checkpoint(keys[i])

            pending = [items[i] for i in todo]
            hooks = TaskHooks(on_result=finished)
            if stored.resumable:
                starts = [st.load_checkpoint(keys[i]) for i in todo]
                resume = [None if c is None else c.state for c in starts]
                resumed = [(items[i], c.iteration) for i, c in zip(todo, starts, strict=True) if c]
                if resumed:
                    self.log(
                        f"store {self.store}: resuming "
                        + ", ".join(f"{stored.label(it)} from step {n}" for it, n in resumed)
                    )

                def on_checkpoint(j: int, step: int, state: bytes) -> None:
                    st.save_checkpoint(keys[todo[j]], [], int(step), bytes(state))

                hooks = TaskHooks(on_result=finished, on_checkpoint=on_checkpoint, resume=resume)

            if self.executor is not None:
                self.executor.map(fn, pending, gpu=gpu, hooks=hooks)
            else:
                for j, item in enumerate(pending):
                    hooks.run(fn, j, item)
        return out

    def ran_on(self) -> dict[str, Any]:
        """What the experiment ran on, for its settings and the report: device, dtype,
        torch threads, executor (and its workers), CPUs and machine type."""
        import os
        import platform

        info: dict[str, Any] = {
            "device": self.device,
            "dtype": "default" if self.dtype is None else str(self.dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(),
        }
        ex = self.executor
        if ex is None:
            info["executor"] = "in-process"
        else:
            settings = getattr(ex, "settings", None)
            info.update(
                settings() if callable(settings) else {"executor": getattr(ex, "name", "?")}
            )
            workers = getattr(ex, "workers", None)
            if isinstance(workers, int):
                info["jobs"] = workers
        info["cpus"] = os.cpu_count()
        info["machine"] = platform.machine()
        return info

    def store_summary(self) -> dict[str, Any] | None:
        """The results store's record for ``settings.json`` (None without a store)."""
        if self.store is None:
            return None
        return {
            "path": self.store.name,  # the file name only: no machine-specific folder
            "runs_reused": self.stats.reused,
            "runs_trained": self.stats.trained,
            "training_seconds": self.stats.training_seconds,
            "tasks_reused": self.stats.tasks_reused,
            "tasks_run": self.stats.tasks_run,
        }

    # ---------------------------------------------------------------- shared data

    @property
    def loss_scale(self) -> str:
        """The l_p loss that is minimised and reported: ``"paper"`` or ``"plain"``."""
        return self.setup.loss_scale

    def ethanol(self, *, standardize: bool = True) -> Dataset:
        """The Ethanol task (``depthaccel.data.load_ethanol`` on :attr:`data_dir`), loaded
        once per data folder for every context sharing :attr:`cache`. Standardised, its
        features are multiplied by the feature scale ``k`` of :attr:`setup`
        (``meta["feature_scale_k"]``)."""
        import dataclasses

        from depthaccel.data import data_dir as resolve_dir
        from depthaccel.data import load_ethanol

        folder = str(resolve_dir(self.data_dir))
        key = (folder, standardize)
        if key not in self.cache.tasks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # incomplete official batches: the csv is used
                self.cache.tasks[key] = load_ethanol(self.data_dir, standardize=standardize)
        ds = self.cache.tasks[key]
        if not standardize:
            return ds
        k = self.setup.factors(ds.X, 2.0)[0]
        if k == 1.0:
            return dataclasses.replace(ds, meta={**ds.meta, "feature_scale_k": 1.0})
        scaled_key = (folder, self.setup.feature_scale)
        if scaled_key not in self.cache.tasks:
            self.cache.tasks[scaled_key] = dataclasses.replace(
                ds, X=ds.X * k, meta={**ds.meta, "feature_scale_k": k}
            )
        return self.cache.tasks[scaled_key]

    def lp_data(self, X: Any, y: Any, p: float) -> tuple[np.ndarray, np.ndarray]:
        """``(c X, c y)``: the data on which the trainer's ``(1/p)|r|^p`` is the loss of
        :attr:`setup` (``c = 1`` for ``"paper"``, ``p^(1/p)`` for ``"plain"``). Every l_p
        experiment trains, evaluates and takes its optimum on this."""
        c = self.setup.factors(X, p)[1]
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return (X, y) if c == 1.0 else (X * c, y * c)

    def setup_settings(self, X: Any, ps: Sequence[float] = ()) -> dict[str, Any]:
        """The setup axes for ``settings.json``: presets, ``k``, the loss scale and its
        ``c`` per ``p``, and why the default is what it is (``X``: the design matrix or
        its shape)."""
        from depthaccel.data.scaling import DEFAULT_RULE

        out = self.setup.describe(X)
        out["loss_scale_c"] = {f"l{p:g}": self.setup.factors(X, p)[1] for p in ps}
        out["default"] = {"setup": DEFAULT_SETUP.describe(X), "rule": DEFAULT_RULE}
        return out

    def data_source(self, dataset: Any) -> str:
        """``dataset.source`` (files read, with their sha256) with the data folder written
        as ``<data dir>``: no machine-specific path in a committed report."""
        from depthaccel.data import data_dir as resolve_dir

        folder = str(resolve_dir(self.data_dir))
        return str(dataset.source).replace(folder, "<data dir>")

    def optimum(self, X: Any, y: Any, p: float) -> LpOptimum:
        """``depthaccel.losses.lp_optimum(X, y, p)``, computed once per data and p."""
        from depthaccel.losses import lp_optimum

        h = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
        key = (h.hexdigest(), float(p))
        if key not in self.cache.optima:
            self.cache.optima[key] = lp_optimum(X, y, p)
        return self.cache.optima[key]
