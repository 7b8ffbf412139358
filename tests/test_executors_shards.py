"""Tests of depthaccel.executors.shards: how a sweep's runs are split into shards."""

from __future__ import annotations

import itertools
import math

import pytest

from depthaccel.executors.shards import engine_group, split_runs
from depthaccel.train import Run


def test_split_is_a_balanced_partition_along_groups():
    # 3 groups of sizes 7, 4, 1 (letters stand for the engine group)
    runs = list("AAAAAAABBBBC")
    for n in range(1, 15):
        shards = split_runs(runs, n, group_of=lambda r: r)
        flat = sorted(itertools.chain.from_iterable(shards))
        assert flat == list(range(len(runs)))  # every run exactly once
        assert 1 <= len(shards) <= min(n, len(runs))
        assert all(s == sorted(s) for s in shards)  # given order kept inside a shard
        cap = math.ceil(len(runs) / n)
        sizes = [len(s) for s in shards]
        # LPT over pieces of at most `cap` runs: no shard exceeds the mean by a piece
        assert max(sizes) <= max(cap, math.ceil(len(runs) / len(shards)) + cap - 1)
        assert split_runs(runs, n, group_of=lambda r: r) == shards  # deterministic


def test_split_keeps_groups_whole_when_they_fit():
    runs = list("AAAABBBB")
    assert split_runs(runs, 2, group_of=lambda r: r) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # one big group is cut into equal pieces
    assert split_runs(list("AAAAAAA"), 3, group_of=lambda r: r) == [[0, 1, 2], [3, 4], [5, 6]]
    # n = 1: today's single group
    assert split_runs(list("ABAB"), 1, group_of=lambda r: r) == [[0, 1, 2, 3]]
    assert split_runs([], 4, group_of=lambda r: r) == []


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2"])
def test_split_refuses_bad_counts(n):
    with pytest.raises((ValueError, TypeError), match="shards|int"):
        split_runs(list("AB"), n, group_of=lambda r: r)


def test_engine_group_matches_the_trainers_batching():
    d, k = 5, 1
    a = Run("gd", 1e-2, depth=2)
    b = Run("gd", 3e-2, depth=3)  # width-1 nets of any depth share one group
    c = Run("adam", 1e-2, depth=2)
    e2, e3 = Run("e2e", 1e-2, depth=2), Run("e2e", 1e-2, depth=3)
    wide = Run("gd", 1e-2, depth=2, hidden=3)
    g = lambda r, fast=True: engine_group(r, d, k, fast)
    assert g(a) == g(b)
    assert len({g(a), g(c), g(e2), g(e3), g(wide)}) == 5
    # without the width-1 fast path, depth-2 and depth-3 nets have different shapes
    assert g(a, False) != g(b, False)
