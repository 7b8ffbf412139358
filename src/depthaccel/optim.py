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

The step itself is in :mod:`depthaccel.optim_step` (functions of tensors and state) and
the hyperparameter checks in :mod:`depthaccel.optim_checks`; this module is the
``torch.optim.Optimizer`` around them.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

import torch

from depthaccel.optim_checks import (
    GROUP_KEYS,
    MATRIX_PARAMS,
    OPTION_DEFAULTS,
    PRECONDITION_DTYPES,
    check_lr,
    refuse_torch_options,
    validate_group,
)
from depthaccel.optim_step import (
    CACHE_KEYS,
    GRAM_RETRY,
    assert_finite,
    end_to_end_sgd_step,
    first_nonfinite,
    is_matrix,
    nonfinite_error,
    refresh_caches,
    sgd_on_directions,
)

__all__ = [
    "GRAM_RETRY",
    "MATRIX_PARAMS",
    "PRECONDITION_DTYPES",
    "EndToEndSGD",
    "end_to_end_sgd_step",
]


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
        refuse_torch_options(differentiable=differentiable, capturable=capturable, fused=fused)
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
        validate_group(defaults)
        self._warned_flat = False
        # the tensor lr whose value was last checked, per group: (lr, lr._version)
        self._lr_checked: dict[int, tuple[torch.Tensor, int]] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            validate_group(group)
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
            if is_matrix(p, group["matrix_params"]) and _is_dtensor(p):
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
            for k, v in OPTION_DEFAULTS.items():  # a pickle of an older version
                group.setdefault(k, v)
            validate_group(group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, refusing a state_dict that is not EndToEndSGD's
        (a clear ``ValueError`` now instead of a ``KeyError`` at the next step) and keeping
        the cached SVD of half-precision weights in float32."""
        saved_groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if not isinstance(saved_groups, list) or "state" not in state_dict:
            raise ValueError("not an optimizer state_dict (needs 'state' and 'param_groups')")
        for i, g in enumerate(saved_groups):
            missing = [k for k in GROUP_KEYS if k not in g]
            if "depth" in missing:
                raise ValueError(
                    f"param group {i} of this state_dict has no 'depth': it is not an "
                    "EndToEndSGD state_dict (torch.optim.SGD's, for example); build the "
                    "EndToEndSGD afresh instead of loading it"
                )
        # an EndToEndSGD state_dict of an older version: the options it lacks get defaults
        state_dict = dict(state_dict)
        state_dict["param_groups"] = [{**OPTION_DEFAULTS, **g} for g in saved_groups]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in saved_groups for i in g["params"]]
        for old, p in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(old, {})
            for k in CACHE_KEYS:
                if k in saved:  # torch cast these to p's dtype; the cache is float32
                    self.state[p][k] = saved[k].to(device=p.device)

    def _check_groups(self) -> None:
        """Validate every param group, as at construction: cheap Python checks on each step
        (a group may have been replaced or edited since), and a tensor lr's value read once
        per change (its object and version counter), not per step. In a compiled step Dynamo
        traces the Python checks (and guards on the values they saw); a tensor lr's value is
        not read there (no host sync in the graph)."""
        for i, group in enumerate(self.param_groups):
            validate_group(group, read_lr=False)
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) and not torch.compiler.is_compiling():
                seen = self._lr_checked.get(i)
                if seen is None or seen[0] is not lr or seen[1] != lr._version:
                    check_lr(lr)
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
            assert_finite(all_grads)
            bad = None
        else:
            bad = first_nonfinite(all_grads)  # all groups, before any parameter changes
        if bad is not None:
            gi, p = next(
                (gi, p)
                for gi, (_, params, _) in enumerate(work)
                for p in params
                if p.grad is all_grads[bad]
            )
            i = next(i for i, q in enumerate(self.param_groups[gi]["params"]) if q is p)
            raise nonfinite_error(f"parameter {i} of group {gi}", all_grads[bad])
        if any(g["precondition_every"] > 1 and g["depth"] != 1 for g, _, _ in work):
            refresh_caches([(g, params) for g, params, _ in work], self.state)
        for group, params, grads in work:
            sgd_on_directions(params, grads, self.state, **{k: group[k] for k in GROUP_KEYS})
        return loss
