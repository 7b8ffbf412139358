r"""The l_p regression loss of the paper's experiments and its exact minimiser.

The paper (Section 8) trains linear models on ``l_p(yhat, y) = (1/p) (yhat - y)^p`` for
p = 2 and p = 4 and plots the *gap* ``L - L*`` ("distance from optimum"). Over m rows
and k outputs::

    L(W) = (1/m) sum_{i=1..m} sum_{c=1..k} (1/p) |x_i^T w_c - y_ic|^p

where:
    X (m x d) holds the rows x_i, W = [w_1 .. w_k] (d x k) the weights (a vector w for
    k = 1), y (m x k, or a vector for k = 1) the targets, p >= 2 a real exponent.

Over residuals ``r = pred - y`` the loss is built from two elementwise pieces, defined
here once and used by everything that evaluates the loss (``lp_loss``, the batched
trainer's logging and its fused hot loop)::

    lp_sum(r)  = sum |r|^p                       (over the last dimension)
    phi(r)     = |r|^{p-2} r = d/dr (1/p)|r|^p   (so dL/dpred = phi(r) / m)

``lp_sum_and_phi_`` computes both in one pass, in place (the trainer's form: for p = 2
and p = 4 the sum is a squared Euclidean norm, which rounds differently from
``lp_sum`` in the last bits).

``lp_optimum`` finds ``W* = argmin L`` in float64: least squares in closed form for
p = 2, Newton's method with a backtracking line search for p > 2. The k output
columns are independent problems and are solved one by one.

For classification, :class:`SoftmaxCE` is the multinomial softmax cross-entropy of a
k x d matrix with an L2 term (``ce_loss_grad``, ``ce_accuracy``; ``ce_optimum``: Newton
in float64 with its certificate); the batched trainer takes it in place of p.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MAX_P",
    "CEOptimum",
    "SoftmaxCE",
    "ce_accuracy",
    "ce_labels",
    "ce_loss_grad",
    "ce_optimum",
    "loss_token",
    "optimum_loss",
    "LpOptimum",
    "lp_hessian",
    "lp_loss",
    "lp_optimum",
    "lp_sum",
    "lp_sum_and_phi_",
]

#: The largest exponent the commands accept (``--loss l<p>``, ``demo --p``): beyond it
#: ``|r|^p`` overflows float64 already for residuals of about 1e3 (1e308 ** (1/100)).
MAX_P = 100.0


def _check_p(p: float) -> float:
    p = float(p)
    if not (math.isfinite(p) and p >= 2.0):
        raise ValueError(f"p must be a finite real number >= 2, got {p!r}")
    return p


def lp_sum(r: torch.Tensor, p: float) -> torch.Tensor:
    r"""``sum |r|^p`` over the last dimension of the residuals ``r`` (``|r| * |r|`` for p = 2).

    ``p`` is not validated here (callers check it once); see :func:`lp_loss`.
    """
    a = r.abs()
    vals = a * a if p == 2.0 else a.pow(p)
    return vals.sum(-1)


def lp_sum_and_phi_(
    r: torch.Tensor, p: float, *, aux: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(sum |r|^p, phi)`` with ``phi = |r|^{p-2} r``, in one pass; overwrites ``r``.

    ``r`` has shape ``(..., n)``; the sum is over the last dimension. ``phi`` is returned
    in ``r``'s memory for p = 2 (phi = r) and p = 4 (phi = r^3), in ``aux`` (a buffer
    shaped like r; allocated when None) otherwise. For p = 2 and 4 the sum is a squared
    norm (``||r||^2``, ``||r^2||^2``; ``aux`` holds r^2 for p = 4), otherwise ``<phi, r>``:
    no temporaries beyond ``aux`` (the batched trainer's hot loop).
    """
    if p == 2.0:
        return torch.linalg.vector_norm(r, dim=-1).square_(), r
    if p == 4.0:
        r2 = torch.mul(r, r, out=aux) if aux is not None else r * r
        lsum = torch.linalg.vector_norm(r2, dim=-1).square_()
        return lsum, r.mul_(r2)
    phi = (torch.abs(r, out=aux) if aux is not None else r.abs()).pow_(p - 2.0).mul_(r)
    return torch.linalg.vecdot(phi, r), phi


def lp_loss(pred: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    r"""``(1/m) sum_i sum_c (1/p) |pred_ic - y_ic|^p``: mean over rows, sum over outputs.

    ``y`` is a vector (m,) or a matrix (m, k); ``pred`` has the same shape, optionally
    with leading batch dimensions (one loss per batch element is returned). Computed as
    ``lp_sum(r) / (p m)`` over the flattened residuals ``r = pred - y``.
    """
    p = _check_p(p)
    if not isinstance(pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("pred and y must be torch tensors")
    if y.dim() not in (1, 2) or pred.shape[pred.dim() - y.dim() :] != y.shape:
        raise ValueError(
            f"pred must have shape (..., {tuple(y.shape)}) to match y; got {tuple(pred.shape)}"
        )
    r = pred - y
    if y.dim() == 2:
        r = r.flatten(-2)
    return lp_sum(r, p) / (p * y.shape[0])


@dataclass(frozen=True)
class LpOptimum:
    """The minimiser of the l_p loss and its certificate.

    Attributes:
        w: minimiser, float64 numpy array of shape (d,) for a vector y or (d, k).
        loss: ``L* = L(w)`` (float64).
        grad_norm: Euclidean norm of ``dL/dw`` at ``w`` (all outputs together): the
            certificate that ``w`` is optimal.
        iterations: Newton iterations used (largest over the outputs; 0 for p = 2).
    """

    w: np.ndarray
    loss: float
    grad_norm: float
    iterations: int


def as_float64(name: str, a) -> torch.Tensor:
    """``a`` (array or tensor) as a float64 CPU tensor; NaN/inf -> ``ValueError`` naming it."""
    if isinstance(a, torch.Tensor):
        t = a.detach().to(device="cpu", dtype=torch.float64)
    else:
        arr = np.asarray(a, dtype=np.float64)
        # shared when writable; a read-only array (e.g. from Ray's object store) is copied:
        # torch warns about, and must not write to, a tensor over read-only memory
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _loss_grad(X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor, p: float):
    """Per-column losses (k,), gradients (d, k) and |residuals| (m, k)."""
    r = X @ W - Y
    a = r.abs()
    m = X.shape[0]
    ap2 = a * a if p == 4.0 else a.pow(p - 2.0)
    loss = (ap2 * a * a).sum(0) / (p * m) if p == 4.0 else a.pow(p).sum(0) / (p * m)
    grad = X.T @ (ap2 * r) / m
    return loss, grad, ap2


def _design_matrix(X) -> torch.Tensor:
    """``X`` as a float64 CPU tensor, checked to be a non-empty finite m x d matrix."""
    X = as_float64("X", X)
    if X.dim() != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D matrix (m x d), got shape {tuple(X.shape)}")
    return X


def _hessian(X: torch.Tensor, ap2: torch.Tensor, p: float) -> torch.Tensor:
    """``((p-1)/m) X^T diag(|r|^{p-2}) X`` from ``ap2 = |r|^{p-2}`` of shape (m, 1)."""
    return (X * ((p - 1.0) / X.shape[0] * ap2)).T @ X


def lp_hessian(X, y, w, p: float) -> np.ndarray:
    r"""The Hessian of ``L(w) = (1/m) sum_i (1/p)|x_i^T w - y_i|^p`` at ``w``, in float64::

        H(w) = ((p-1)/m) X^T diag(|r|^{p-2}) X,    r = X w - y

    (for p = 2 it is ``X^T X / m`` and does not depend on ``w``).

    Args:
        X: design matrix (m x d), numpy or torch; converted to float64 (on CPU).
        y: targets, shape (m,) (one output).
        w: the point, shape (d,).
        p: exponent >= 2.

    Returns:
        The d x d Hessian as a float64 numpy array.

    Raises:
        ValueError: on shape mismatch, NaN/inf or p < 2.
    """
    p = _check_p(p)
    X = _design_matrix(X)
    y = as_float64("y", y)
    w = as_float64("w", w)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) (one output); got {tuple(y.shape)}")
    if w.shape != (X.shape[1],):
        raise ValueError(f"w must have shape ({X.shape[1]},); got {tuple(w.shape)}")
    _, _, ap2 = _loss_grad(X, y[:, None], w[:, None], p)
    return _hessian(X, ap2, p).numpy()


def lp_optimum(X, y, p: float, *, tol: float = 1e-12, max_iter: int = 100) -> LpOptimum:
    r"""Minimise ``L(W) = (1/m) sum_i sum_c (1/p)|x_i^T w_c - y_ic|^p`` in float64.

    p = 2: least squares, ``w = argmin ||X w - y||`` (closed form via ``lstsq``).
    p > 2: Newton's method on each output column, started at the least-squares
    solution, with the gradient and Hessian::

        g(w) = (1/m) X^T (|r|^{p-2} r),    H(w) = ((p-1)/m) X^T diag(|r|^{p-2}) X

    where r = X w - y, and a backtracking (Armijo) line search on the step ``-H^{-1} g``.
    It stops when ``||g|| <= tol``, or at the round-off floor: when the predicted
    decrease ``g^T H^{-1} g`` is below the loss's resolution, full Newton steps are taken
    while they reduce ``||g||`` and the best iterate is kept. The certificate
    ``grad_norm`` says how close to optimal the result is (on the Ethanol task, ~1e-14
    for p = 2 and ~1e-13..1e-11 for p = 4). A RuntimeWarning is raised if it ends
    above ``max(tol, 1e-8)``.

    Args:
        X: design matrix (m x d), numpy or torch; converted to float64 (computed on CPU).
        y: targets, (m,) or (m, k).
        p: exponent >= 2 (real).
        tol: gradient-norm target.
        max_iter: Newton iterations cap per output.

    Raises:
        ValueError: on shape mismatch, NaN/inf, p < 2, or a rank-deficient X (d > m or a
            singular value <= max(m, d) * eps * the largest: X^T X is singular, the
            minimiser is not unique, which this solver does not handle).
    """
    p = _check_p(p)
    X = _design_matrix(X)
    y = as_float64("y", y)
    vector = y.dim() == 1
    Y = y[:, None] if vector else y
    if Y.dim() != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must have shape (m,) or (m, k) with m = {X.shape[0]}; got {tuple(y.shape)}"
        )
    m, d = X.shape
    s = torch.linalg.svdvals(X)
    eps = torch.finfo(torch.float64).eps
    if d > m or s[-1] <= max(m, d) * eps * s[0]:
        raise ValueError(
            f"X (m={m}, d={d}) is rank deficient (X^T X is singular; smallest/largest singular "
            f"value {s[-1].item():.3e}/{s[0].item():.3e}): the l_p minimiser is not unique; "
            "remove collinear columns or regularise"
        )
    W = torch.linalg.lstsq(X, Y, driver="gelsd").solution
    iters_max = 0
    if p != 2.0:
        cols = []
        for c in range(Y.shape[1]):
            w, n_it = _newton_column(X, Y[:, c : c + 1], W[:, c : c + 1], p, tol, max_iter)
            cols.append(w)
            iters_max = max(iters_max, n_it)
        W = torch.cat(cols, dim=1)
    losses, grads, _ = _loss_grad(X, Y, W, p)
    loss = float(losses.sum())
    grad_norm = float(torch.linalg.vector_norm(grads))
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise ValueError("the l_p optimum came out non-finite (overflow in |r|^p?)")
    if grad_norm > max(tol, 1e-8):
        warnings.warn(
            f"lp_optimum: gradient norm {grad_norm:.3e} after {iters_max} Newton iterations "
            f"is above max(tol, 1e-8)",
            RuntimeWarning,
            stacklevel=2,
        )
    w_np = W.numpy()
    return LpOptimum(
        w=w_np[:, 0].copy() if vector else w_np,
        loss=loss,
        grad_norm=grad_norm,
        iterations=iters_max,
    )


def _newton_column(
    X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, p: float, tol: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    eps = torch.finfo(torch.float64).eps
    loss, g, ap2 = _loss_grad(X, y, w, p)
    gn = float(torch.linalg.vector_norm(g))
    it = 0
    stalls = 0
    while it < max_iter and gn > tol:
        it += 1
        H = _hessian(X, ap2, p)
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            step = torch.cholesky_solve(g, L)
        else:
            step = torch.linalg.lstsq(H, g, driver="gelsd").solution
        if not torch.isfinite(step).all():
            raise ValueError("Newton step is non-finite: the l_p Hessian is singular")
        dec = float((g * step).sum())
        if dec <= 64 * eps * float(loss):
            # round-off floor: a full Newton step is kept only if it lowers ||g||
            l_new, g_new, ap2_new = _loss_grad(X, y, w - step, p)
            gn_new = float(torch.linalg.vector_norm(g_new))
            if gn_new >= gn:
                break
            stalls += 1
            w, loss, g, ap2, gn = w - step, l_new, g_new, ap2_new, gn_new
            if stalls >= 3:
                break
            continue
        t = 1.0
        while True:
            w_new = w - t * step
            l_new, g_new, ap2_new = _loss_grad(X, y, w_new, p)
            if float(l_new) <= float(loss) - 1e-4 * t * dec or t < 1e-10:
                break
            t *= 0.5
        w, loss, g, ap2 = w_new, l_new, g_new, ap2_new
        gn = float(torch.linalg.vector_norm(g))
    return w, it


# ------------------------------------------------------------ softmax cross-entropy


_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class SoftmaxCE:
    r"""Multinomial softmax cross-entropy with an L2 term on the k x d matrix W::

        L(W) = (1/m) sum_i [log sum_c exp(w_c^T x_i) - w_{y_i}^T x_i] + (l2/2) ||W||_F^2

    where:
        X (m x d) holds the rows x_i, W (k x d) one row w_c per class, y_i in
        {0, .., k-1} the class index of row i, l2 >= 0.

    Passed to the trainer in place of p (``train(X, labels, SoftmaxCE(k, l2), ...)``,
    the labels as a vector of class indices); ``token`` identifies it in store keys
    and checkpoints. With ``l2 > 0`` the minimiser exists and is unique; with
    ``l2 = 0`` it may not (separable data: the infimum 0 is not attained).
    """

    n_classes: int
    l2: float = 0.0

    def __post_init__(self) -> None:
        k = self.n_classes
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {k!r}")
        object.__setattr__(self, "n_classes", int(k))
        lam = float(self.l2)
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"l2 must be finite and >= 0, got {self.l2!r}")
        object.__setattr__(self, "l2", lam)

    @property
    def token(self) -> str:
        return f"ce(k={self.n_classes},l2={self.l2!r})"


def ce_labels(y, n_classes: int) -> torch.Tensor:
    """``y`` (m,) of class indices 0..n_classes-1 (integer-valued floats allowed) as an
    int64 CPU tensor; ValueError otherwise."""
    t = torch.as_tensor(np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y))
    if t.dim() != 1:
        raise ValueError(f"class labels must be a vector (m,), got shape {tuple(t.shape)}")
    f = t.to(torch.float64)
    if not bool(torch.isfinite(f).all()) or not bool((f == f.round()).all()):
        raise ValueError("class labels must be integers 0..k-1 (no NaN, no fractions)")
    if t.numel() and not (0 <= float(f.min()) and float(f.max()) < n_classes):
        raise ValueError(f"class labels must lie in 0..{n_classes - 1}")
    return f.to(torch.int64)


def _logits_and_label_index(
    W: torch.Tensor, X: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits ``Z = W X^T`` (..., k, m) of every run of W (..., k, d), one GEMM of the
    stacked rows of W (a batched 3-D matmul would run one small GEMM per run), and the
    labels as a gather index (..., 1, m) into Z's class axis."""
    m = X.shape[0]
    k, d = W.shape[-2:]
    lead = W.shape[:-2]
    Z = (W.reshape(-1, d) @ X.T).view(*lead, k, m)
    idx = labels.view(*([1] * len(lead)), 1, m).expand(*lead, 1, m)
    return Z, idx


def ce_loss_grad(
    W: torch.Tensor,
    X: torch.Tensor,
    labels: torch.Tensor,
    l2: float,
    out: torch.Tensor | None = None,
    accuracy_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses (...,) and gradients (..., k, d) of :class:`SoftmaxCE` at ``W`` (..., k, d)
    (any leading batch dimensions), in W's dtype: ``dL/dW = (1/m) (S - E)^T X + l2 W``
    with S the softmax probabilities and E the one-hot labels (m x k).

    The loss of a row is ``log sum_c exp(z_c - z_max) - (z_y - z_max)`` (shifted by the
    row's largest logit, so exp never overflows). The logits are one GEMM over all runs
    (``_logits_and_label_index``), the gradient one more. ``out`` (same shape as W, not W
    itself) receives the gradient; ``accuracy_out`` (float64, shape W.shape[:-2]), when
    given, receives :func:`ce_accuracy` of W, read from the same logits (no third GEMM)."""
    m, d = X.shape
    D, idx = _logits_and_label_index(W, X, labels)  # logits z, then z - z_max, then exp
    zmax = D.amax(dim=-2, keepdim=True)
    if accuracy_out is not None:
        torch.mean(_right_rows(D, zmax, idx, labels).to(torch.float64), -1, out=accuracy_out)
    D.sub_(zmax)
    dy = D.gather(-2, idx)  # z_y - z_max
    E = D.exp_()
    s = E.sum(dim=-2, keepdim=True)
    loss = (s.log() - dy).sum((-2, -1)).div_(m)
    S = E.div_(s)
    S.scatter_add_(-2, idx, torch.full_like(dy, -1.0))  # S - E (one-hot)
    G = W.new_empty(W.shape) if out is None else out
    torch.mm(S.view(-1, m), X, out=G.view(-1, d))
    G.div_(m)
    if l2:
        loss = loss + 0.5 * l2 * (W * W).sum((-2, -1))
        G.add_(W, alpha=l2)
    return loss, G


def ce_accuracy(W: torch.Tensor, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction (...,) of rows whose largest score ``w_c^T x_i`` is their class's (ties:
    the first class wins, as ``argmax``; a NaN score counts as wrong).

    Row i is right when ``z_y = max_c z_c`` and no class ``c < y`` reaches that maximum:
    comparisons with the max, which (unlike ``argmax`` over the class axis, a strided
    one here) vectorise."""
    Z, idx = _logits_and_label_index(W, X, labels)
    return _right_rows(Z, Z.amax(dim=-2, keepdim=True), idx, labels).to(torch.float64).mean(-1)


def _right_rows(
    Z: torch.Tensor, zmax: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Bool (..., m): whether row i's largest logit of ``Z`` (..., k, m), whose maximum
    over the class axis is ``zmax``, is its class's, the first class winning ties (see
    :func:`ce_accuracy`; ``idx`` from ``_logits_and_label_index``)."""
    k, m = Z.shape[-2:]
    at_top = Z == zmax  # (..., k, m)
    earlier = torch.arange(k, device=Z.device).view(k, 1) < labels.view(1, m)  # c < y
    beaten = (at_top & earlier).any(dim=-2)
    return at_top.gather(-2, idx).squeeze(-2) & ~beaten


@dataclass(frozen=True)
class CEOptimum:
    """The minimiser of :class:`SoftmaxCE` and its certificate.

    Attributes:
        W: the minimiser (k x d float64 numpy), or the last iterate when ``bounded`` is
            False.
        loss: L* (the infimum 0 when ``bounded`` is False).
        grad_norm: Frobenius norm of dL/dW at ``W`` (the certificate).
        iterations: Newton iterations used.
        bounded: False when l2 = 0 and the data are separable: the loss goes to 0 along
            a direction of growing ||W|| and has no minimiser.
    """

    W: np.ndarray
    loss: float
    grad_norm: float
    iterations: int
    bounded: bool = True


def _ce_hessian(W: torch.Tensor, X: torch.Tensor, l2: float) -> torch.Tensor:
    """(k d) x (k d) Hessian: (1/m) sum_i (diag(s_i) - s_i s_i^T) (x) x_i x_i^T + l2 I."""
    k, d = W.shape
    m = X.shape[0]
    S = torch.softmax(W @ X.T, dim=0)  # (k, m)
    H = torch.empty(k, d, k, d, dtype=torch.float64)
    for a in range(k):
        for b in range(a, k):
            wgt = S[a] * (float(a == b) - S[b]) / m  # (m,)
            block = (X * wgt[:, None]).T @ X
            H[a, :, b, :] = block
            H[b, :, a, :] = block.T
    H = H.reshape(k * d, k * d)
    if l2:
        H.diagonal().add_(l2)
    return H


def ce_optimum(
    X, labels, n_classes: int, l2: float, *, tol: float = 1e-13, max_iter: int = 200
) -> CEOptimum:
    r"""Minimise :class:`SoftmaxCE` in float64 by Newton's method from W = 0, with a
    backtracking (Armijo) line search; the step solves ``H s = -g`` (a least-squares
    solve when l2 = 0: H is singular along the shift of every class's row by one
    vector, which leaves the loss unchanged). It stops when ``||g|| <= tol * max(1,
    ||g_0||)`` or when a step no longer decreases the loss, keeping the iterate with
    the smallest gradient; ``grad_norm`` is the certificate.

    With ``l2 = 0`` on separable data there is no minimiser: the loss goes to 0 as ||W||
    grows. That case is recognised when Newton drives the loss below ``1e-9 log k``
    with every row classified correctly: ``bounded`` is False and ``loss`` is 0.
    """
    X = _design_matrix(X)
    ce = SoftmaxCE(n_classes, l2)
    y = ce_labels(labels, ce.n_classes)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"labels must have shape ({X.shape[0]},), got {tuple(y.shape)}")
    k, d = ce.n_classes, X.shape[1]
    W = torch.zeros(k, d, dtype=torch.float64)
    loss, G = ce_loss_grad(W, X, y, ce.l2)
    g0 = float(G.norm())
    best = (float(G.norm()), W, float(loss))
    it = 0
    while it < max_iter:
        it += 1
        gn = float(G.norm())
        if gn <= tol * max(1.0, g0):
            break
        H = _ce_hessian(W, X, ce.l2)
        g = G.reshape(-1)
        if ce.l2 > 0:
            step = -torch.linalg.solve(H, g)
        else:
            step = -torch.linalg.lstsq(H, g[:, None], driver="gelsd").solution[:, 0]
        decrease = float(g @ step)
        if -decrease <= 1e3 * _EPS * abs(float(loss)):
            # below the loss's resolution: full steps while they reduce the gradient
            Wn = W + step.view(k, d)
            ln, Gn = ce_loss_grad(Wn, X, y, ce.l2)
            if float(Gn.norm()) >= gn:
                break
        else:
            a = 1.0
            while True:
                Wn = W + a * step.view(k, d)
                ln, Gn = ce_loss_grad(Wn, X, y, ce.l2)
                if float(ln) <= float(loss) + 1e-4 * a * decrease or a < 1e-10:
                    break
                a *= 0.5
            if float(ln) > float(loss):
                break
        W, loss, G = Wn, ln, Gn
        if float(G.norm()) < best[0]:
            best = (float(G.norm()), W, float(loss))
    gn, W, loss = best
    if ce.l2 == 0 and loss < 1e-9 * math.log(k) and float(ce_accuracy(W, X, y)) == 1.0:
        return CEOptimum(W.numpy(), 0.0, gn, it, bounded=False)
    return CEOptimum(W.numpy(), float(loss), gn, it, bounded=True)


def loss_token(loss: float | SoftmaxCE) -> str:
    """How a loss (an l_p exponent p, or a :class:`SoftmaxCE`) is named in store keys and
    checkpoints: ``p=4.0`` (as ever for l_p) or ``loss=ce(k=3,l2=0.001)``."""
    if isinstance(loss, SoftmaxCE):
        return f"loss={loss.token}"
    return f"p={float(loss)!r}"


def optimum_loss(X, y, loss: float | SoftmaxCE) -> float:
    """L* of the loss on (X, y): :func:`lp_optimum` for an exponent p, :func:`ce_optimum`
    for a :class:`SoftmaxCE` (y: class indices; the infimum 0 when unbounded)."""
    if isinstance(loss, SoftmaxCE):
        return ce_optimum(X, y, loss.n_classes, loss.l2).loss
    return lp_optimum(X, y, loss).loss
