"""The registry of experiments: command-line names, modules and one-line summaries.

An experiment is a module ``depthaccel.experiments.<module>`` that provides a frozen
``Config`` with ``Config.quick()`` (CI-sized) and ``Config.full()`` (the paper's setup)
constructors, every choice the paper leaves open a field, and ``run(config, ctx) ->
ExperimentResult`` (``ctx``: an :class:`~depthaccel.experiments.context.ExperimentContext`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["EXPERIMENTS", "ExperimentError", "ExperimentSpec", "config_for", "get_experiment"]


class ExperimentError(RuntimeError):
    """An experiment name that is unknown, or a registered module that is missing or
    does not provide the experiment interface."""


@dataclass(frozen=True)
class ExperimentSpec:
    """Registry entry: command-line ``name``, ``module`` under depthaccel.experiments
    (or a full dotted module path),
    a one-line ``summary`` for ``--help`` (what it runs and what it claims), and whether
    it needs a data set (``data``: "ethanol", "mnist" or ""). ``after``: experiments whose
    stored runs this one reuses (through the results store); when they run in the same
    ``reproduce`` call, this one starts after they finished, so that no run is trained
    twice at the same time (``reproduce --jobs`` runs experiments concurrently)."""

    name: str
    module: str
    summary: str
    data: str = ""
    after: tuple[str, ...] = ()


_SPECS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec(
        "claim1",
        "claim1",
        "spectrum of the explicit preconditioner P_W on random (incl. rank-deficient) "
        "matrices vs Claim 1's eigenvalue formula; claims: they agree to round-off",
    ),
    ExperimentSpec(
        "thm2",
        "thm2",
        "line integral of Eq. 14's field F around the paper's closed curve near 0; "
        "claims: non-zero for N >= 3, zero to round-off for N = 1 (a true gradient)",
    ),
    ExperimentSpec(
        "sec7",
        "sec7",
        "Section 7's two-point l4 problem, GD vs Eq. 12 (N = 2, 3) over y1/y2; "
        "claims: Eq. 12 needs fewer iterations and the speed-up grows with y1/y2",
    ),
    ExperimentSpec(
        "fig2",
        "fig2",
        "Fig. 2: depth-2/3 nets (width 1 and 100, lr 1e-3) vs the Eq. 12 scheme, l2 and "
        "l4 on Ethanol; claims: the scheme emulates the nets, width does not matter",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig3",
        "fig3",
        "Fig. 3: depth 1/2/3, lr grid-searched per model, l2 and l4 on Ethanol; claims: "
        "l2 depth does not accelerate, l4 depth 3 < depth 2 < depth 1 in final gap",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig4-left",
        "fig4_left",
        "Fig. 4 left: depth-3 GD vs AdaGrad and AdaDelta on a single layer, each "
        "grid-searched, l4 on Ethanol; claim: depth-3 GD ends lower than both",
        data="ethanol",
        after=("fig3",),  # its GD runs and their search are fig3's l4 ones
    ),
    ExperimentSpec(
        "fig4-right",
        "fig4_right",
        "Fig. 4 right: Adam (TensorFlow defaults) on depth 1/2/3, l4 on Ethanol; "
        "claim: depth helps Adam too",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig5-left",
        "fig5_left",
        "Fig. 5 left: depth 4 and 8, near-zero vs near-identity init vs depth 1, l4 on "
        "Ethanol; claims: near-zero init stalls, identity init moves at once and wins",
        data="ethanol",
    ),
    ExperimentSpec(
        "fig5-right",
        "fig5_right",
        "Fig. 5 right: MNIST conv tutorial vs the same net with each dense matrix a "
        "product of two; claim: the overparameterized net's batch loss falls faster",
        data="mnist",
    ),
    ExperimentSpec(
        "mnist-e2e",
        "mnist_e2e",
        "MNIST tutorial: original vs overparameterized vs the original with "
        "EndToEndSGD(depth=2) on its dense layers; claim: the preconditioner alone gives "
        "the overparameterized net's speed-up; wall-clock per step of all three",
        data="mnist",
    ),
)

#: Command-line name -> registry entry, in the order ``all`` runs them.
EXPERIMENTS: dict[str, ExperimentSpec] = {s.name: s for s in _SPECS}


def get_experiment(name: str) -> ModuleType:
    """Import the module of experiment ``name`` and check its interface.

    Raises :class:`ExperimentError` naming the problem for an unknown name, a registered
    module that cannot be imported, or a module without ``Config.quick``/``Config.full``
    and ``run``.
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
            ("run", callable(getattr(mod, "run", None))),
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
