"""Tests of depthaccel.executors.shards: how a sweep's runs are split into shards."""

from __future__ import annotations

import itertools
import math

import pytest

from depthaccel.executors.shards import SHARD_RUNS, engine_group, split_runs
from depthaccel.train import Run

same = lambda r: r  # noqa: E731 - the letters stand for the engine group


def test_split_is_a_partition_into_near_equal_pieces_of_one_group_each():
    # 3 groups of sizes 7, 4, 1, interleaved
    runs = list("AABAAABBACAB")
    for max_runs in range(1, 15):
        shards = split_runs(runs, same, max_runs)
        flat = sorted(itertools.chain.from_iterable(shards))
        assert flat == list(range(len(runs)))  # every run exactly once
        assert all(s == sorted(s) and s for s in shards)  # given order kept, none empty
        assert all(len({runs[i] for i in s}) == 1 for s in shards)  # groups never mixed
        assert all(len(s) <= max_runs for s in shards)
        for g in "ABC":  # each group: ceil(size / max_runs) pieces, sizes differ by <= 1
            sizes = [len(s) for s in shards if runs[s[0]] == g]
            size = runs.count(g)
            assert len(sizes) == math.ceil(size / max_runs) and sum(sizes) == size
            assert max(sizes) - min(sizes) <= 1
        assert split_runs(runs, same, max_runs) == shards  # deterministic


def test_split_examples():
    runs = list("AAAABBBB")
    assert split_runs(runs, same, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split_runs(runs, same, 100) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # never merged
    assert split_runs(list("AAAAAAA"), same, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_runs(list("ABAB"), same, 1) == [[0], [2], [1], [3]]  # first-appearance order
    assert split_runs([], same, 4) == []
    # the documented choice: fig3's l4 first round of 81 width-1 runs -> 41 + 40
    assert SHARD_RUNS == 48
    assert [len(s) for s in split_runs(["w1"] * 81, same)] == [41, 40]


def test_split_does_not_depend_on_anything_but_the_runs():
    """No worker count enters: the default plan is the same for every caller."""
    runs = ["A"] * 5 + ["B"] * 61
    assert split_runs(runs, same) == split_runs(list(runs), same, SHARD_RUNS)
    assert [len(s) for s in split_runs(runs, same)] == [5, 31, 30]


@pytest.mark.parametrize("max_runs", [0, -1, 1.5, True, "2", None])
def test_split_refuses_bad_max_runs(max_runs):
    with pytest.raises(ValueError, match="runs per shard must be an integer >= 1"):
        split_runs(list("AB"), same, max_runs)


def test_engine_group_matches_the_trainers_batching():
    d, k = 5, 1
    a = Run("gd", 1e-2, depth=2)
    b = Run("gd", 3e-2, depth=3)  # width-1 nets of any depth share one group
    c = Run("adam", 1e-2, depth=2)
    e2, e3 = Run("e2e", 1e-2, depth=2), Run("e2e", 1e-2, depth=3)
    wide = Run("gd", 1e-2, depth=2, hidden=3)
    g = lambda r, fast=True: engine_group(r, d, k, fast)  # noqa: E731
    assert g(a) == g(b)
    assert len({g(a), g(c), g(e2), g(e3), g(wide)}) == 5
    # without the width-1 fast path, depth-2 and depth-3 nets have different shapes
    assert g(a, False) != g(b, False)
