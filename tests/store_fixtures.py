"""A synthetic finished run for the store tests (importable without the package, so the
concurrent-writer subprocesses start fast)."""

from __future__ import annotations

import numpy as np


def make_run(store, i: int, n: int = 7, diverged: bool = False):
    """A StoredRun of ``store`` (the depthaccel.store module) with random curves, seeded by i."""
    rng = np.random.default_rng(i)
    config = {
        "method": "gd",
        "lr": 10.0 ** -(i % 5),
        "depth": 1 + i % 3,
        "hparams": [["b", 0.9]],
        "seed": i,
    }
    gap = rng.random(n) * 10.0 ** -rng.integers(0, 12, n)
    if diverged:
        gap[-2:] = np.inf
    return store.StoredRun(
        key=store.run_key(config, "fp", "1"),
        config=config,
        data_fingerprint="fp",
        math_version="1",
        label=f"run {i}",
        iters=np.arange(n, dtype=np.int64) * 1000,
        gap=gap,
        first_hit={1e-3: 17 + i, 1e-9: None, 0.1: 0},
        final_gap=float(gap[-1]),
        diverged=diverged,
        diverged_at=5000 if diverged else None,
        wall_time=1.25 + i,
        extra={"device": "cpu", "dtype": "float64"},
    )
