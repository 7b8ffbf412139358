"""The paper's experiments, one module each, run by ``depthaccel reproduce``.

See :mod:`depthaccel.experiments.base` for the framework (configs, results, registry,
reports). Experiment modules are imported on demand by :func:`get_experiment`.
"""

from depthaccel.experiments.base import (
    EXPERIMENTS,
    Claim,
    Curve,
    ExperimentError,
    ExperimentResult,
    ExperimentSpec,
    config_for,
    get_experiment,
    run_experiment,
    write_report,
)

__all__ = [
    "EXPERIMENTS",
    "Claim",
    "Curve",
    "ExperimentError",
    "ExperimentResult",
    "ExperimentSpec",
    "config_for",
    "get_experiment",
    "run_experiment",
    "write_report",
]
