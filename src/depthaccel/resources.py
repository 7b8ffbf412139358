"""Up-front memory estimates: refuse a grid that cannot fit before allocating anything.

:func:`estimate_train_memory` counts the numbers one call of the batched trainer
(``depthaccel.train``) holds for a list of runs, and :func:`check_train_memory` refuses
(``MemoryEstimateError``, one line with the estimate) when that exceeds the memory
available on the device. The count (bytes = numbers x bytes per number of the compute
dtype, 8 for float64 and 4 for float32) is:

* per run, its parameters: ``sum_j w_j w_{j+1}`` for a net with widths
  ``(d, h_1, ..., h_{N-1}, k)`` (``d + N`` for the width-1 single-output fast path, ``k d``
  for the e2e scheme), times ``4 + s``: the parameters, their gradients, two products of
  the backward pass, and ``s`` optimizer states (0 for GD and e2e, 1 for AdaGrad, 2 for
  AdaDelta and Adam);
* the initial draw of the largest net in float64 on the CPU (twice: the factors and
  their copy onto the device);
* the shared buffers of the batched forward pass: ``R k (4 d + 2 m)`` numbers for R runs,
  plus two copies of X (m d) and y (m k).

It is an estimate of the order of magnitude (the allocator and Python add a little; a
checkpoint adds one more copy of the parameters while it is written), meant to turn
"tried to allocate 320 GB" into a clear message before anything happens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = [
    "MemoryEstimateError",
    "available_memory",
    "check_train_memory",
    "estimate_train_memory",
    "format_bytes",
    "run_parameters",
]

_STATES = {"gd": 0, "e2e": 0, "adagrad": 1, "adadelta": 2, "adam": 2}


class MemoryEstimateError(ValueError):
    """The estimated memory of a training call exceeds what the device has."""


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _widths(run, d: int, k: int) -> tuple[int, ...]:
    n = int(run.net_depth)
    hid = list(run.hidden) if isinstance(run.hidden, tuple) else [int(run.hidden)] * (n - 1)
    return (d, *hid, k)


def run_parameters(run, d: int, k: int) -> tuple[int, int]:
    """(numbers trained, numbers of the net drawn at initialisation) of one run."""
    widths = _widths(run, d, k)
    net = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    if run.method == "e2e":
        return k * d, net
    if k == 1 and all(w == 1 for w in widths[1:-1]):
        return d + len(widths) - 2, net
    return net, net


def estimate_train_memory(runs: Sequence, m: int, d: int, k: int, itemsize: int = 8) -> int:
    """Bytes one batched training call of ``runs`` on an (m x d) table with k outputs
    needs, by the count in the module docstring."""
    trained = 0
    largest_init = 0
    for r in runs:
        n, init = run_parameters(r, d, k)
        trained += n * (4 + _STATES.get(r.method, 2))
        largest_init = max(largest_init, init)
    R = len(runs)
    shared = R * k * (4 * d + 2 * m) + 2 * m * d + 2 * m * k
    return int(itemsize * (trained + shared) + 8 * 2 * largest_init)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes available for new allocations on ``device`` (None if unknown): free CUDA
    memory, else the kernel's MemAvailable (Linux), else the physical memory."""
    if str(device).startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_train_memory(
    runs: Sequence,
    m: int,
    d: int,
    k: int,
    *,
    itemsize: int = 8,
    device: str = "cpu",
    available: int | None = None,
) -> int:
    """Return the estimate; raise :class:`MemoryEstimateError` when it exceeds
    ``available`` (default: :func:`available_memory` of ``device``)."""
    need = estimate_train_memory(runs, m, d, k, itemsize)
    have = available_memory(device) if available is None else available
    if have is not None and need > have:
        widest = max(runs, key=lambda r: run_parameters(r, d, k)[1])
        w = _widths(widest, d, k)
        raise MemoryEstimateError(
            f"{len(runs)} runs need about {format_bytes(need)} of memory (the largest net has "
            f"widths {'x'.join(map(str, w))}, {run_parameters(widest, d, k)[1]:,} numbers of "
            f"{itemsize} bytes), more than the {format_bytes(have)} available on {device}; "
            "use a smaller --hidden or fewer --lrs/--methods/--depths"
        )
    return need
