"""Data loaders: the paper's Ethanol task, MNIST and user regression tables.

Files live under a data directory (``data_dir``: argument, else
``$DEPTHACCEL_DATA_DIR``, else ``../shared/data`` beside a source checkout, else
``~/.cache/depthaccel``). Every official file is checked against its sha256;
missing files are downloaded when allowed (``download`` argument /
``DEPTHACCEL_DOWNLOAD``), otherwise the error names what is missing and where.
:mod:`depthaccel.data.catalog` lists every file (size, sha256, URL), checks a folder
(``check_data``, never downloads) and fetches (``fetch_data``, ``ensure_data``).
"""

from depthaccel.data._common import (
    ChecksumError,
    Dataset,
    data_dir,
    sha256_file,
    standardize,
    unstandardize_y,
)
from depthaccel.data.catalog import DataReport, check_data, ensure_data, fetch_data
from depthaccel.data.ethanol import IncompleteDataWarning, load_ethanol
from depthaccel.data.mnist import MNIST, load_mnist
from depthaccel.data.tables import load_table

__all__ = [
    "ChecksumError",
    "DataReport",
    "Dataset",
    "IncompleteDataWarning",
    "check_data",
    "ensure_data",
    "fetch_data",
    "MNIST",
    "data_dir",
    "load_ethanol",
    "load_mnist",
    "load_table",
    "sha256_file",
    "standardize",
    "unstandardize_y",
]
