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

The sum is :func:`depthaccel.preconditioner.end_to_end_direction` (one SVD, Claim 1).
``EndToEndSGD`` therefore trains a single layer as if it were a depth-N linear network,
without the extra parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from depthaccel.update import end_to_end_update

__all__ = ["EndToEndSGD", "end_to_end_sgd_step"]


def _check_hparams(lr: float, depth: float, weight_decay: float) -> None:
    if isinstance(lr, torch.Tensor) or not (isinstance(lr, (int, float)) and lr >= 0):
        raise ValueError(f"lr must be a number >= 0, got {lr!r}")
    if not math.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr!r}")
    if not (isinstance(depth, (int, float)) and math.isfinite(depth) and depth >= 1):
        raise ValueError(f"depth must be a finite real number >= 1, got {depth!r}")
    if not (
        isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")


@torch.no_grad()
def end_to_end_sgd_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    lr: float,
    depth: float,
    weight_decay: float = 0.0,
) -> None:
    r"""One Eq. 10 step, in place, on each parameter with its gradient.

    For a parameter with >= 2 dimensions, viewed as ``W`` (k x d = out x rest)::

        W <- W - lr * (P_W(G) + weight_decay * N * W)
           = (1 - lr*weight_decay*N) W - lr * P_W(G)

    with ``P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}`` (Eq. 10). For a
    parameter with < 2 dimensions (a bias) it is plain SGD with decay ``1 - lr*weight_decay``
    (no factor N: a bias is not a product of factors)::

        b <- b - lr * (g + weight_decay * b)

    The direction of a weight is :func:`depthaccel.update.end_to_end_update` (the one Eq. 10
    kernel; Eq. 12's O(d) form for a single row or column).

    The form ``p - lr * (direction + decay * p)`` is torch.optim.SGD's, so N = 1 gives
    bit-identical results to ``torch.optim.SGD(lr=lr, weight_decay=weight_decay)``.

    Raises:
        ValueError: a gradient with a shape different from its parameter's, or with NaN
            or inf entries (checked before any parameter is changed); bad hyperparameters.
    """
    _check_hparams(lr, depth, weight_decay)
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} params but {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"grad {i} has shape {tuple(g.shape)}, its parameter {tuple(p.shape)}")
        if not torch.isfinite(g).all():
            raise ValueError(
                f"gradient of parameter {i} (shape {tuple(p.shape)}) contains NaN or inf; "
                "the loss diverged or the learning rate is too large"
            )
    for p, g in zip(params, grads, strict=True):
        if p.dim() >= 2 and depth != 1:
            W, G = p.reshape(p.shape[0], -1), g.reshape(p.shape[0], -1)
            D = end_to_end_update(W, G, depth=depth, weight_decay=weight_decay).reshape(p.shape)
        else:
            D = g if weight_decay == 0 else g.add(p, alpha=weight_decay)
        p.add_(D, alpha=-lr)


class EndToEndSGD(torch.optim.Optimizer):
    r"""SGD with the end-to-end update rule of a depth-N linear network (Eq. 10).

    Every parameter with >= 2 dimensions (flattened to ``out x rest``) is updated as::

        W <- (1 - lr*weight_decay*N) W - lr * sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}

    where:
        G is the gradient of the loss at W, N = ``depth`` (any real >= 1; per param
        group), ``[A]^q`` the fractional power of a PSD matrix; this is what gradient
        descent on a balanced depth-N factorisation of W does to first order in ``lr``
        (Arora, Cohen & Hazan 2018, Theorem 1). Parameters with < 2 dimensions (biases)
        get plain SGD: ``b <- (1 - lr*weight_decay) b - lr*g``. With ``depth=1`` the
        optimizer is ``torch.optim.SGD(lr, weight_decay)`` exactly.

    Parameters whose ``.grad`` is None are skipped. A NaN or inf gradient raises a
    ``ValueError`` before any parameter of the group is changed. The work is one SVD of
    each weight matrix per step (see :func:`end_to_end_sgd_step`), on whatever device the
    parameters live.

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: learning rate, >= 0.
        depth: N, a finite real number >= 1.
        weight_decay: lambda, >= 0: the decay rate of each factor of the emulated network.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        depth: float,
        weight_decay: float = 0.0,
    ) -> None:
        _check_hparams(lr, depth, weight_decay)
        super().__init__(params, dict(lr=lr, depth=depth, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        _check_hparams(g["lr"], g["depth"], g["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise ValueError("EndToEndSGD does not support sparse gradients")
            end_to_end_sgd_step(
                params,
                [p.grad for p in params],
                lr=group["lr"],
                depth=group["depth"],
                weight_decay=group["weight_decay"],
            )
        return loss
