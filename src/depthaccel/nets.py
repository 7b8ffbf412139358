r"""Deep linear networks ``x -> W_N ... W_1 x`` and their balanced initialisation.

A depth-N linear network holds factors ``W_j`` of shape ``n_j x n_{j-1}`` with
``n_0 = d`` (inputs) and ``n_N = k`` (outputs); it computes the same functions as the
single end-to-end matrix ``W_e = W_N ... W_1`` (k x d). The factors are *balanced*
(Arora, Cohen & Hazan, ICML 2018, Eq. 7) when::

    W_{j+1}^T W_{j+1} = W_j W_j^T,   j = 1..N-1,

and then gradient descent on the factors moves ``W_e`` by Eq. 10 to first order in the
learning rate (Theorem 1; see :mod:`depthaccel.preconditioner`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DeepLinear", "balanced_factors", "balancedness", "layer_widths"]

INITS = ("near_zero", "balanced", "identity")
_DEFAULT_SCALE = {"near_zero": 1e-3, "balanced": 1e-3, "identity": 0.0}


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    return depth


def layer_widths(
    in_features: int, out_features: int, depth: int, hidden: int | Sequence[int]
) -> list[int]:
    """The widths ``[n_0 = d, n_1, ..., n_{N-1}, n_N = k]`` of a depth-N linear network.

    ``hidden`` is one width for every hidden layer or a list of ``N - 1`` widths (ignored,
    and may be empty, for N = 1).
    """
    depth = _check_depth(depth)
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hid = [hidden] * (depth - 1)
    else:
        hid = list(hidden)
        if len(hid) != depth - 1:
            raise ValueError(
                f"hidden must be an int or a list of depth - 1 = {depth - 1} widths, got {len(hid)}"
            )
    for h in hid:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ValueError(f"hidden widths must be integers >= 1, got {hid!r}")
    return [in_features, *hid, out_features]


def _orthonormal_columns(n: int, r: int, generator: torch.Generator | None) -> torch.Tensor:
    """An ``n x r`` float64 matrix with orthonormal columns: the first r columns of I_n, or
    random (QR of a Gaussian) when a generator is given."""
    if generator is None:
        return torch.eye(n, r, dtype=torch.float64)
    q, rr = torch.linalg.qr(torch.randn(n, r, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(rr)).where(torch.diagonal(rr) != 0, 1.0)


def balanced_factors(
    W_e: torch.Tensor,
    depth: int,
    hidden: int | Sequence[int] | None = None,
    *,
    rtol: float | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    r"""Balanced factors ``[W_1, ..., W_N]`` (Eq. 7) whose product ``W_N ... W_1`` is ``W_e``.

    With the thin SVD ``W_e = U S V^T`` truncated to its rank r::

        W_1 = R_1 S^{1/N} V^T,   W_j = R_j S^{1/N} R_{j-1}^T,   W_N = U S^{1/N} R_{N-1}^T,

    where:
        ``R_j`` (``n_j x r``) has orthonormal columns -- the first r columns of the
        identity by default (exact: no rounding from the embedding), or random when a
        ``generator`` is given;
        ``S^{1/N}`` is the N-th root of the singular values.

    Then ``W_{j+1}^T W_{j+1} = R_j S^{2/N} R_j^T = W_j W_j^T`` and the product telescopes
    to ``U S V^T``. Computed in float64 (one SVD) and returned in ``W_e``'s dtype and
    device; in float64 the product and Eq. 7 hold to round-off (~1e-15 relative).

    Args:
        W_e: the end-to-end matrix, a single 2-D tensor of shape ``(k, d)``.
        depth: N, an integer >= 1 (N = 1 returns ``[W_e.clone()]``).
        hidden: widths ``n_1..n_{N-1}``: one int or a list of N - 1 ints, each >= r.
            Default: ``min(k, d)`` for every hidden layer.
        rtol: singular values ``<= rtol * s_max`` count as zero when finding the rank r;
            default ``max(k, d) * eps(W_e.dtype)``.
        generator: if given, the ``R_j`` are random orthonormal (drawn on the CPU).

    Raises:
        ValueError: W_e not 2-D or not finite, bad depth or widths, or a hidden width
            smaller than the rank r of W_e (a balanced factorisation needs every
            ``n_j >= r``).
    """
    if W_e.dim() != 2:
        raise ValueError(f"W_e must be a 2-D (k, d) matrix, got shape {tuple(W_e.shape)}")
    if not torch.isfinite(W_e).all():
        raise ValueError("W_e contains NaN or inf")
    k, d = W_e.shape
    depth = _check_depth(depth)
    if hidden is None:
        hidden = min(k, d)
    widths = layer_widths(d, k, depth, hidden)
    if depth == 1:
        return [W_e.clone()]
    W64 = W_e.detach().to(device="cpu", dtype=torch.float64)
    U, s, Vh = torch.linalg.svd(W64, full_matrices=False)
    if rtol is None:
        rtol = max(k, d) * torch.finfo(W_e.dtype).eps
    r = int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    too_small = [n for n in widths[1:-1] if n < r]
    if too_small:
        raise ValueError(
            f"a balanced factorisation of a rank-{r} matrix needs every hidden width >= {r}; "
            f"got hidden widths {widths[1:-1]}"
        )
    root = s[:r].pow(1.0 / depth)
    R = [_orthonormal_columns(n, r, generator) for n in widths[1:-1]]
    left = [*R, U[:, :r]]  # n_j x r for j = 1..N
    right = [Vh[:r].mT, *R]  # n_{j-1} x r for j = 1..N
    factors = [(L * root) @ Rt.mT for L, Rt in zip(left, right, strict=True)]
    return [f.to(device=W_e.device, dtype=W_e.dtype) for f in factors]


class DeepLinear(nn.Module):
    r"""A depth-N linear network ``x -> W_N ... W_1 x (+ b)``, factors in ``self.factors``.

    ``factors[j-1]`` is ``W_j`` with shape ``n_j x n_{j-1}`` (``n_0 = in_features``,
    ``n_N = out_features``), stored as an :class:`torch.nn.ParameterList`. ``forward``
    applies the factors in sequence (``x @ W_1^T @ ... @ W_N^T``), which is cheaper than
    forming ``W_e`` when the hidden widths are small; the optional bias is added after the
    last layer.

    Inits (``scale`` default in brackets):
        ``near_zero``: i.i.d. Gaussian entries with std ``scale`` [1e-3].
        ``balanced``: :func:`balanced_factors` of an end-to-end matrix -- ``target`` if
            given (then ``scale`` is ignored), else one with i.i.d. N(0, scale^2) entries
            [1e-3] projected onto its top ``min(k, d, n_1..n_{N-1})`` singular directions,
            so that the widths fit. Satisfies Eq. 7 to round-off.
        ``identity``: ``W_j = I`` (``torch.eye(n_j, n_{j-1})``: the identity padded with
            zeros or truncated for rectangular factors) plus i.i.d. Gaussian noise of std
            ``scale`` [0].

    Args:
        in_features, out_features: d and k.
        depth: N, an integer >= 1.
        hidden: hidden width(s): one int or a list of N - 1 ints.
        init: one of ``near_zero``, ``balanced``, ``identity``.
        scale: see above; ``None`` picks the default of the init.
        bias: add a learnable bias (zeros at init) after the last layer.
        target: the end-to-end matrix (k x d) of the ``balanced`` init.
        generator, seed: source of randomness (give at most one); draws happen on the CPU
            in float64, so a seed gives the same network on every device and dtype.
        dtype, device: of the parameters (default: torch's default dtype, CPU).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int,
        hidden: int | Sequence[int] = 1,
        init: str = "near_zero",
        scale: float | None = None,
        bias: bool = False,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        widths = layer_widths(in_features, out_features, depth, hidden)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        if scale is None:
            scale = _DEFAULT_SCALE[init]
        scale = float(scale)
        if not (scale >= 0 and scale != float("inf")):
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        if target is not None and init != "balanced":
            raise ValueError("target= is only used by init='balanced'")
        if generator is not None and seed is not None:
            raise ValueError("give at most one of generator and seed")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        dtype = dtype or torch.get_default_dtype()

        self.in_features = in_features
        self.out_features = out_features
        self.depth = depth
        self.widths: list[int] = widths
        self.init = init

        factors = self._init_factors(widths, init, scale, target, generator)
        self.factors = nn.ParameterList(
            nn.Parameter(f.to(device=device, dtype=dtype)) for f in factors
        )
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        )

    @staticmethod
    def _init_factors(
        widths: list[int],
        init: str,
        scale: float,
        target: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> list[torch.Tensor]:
        f64 = torch.float64
        shapes = [(widths[j + 1], widths[j]) for j in range(len(widths) - 1)]
        depth = len(shapes)
        if init == "near_zero":
            return [scale * torch.randn(*sh, generator=generator, dtype=f64) for sh in shapes]
        if init == "identity":
            return [
                torch.eye(*sh, dtype=f64) + scale * torch.randn(*sh, generator=generator, dtype=f64)
                for sh in shapes
            ]
        k, d = widths[-1], widths[0]
        if target is None:
            Z = scale * torch.randn(k, d, generator=generator, dtype=f64)
            r = min(k, d, *widths[1:-1]) if depth > 1 else min(k, d)
            U, s, Vh = torch.linalg.svd(Z, full_matrices=False)
            target = (U[:, :r] * s[:r]) @ Vh[:r]
        elif tuple(target.shape) != (k, d):
            raise ValueError(
                f"target must have shape (out_features, in_features) = {(k, d)}, "
                f"got {tuple(target.shape)}"
            )
        return balanced_factors(target.detach().to(f64), depth, widths[1:-1], generator=generator)

    def end_to_end(self) -> torch.Tensor:
        """The end-to-end matrix ``W_e = W_N ... W_1`` (k x d), differentiable."""
        W = self.factors[0]
        for f in self.factors[1:]:
            W = f @ W
        return W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.factors:
            x = x @ f.mT
        if self.bias is not None:
            x = x + self.bias
        return x

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"depth={self.depth}, widths={self.widths}, init={self.init!r}, "
            f"bias={self.bias is not None}"
        )


def balancedness(net: DeepLinear | Sequence[torch.Tensor]) -> float:
    r"""Deviation from Eq. 7: ``max_j ||W_{j+1}^T W_{j+1} - W_j W_j^T||_F`` (0 for depth 1).

    Gradient flow keeps it at its initial value (Eq. 9: balanced factors stay balanced);
    gradient descent with a finite learning rate drifts by O(lr^2) per step.

    Accepts a :class:`DeepLinear` or the list of its factors ``[W_1, ..., W_N]``.
    """
    factors = list(net.factors) if isinstance(net, DeepLinear) else list(net)
    with torch.no_grad():
        devs = [
            torch.linalg.matrix_norm(b.mT @ b - a @ a.mT).item()
            for a, b in zip(factors[:-1], factors[1:], strict=True)
        ]
    return max(devs, default=0.0)
