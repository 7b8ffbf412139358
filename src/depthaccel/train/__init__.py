"""The batched full-batch trainer (runs, engine, grid search).

``train(X, y, p, runs, iters)`` trains a whole grid of :class:`Run` configurations as
one batched tensor program and returns a :class:`RunResult` per run;
``grid_search`` picks each model's best learning rate. See
:mod:`depthaccel.train.engine` for the algorithm, divergence handling and
checkpoint/resume, :mod:`depthaccel.train.groups` for the batched programs of each kind
of run and :mod:`depthaccel.train.state` for ``TrainState`` (what a checkpoint holds).
"""

from depthaccel.train.engine import DEFAULT_DTYPE, initial_factors, log_iterations, train
from depthaccel.train.grid import (
    GridEdgeWarning,
    ModelSearch,
    best_result,
    choose,
    grid_search,
    model_id,
)
from depthaccel.train.runs import (
    ADAPTIVE_METHODS,
    CONVENTIONS,
    DEFAULT_HPARAMS,
    INITS,
    METHOD_NAMES,
    METHODS,
    NET_METHODS,
    Run,
    RunResult,
)
from depthaccel.train.state import TrainState

__all__ = [
    "ADAPTIVE_METHODS",
    "CONVENTIONS",
    "DEFAULT_DTYPE",
    "DEFAULT_HPARAMS",
    "GridEdgeWarning",
    "INITS",
    "METHOD_NAMES",
    "METHODS",
    "ModelSearch",
    "NET_METHODS",
    "Run",
    "RunResult",
    "TrainState",
    "best_result",
    "choose",
    "grid_search",
    "initial_factors",
    "log_iterations",
    "model_id",
    "train",
]
