"""The hyperparameters of :class:`depthaccel.optim.EndToEndSGD`: what each may be, and the
checks of a param group (at construction, in ``add_param_group`` and on every ``step()``,
where they are cheap Python checks that ``torch.compile`` traces)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = [
    "GROUP_KEYS",
    "MATRIX_PARAMS",
    "OPTION_DEFAULTS",
    "PRECONDITION_DTYPES",
    "check_lr",
    "check_option",
    "refuse_torch_options",
    "validate_group",
]

MATRIX_PARAMS = ("all", "2d", "none")
"""Values of ``matrix_params``: which parameters get Eq. 10 (see :class:`depthaccel.optim.EndToEndSGD`)."""


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(x: Any) -> str:
    """``repr(x)``, except in a compiled step, where Dynamo cannot format a symbolic float."""
    if torch.compiler.is_compiling():
        return "a bad value (run the step uncompiled to see it)"
    return repr(x)


def _finite(x: float) -> bool:
    """``math.isfinite`` by comparisons only, which Dynamo traces for a symbolic float
    (False for NaN and +-inf)."""
    return abs(x) < math.inf


def _check_lr_meta(lr: torch.Tensor) -> None:
    if lr.numel() != 1 or not lr.is_floating_point():
        raise ValueError(
            f"a tensor lr must be a 1-element floating-point tensor, got {tuple(lr.shape)} "
            f"{lr.dtype}"
        )
    if lr.requires_grad:
        raise ValueError("a tensor lr must not require grad")


def check_lr(lr: Any) -> None:
    if isinstance(lr, torch.Tensor):
        _check_lr_meta(lr)
        value = float(lr.detach().reshape(()).cpu())  # one host read
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lr must be finite and >= 0, got tensor({value})")
        return
    if not (_is_real(lr) and _finite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0 or a 1-element tensor, got {_show(lr)}")


def _check_nonneg(name: str, v: Any) -> None:
    if not (_is_real(v) and _finite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {_show(v)}")


def _check_depth(v: Any) -> None:
    if not (_is_real(v) and _finite(v) and v >= 1):
        raise ValueError(f"depth must be a finite real number >= 1, got {_show(v)}")


def _check_dampening(v: Any) -> None:
    if not (_is_real(v) and _finite(v)):
        raise ValueError(f"dampening must be a finite number, got {_show(v)}")


def _check_bool(name: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if not isinstance(v, bool):
            raise ValueError(f"{name} must be True or False, got {_show(v)}")

    return check


def _check_every(v: Any) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        raise ValueError(f"precondition_every must be an integer >= 1, got {_show(v)}")


PRECONDITION_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16)
"""Values of ``precondition_dtype`` (see :class:`depthaccel.optim.EndToEndSGD`)."""


def _check_precondition_dtype(v: Any) -> None:
    if v not in PRECONDITION_DTYPES:
        raise ValueError(
            f"precondition_dtype must be None, torch.float32, torch.float64 or torch.bfloat16, "
            f"got {v!r} (float16 is refused: Claim 1's eigenvalues can exceed its range)"
        )


def _check_matrix_params(v: Any) -> None:
    if v not in MATRIX_PARAMS:
        raise ValueError(f"matrix_params must be one of {MATRIX_PARAMS}, got {v!r}")


def _check_foreach(v: Any) -> None:
    if v is not None and not isinstance(v, bool):
        raise ValueError(f"foreach must be None, True or False, got {v!r}")


def refuse_torch_options(*, differentiable: Any, capturable: Any, fused: Any) -> None:
    """torch.optim's ``differentiable``, ``capturable`` and ``fused``: accepted when off."""
    if differentiable is not False:
        raise ValueError(
            f"differentiable={differentiable!r} is not supported: EndToEndSGD's step is not "
            "differentiable through its SVD (repeated singular values have no derivative)"
        )
    if capturable is not False:
        raise ValueError(
            f"capturable={capturable!r} is not supported: the NaN/inf check and the SVD "
            "synchronise with the host, which a CUDA graph cannot capture"
        )
    if fused not in (None, False):
        raise ValueError(f"fused={fused!r} is not supported: there is no fused kernel")


_CHECKS: dict[str, Callable[[Any], None]] = {
    "lr": check_lr,
    "depth": _check_depth,
    "momentum": lambda v: _check_nonneg("momentum", v),
    "dampening": _check_dampening,
    "weight_decay": lambda v: _check_nonneg("weight_decay", v),
    "nesterov": _check_bool("nesterov"),
    "maximize": _check_bool("maximize"),
    "precondition_every": _check_every,
    "matrix_params": _check_matrix_params,
    "precondition_dtype": _check_precondition_dtype,
    "foreach": _check_foreach,
}
GROUP_KEYS = tuple(_CHECKS)
# what a group of an older EndToEndSGD (lr, depth, weight_decay only) meant by the rest
OPTION_DEFAULTS: dict[str, Any] = dict(
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov=False,
    maximize=False,
    precondition_every=1,
    matrix_params="all",
    precondition_dtype=None,
    foreach=None,
)


def _check_nesterov(group: Mapping[str, Any]) -> None:
    if group.get("nesterov") and not (
        group.get("momentum", 0) > 0 and group.get("dampening", 0) == 0
    ):
        raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")


def _check_cache_dtype(group: Mapping[str, Any]) -> None:
    if group.get("precondition_dtype") is not None and group.get("precondition_every", 1) == 1:
        raise ValueError(
            "precondition_dtype is the dtype of the amortised preconditioner's cache: it "
            "needs precondition_every > 1 (the exact rule computes in the weight's dtype)"
        )


_PAIR_CHECKS = (
    (("nesterov", "momentum", "dampening"), _check_nesterov),
    (("precondition_dtype", "precondition_every"), _check_cache_dtype),
)


def validate_group(group: Mapping[str, Any], *, read_lr: bool = True) -> None:
    """All checks of one param group; ``read_lr=False`` checks a tensor lr's metadata only
    (its value is read by :meth:`depthaccel.optim.EndToEndSGD._check_groups` once per change)."""
    for key in GROUP_KEYS:
        if key == "lr" and not read_lr and isinstance(group[key], torch.Tensor):
            _check_lr_meta(group[key])
        else:
            _CHECKS[key](group[key])
    for _, check in _PAIR_CHECKS:
        check(group)


def check_option(key: str, value: Any) -> None:
    """The check of one hyperparameter ``key`` (a key of a param group) on its own."""
    _CHECKS[key](value)
