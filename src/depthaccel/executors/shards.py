"""How a sweep's new runs are split into shards (units of work for an executor).

A shard is one ``depthaccel.train.train`` call: all its runs share the data and the loss,
and the trainer batches them as one tensor program (one residual GEMM pair per step for
every run of the shard, then one batched update per engine group). Per step, the cost
of a run on the l_p losses is dominated by its share of those GEMMs (4 m d FLOP), so it
is nearly the same for every run; a shard's cost is its number of runs.

``split_runs(runs, n, group_of)``:

1. partition the runs by the engine's group (``group_of``: same method, same shapes;
   runs of one group are updated by one batched kernel), in first-appearance order;
2. cut each group into pieces of at most ``ceil(len(runs) / n)`` runs (as equal as
   possible);
3. deal the pieces, largest first, onto ``n`` shards, each piece onto the shard with the
   fewest runs so far (ties: the lowest index): the classic longest-processing-time
   rule, so the shards' sizes differ by at most the size of one piece;
4. drop empty shards; inside a shard, runs keep the order they were given in.

The split is a deterministic function of the run list and ``n``, so a local executor
given the same ``n`` trains exactly the same shards as a Ray cluster with ``n`` workers
(that is what makes their float64 results bit-identical). A few large shards, never one
task per run: ``n`` is the number of workers, not the number of runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["engine_group", "split_runs"]


def engine_group(run: Any, d: int, k: int, fast_width1: bool = True) -> Hashable:
    """The engine's batching group of ``run`` on data with d features and k outputs (runs
    of one group are updated by one batched kernel of ``depthaccel.train.groups``)."""
    from depthaccel.train.groups import batch_signature

    return batch_signature(run, d, k, fast_width1)


def split_runs(runs: Sequence[T], n: int, group_of: Callable[[T], Hashable]) -> list[list[int]]:
    """Indices into ``runs`` of each shard (see the module docstring); at most ``n`` shards,
    none empty, together every index exactly once."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"the number of shards must be an integer >= 1, got {n!r}")
    n = int(n)
    if not runs:
        return []
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(group_of(r), []).append(i)
    cap = math.ceil(len(runs) / n)
    pieces: list[list[int]] = []
    for idx in groups.values():
        parts = math.ceil(len(idx) / cap)
        base, extra = divmod(len(idx), parts)
        start = 0
        for j in range(parts):
            size = base + (1 if j < extra else 0)
            pieces.append(idx[start : start + size])
            start += size
    # largest first; among equal sizes keep the order they were made in (stable sort)
    pieces.sort(key=len, reverse=True)
    shards: list[list[int]] = [[] for _ in range(n)]
    for piece in pieces:
        target = min(range(n), key=lambda s: (len(shards[s]), s))
        shards[target].extend(piece)
    return [sorted(s) for s in shards if s]
