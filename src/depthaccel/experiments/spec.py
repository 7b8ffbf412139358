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
- ``DESCRIBE``: what was run, in 2-3 lines, a template over ``config``, ``measured``
  and, optionally, the module's ``describe_fields(measured, config) -> dict`` (values
  that take code to write: counts, joined labels; see :func:`describe_run`);
- optionally ``settings(measured, config) -> dict``: the choices made, for ``settings.json``,
  ``NOTES`` (static) and ``notes(measured, config) -> list[str]``: choices where the
  paper is silent, for the report's collapsed notes.

The registry (:mod:`depthaccel.experiments.registry`) is built from the ``SPEC`` of the
modules it lists.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ExperimentSpec", "describe_run"]


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


def describe_run(template: str, measured: Any, config: Any, fields: Mapping[str, Any] = ()) -> str:
    """An experiment's ``DESCRIBE`` filled in for one result: a ``str.format`` template over
    ``config``, ``measured`` and ``fields`` (the module's ``describe_fields(measured,
    config)``, if it has them), where a list or tuple is written as its items joined by
    ", ", each item in the field's format (``{config.depths:g}``: ``2, 3.5``)."""
    return _Outline().format(template, measured=measured, config=config, **dict(fields))


class _Outline(string.Formatter):
    """``str.format`` that writes a list or tuple as its items joined by ", " (each
    formatted with the field's format spec)."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, list | tuple):
            return ", ".join(format(v, format_spec) for v in value)
        return format(value, format_spec)
