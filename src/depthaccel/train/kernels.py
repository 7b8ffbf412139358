r"""Elementwise update rules of the adaptive optimizers, batched over runs.

Each function takes a parameter tensor ``p`` (leading dimension = runs), its gradient
``g`` (weight decay already added: ``g = dL/dp + lambda p``), the optimizer state and
per-run hyperparameters broadcastable against ``p``, and returns the new parameter and
state *without* modifying the inputs (the engine masks frozen runs with
``torch.where``). ``t`` is the 1-based number of the update.

Adam (``tf=False``: torch.optim.Adam; ``tf=True``: tf.compat.v1.train.AdamOptimizer)::

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    torch: p <- p - lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)
    TF1:   p <- p - lr_t * m / (sqrt(v) + eps),   lr_t = lr sqrt(1 - b2^t)/(1 - b1^t)

(TF1's eps is the "epsilon hat" of Kingma & Ba's Section 2: added to the
uncorrected sqrt(v); torch adds it to the bias-corrected one.)

AdaGrad (torch: acc_0 = 0, eps = 1e-10; TF1: acc_0 = 0.1, eps = 0)::

    acc <- acc + g^2,   p <- p - lr g / (sqrt(acc) + eps)

AdaDelta (the same rule in both libraries; torch lr 1, rho .9, eps 1e-6; TF1 lr 1e-3,
rho .95, eps 1e-8)::

    acc <- rho acc + (1 - rho) g^2
    u   <- sqrt(acc_u + eps) / sqrt(acc + eps) * g
    acc_u <- rho acc_u + (1 - rho) u^2,   p <- p - lr u

where:
    lr, b1, b2, eps, rho, acc_0: per-run tensors (or floats) broadcastable against p.
"""

from __future__ import annotations

import torch

__all__ = ["adadelta_update", "adagrad_update", "adam_update", "init_state"]

Tensor = torch.Tensor
State = dict[str, Tensor]  # an optimizer's per-parameter state (e.g. Adam's m and v)
HParams = dict[str, Tensor]  # per-run hyperparameters (beta1, eps, rho, ...)


def init_state(method: str, p: Tensor, hp: HParams) -> State:
    """Fresh optimizer state for ``method`` shaped like ``p``."""
    z = torch.zeros_like(p)
    if method == "adam":
        return {"m": z, "v": z.clone()}
    if method == "adagrad":
        return {"acc": z + hp["initial_accumulator"]}
    if method == "adadelta":
        return {"acc": z, "acc_u": z.clone()}
    return {}


_BLOCK = 32  # elements: a whole number of iterations of torch's vectorised CPU loops


def _pow(b: float | Tensor, t: int) -> float | Tensor:
    """``b**t``; a per-run tensor ``b`` is padded to a multiple of ``_BLOCK`` elements,
    because a vectorised loop's remainder rounds ``pow`` differently (std::pow instead
    of the vector kernel), so a run's bits would depend on the group's size."""
    if not isinstance(b, Tensor):
        return b**t
    flat = b.reshape(-1)
    pad = -flat.numel() % _BLOCK
    if pad:
        flat = torch.cat([flat, flat.new_full((pad,), 0.5)])
    return flat.pow(t)[: b.numel()].view(b.shape)


def adam_update(
    p: Tensor, g: Tensor, state: State, hp: HParams, lr: Tensor, t: int, tf: bool
) -> tuple[Tensor, State]:
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    m = state["m"] + (1 - b1) * (g - state["m"])
    v = b2 * state["v"] + (1 - b2) * (g * g)
    bc1 = 1 - _pow(b1, t)
    bc2 = 1 - _pow(b2, t)
    if tf:
        lr_t = lr * torch.sqrt(bc2) / bc1 if isinstance(bc2, Tensor) else lr * bc2**0.5 / bc1
        p_new = p - lr_t * m / (torch.sqrt(v) + eps)
    else:
        sq = torch.sqrt(bc2) if isinstance(bc2, Tensor) else bc2**0.5
        p_new = p - (lr / bc1) * m / (torch.sqrt(v) / sq + eps)
    return p_new, {"m": m, "v": v}


def adagrad_update(
    p: Tensor, g: Tensor, state: State, hp: HParams, lr: Tensor, t: int, tf: bool
) -> tuple[Tensor, State]:
    acc = state["acc"] + g * g
    p_new = p - lr * g / (torch.sqrt(acc) + hp["eps"])
    return p_new, {"acc": acc}


def adadelta_update(
    p: Tensor, g: Tensor, state: State, hp: HParams, lr: Tensor, t: int, tf: bool
) -> tuple[Tensor, State]:
    rho, eps = hp["rho"], hp["eps"]
    acc = rho * state["acc"] + (1 - rho) * (g * g)
    u = torch.sqrt(state["acc_u"] + eps) / torch.sqrt(acc + eps) * g
    acc_u = rho * state["acc_u"] + (1 - rho) * (u * u)
    return p - lr * u, {"acc": acc, "acc_u": acc_u}


UPDATES = {"adam": adam_update, "adagrad": adagrad_update, "adadelta": adadelta_update}
