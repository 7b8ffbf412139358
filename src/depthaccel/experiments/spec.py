"""What an experiment module declares about itself: its :class:`ExperimentSpec`.

An experiment is one module ``depthaccel.experiments.<module>`` with

- ``SPEC = ExperimentSpec(...)``: name, title, summary, data it needs, cost, ``Config``;
- ``Config``: a frozen dataclass with ``Config.quick()`` (CI-sized) and ``Config.full()``
  (the paper's setup); every choice the paper leaves open is a field;
- ``measure(config, ctx) -> Measured``: trains and measures; a typed dataclass of
  numbers and curves, no prose (``ctx``: an
  :class:`~depthaccel.experiments.context.ExperimentContext`; with a results store every
  run and task is stored, so measuring again reads them back and never retrains);
- ``judge(measured, config) -> list[Claim]``: the paper's claims against those numbers
  (pure: tested on synthetic ``Measured`` values);
- ``render(measured, claims, outdir) -> list[Path]``: figures (PNG) and curves (CSV);
- optionally ``describe(measured, config) -> str``: what was run, in 2-3 lines,
  ``settings(measured, config) -> dict``: the choices made, for ``settings.json``,
  ``NOTES`` (static) and ``notes(measured, config) -> list[str]``: choices where the
  paper is silent, for the report's collapsed notes.

The registry (:mod:`depthaccel.experiments.registry`) is built from the ``SPEC`` of the
modules it lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ExperimentSpec"]


@dataclass(frozen=True)
class ExperimentSpec:
    """An experiment's declaration.

    Attributes:
        name: command-line name (``depthaccel reproduce NAME``).
        module: module under ``depthaccel.experiments`` (or a full dotted path).
        summary: one line for ``--help``: what it runs and what it claims.
        data: the data set it needs: ``"ethanol"``, ``"mnist"`` or ``""``.
        after: experiments whose stored runs this one reuses (through the results store);
            when they run in the same ``reproduce`` call, this one starts after they
            finished, so that no run is trained twice at the same time.
        title: the report's heading.
        cost: typical seconds (quick, full) on a 2-core machine; only their ratios
            matter (``reproduce`` scales them to the machine's pace for its ETA).
        config: the experiment's ``Config`` class (``quick()``/``full()``).
    """

    name: str
    module: str
    summary: str
    data: str = ""
    after: tuple[str, ...] = ()
    title: str = ""
    cost: tuple[float, float] = (5.0, 300.0)
    config: Any = None
