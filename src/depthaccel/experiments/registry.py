"""The registry of experiments, built from each experiment module's ``SPEC``.

An experiment is a module ``depthaccel.experiments.<module>`` (see
:mod:`depthaccel.experiments.spec`): ``SPEC``, ``Config`` (``quick()``/``full()``) and
``measure``/``judge``/``render``. Adding one: write the module, add its name to
:data:`MODULES` and add its test.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from depthaccel.experiments.spec import ExperimentSpec

__all__ = [
    "EXPERIMENTS",
    "MODULES",
    "ExperimentError",
    "ExperimentSpec",
    "config_for",
    "get_experiment",
]


class ExperimentError(RuntimeError):
    """An experiment name that is unknown, or a registered module that is missing or
    does not provide the experiment interface."""


#: The experiment modules, in the order ``reproduce all`` runs them.
MODULES: tuple[str, ...] = (
    "claim1",
    "thm2",
    "sec7",
    "fig2",
    "fig3",
    "fig4_left",
    "fig4_right",
    "fig5_left",
    "setup_sensitivity",
    "fig5_right",
    "mnist_e2e",
)


def _specs() -> dict[str, ExperimentSpec]:
    specs = {}
    for module in MODULES:
        spec = importlib.import_module(f"depthaccel.experiments.{module}").SPEC
        specs[spec.name] = spec
    return specs


#: Command-line name -> registry entry (the module's ``SPEC``), in the order ``all`` runs them.
EXPERIMENTS: dict[str, ExperimentSpec] = _specs()


def get_experiment(name: str) -> ModuleType:
    """Import the module of experiment ``name`` and check its interface.

    Raises :class:`ExperimentError` naming the problem for an unknown name, a registered
    module that cannot be imported, or a module without ``Config.quick``/``Config.full``
    and either ``measure``/``judge``/``render`` or ``run``.
    """
    spec = EXPERIMENTS.get(name)
    if spec is None:
        raise ExperimentError(
            f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)} (or 'all')"
        )
    modname = spec.module if "." in spec.module else f"depthaccel.experiments.{spec.module}"
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            raise ExperimentError(
                f"experiment {name!r} is registered but its module {modname} is missing"
            ) from exc
        raise
    missing = [
        attr
        for attr, ok in (
            ("Config", hasattr(mod, "Config")),
            ("Config.quick", hasattr(getattr(mod, "Config", None), "quick")),
            ("Config.full", hasattr(getattr(mod, "Config", None), "full")),
            (
                "measure/judge/render",
                all(callable(getattr(mod, f, None)) for f in ("measure", "judge", "render"))
                or callable(getattr(mod, "run", None)),
            ),
        )
        if not ok
    ]
    if missing:
        raise ExperimentError(f"experiment module {modname} does not provide {', '.join(missing)}")
    return mod


def config_for(name: str, *, quick: bool) -> Any:
    """The experiment's ``Config.quick()`` or ``Config.full()``."""
    cfg_cls = get_experiment(name).Config
    return cfg_cls.quick() if quick else cfg_cls.full()
