"""depthaccel: implicit acceleration by overparameterization (Arora, Cohen & Hazan, ICML 2018)."""

from depthaccel.nets import DeepLinear, balancedness
from depthaccel.optim import EndToEndSGD
from depthaccel.overparam import collapse, overparameterize
from depthaccel.preconditioner import (
    claim1_eigenvalues,
    end_to_end_direction,
    preconditioner_matrix,
    single_output_direction,
)

__version__ = "0.1.0"

__all__ = [
    "DeepLinear",
    "EndToEndSGD",
    "balancedness",
    "claim1_eigenvalues",
    "collapse",
    "end_to_end_direction",
    "overparameterize",
    "preconditioner_matrix",
    "single_output_direction",
]
