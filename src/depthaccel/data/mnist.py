"""MNIST: the four official IDX files (gzip-compressed) under ``<data_dir>/mnist/``.

IDX format (big-endian): magic ``0x00 0x00 <dtype 0x08 = uint8> <ndim>``, then ``ndim``
uint32 dimensions, then the values. Images are idx3 (n, 28, 28), labels idx1 (n,).

Each .gz file is verified: its sha256 must equal the official file's (``GZ_SHA256``),
or, for a copy compressed differently, the md5 of its uncompressed content must equal
the official md5 (``RAW_MD5``, the values torchvision and others publish).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass

import numpy as np

from depthaccel.data import _common
from depthaccel.data import download as _dl
from depthaccel.data._common import ChecksumError, download_allowed, missing_message

SUBDIR = "mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,)}
SHAPES |= {"test_images": (10000, 28, 28), "test_labels": (10000,)}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class MNIST:
    """The MNIST digits: images uint8 (n, 28, 28) in 0..255, labels uint8 (n,) in 0..9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes; ValueError on a bad magic number or a size mismatch."""
    if len(raw) < 4:
        raise ValueError(f"{name}: truncated IDX file ({len(raw)} bytes, no header)")
    zero, code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{name}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000 then a type "
            "code 08..0E and the number of dimensions, e.g. 0x00000803 for images)"
        )
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{name}: truncated IDX header ({len(raw)} bytes, need {head})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = head + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != need:
        raise ValueError(
            f"{name}: IDX size mismatch: header says dims {dims} ({need} bytes), file has "
            f"{len(raw)} bytes ({'truncated' if len(raw) < need else 'trailing data'})"
        )
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).copy()


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{name}: corrupt or truncated gzip file ({exc})") from None


def _verify(data: bytes, name: str, label: str | None = None) -> tuple[bytes, str]:
    """Check the bytes of the official file ``name`` (``label`` names it in errors);
    return (uncompressed bytes, how it verified)."""
    label = label or name
    sha = hashlib.sha256(data).hexdigest()
    if sha == GZ_SHA256[name]:
        return _gunzip(data, label), f"sha256={sha}"
    try:
        raw = _gunzip(data, label)
    except ValueError as exc:
        raise ChecksumError(
            f"{label}: checksum mismatch: expected sha256 {GZ_SHA256[name]}, got {sha}; {exc}"
        ) from None
    md5 = hashlib.md5(raw).hexdigest()
    if md5 == RAW_MD5[name]:
        return raw, f"md5(uncompressed)={md5}"
    raise ChecksumError(
        f"{label}: checksum mismatch: expected sha256 {GZ_SHA256[name]} (or md5 of the "
        f"uncompressed file {RAW_MD5[name]}), got sha256 {sha} / md5 {md5}. The file is "
        "corrupt, truncated or not the official one; delete or replace it."
    )


def _check(name: str):
    def check(data: bytes) -> str | None:
        try:
            _verify(data, name)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool | None = None) -> MNIST:
    """Load MNIST from ``<data_dir>/mnist/`` (see ``depthaccel.data.data_dir``).

    Missing files are downloaded from ``MIRRORS`` when ``download`` is True, or when it
    is None and ``DEPTHACCEL_DOWNLOAD`` does not forbid it; offline or with downloads
    disabled the FileNotFoundError names the missing files and the folder searched.
    Every file is checksum-verified and parsed strictly (magic number, dimensions, size).
    """
    folder = _common.data_dir(data_dir) / SUBDIR
    missing = [f for f in FILES.values() if not (folder / f).is_file()]
    if missing:
        urls = "Official files: " + ", ".join(MIRRORS[0] + f for f in missing) + "."
        if not download_allowed(download):
            raise FileNotFoundError(
                missing_message("MNIST", folder, missing, f"Downloading is disabled. {urls}")
            )
        try:
            for f in missing:
                _dl.download_file([m + f for m in MIRRORS], folder / f, _check(f))
        except OSError as exc:
            raise FileNotFoundError(
                missing_message("MNIST", folder, missing, f"Download failed: {exc}. {urls}")
            ) from exc
    arrays, src = {}, []
    for key, fname in FILES.items():
        path = folder / fname
        raw, how = _verify(path.read_bytes(), fname, str(path))
        arr = parse_idx(raw, str(path))
        if arr.shape != SHAPES[key]:
            raise ValueError(f"{path}: shape {arr.shape}, expected {SHAPES[key]}")
        arrays[key] = arr
        src.append(f"{fname} {how}")
    for key in ("train_labels", "test_labels"):
        if arrays[key].max() > 9:
            raise ValueError(f"{FILES[key]}: labels outside 0..9 (max {arrays[key].max()})")
    return MNIST(**arrays, source=f"MNIST IDX files in {folder}: " + ", ".join(src))
