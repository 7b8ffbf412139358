"""The ``--jobs`` / ``--ray-address`` options shared by the commands that train sweeps.

``add_arguments(parser)`` adds them; ``open_executor(args, prog)`` validates them and
returns the executor they ask for (None: train in this process) or a one-line error;
``close_executor`` shuts down what it started (call it in a ``finally``: Ctrl-C too).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from depthaccel.validation import Integral, Interval, arg_type

__all__ = ["MAX_THREADS", "add_arguments", "close_executor", "describe", "open_executor"]

#: The most torch threads ``--threads`` accepts (torch's own limit is a C int).
MAX_THREADS = 1024
#: ``--jobs``: CPUs of the local Ray cluster (a bound against typos, like --threads).
JOBS = Interval(Integral, 1, 4096)
#: ``--threads``: torch threads per task.
THREADS = Interval(Integral, 1, MAX_THREADS)

HELP_JOBS = (
    "train on a local Ray cluster of N CPUs that this command starts and shuts down "
    "(the workers train the sweeps' shards, which do not depend on N, several at once: "
    "the results equal --jobs 1's; each worker uses --threads torch threads; needs the "
    "ray extra: pip install 'depthaccel[ray]'); "
    "1 (default): in this process, without Ray"
)
HELP_ADDRESS = (
    "join the running Ray cluster at ADDR (e.g. 'auto', 'head-node:6379', "
    "'ray://head-node:10001'; default: $RAY_ADDRESS when set) instead of starting one; "
    "every node needs depthaccel installed"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=arg_type(JOBS, "--jobs"), default=1, metavar="N", help=HELP_JOBS)
    p.add_argument("--ray-address", default=None, metavar="ADDR", help=HELP_ADDRESS)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_executor(args: argparse.Namespace, prog: str) -> tuple[Any, str | None]:
    """(executor or None, None) or (None, error line) for ``args.jobs``,
    ``args.ray_address`` and ``args.threads`` (0 = torch's default counts as 1 per task)."""
    from depthaccel.executors import ExecutorError, make_executor

    if isinstance(args.jobs, bool) or args.jobs < 1:
        return None, f"{prog}: error: --jobs must be >= 1, got {args.jobs}"
    threads = max(1, int(getattr(args, "threads", 1) or 1))
    if args.jobs > 1 and args.ray_address:
        _stderr(
            f"{prog}: note: --jobs {args.jobs} is not used with --ray-address: "
            "the cluster's own CPUs count"
        )
    try:
        ex = make_executor(args.jobs, args.ray_address, threads=threads, log=_stderr)
    except (ExecutorError, ValueError) as e:
        return None, f"{prog}: error: {e}"
    return ex, None


def close_executor(executor: Any) -> None:
    if executor is not None:
        executor.close()


def describe(executor: Any) -> dict[str, Any]:
    """What outputs record about the executor that trained them (JSON-able)."""
    if executor is None:
        return {"executor": "local", "where": "in this process"}
    return executor.settings()
