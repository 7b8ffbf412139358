"""Executors: where a sweep's shards of runs and an experiment's independent tasks run.

* :class:`LocalExecutor` -- this process (the default of ``sweep``; no Ray needed, none
  imported);
* ``RayExecutor`` (``depthaccel.executors.ray_executor``; needs the ``ray`` extra) -- a
  local Ray cluster it starts, or an existing one it joins.

``sweep.sweep(..., executor=...)`` describes its data and settings as one
:class:`SweepSpec`; the driver (``driver``) splits the new runs into shards of at most
``shard_runs`` runs (``shards.split_runs``: a function of the runs only, the same plan
whatever the executor), the executor trains them, ``executor.workers`` at once
(``worker.run_shard`` wherever they run) and streams checkpoints and results back; the
driver is the only writer of the results store. ``executor.map(fn, items)`` runs independent tasks (e.g.
one MNIST net each; :class:`TaskHooks` report their results and checkpoints as they come). ``make_executor`` builds the executor the command-line options ask
for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from depthaccel.executors.base import (
    Executor,
    ExecutorError,
    Shard,
    ShardEvent,
    ShardFailedError,
    SweepSpec,
)
from depthaccel.executors.local import LocalExecutor
from depthaccel.executors.tasks import TaskHooks
from depthaccel.validation import COUNT, check

if TYPE_CHECKING:
    from depthaccel.executors.ray_executor import RayExecutor

__all__ = [
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "RayExecutor",
    "Shard",
    "ShardEvent",
    "ShardFailedError",
    "SweepSpec",
    "TaskHooks",
    "make_executor",
]

RAY_MISSING = (
    "Ray is not installed: --jobs N (N > 1) and --ray-address need it; "
    "install it with: pip install 'depthaccel[ray]'"
)


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":  # imported on first use only: `import depthaccel` stays Ray-free
        from depthaccel.executors.ray_executor import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_executor(
    jobs: int = 1,
    address: str | None = None,
    *,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> Executor | None:
    """The executor of the command-line options ``--jobs``, ``--ray-address``, ``--threads``.

    ``jobs == 1`` and no address (``address``, else ``$RAY_ADDRESS``): None (``sweep``
    then trains in this process, with a ``LocalExecutor``). ``jobs > 1``: a ``RayExecutor`` that starts a local
    cluster of ``jobs`` CPUs (one shard at a time per ``threads`` CPUs). An address: a
    ``RayExecutor`` that joins that cluster (``jobs`` is then not used).

    Raises:
        ValueError: jobs or threads < 1.
        ExecutorError: Ray is needed but not installed (one line saying how to install
            it), or the cluster cannot be started or joined.
    """
    jobs = check("jobs", jobs, COUNT)
    threads = check("threads", threads, COUNT)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if jobs == 1 and address is None:
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ExecutorError(RAY_MISSING) from None
    from depthaccel.executors.ray_executor import RayExecutor

    if address is not None:
        return RayExecutor(address=address, threads=threads, log=log)
    return RayExecutor(num_cpus=int(jobs), threads=threads, log=log)
