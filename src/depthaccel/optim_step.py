"""The step of :class:`depthaccel.optim.EndToEndSGD`, as functions of parameters, gradients
and per-parameter state: the NaN/inf check of all gradients, the amortised preconditioner's
cache, Eq. 10's direction through the shared kernel
:func:`depthaccel.update.end_to_end_update`, and torch.optim.SGD's momentum and update on
those directions (single-tensor and ``foreach`` forms); :func:`end_to_end_sgd_step` is the
plain functional step."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from depthaccel.optim_checks import check_option
from depthaccel.preconditioner import amortised_parts, amortised_svd
from depthaccel.update import end_to_end_update

__all__ = [
    "CACHE_KEYS",
    "GRAM_RETRY",
    "assert_finite",
    "end_to_end_sgd_step",
    "first_nonfinite",
    "is_matrix",
    "nonfinite_error",
    "refresh_caches",
    "sgd_on_directions",
]

_HALF = (torch.float16, torch.bfloat16)
# per-parameter state of the amortised preconditioner (kept in float32 for half weights)
CACHE_KEYS = ("precond_U", "precond_s", "precond_V", "precond_M", "precond_C")
# after a refresh whose Gram route failed (an ill-conditioned weight, see
# preconditioner.amortised_svd), the next GRAM_RETRY - 1 refreshes of that weight go straight
# to the SVD: a failed try costs the Gram matrix and its eigh (a quarter of a 512 x 3136 SVD)
GRAM_RETRY = 8
# the derived part of the cache as versions before the amortised kernels stored it
_LEGACY_CACHE_KEYS = ("precond_K", "precond_c", "precond_depth")


def first_nonfinite(grads: Sequence[torch.Tensor]) -> int | None:
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


def assert_finite(grads: Sequence[torch.Tensor]) -> None:
    """The NaN/inf check of a compiled step: an asynchronous assertion in the graph."""
    ends = [e for g in grads if g.numel() for e in torch._foreach_norm([g], float("inf"))]
    if ends:
        torch._assert_async(
            torch.stack([e.isfinite() for e in ends]).all(),
            "EndToEndSGD: a gradient contains NaN or inf; the loss diverged or the learning "
            "rate is too large",
        )


def nonfinite_error(where: str, g: torch.Tensor) -> ValueError:
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
        and is_matrix(p, matrix_params)
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
def refresh_caches(
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


def is_matrix(p: torch.Tensor, matrix_params: str) -> bool:
    if matrix_params == "all":
        return p.dim() >= 2
    return matrix_params == "2d" and p.dim() == 2


@torch.no_grad()
def sgd_on_directions(
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
        if depth != 1 and is_matrix(p, matrix_params):
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
    check_option("lr", lr)
    check_option("depth", depth)
    check_option("weight_decay", weight_decay)
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} params but {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"grad {i} has shape {tuple(g.shape)}, its parameter {tuple(p.shape)}")
        if p.is_complex() or g.is_complex():
            raise ValueError(f"parameter {i} is complex; Eq. 10 is implemented for real tensors")
    bad = first_nonfinite(grads)
    if bad is not None:
        raise nonfinite_error(f"parameter {bad}", grads[bad])
    sgd_on_directions(
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
