"""depthaccel: implicit acceleration by overparameterization (Arora, Cohen & Hazan, ICML 2018)."""

from depthaccel.preconditioner import (
    claim1_eigenvalues,
    end_to_end_direction,
    preconditioner_matrix,
    single_output_direction,
)

__version__ = "0.1.0"

__all__ = [
    "claim1_eigenvalues",
    "end_to_end_direction",
    "preconditioner_matrix",
    "single_output_direction",
]
