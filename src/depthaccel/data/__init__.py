"""Data loaders: the paper's Ethanol task, MNIST and user regression tables.

Files live under a data directory (``data_dir``: argument, else
``$DEPTHACCEL_DATA_DIR``, else ``../shared/data`` beside a source checkout, else
``~/.cache/depthaccel``). Every official file is checked against its sha256;
missing files are downloaded when allowed (``download`` argument /
``DEPTHACCEL_DOWNLOAD``), otherwise the error names what is missing and where.
"""

from depthaccel.data._common import (
    ChecksumError,
    Dataset,
    data_dir,
    sha256_file,
    standardize,
    unstandardize_y,
)
from depthaccel.data.ethanol import IncompleteDataWarning, load_ethanol
from depthaccel.data.mnist import MNIST, load_mnist
from depthaccel.data.tables import load_table

__all__ = [
    "ChecksumError",
    "Dataset",
    "IncompleteDataWarning",
    "MNIST",
    "data_dir",
    "load_ethanol",
    "load_mnist",
    "load_table",
    "sha256_file",
    "standardize",
    "unstandardize_y",
]
