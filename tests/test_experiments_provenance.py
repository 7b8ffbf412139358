"""Provenance in committed reports: data files relative to the data folder, the store by
file name, what an experiment ran on; the context's loss scale is checked."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.report import report_section
from depthaccel.experiments.results import ExperimentResult


def test_data_source_is_relative_to_the_data_dir(tmp_path):
    data = tmp_path / "somewhere" / "data"
    ctx = ExperimentContext(tmp_path / "out", data_dir=data)
    ds = SimpleNamespace(source=f"prepared table {data}/gas_sensor_drift/e.csv.gz sha256=ab12")
    assert ctx.data_source(ds) == "prepared table <data dir>/gas_sensor_drift/e.csv.gz sha256=ab12"
    assert str(tmp_path) not in ctx.data_source(ds)


def test_store_summary_names_the_file_only(tmp_path):
    ctx = ExperimentContext(tmp_path / "out", store=tmp_path / "deep" / "store.sqlite")
    assert ctx.store_summary()["path"] == "store.sqlite"


def test_ran_on_and_the_report_line(tmp_path):
    ctx = ExperimentContext(tmp_path, dtype="float64")
    ran = ctx.ran_on()
    assert ran["executor"] == "in-process" and ran["dtype"] == "float64"
    assert ran["torch_threads"] == torch.get_num_threads() and ran["device"] == "cpu"
    json.dumps(ran)  # JSON-able
    res = ExperimentResult("x", "X", "full", {"ran_on": ran}, wall_time=3.0)
    text = report_section(res, tmp_path)
    assert "*Mode: full; took 3.0 s;" in text
    assert "in this process, 1 torch thread(s)" in text or "in this process" in text
    assert "dtype float64" in text


def test_setup_axes_are_checked(tmp_path):
    from depthaccel.data.scaling import DEFAULT_SETUP, SetupAxes

    assert ExperimentContext(tmp_path).setup == DEFAULT_SETUP
    ctx = ExperimentContext(tmp_path, setup=SetupAxes("zscore", "plain"))
    assert ctx.loss_scale == "plain"
    with pytest.raises(ValueError, match="loss_scale"):
        SetupAxes("zscore", "log")
    with pytest.raises(ValueError, match="setup must be a SetupAxes"):
        ExperimentContext(tmp_path, setup="zscore")
