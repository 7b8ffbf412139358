"""How a sweep's new runs are split into shards (units of work for an executor).

A shard is one ``depthaccel.train.train`` call: all its runs share the data and the loss,
and the trainer batches them as one tensor program (one residual GEMM pair per step for
every run of the shard, then one batched update per engine group). Per step, the cost
of a run on the l_p losses is dominated by its share of those GEMMs (4 m d FLOP), so it
is nearly the same for every run; a shard's cost is its number of runs.

``split_runs(runs, group_of, max_runs=SHARD_RUNS)``:

1. partition the runs by the engine's group (``group_of``: same method, same shapes;
   runs of one group are updated by one batched kernel), in first-appearance order;
2. cut each group of g runs into ``ceil(g / max_runs)`` consecutive pieces of
   near-equal size (sizes differ by at most one, larger pieces first);
3. the pieces are the shards; inside a shard, runs keep the order they were given in.

The plan is a deterministic function of the run list (and ``max_runs``) only, never of
the executor or its number of workers: every path of ``depthaccel.sweep.sweep`` (``LocalExecutor``
in this process, ``RayExecutor`` with any number of workers) trains
exactly the same batches, so their float64 results are bit-identical and ``--jobs N``
reproduces ``--jobs 1``. (A batch's composition changes MKL's rounding of the batched
GEMM rows in the last bits, and runs near the stability edge or escaping the saddle at
0 amplify that to visible differences: the batches must not depend on the workers.)
The workers only decide how many shards train at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["SHARD_RUNS", "engine_group", "split_runs"]

#: Most runs in one shard. 48: large enough for efficient batched GEMMs (the trainer's
#: per-run cost levels off well below it), small enough that a typical round yields a
#: few shards to spread over workers: fig3's l4 first round of 81 width-1 runs becomes 2
#: shards of 41 and 40 runs, which keeps 2 workers busy (the goal machine has 2 cores).
SHARD_RUNS = 48


def engine_group(run: Any, d: int, k: int, fast_width1: bool = True) -> Hashable:
    """The engine's batching group of ``run`` on data with d features and k outputs (runs
    of one group are updated by one batched kernel of ``depthaccel.train.groups``)."""
    from depthaccel.train.groups import batch_signature

    return batch_signature(run, d, k, fast_width1)


def check_max_runs(max_runs: Any) -> int:
    """``max_runs`` as an int >= 1, else ValueError (one line)."""
    if isinstance(max_runs, bool) or not isinstance(max_runs, (int, float)) or max_runs < 1:
        raise ValueError(f"the runs per shard must be an integer >= 1, got {max_runs!r}")
    if int(max_runs) != max_runs:
        raise ValueError(f"the runs per shard must be an integer >= 1, got {max_runs!r}")
    return int(max_runs)


def split_runs(
    runs: Sequence[T], group_of: Callable[[T], Hashable], max_runs: int = SHARD_RUNS
) -> list[list[int]]:
    """Indices into ``runs`` of each shard (see the module docstring): every index exactly
    once, no shard empty or mixing engine groups or larger than ``max_runs``.

    Raises:
        ValueError: ``max_runs`` is not an integer >= 1.
    """
    max_runs = check_max_runs(max_runs)
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(group_of(r), []).append(i)
    shards: list[list[int]] = []
    for idx in groups.values():
        parts = math.ceil(len(idx) / max_runs)
        base, extra = divmod(len(idx), parts)
        start = 0
        for j in range(parts):
            size = base + (1 if j < extra else 0)
            shards.append(idx[start : start + size])
            start += size
    return shards
