"""The hyperparameters of :class:`depthaccel.optim.EndToEndSGD`: what each may be, declared
once with :mod:`depthaccel.validation` (an ``Interval`` for a number, ``Options`` for a
setting), and the checks of a param group: at construction, in ``add_param_group`` and on
every ``step()``, where they are cheap Python checks that ``torch.compile`` traces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from depthaccel.validation import BOOL, Integral, Interval, Options, Real, check, shown

__all__ = [
    "CONSTRAINTS",
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
"""Values of ``matrix_params``: which parameters get Eq. 10 (see
:class:`depthaccel.optim.EndToEndSGD`)."""

PRECONDITION_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16)
"""Values of ``precondition_dtype`` (see :class:`depthaccel.optim.EndToEndSGD`)."""

_NONNEG = Interval(Real, 0, None)  # a finite number >= 0
#: lr as a number (a 1-element tensor is checked by :func:`check_lr`).
LR = _NONNEG

#: What each hyperparameter of a param group may be (lr: :func:`check_lr`), in the order
#: they are checked.
CONSTRAINTS: dict[str, Interval | Options] = {
    "depth": Interval(Real, 1, None),
    "momentum": _NONNEG,
    "dampening": Interval(Real),
    "weight_decay": _NONNEG,
    "nesterov": BOOL,
    "maximize": BOOL,
    "precondition_every": Interval(Integral, 1, None),
    "matrix_params": Options(MATRIX_PARAMS),
    "precondition_dtype": Options(
        PRECONDITION_DTYPES,
        note=" (float16 is refused: Claim 1's eigenvalues can exceed its range)",
    ),
    "foreach": Options((None, True, False)),
}
GROUP_KEYS = ("lr", *CONSTRAINTS)
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


def _check_lr_meta(lr: torch.Tensor) -> None:
    if lr.numel() != 1 or not lr.is_floating_point():
        raise ValueError(
            f"a tensor lr must be a 1-element floating-point tensor, got {tuple(lr.shape)} "
            f"{lr.dtype}"
        )
    if lr.requires_grad:
        raise ValueError("a tensor lr must not require grad")


def check_lr(lr: Any, *, read: bool = True) -> None:
    """lr: a finite number >= 0, or a 1-element floating-point tensor that does not require
    grad and holds one (its value read on the host unless ``read=False``)."""
    if isinstance(lr, torch.Tensor):
        _check_lr_meta(lr)
        if read:
            value = float(lr.detach().reshape(()).cpu())  # one host read
            if value not in LR:
                raise ValueError(f"lr must be {LR.describe()}, got tensor({value})")
    elif lr not in LR:
        raise ValueError(f"lr must be {LR.describe()} or a 1-element tensor, got {shown(lr)}")


def check_option(key: str, value: Any) -> None:
    """The check of one hyperparameter ``key`` (a key of a param group) on its own."""
    if key == "lr":
        check_lr(value)
    else:
        check(key, value, CONSTRAINTS[key])


_OFF = Options((False,))
_NOT_FUSED = Options((None, False))


def refuse_torch_options(*, differentiable: Any, capturable: Any, fused: Any) -> None:
    """torch.optim's ``differentiable``, ``capturable`` and ``fused``: accepted when off."""
    if differentiable not in _OFF:
        raise ValueError(
            f"differentiable={differentiable!r} is not supported: EndToEndSGD's step is not "
            "differentiable through its SVD (repeated singular values have no derivative)"
        )
    if capturable not in _OFF:
        raise ValueError(
            f"capturable={capturable!r} is not supported: the NaN/inf check and the SVD "
            "synchronise with the host, which a CUDA graph cannot capture"
        )
    if fused not in _NOT_FUSED:
        raise ValueError(f"fused={fused!r} is not supported: there is no fused kernel")


def _check_pairs(group: Mapping[str, Any]) -> None:
    """The rules between hyperparameters (torch.optim.SGD's for Nesterov)."""
    if group["nesterov"] and not (group["momentum"] > 0 and group["dampening"] == 0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")
    if group["precondition_dtype"] is not None and group["precondition_every"] == 1:
        raise ValueError(
            "precondition_dtype is the dtype of the amortised preconditioner's cache: it "
            "needs precondition_every > 1 (the exact rule computes in the weight's dtype)"
        )


def validate_group(group: Mapping[str, Any], *, read_lr: bool = True) -> None:
    """All checks of one param group, the first bad value raising a one-line ValueError;
    ``read_lr=False`` checks a tensor lr's metadata only (its value is read by
    :meth:`depthaccel.optim.EndToEndSGD._check_groups` once per change)."""
    missing = [k for k in GROUP_KEYS if k not in group]
    if missing:
        raise ValueError(
            f"a param group lacks {', '.join(missing)}: replace a group by an edited copy, "
            "e.g. dict(opt.param_groups[0], lr=0.1)"
        )
    check_lr(group["lr"], read=read_lr)
    for key, constraint in CONSTRAINTS.items():
        check(key, group[key], constraint)
    _check_pairs(group)
