"""depthaccel: implicit acceleration by overparameterization (Arora, Cohen & Hazan, ICML 2018)."""

from depthaccel.losses import LpOptimum, lp_hessian, lp_loss, lp_optimum
from depthaccel.nets import DeepLinear, balancedness
from depthaccel.optim import EndToEndSGD
from depthaccel.overparam import collapse, overparameterize
from depthaccel.preconditioner import (
    claim1_eigenvalues,
    end_to_end_direction,
    preconditioner_matrix,
    single_output_direction,
)
from depthaccel.stability import stability_edge
from depthaccel.train import Run, RunResult, grid_search  # train: depthaccel.train.train

__version__ = "0.1.0"

__all__ = [
    "DeepLinear",
    "EndToEndSGD",
    "LpOptimum",
    "Run",
    "RunResult",
    "balancedness",
    "claim1_eigenvalues",
    "collapse",
    "end_to_end_direction",
    "grid_search",
    "lp_hessian",
    "lp_loss",
    "lp_optimum",
    "overparameterize",
    "preconditioner_matrix",
    "single_output_direction",
    "stability_edge",
]
