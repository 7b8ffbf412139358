"""The registry of experiments: names, modules, the experiment interface."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import types

import pytest

import depthaccel.experiments as experiments_pkg
from depthaccel.experiments.registry import (
    EXPERIMENTS,
    ExperimentError,
    ExperimentSpec,
    get_experiment,
)
from depthaccel.experiments.results import to_jsonable
from depthaccel.experiments.spec import describe_run

PAPER_NAMES = {
    "fig2",
    "fig3",
    "fig4-left",
    "fig4-right",
    "fig5-left",
    "fig5-right",
    "sec7",
    "thm2",
    "claim1",
}
EXTRA_NAMES = {"mnist-e2e", "setup"}  # questions the paper raises (not one of its figures)


def test_registry_names_and_every_module_is_registered():
    assert set(EXPERIMENTS) == PAPER_NAMES | EXTRA_NAMES
    registered = {s.module for s in EXPERIMENTS.values()}
    # every module of the package that provides the experiment interface is registered
    # (supporting modules without Config/run, e.g. model code, need not be)
    on_disk = set()
    for m in pkgutil.iter_modules(experiments_pkg.__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"depthaccel.experiments.{m.name}")
        if hasattr(mod, "Config") and hasattr(mod, "run"):
            on_disk.add(m.name)
    assert on_disk <= registered, f"experiment modules not in the registry: {on_disk - registered}"
    for spec in EXPERIMENTS.values():
        assert spec.summary and "claim" in spec.summary


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ExperimentError, match="unknown experiment 'fig9'.*fig2"):
        get_experiment("fig9")


def test_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(
        EXPERIMENTS, "ghost", ExperimentSpec("ghost", "depthaccel.experiments.no_such_mod", "x")
    )
    with pytest.raises(ExperimentError, match="registered but its module .*no_such_mod is missing"):
        get_experiment("ghost")


def test_module_without_interface_is_a_clear_error(monkeypatch):
    mod = types.ModuleType("fakepkg.noiface")
    monkeypatch.setitem(sys.modules, "fakepkg.noiface", mod)
    monkeypatch.setitem(EXPERIMENTS, "noiface", ExperimentSpec("noiface", "fakepkg.noiface", "x"))
    with pytest.raises(ExperimentError, match="does not provide Config, Config.quick"):
        get_experiment("noiface")


def test_every_registered_module_imports_and_provides_the_interface():
    """No skips: a registered experiment whose module is missing or incomplete fails here
    (register a module only once it exists)."""
    for name in EXPERIMENTS:
        mod = get_experiment(name)
        q, f = mod.Config.quick(), mod.Config.full()
        assert type(q) is type(f) is mod.Config
        assert q != f, f"{name}: quick and full configs are the same"
        json.dumps(to_jsonable(q))


def test_describe_template_joins_sequences_and_takes_fields():
    template = "depth {config.depths:g} (seeds {measured.seeds}), {n} runs"
    config = types.SimpleNamespace(depths=(2.0, 3.5))
    measured = types.SimpleNamespace(seeds=[0, 1])
    assert describe_run(template, measured, config, {"n": 4}) == "depth 2, 3.5 (seeds 0, 1), 4 runs"
    with pytest.raises(KeyError):
        describe_run(template, measured, config)  # a field the module did not provide


def test_every_experiment_describes_what_was_run():
    """Each DESCRIBE names only config, measured and the module's describe_fields."""
    import string

    for name in EXPERIMENTS:
        mod = get_experiment(name)
        fields = {f for _, f, _, _ in string.Formatter().parse(mod.DESCRIBE) if f}
        roots = {f.split(".")[0].split("[")[0] for f in fields}
        extra = roots - {"config", "measured"}
        assert mod.DESCRIBE, name
        assert not extra or callable(getattr(mod, "describe_fields", None)), (name, extra)
