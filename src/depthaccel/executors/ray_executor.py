"""The Ray executor: shards as streaming generator tasks on a local or existing Ray cluster.

Set-up: ``RayExecutor(num_cpus=N)`` starts a local cluster of N CPUs (and shuts it down
in ``close()``); ``RayExecutor(address=ADDR)`` joins a running cluster (``ray start
--head`` / ``ray start --address``; every node needs this package and its
dependencies installed) and leaves it running; when Ray is already initialised in this
process the executor uses that and leaves it alone.

Sweeps (``train_shards``): the ``SweepSpec`` (data and settings) goes into the object
store once (``ray.put``); each shard is one task (``num_cpus=threads``, one GPU with
``device="cuda"``) that runs ``worker.run_shard`` in a thread and yields its events
(a streaming generator, ``num_returns="streaming"``): the driver receives every
checkpoint while the task runs and writes it to the store. Ray's own retries are off
(``max_retries=0``): when a task is lost (worker killed, node gone) the driver
resubmits the shard from the latest checkpoint in the store (``ShardSink.retry``,
bounded). An exception raised by the training code itself is not retried: it stops
the sweep (the other tasks are cancelled) and propagates.

Tasks (``map``): each item is one Ray task; ``gpu=True`` asks for one GPU per task.
Checkpointed tasks (``map(..., on_checkpoint=...)``): each item is a streaming task
that runs ``fn(item, start, emit)`` in a thread and yields every ``emit``ted checkpoint to
the driver as it comes (the driver stores it), then the result; they are not retried: a
lost or failed task stops the map, and the next call resumes it from its checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import numpy as np
import ray
import ray.exceptions

from depthaccel.executors.base import (
    ClosesOnExit,
    Done,
    ExecutorError,
    Shard,
    ShardEvent,
    ShardSink,
    SweepSpec,
)
from depthaccel.executors.tasks import TaskFn, TaskHooks
from depthaccel.executors.turns import DriverTurns
from depthaccel.executors.worker import run_shard
from depthaccel.signals import terminated
from depthaccel.validation import COUNT, check

__all__ = ["RayExecutor"]

#: Errors that mean "the task was lost", not "the code failed": the shard is resubmitted.
LOST = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.OwnerDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.RaySystemError,
)


class _NoTokenNotice(logging.Filter):
    """Drops Ray's notice that token authentication is on (the safe default: nothing for
    the user to do); its warning that authentication is *off* still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled")


logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
    _NoTokenNotice()
)


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def _events_of(run: Callable[[Callable[[Any], None]], None], name: str) -> Iterator[Any]:
    """Run ``run(put)`` in a thread of this worker and yield everything it ``put``s, as it
    comes; an exception of ``run`` is re-raised here (in the task) after its events."""
    q: queue.Queue = queue.Queue()

    def target() -> None:
        try:
            run(q.put)
        except BaseException as e:  # noqa: BLE001 - re-raised in the generator below
            q.put(_Failed(e))
        finally:
            q.put(_END)

    th = threading.Thread(target=target, name=name, daemon=True)
    th.start()
    while True:
        item = q.get()
        if item is _END:
            break
        if isinstance(item, _Failed):
            raise item.exc
        yield item
    th.join()


def _shard_events(spec: SweepSpec, shard: Shard, threads: int) -> Iterator[ShardEvent]:
    """Run ``run_shard`` in a thread of this worker and yield its events as they come."""
    import torch

    torch.set_num_threads(threads)
    # the object store's arrays are read-only; the trainer wants its own (writable) copy
    spec = replace(spec, X=np.array(spec.X), y=np.array(spec.y))
    yield from _events_of(
        lambda put: run_shard(spec, shard, put), f"depthaccel-shard-{shard.index}"
    )


def _call(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def _checkpointed_call(
    fn: Callable[..., Any], item: Any, start: Any, threads: int
) -> Iterator[tuple[str, Any, Any]]:
    """Run ``fn(item, start, emit)`` in a thread of this worker; yield ``("checkpoint",
    step, state)`` for every ``emit(step, state)`` as it comes, then ``("result", value,
    None)``."""
    import torch

    torch.set_num_threads(threads)

    def run(put: Callable[[Any], None]) -> None:
        value = fn(item, start, lambda step, state: put(("checkpoint", step, state)))
        put(("result", value, None))

    yield from _events_of(run, "depthaccel-task")


_shard_task = ray.remote(num_returns="streaming", max_retries=0)(_shard_events)
_map_task = ray.remote(_call)
_checkpointed_task = ray.remote(num_returns="streaming", max_retries=0)(_checkpointed_call)


class RayExecutor(ClosesOnExit):
    """Shards and tasks on a Ray cluster (see the module docstring).

    Args:
        num_cpus: start a local cluster with this many CPUs (default: Ray's, all cores).
        address: join the cluster at this address instead (``"auto"``, ``host:port``,
            ``ray://host:10001``).
        threads: torch threads (and Ray CPUs) per task.
        max_retries: how often a shard whose task was lost is resubmitted (from its
            latest stored checkpoint) before the sweep stops with ``ShardFailedError``.
        max_task_retries: how often ``map`` tasks are retried by Ray when lost.
        log: receives one-line messages (cluster started/joined/stopped).
        observer: ``(shard, event)`` callback after the driver handled each event.
    """

    name = "ray"

    def __init__(
        self,
        *,
        num_cpus: int | None = None,
        address: str | None = None,
        threads: int = 1,
        max_retries: int = 3,
        max_task_retries: int = 3,
        log: Callable[[str], None] | None = None,
        observer: Callable[[Shard, ShardEvent], None] | None = None,
    ):
        threads = check("threads", threads, COUNT)
        if num_cpus is not None and address is not None:
            raise ValueError(
                "give num_cpus (start a local cluster) or address (join one), not both"
            )
        if num_cpus is not None:
            num_cpus = check("num_cpus", num_cpus, COUNT)
        self.threads = int(threads)
        #: set by a caller that runs driver code in several threads (``turns.DriverTurns``):
        #: the executor gives the turn away while it waits for the cluster
        self.turns: DriverTurns | None = None
        self.max_retries = int(max_retries)
        self.max_task_retries = int(max_task_retries)
        self.observer = observer
        self._log = log or (lambda msg: None)
        self._owns = False
        self._closed = False
        # threads inside train_shards/map, and the flag that makes them leave (close)
        self._closing = threading.Event()
        self._in_ray = 0
        self._in_ray_lock = threading.Lock()
        self.address = address
        self.pids: list[int] = []
        if ray.is_initialized():
            self.mode = "existing"
        else:
            # Owned from the first moment: a signal or an error while Ray starts must not
            # leave its processes behind (see _abort_start).
            self._owns = True
            self.mode = "joined" if address is not None else "started"
            sigterm = signal.getsignal(signal.SIGTERM)
            try:
                if address is not None:
                    _probe(address)
                    ray.init(address=address, logging_level=logging.WARNING)
                else:
                    ray.init(
                        address="local",
                        num_cpus=num_cpus,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                        # Ray starts workers at nice 15; the workers do the training here,
                        # and on a busy machine nice 15 gave them a fraction of a core each
                        _system_config={"worker_niceness": 0},
                    )
            except BaseException as e:
                self._abort_start()
                if isinstance(e, SystemExit) and e.code == signal.SIGTERM:
                    # Ray's own SIGTERM handler (installed first thing in ray.init)
                    raise terminated() from None
                if isinstance(e, ExecutorError) or not isinstance(e, Exception):
                    raise  # KeyboardInterrupt, SIGTERM (depthaccel.signals.Terminated)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                where = (
                    f"join the Ray cluster at {address!r}"
                    if address
                    else "start a local Ray cluster"
                )
                raise ExecutorError(f"cannot {where}: {first}") from e
            finally:
                _keep_sigterm_handler(sigterm)
        try:
            self._describe_cluster(address)
        except BaseException:
            self.close()
            raise

    def _describe_cluster(self, address: str | None) -> None:
        self.cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.mode == "started":
            self.pids = _node_pids()
            self._log(
                f"ray: started a local cluster with {self.cpus} CPUs "
                f"({self.workers} workers x {self.threads} torch thread(s)); "
                f"processes {' '.join(map(str, self.pids))}; it is shut down on exit"
            )
        elif self.mode == "joined":
            self._log(
                f"ray: joined the cluster at {address} ({self.cpus} CPUs, {self.workers} workers)"
            )

    # -- Executor ------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Shards that can train at once: the cluster's CPUs / threads per task (>= 1)."""
        return max(1, self.cpus // self.threads)

    def settings(self) -> dict[str, Any]:
        return {
            "executor": "ray",
            "ray_version": ray.__version__,
            "cluster": {"started": "local cluster started by this command"}.get(
                self.mode, f"existing cluster ({self.address or 'this process'})"
            ),
            "cluster_cpus": self.cpus,
            "threads_per_task": self.threads,
            "workers": self.workers,
        }

    def _task_options(self, spec: SweepSpec | None = None, gpu: bool = False) -> dict[str, Any]:
        use_gpu = gpu or (spec is not None and str(spec.device).startswith("cuda"))
        return {"num_cpus": self.threads, "num_gpus": 1 if use_gpu else 0}

    def _waiting(self):
        return self.turns.released() if self.turns is not None else nullcontext()

    @contextlib.contextmanager
    def _using_ray(self) -> Iterator[None]:
        """A thread's stay in Ray's API (``train_shards``, ``map``): refused once the
        executor is closing, counted so that ``close`` shuts Ray down only after every
        thread has left (a thread still inside Ray's core worker when it is shut down
        makes Ray end the whole process with status 1)."""
        with self._in_ray_lock:
            if self._closing.is_set():
                raise ExecutorClosed("the Ray executor was shut down")
            self._in_ray += 1
        try:
            yield
        finally:
            with self._in_ray_lock:
                self._in_ray -= 1

    def train_shards(self, spec: SweepSpec, shards: Sequence[Shard], sink: ShardSink) -> None:
        with self._using_ray(), self._waiting():
            self._train_shards(spec, shards, sink)

    def _train_shards(self, spec: SweepSpec, shards: Sequence[Shard], sink: ShardSink) -> None:
        spec_ref = ray.put(spec)
        opts = self._task_options(spec)

        def submit(shard: Shard):
            return _shard_task.options(**opts).remote(spec_ref, shard, self.threads)

        running: dict[Any, Shard] = {submit(s): s for s in shards}
        finished: set[int] = set()
        try:
            for gen, ref in _streamed_refs(running, self._closing):
                shard = running[gen]
                try:
                    event = ray.get(ref)
                except LOST as e:
                    del running[gen]
                    if shard.index in finished:  # lost after it delivered its results
                        continue
                    new = sink.retry(shard, e)
                    running[submit(new)] = new
                    continue
                del ref
                sink.event(shard, event)
                if isinstance(event, Done):
                    finished.add(shard.index)
        except BaseException:
            _cancel_streams(running)
            raise

    def map(
        self, fn: TaskFn, items: Sequence[Any], *, gpu: bool = False, hooks: TaskHooks | None = None
    ) -> list:
        hooks = hooks or TaskHooks()
        with self._using_ray():
            if hooks.checkpointed:
                return self._map_checkpointed(fn, items, gpu, hooks)
            return self._map(fn, items, gpu, hooks)

    def _map(self, fn, items, gpu, hooks) -> list:
        opts = dict(self._task_options(gpu=gpu), max_retries=self.max_task_retries)
        fn_ref = ray.put(fn)  # the function (and what it holds, e.g. data) goes out once
        refs = [_map_task.options(**opts).remote(fn_ref, item, self.threads) for item in items]
        try:
            with self._waiting():
                index = {r: i for i, r in enumerate(refs)}
                out: list[Any] = [None] * len(refs)
                pending = list(refs)
                while pending:  # in order of completion
                    done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                    if not done:
                        _raise_if_closing(self._closing)
                        continue
                    i = index[done[0]]
                    out[i] = ray.get(done[0])
                    hooks.done(i, out[i])
                return out
        except BaseException:
            _cancel_unfinished(refs)
            raise

    def _map_checkpointed(self, fn, items, gpu, hooks) -> list:
        """Each item a streaming task: its checkpoints reach ``hooks.on_checkpoint`` while it
        runs. Not retried by Ray or here: a lost or failed task stops the map (the others
        are cancelled) and the caller resumes it from its latest checkpoint next time."""
        opts = self._task_options(gpu=gpu)
        fn_ref = ray.put(fn)
        running = {
            _checkpointed_task.options(**opts).remote(fn_ref, item, hooks.start(i), self.threads): i
            for i, item in enumerate(items)
        }
        out: list[Any] = [None] * len(items)
        try:
            with self._waiting():
                for gen, ref in _streamed_refs(running, self._closing):
                    i = running[gen]
                    kind, a, b = ray.get(ref)
                    del ref
                    if kind == "checkpoint":
                        hooks.on_checkpoint(i, a, b)
                    else:
                        out[i] = a
                        hooks.done(i, a)
            return out
        except BaseException:
            _cancel_streams(running)
            raise

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Shut Ray down if this executor initialised it (a started cluster stops; a
        joined one keeps running, only this driver disconnects)."""
        if self._owns and not self._closed:
            self._closed = True
            self._leave_ray()
            leftovers = _ray_descendants()
            try:
                ray.shutdown()
            finally:
                _end_processes(leftovers)  # whatever ray.shutdown did not stop
            if self.mode == "started":
                self._log("ray: local cluster shut down")

    def _leave_ray(self, wait: float = 10.0) -> None:
        """Make the threads inside ``train_shards``/``map`` leave them (they raise
        :class:`ExecutorClosed` at their next poll, within about a second, cancelling
        their tasks on the way out) and wait for them, at most ``wait`` seconds."""
        with self._in_ray_lock:
            self._closing.set()
        deadline = time.monotonic() + wait
        while self._in_ray and time.monotonic() < deadline:
            time.sleep(0.05)

    def _abort_start(self) -> None:
        """Undo a ``ray.init`` that failed or was interrupted: shut Ray down and end the
        processes it had started (a signal during the start left Ray's agents running
        when only ``ray.shutdown`` was tried, or nothing)."""
        self._closed = True
        leftovers = _ray_descendants()
        try:
            ray.shutdown()
        except BaseException:  # noqa: BLE001 - best effort; the processes are ended below
            pass
        finally:
            _end_processes(leftovers + _ray_descendants())

    def __repr__(self) -> str:
        return f"RayExecutor(mode={self.mode!r}, cpus={self.cpus}, threads={self.threads})"


class ExecutorClosed(RuntimeError):
    """Raised in a thread that was waiting on the cluster when the executor closed."""


def _raise_if_closing(closing: threading.Event) -> None:
    if closing.is_set():
        raise ExecutorClosed("the Ray executor was shut down")


def _streamed_refs(running: dict[Any, Any], closing: threading.Event) -> Iterator[tuple[Any, Any]]:
    """``(generator, object ref)`` for each item the streaming tasks that are the keys of
    ``running`` yield, in order of arrival, until ``running`` is empty; a generator that
    ends is removed from it. The caller may add or remove generators between items.
    Raises :class:`ExecutorClosed` once ``closing`` is set (checked every second)."""
    while running:
        _raise_if_closing(closing)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for gen in ready:
            if gen not in running:  # removed by the caller meanwhile
                continue
            try:
                ref = next(gen)
            except StopIteration:
                del running[gen]
                continue
            yield gen, ref
            ref = None  # not held here while waiting for the next item (it may be large)


def _cancel_streams(generators: Iterable[Any]) -> None:
    """Force-cancel the streaming tasks of ``generators`` (best effort: the cluster may
    be gone)."""
    for gen in generators:
        try:
            ray.cancel(gen, force=True)
        except Exception:  # noqa: BLE001
            pass


def _cancel_unfinished(refs: list[Any]) -> None:
    """Force-cancel the tasks of ``refs`` that have not finished. Never a finished one:
    Ray 2.60 aborts the whole driver process ("Check failed: ... Tried to complete task
    that was not pending") when a force-cancel races with the reply of a task that is
    just completing (seen in the test suite: a failed task cancelled with the others)."""
    try:
        _, unfinished = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    except Exception:  # noqa: BLE001 - the cluster may be gone
        return
    for r in unfinished:
        try:
            ray.cancel(r, force=True)
        except Exception:  # noqa: BLE001 - best effort
            pass


def _probe(address: str, timeout: float = 10.0) -> None:
    """Fail fast (ExecutorError) when nothing listens at a ``host:port`` or
    ``ray://host:port`` address: ``ray.init`` would wait for it without end."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, OverflowError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ExecutorError(
            f"cannot join the Ray cluster at {address!r}: nothing answers at "
            f"{host}:{port} ({why}); start it with 'ray start --head' or check the address"
        ) from None


def _keep_sigterm_handler(handler: Any) -> None:
    """Put back the caller's Python SIGTERM handler (e.g. the command line's, which
    raises an exception so that cleanup runs) after ``ray.init`` replaced it with one
    that calls ``sys.exit``; a default handler is left as Ray set it."""
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, handler)


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every process (Linux /proc; empty elsewhere)."""
    tree: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ray_descendants() -> list[int]:
    """PIDs of this process's descendants that belong to Ray (their command line names
    ray: gcs_server, raylet, the dashboard and runtime-env agents, workers)."""
    tree = _children()
    out: list[int] = []
    todo = list(tree.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return [p for p in out if _is_ray_process(_cmdline(p))]


def _is_ray_process(cmdline: str) -> bool:
    """A program of the ray package (gcs_server, raylet, agents: their paths hold
    /ray/) or a Ray worker (named ray::...)."""
    return "/ray/" in cmdline or cmdline.startswith("ray::")


def _end_processes(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM the processes still alive among ``pids``, then SIGKILL those that did
    not exit within ``grace`` seconds."""
    alive = [p for p in dict.fromkeys(pids) if _alive(p)]
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def _node_pids() -> list[int]:
    """PIDs of the processes of the local cluster this process started (GCS, raylet, ...),
    as Ray's node object records them (``ray._private``: no public API lists them)."""
    try:
        node = ray._private.worker._global_node
        return sorted(
            {
                int(info.process.pid)
                for infos in node.all_processes.values()
                for info in infos
                if info.process is not None
            }
        )
    except Exception:  # noqa: BLE001 - a private API: report nothing rather than fail
        return []
