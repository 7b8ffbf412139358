"""Tests of depthaccel.executors.base.SweepSpec: the one description of a sweep's data and
settings that the sweep, the driver and every executor share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from depthaccel.executors.base import TRAIN_OPTIONS, SweepSpec
from depthaccel.losses import SoftmaxCE, lp_optimum
from depthaccel.store import Store
from depthaccel.sweep import data_fingerprint, spec_fingerprint, sweep
from depthaccel.train import Run
from executor_fixtures import problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_data_become_float64_c_order_and_the_settings_plain_values():
    X, y = problem()
    F = torch.as_tensor(np.asfortranarray(X), dtype=torch.float32)  # Fortran strides
    spec = SweepSpec(
        X=F, y=list(y), p=4, iters=30.0, thresholds=[1e-2, 1e-4, 1e-2], log_points=20.0,
        device=torch.device("cpu"), checkpoint_every=10.0, shard_runs=3.0, progress=1,
    )  # fmt: skip
    assert isinstance(spec.X, np.ndarray) and spec.X.dtype == np.float64
    assert spec.X.flags.c_contiguous and spec.y.flags.c_contiguous
    assert np.array_equal(spec.X, F.double().numpy()) and np.array_equal(spec.y, y)
    assert (spec.p, spec.iters, spec.log_points) == (4.0, 30, 20)
    assert spec.thresholds == (1e-4, 1e-2)
    assert (spec.device, spec.checkpoint_every, spec.shard_runs, spec.progress) == (
        "cpu", 10, 3, True,
    )  # fmt: skip
    assert spec.optimum is None and spec.dtype_name == "default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.iters = 5  # type: ignore[misc]
    ce = SweepSpec(X=X, y=np.arange(len(y)) % 3, p=SoftmaxCE(3, 0.1), iters=5)
    assert ce.p == SoftmaxCE(3, 0.1)
    assert SweepSpec(X=X, y=y, p=4, iters=5, dtype=torch.float32).dtype_name == "float32"


def test_the_fingerprint_of_the_spec_is_that_of_the_data_as_given():
    """The spec's float64 copy hashes as the caller's data do: store keys do not depend on
    the data's dtype, layout or container (a float32 tensor, a Fortran-order array)."""
    X, y = problem()
    X32 = torch.as_tensor(X, dtype=torch.float32)
    opts = {"log_scale": True, "diverge_factor": 1000}
    for data, given in (((X, y), None), ((np.asfortranarray(X), y), 0.5), ((X32, y), None)):
        spec = SweepSpec(
            X=data[0], y=data[1], p=4, iters=50, log_points=20, optimum=given, options=opts
        )
        ref = data_fingerprint(
            data[0], data[1], 4, 50, log_points=20, dtype="default", optimum=given, options=opts
        )
        assert spec_fingerprint(spec) == ref
    # L* filled in by the driver: the value train would compute, not part of the key
    spec = SweepSpec(X=X, y=y, p=4, iters=50)
    full = spec.with_optimum()
    assert full.optimum == lp_optimum(torch.as_tensor(X), torch.as_tensor(y), 4).loss
    assert spec.optimum is None and full.with_optimum() is full


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1 or None"),
        ({"shard_runs": 0}, "runs per shard must be an integer >= 1"),
        ({"shard_runs": 2.5}, "runs per shard must be an integer >= 1"),
        ({"options": {"warp_speed": True}}, "unknown train option"),
    ],
)
def test_bad_settings_are_refused(kw, match):
    X, y = problem()
    with pytest.raises(ValueError, match=match):
        SweepSpec(X=X, y=y, p=4, iters=5, **kw)
    assert "warp_speed" not in TRAIN_OPTIONS


def test_sweep_without_an_executor_trains_through_the_local_executor(tmp_path, capsys):
    """One path: ``executor=None`` is a ``LocalExecutor`` behind the driver (its stored
    runs say so, and its progress bar is the driver's, one for the whole sweep)."""
    X, y = problem()
    runs = [Run("gd", lr, depth=dp) for dp in (1, 2) for lr in (1e-2, 3e-2)]
    logs: list[str] = []
    res = sweep(X, y, 4, runs, 40, store=tmp_path, log=logs.append, progress=True)
    with Store(tmp_path) as st:
        stored = st.get_runs(res.keys)
    assert {s.extra["executor"] for s in stored.values()} == {"local"}
    assert any("on local (1 shards)" in m for m in logs)
    err = capsys.readouterr().err
    assert "sweep on local (1 shards)" in err and "| 4/4 runs [" in err
