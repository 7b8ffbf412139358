"""What ``run_compare`` produced: :class:`CompareResult` (read by the outputs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthaccel.compare.config import CompareConfig
from depthaccel.compare.select import ModelBest
from depthaccel.compare.verdict import Verdict
from depthaccel.data import Dataset
from depthaccel.train import Run, RunResult

__all__ = ["CompareResult"]


@dataclass
class CompareResult:
    """Everything ``run_compare`` produced (``outputs`` maps names to written files)."""

    config: CompareConfig
    dataset: Dataset
    optimum: float
    initial_gap: float
    thresholds: tuple[float, ...]
    runs: list[Run]
    results: list[RunResult]
    keys: list[str]
    models: list[ModelBest]
    verdict: Verdict
    reused: int
    computed: int
    wall_time: float
    store_path: Path | None
    outputs: dict[str, Path] = field(default_factory=dict)
    resumed: dict[str, int] = field(default_factory=dict)
    floor: float = 0.0  # round-off floor of the gap (``roundoff_floor``)
    certificate: float = math.nan  # gradient norm of the loss at the computed optimum
    problem: Any = None  # the ``depthaccel.compare.problem.Problem`` trained on
    executor: str = "local (this process)"  # what trained the runs (``_executor_words``)
