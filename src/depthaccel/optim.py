r"""The end-to-end update rule (Theorem 1 / Eq. 10) as a PyTorch optimizer.

Gradient descent on a balanced depth-N factorisation of a weight matrix moves the
end-to-end matrix, to first order in the learning rate, by (Arora, Cohen & Hazan,
ICML 2018, Eq. 10)::

    W <- (1 - eta*lambda*N) W - eta * sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}

where:
    W       the parameter (k x d; an ``out x in1 x in2 ...`` tensor is flattened to
            ``out x (in1*in2*...)`` and reshaped back);
    G       its gradient ``dL/dW``;
    eta     the learning rate ``lr``;
    lambda  the weight decay of the factors (each factor decays by ``1 - eta*lambda``,
            so the product decays by ``(1 - eta*lambda)^N ~ 1 - eta*lambda*N``);
    N       the depth (any real >= 1; N = 1 is plain SGD);
    [A]^q   the fractional power of a PSD matrix (``[A]^0 = I``).

``EndToEndSGD`` writes this as ``W <- W - eta * D`` with the *direction*
``D = P_W(G) + lambda*N*W`` and then treats D exactly as ``torch.optim.SGD`` treats its
``d_p`` (momentum, dampening, Nesterov, maximize), so it trains a single layer as if it
were a depth-N linear network trained by SGD with momentum, without the extra parameters.
D is computed by the shared Eq. 10 kernel :func:`depthaccel.update.end_to_end_update`
(one SVD and Claim 1; Eq. 12's O(d) form for a single row or column).
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, overload

import torch

from depthaccel.preconditioner import amortised_parts, amortised_svd
from depthaccel.update import end_to_end_update

__all__ = ["EndToEndSGD", "MATRIX_PARAMS", "end_to_end_sgd_step"]

MATRIX_PARAMS = ("all", "2d", "none")
"""Values of ``matrix_params``: which parameters get Eq. 10 (see :class:`EndToEndSGD`)."""

_HALF = (torch.float16, torch.bfloat16)
# per-parameter state of the amortised preconditioner (kept in float32 for half weights)
_CACHE_KEYS = ("precond_U", "precond_s", "precond_V", "precond_M", "precond_C")
# after a refresh whose Gram route failed (an ill-conditioned weight, see
# preconditioner.amortised_svd), the next GRAM_RETRY - 1 refreshes of that weight go straight
# to the SVD: a failed try costs the Gram matrix and its eigh (a quarter of a 512 x 3136 SVD)
GRAM_RETRY = 8
# the derived part of the cache as versions before the amortised kernels stored it
_LEGACY_CACHE_KEYS = ("precond_K", "precond_c", "precond_depth")


# ----------------------------------------------------------------------- hyperparameters


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


def _check_lr(lr: Any) -> None:
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
"""Values of ``precondition_dtype`` (see :class:`EndToEndSGD`)."""


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


def _refuse_torch_options(*, differentiable: Any, capturable: Any, fused: Any) -> None:
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
    "lr": _check_lr,
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
_GROUP_KEYS = tuple(_CHECKS)
# what a group of an older EndToEndSGD (lr, depth, weight_decay only) meant by the rest
_OPTION_DEFAULTS: dict[str, Any] = dict(
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


def _validate_group(group: Mapping[str, Any], *, read_lr: bool = True) -> None:
    """All checks of one param group; ``read_lr=False`` checks a tensor lr's metadata only
    (its value is read by :meth:`EndToEndSGD._check_groups` once per change)."""
    for key in _GROUP_KEYS:
        if key == "lr" and not read_lr and isinstance(group[key], torch.Tensor):
            _check_lr_meta(group[key])
        else:
            _CHECKS[key](group[key])
    for _, check in _PAIR_CHECKS:
        check(group)


# --------------------------------------------------------------------------- the step


def _first_nonfinite(grads: Sequence[torch.Tensor]) -> int | None:
    """Index of the first gradient with a NaN or inf entry, or None, with one host sync per
    device: NaN-propagating extremes of all gradients are tested together (on the CPU
    ``torch.aminmax`` per gradient, faster there than torch's inf-norm kernel; elsewhere
    the fused inf-norms ``torch._foreach_norm``); only on failure is the culprit searched."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        if g.numel():
            by_device.setdefault(g.device, []).append(g)
    for device, gs in by_device.items():
        if device.type == "cpu":
            ends = [e for g in gs for e in torch.aminmax(g)]
        else:
            ends = torch._foreach_norm(gs, float("inf"))
        if not bool(torch.stack([e.isfinite() for e in ends]).all()):
            for i, g in enumerate(grads):
                if g.numel() and not bool(torch.isfinite(g).all()):
                    return i
    return None


def _assert_finite(grads: Sequence[torch.Tensor]) -> None:
    """The NaN/inf check of a compiled step: an asynchronous assertion in the graph."""
    ends = [e for g in grads if g.numel() for e in torch._foreach_norm([g], float("inf"))]
    if ends:
        torch._assert_async(
            torch.stack([e.isfinite() for e in ends]).all(),
            "EndToEndSGD: a gradient contains NaN or inf; the loss diverged or the learning "
            "rate is too large",
        )


def _nonfinite_error(where: str, g: torch.Tensor) -> ValueError:
    return ValueError(
        f"gradient of {where} (shape {tuple(g.shape)}) contains NaN or inf; the loss "
        "diverged or the learning rate is too large (no parameter was changed)"
    )


def _keep(state: dict[str, Any], key: str, value: torch.Tensor) -> None:
    """``state[key] = value``, written into the tensor already there when it fits, so that
    the cache keeps its identity (a compiled step guards on it: no recompilation)."""
    old = state.get(key)
    if (
        isinstance(old, torch.Tensor)
        and old.shape == value.shape
        and old.dtype == value.dtype
        and old.device == value.device
    ):
        old.copy_(value)
    else:
        state[key] = value


def _is_cached(p: torch.Tensor, depth: float, every: int, matrix_params: str) -> bool:
    """Whether p's direction uses the amortised cache (a row or a column uses Eq. 12)."""
    return (
        every > 1
        and depth != 1
        and _is_matrix(p, matrix_params)
        and p.numel() > 0
        and min(p.shape[0], p.numel() // p.shape[0]) > 1
    )


def _refresh_cache(
    p: torch.Tensor,
    depth: float,
    every: int,
    state: dict[str, Any],
    cache_dtype: torch.dtype | None,
) -> None:
    """The host-side part of the amortised preconditioner for one step of p: the SVD of W on
    every ``every``-th step of p (in ``cache_dtype``, default: the working dtype), Claim 1's
    parts once per refresh and depth, and p's step count."""
    work = torch.float32 if p.dtype in _HALF else p.dtype
    n = state.get("precond_step", 0)
    if n % every == 0 or "precond_U" not in state:
        W = p.detach().reshape(p.shape[0], -1).to(work)
        skip = state.get("precond_gram_skip", 0)  # see GRAM_RETRY
        U, s, V, by_gram = amortised_svd(W, gram=skip == 0)
        cdt = cache_dtype or work
        for key, t in zip(("precond_U", "precond_s", "precond_V"), (U, s, V), strict=True):
            _keep(state, key, t.to(cdt))
        state["precond_gram_skip"] = 0 if by_gram else (skip or GRAM_RETRY) - 1
        state.pop("precond_depth", None)
    svd = (state["precond_U"], state["precond_s"], state["precond_V"])
    if state.get("precond_depth") != float(depth) or "precond_M" not in state:
        # once per refresh (and depth), from the factors in at least float32
        high = torch.promote_types(svd[0].dtype, torch.float32)
        M, C = (
            None if t is None else t.to(svd[0].dtype)
            for t in amortised_parts(*(t.to(high) for t in svd), depth)
        )
        for key in _LEGACY_CACHE_KEYS:
            state.pop(key, None)
        empty = svd[1].new_zeros(0)
        _keep(state, "precond_M", M if M is not None else empty)
        _keep(state, "precond_C", C if C is not None else empty)
        state["precond_depth"] = float(depth)
    state["precond_step"] = n + 1


def _outside_graph(fn: Callable[..., None]) -> Callable[..., None]:
    """fn, run outside the graph of a compiled step (``torch._dynamo.disable``). Dynamo is
    imported only once a step is compiled: importing it doubles ``import torch``'s time."""
    disabled: list[Callable[..., None]] = []

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> None:
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if not disabled:
            import torch._dynamo as dynamo

            disabled.append(dynamo.disable(fn))
        return disabled[0](*args, **kwargs)

    return inner


@_outside_graph
def _refresh_caches(
    work: Sequence[tuple[Mapping[str, Any], Sequence[torch.Tensor]]],
    states: Mapping[torch.Tensor, dict[str, Any]],
) -> None:
    """:func:`_refresh_cache` for every cached matrix of a step, before any parameter
    changes; outside a compiled graph (the step count and the SVD route are host values)."""
    for group, params in work:
        every, depth = group["precondition_every"], group["depth"]
        for p in params:
            if _is_cached(p, depth, every, group["matrix_params"]):
                _refresh_cache(p, depth, every, states[p], group["precondition_dtype"])


def _preconditioned(
    p: torch.Tensor,
    d_p: torch.Tensor,
    depth: float,
    weight_decay: float,
    every: int,
    state: dict[str, Any],
    matrix_params: str = "all",
) -> torch.Tensor:
    """``D = P_W(d_p) + weight_decay * N * W`` (Eq. 10, the shared kernel
    :func:`depthaccel.update.end_to_end_update`) for the parameter p viewed as
    ``out x rest``, computed in float32 for half-precision p and cast back to p's dtype.
    With ``every > 1`` the operator is that of the SVD cached in ``state`` by
    :func:`_refresh_cache` (in its dtype: ``end_to_end_update``)."""
    if p.numel() == 0:
        return d_p.clone()  # nothing to precondition (a dimension of size 0)
    shape = p.shape
    work = torch.float32 if p.dtype in _HALF else p.dtype
    W = p.reshape(shape[0], -1).to(work)
    G = d_p.reshape(shape[0], -1).to(work)
    svd = parts = None
    if _is_cached(p, depth, every, matrix_params):
        svd = (state["precond_U"], state["precond_s"], state["precond_V"])
        M, C = state["precond_M"], state["precond_C"]
        parts = (M if M.numel() else None, C if C.numel() else None)
    # the gradients were checked for NaN/inf already (one fused check per step)
    D = end_to_end_update(
        W,
        G,
        depth=depth,
        weight_decay=weight_decay,
        svd=svd,
        svd_parts=parts,
        check_finite=False,
    )
    return D.to(p.dtype).reshape(shape)


def _is_matrix(p: torch.Tensor, matrix_params: str) -> bool:
    if matrix_params == "all":
        return p.dim() >= 2
    return matrix_params == "2d" and p.dim() == 2


@torch.no_grad()
def _sgd_on_directions(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    states: Mapping[torch.Tensor, dict[str, Any]],
    *,
    lr: float | torch.Tensor,
    depth: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    precondition_every: int,
    matrix_params: str,
    precondition_dtype: torch.dtype | None,
    foreach: bool | None = None,
) -> None:
    """torch.optim.SGD's step with ``d_p`` replaced by Eq. 10's direction: its single-tensor
    form, or with ``foreach=True`` its multi-tensor form (``torch._foreach_*`` over the
    directions, per device and dtype), each with the same arithmetic as SGD's."""
    if isinstance(lr, torch.Tensor):
        lr = lr.reshape(())
    if foreach is None:  # torch.optim.SGD's default: the multi-tensor step on CUDA
        foreach = bool(params) and all(p.device.type == "cuda" for p in params)
    directions = []
    for p, g in zip(params, grads, strict=True):
        d_p = g if not maximize else -g
        if depth != 1 and _is_matrix(p, matrix_params):
            cache = states[p] if precondition_every > 1 else {}  # no state for exact steps
            d_p = _preconditioned(
                p, d_p, depth, weight_decay, precondition_every, cache, matrix_params
            )
        elif weight_decay != 0:
            d_p = d_p.add(p, alpha=weight_decay)
        directions.append(d_p)
    if foreach:
        _foreach_sgd(params, directions, states, lr, momentum, dampening, nesterov)
        return
    for p, d_p in zip(params, directions, strict=True):
        if momentum != 0:
            buf = states[p].get("momentum_buffer")
            if buf is None:
                buf = d_p.detach().clone()
                states[p]["momentum_buffer"] = buf
            else:
                buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
            d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
        _apply_lr(p, d_p, lr)


def _apply_lr(p: torch.Tensor, d_p: torch.Tensor, lr: float | torch.Tensor) -> None:
    """``p -= lr * d_p``; a tensor lr on an accelerator (or in a compiled step) is not read
    on the host (``addcmul_``; torch.optim.SGD reads it)."""
    if isinstance(lr, torch.Tensor) and (
        torch.compiler.is_compiling() or (lr.device.type != "cpu" and lr.device == p.device)
    ):
        p.addcmul_(d_p, lr.to(p.dtype), value=-1)
    else:
        p.add_(d_p, alpha=-lr)


def _foreach_sgd(
    params: Sequence[torch.Tensor],
    directions: list[torch.Tensor],
    states: Mapping[torch.Tensor, dict[str, Any]],
    lr: float | torch.Tensor,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    """The momentum and update part of torch.optim.SGD's multi-tensor step."""
    by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        by_kind.setdefault((p.device, p.dtype), []).append(i)
    for idx in by_kind.values():
        ps = [params[i] for i in idx]
        ds = [directions[i] for i in idx]
        if momentum != 0:
            bufs = [states[p].get("momentum_buffer") for p in ps]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, ds, alpha=1 - dampening)
            else:
                for j, p in enumerate(ps):
                    if bufs[j] is None:
                        bufs[j] = states[p]["momentum_buffer"] = ds[j].detach().clone()
                    else:
                        bufs[j].mul_(momentum).add_(ds[j], alpha=1 - dampening)
            if nesterov:
                ds = torch._foreach_add(ds, bufs, alpha=momentum)
            else:
                ds = bufs
        if isinstance(lr, torch.Tensor) and (
            torch.compiler.is_compiling() or (lr.device.type != "cpu" and lr.device == ps[0].device)
        ):
            torch._foreach_add_(ps, torch._foreach_mul(ds, -lr.to(ps[0].dtype)))
        else:
            torch._foreach_add_(ps, ds, alpha=-lr)


@torch.no_grad()
def end_to_end_sgd_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    lr: float,
    depth: float,
    weight_decay: float = 0.0,
) -> None:
    r"""One Eq. 10 step, in place, on each parameter with its gradient (no momentum).

    For a parameter with >= 2 dimensions, viewed as ``W`` (k x d = out x rest)::

        W <- W - lr * (P_W(G) + weight_decay * N * W)
           = (1 - lr*weight_decay*N) W - lr * P_W(G)

    with ``P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}`` (Eq. 10). For a
    parameter with < 2 dimensions (a bias) it is plain SGD with decay ``1 - lr*weight_decay``
    (no factor N: a bias is not a product of factors)::

        b <- b - lr * (g + weight_decay * b)

    A weight with a single row or column (k = 1 or d = 1) uses Eq. 12's O(d) form
    (:func:`~depthaccel.preconditioner.single_output_direction`), which equals Eq. 10 there.
    Half-precision weights are preconditioned in float32. N = 1 gives bit-identical
    results to ``torch.optim.SGD(lr=lr, weight_decay=weight_decay)``.

    Raises:
        ValueError: a gradient with a shape different from its parameter's, or with NaN
            or inf entries (checked before any parameter is changed); bad hyperparameters.
    """
    _check_lr(lr)
    _check_depth(depth)
    _check_nonneg("weight_decay", weight_decay)
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} params but {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"grad {i} has shape {tuple(g.shape)}, its parameter {tuple(p.shape)}")
        if p.is_complex() or g.is_complex():
            raise ValueError(f"parameter {i} is complex; Eq. 10 is implemented for real tensors")
    bad = _first_nonfinite(grads)
    if bad is not None:
        raise _nonfinite_error(f"parameter {bad}", grads[bad])
    _sgd_on_directions(
        params,
        grads,
        defaultdict(dict),
        lr=lr,
        depth=depth,
        momentum=0.0,
        dampening=0.0,
        weight_decay=weight_decay,
        nesterov=False,
        maximize=False,
        precondition_every=1,
        matrix_params="all",
        precondition_dtype=None,
    )


# ------------------------------------------------------------------------ the optimizer


def _is_dtensor(p: torch.Tensor) -> bool:
    mod = sys.modules.get("torch.distributed.tensor")  # no DTensor exists unless imported
    return mod is not None and isinstance(p, getattr(mod, "DTensor", ()))


def _is_fsdp_flat(p: torch.Tensor) -> bool:
    # FSDP1 marks its FlatParameter (``_is_flat_param``) and, with use_orig_params=True,
    # the original parameters it turned into 1-D views (``_fsdp_flattened``).
    return bool(getattr(p, "_is_flat_param", False) or getattr(p, "_fsdp_flattened", False))


class EndToEndSGD(torch.optim.Optimizer):
    r"""SGD (with momentum) on the end-to-end direction of a depth-N linear network (Eq. 10).

    torch.optim.SGD's step with its ``d_p`` replaced, for every matrix parameter W
    (flattened to ``out x rest``) with gradient G, by (Arora, Cohen & Hazan, ICML 2018)::

        D = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N} + weight_decay * N * W

    then momentum on D and ``W <- W - lr * D`` exactly as SGD; other parameters (biases)
    get plain SGD, and ``depth=1`` is torch.optim.SGD bit for bit.

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: learning rate >= 0: a number, or a 1-element tensor (e.g. for torch.compile).
        depth: N, a real number >= 1.
        momentum, dampening, nesterov, maximize: as in torch.optim.SGD.
        weight_decay: lambda >= 0, each emulated factor's decay (matrices: lambda * N).
        precondition_every: K >= 1: recompute each weight's SVD every K of its steps and
            reuse it in between (1: exact Eq. 10 on every step).
        matrix_params: ``"all"`` (>= 2-D), ``"2d"`` or ``"none"``: which get Eq. 10.
        precondition_dtype: None, float32, float64 or bfloat16: dtype of the K > 1 cache.
        foreach: as in torch.optim.SGD: ``torch._foreach_*`` for momentum and update
            (None: on CUDA).
        differentiable, capturable, fused: torch.optim's; accepted off, True is refused.

    Example::

        model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Tanh(),
                                    torch.nn.Linear(20, 1))
        opt = EndToEndSGD(model.parameters(), lr=0.01, depth=2, momentum=0.9)
        model(torch.randn(8, 10)).pow(2).mean().backward()
        opt.step()

    **Details.** ``[A]^q`` is the fractional power of a PSD matrix (``[A]^0 = I``). Without
    momentum the step is what gradient descent on a balanced depth-N factorisation of W
    does to first order in ``lr`` (Theorem 1); with momentum it is heavy-ball/Nesterov on
    that direction. A weight with one row or column uses Eq. 12's O(d) form (exact, no
    SVD); float16/bfloat16 weights are preconditioned in float32.

    *Amortised preconditioning* (``precondition_every=K > 1``): a step between refreshes
    applies the operator of the weight ``W_c`` at the last refresh to the current G (the
    weight decay term uses the current W); the error is of the order of how far W moves
    in K steps relative to its singular values. The cache (about twice the weight's size)
    and each weight's step count are in ``state_dict()``. ``precondition_dtype=bfloat16``
    computes the cached direction in bfloat16 (~0.3% relative error), for hardware where
    that is fast; float16 is refused (range).

    *Which parameters*: ``"all"`` treats a conv kernel as ``out x (in*kh*kw)``; ``"2d"``
    only 2-D weights. An embedding table or a stacked attention projection cannot be told
    from a Linear weight by its shape: put it in a group with ``matrix_params="none"``.
    DTensor parameters (FSDP2, tensor parallel) are refused as matrices (a shard's SVD is
    not the matrix's); a 1-D parameter that FSDP1 flattened gets a warning, once.

    *Checks.* Hyperparameters are validated at construction and again by every
    ``step()`` (cheap Python checks, so a group edited or replaced since is caught; a
    tensor lr is read once per change of its version counter). NaN or inf gradients raise
    a ``ValueError`` before any parameter changes (one host sync per step and device).
    Sparse gradients, complex parameters and another optimizer's ``state_dict`` are refused.

    *torch.compile.* Both ``torch.compile(opt.step)`` and a compiled function calling
    ``opt.step()`` work. The exact rule (K = 1) compiles into one graph, SVD included
    (``fullgraph=True`` works); with K > 1 the SVD refresh runs outside the graph (a graph
    break on every step, so ``fullgraph=False``). In a compiled step the NaN/inf check is an
    in-graph assertion (``torch._assert_async``: a RuntimeError on the CPU, a device-side
    assert on CUDA), and a float hyperparameter changed between steps recompiles, as for
    torch.optim.SGD (a tensor lr does not). More in the README.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor,
        depth: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        precondition_every: int = 1,
        matrix_params: str = "all",
        precondition_dtype: torch.dtype | None = None,
        foreach: bool | None = None,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _refuse_torch_options(differentiable=differentiable, capturable=capturable, fused=fused)
        defaults = dict(
            lr=lr,
            depth=depth,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            precondition_every=precondition_every,
            matrix_params=matrix_params,
            precondition_dtype=precondition_dtype,
            foreach=foreach,
        )
        _validate_group(defaults)
        self._warned_flat = False
        # the tensor lr whose value was last checked, per group: (lr, lr._version)
        self._lr_checked: dict[int, tuple[torch.Tensor, int]] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _validate_group(group)
            self._check_params(group)
        except ValueError:
            self.param_groups.pop()
            raise

    def _check_params(self, group: Mapping[str, Any]) -> None:
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(
                    f"EndToEndSGD does not support complex parameters (got {p.dtype}, shape "
                    f"{tuple(p.shape)}): Eq. 10 is implemented for real matrices"
                )
            if group["depth"] == 1 or group["matrix_params"] == "none":
                continue
            if _is_matrix(p, group["matrix_params"]) and _is_dtensor(p):
                raise ValueError(
                    "EndToEndSGD cannot precondition a DTensor parameter (FSDP2 / tensor "
                    "parallel): the SVD of a local shard is not the SVD of the matrix; put "
                    "it in a group with matrix_params='none'"
                )
            if p.dim() == 1 and _is_fsdp_flat(p) and not self._warned_flat:
                self._warned_flat = True
                warnings.warn(
                    "EndToEndSGD got a 1-D parameter flattened by FSDP (FSDP1 FlatParameter "
                    "or use_orig_params view): it gets plain SGD, not Eq. 10; the matrices "
                    "it holds are not preconditioned",
                    UserWarning,
                    stacklevel=3,
                )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_lr_checked", {})
        self.__dict__.setdefault("_warned_flat", False)
        for group in self.param_groups:
            for k, v in _OPTION_DEFAULTS.items():  # a pickle of an older version
                group.setdefault(k, v)
            _validate_group(group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, refusing a state_dict that is not EndToEndSGD's
        (a clear ``ValueError`` now instead of a ``KeyError`` at the next step) and keeping
        the cached SVD of half-precision weights in float32."""
        saved_groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if not isinstance(saved_groups, list) or "state" not in state_dict:
            raise ValueError("not an optimizer state_dict (needs 'state' and 'param_groups')")
        for i, g in enumerate(saved_groups):
            missing = [k for k in _GROUP_KEYS if k not in g]
            if "depth" in missing:
                raise ValueError(
                    f"param group {i} of this state_dict has no 'depth': it is not an "
                    "EndToEndSGD state_dict (torch.optim.SGD's, for example); build the "
                    "EndToEndSGD afresh instead of loading it"
                )
        # an EndToEndSGD state_dict of an older version: the options it lacks get defaults
        state_dict = dict(state_dict)
        state_dict["param_groups"] = [{**_OPTION_DEFAULTS, **g} for g in saved_groups]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in saved_groups for i in g["params"]]
        for old, p in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(old, {})
            for k in _CACHE_KEYS:
                if k in saved:  # torch cast these to p's dtype; the cache is float32
                    self.state[p][k] = saved[k].to(device=p.device)

    def _check_groups(self) -> None:
        """Validate every param group, as at construction: cheap Python checks on each step
        (a group may have been replaced or edited since), and a tensor lr's value read once
        per change (its object and version counter), not per step. In a compiled step Dynamo
        traces the Python checks (and guards on the values they saw); a tensor lr's value is
        not read there (no host sync in the graph)."""
        for i, group in enumerate(self.param_groups):
            _validate_group(group, read_lr=False)
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) and not torch.compiler.is_compiling():
                seen = self._lr_checked.get(i)
                if seen is None or seen[0] is not lr or seen[1] != lr._version:
                    _check_lr(lr)
                    self._lr_checked[i] = (lr, lr._version)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one step; ``closure`` (optional) re-evaluates the model and returns the loss.

        Raises:
            ValueError: a bad hyperparameter in a param group (checked here too, so a group
                replaced or edited after construction is caught), sparse gradients, or a
                gradient with NaN or inf entries; no parameter is changed then.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_groups()
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise ValueError("EndToEndSGD does not support sparse gradients")
            work.append((group, params, [p.grad for p in params]))
        all_grads = [g for _, _, grads in work for g in grads]
        if torch.compiler.is_compiling():  # no host sync, no graph break
            _assert_finite(all_grads)
            bad = None
        else:
            bad = _first_nonfinite(all_grads)  # all groups, before any parameter changes
        if bad is not None:
            gi, p = next(
                (gi, p)
                for gi, (_, params, _) in enumerate(work)
                for p in params
                if p.grad is all_grads[bad]
            )
            i = next(i for i, q in enumerate(self.param_groups[gi]["params"]) if q is p)
            raise _nonfinite_error(f"parameter {i} of group {gi}", all_grads[bad])
        if any(g["precondition_every"] > 1 and g["depth"] != 1 for g, _, _ in work):
            _refresh_caches([(g, params) for g, params, _ in work], self.state)
        for group, params, grads in work:
            _sgd_on_directions(params, grads, self.state, **{k: group[k] for k in _GROUP_KEYS})
        return loss
