"""Tests of depthaccel.resources: the up-front memory estimate of a training call."""

from __future__ import annotations

import pytest
import torch

from depthaccel.resources import (
    MemoryEstimateError,
    available_memory,
    check_train_memory,
    estimate_train_memory,
    format_bytes,
    run_parameters,
)
from depthaccel.train import Run, train


def test_parameter_counts_match_the_nets():
    d, k = 7, 2
    # General net: the factors' sizes (a plain count of DeepLinear-shaped matrices).
    r = Run("adam", 1e-3, depth=3, hidden=5)
    assert run_parameters(r, d, k) == (5 * 7 + 5 * 5 + 2 * 5,) * 2
    r = Run("gd", 1e-3, depth=3, hidden=(4, 6))
    assert run_parameters(r, d, k) == (4 * 7 + 6 * 4 + 2 * 6,) * 2
    # Width-1 single-output fast path: a row of d plus N - 1 scalars.
    assert run_parameters(Run("gd", 1e-3, depth=4), d, 1) == (d + 3, d + 3)
    # e2e trains W_e (k x d) but draws the net's factors to start from.
    assert run_parameters(Run("e2e", 1e-3, depth=2, hidden=9), d, k) == (k * d, 9 * d + k * 9)


def test_estimate_counts_states_and_buffers():
    m, d, k = 50, 7, 1
    gd = Run("gd", 1e-3, depth=3, hidden=10)
    adam = Run("adam", 1e-3, depth=3, hidden=10)
    n = 10 * 7 + 10 * 10 + 10
    shared = k * (4 * d + 2 * m)
    fixed = 2 * m * d + 2 * m * k
    assert estimate_train_memory([gd], m, d, k) == 8 * (4 * n + shared + fixed) + 16 * n
    assert estimate_train_memory([adam], m, d, k) == 8 * (6 * n + shared + fixed) + 16 * n
    both = estimate_train_memory([gd, adam], m, d, k, itemsize=4)
    assert both == 4 * (10 * n + 2 * shared + fixed) + 16 * n


def test_estimate_is_an_upper_bound_of_a_real_call():
    # The trainer's own tensors for a width-300 depth-3 net: compare with the count.
    X = torch.randn(40, 30, dtype=torch.float64)
    y = torch.randn(40, dtype=torch.float64)
    runs = [Run("adam", 1e-3, depth=3, hidden=300)]
    est = estimate_train_memory(runs, 40, 30, 1)
    assert est >= 8 * (300 * 30 + 300 * 300 + 300) * 3  # params, grads, two Adam states
    train(X, y, 2, runs, 2)  # it runs: the estimate is for what this call allocates


def test_check_refuses_with_the_estimate():
    runs = [Run("gd", 0.1, depth=3, hidden=200_000)] * 2
    with pytest.raises(MemoryEstimateError) as e:
        check_train_memory(runs, 100, 10, 1, available=8 * 10**9)
    msg = str(e.value)
    assert "2 runs need about" in msg and "TB of memory" in msg and "8 GB available" in msg
    assert "10x200000x200000x1" in msg
    small = [Run("gd", 0.1, depth=2)]
    assert check_train_memory(small, 100, 10, 1, available=10**9) == estimate_train_memory(
        small, 100, 10, 1
    )


def test_available_memory_and_format():
    have = available_memory("cpu")
    assert have is None or have > 10**6
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(3.2e11) == "320 GB"
    assert format_bytes(1.5e12) == "1.5 TB"
