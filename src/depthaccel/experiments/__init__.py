"""The paper's experiments, one module each, run by ``depthaccel reproduce``.

The framework: :mod:`~depthaccel.experiments.context` (the ``ExperimentContext`` every
``measure(config, ctx)`` receives), :mod:`~depthaccel.experiments.spec` (what a module
declares: ``SPEC``, ``Config``, ``measure``/``judge``/``render``),
:mod:`~depthaccel.experiments.results` (claims, results, JSON),
:mod:`~depthaccel.experiments.registry` (built from the modules' ``SPEC``),
:mod:`~depthaccel.experiments.runner` (measure, judge, render one experiment and record
it) and :mod:`~depthaccel.experiments.report` (the ``REPORT.md`` scorecard).
"""

from depthaccel.experiments.context import ContextCache, ExperimentContext
from depthaccel.experiments.registry import (
    EXPERIMENTS,
    ExperimentError,
    ExperimentSpec,
    config_for,
    get_experiment,
)
from depthaccel.experiments.report import write_report
from depthaccel.experiments.results import Claim, ExperimentResult
from depthaccel.experiments.runner import run_experiment

__all__ = [
    "EXPERIMENTS",
    "Claim",
    "ContextCache",
    "ExperimentContext",
    "ExperimentError",
    "ExperimentResult",
    "ExperimentSpec",
    "config_for",
    "get_experiment",
    "run_experiment",
    "write_report",
]
