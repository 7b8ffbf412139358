"""The forward of the batched trainer (step 1 of :mod:`depthaccel.train.engine`): the
problem of one training call on the compute device (``Problem``: X, y, the loss, the Gram
form's A, B, c and exact float64 losses) and the losses and gradients of all runs at once
(``Forward``), on buffers padded to whole row blocks (``block_runs``, ``padded_runs``)
whose runs keep their offset within a block across compactions (``compacted_slots``), so
that a run's bits do not depend on the size of its program (see "Compaction" in
:mod:`depthaccel.train.engine`)."""

from __future__ import annotations

import math

import torch

from depthaccel.losses import (
    LpOptimum,
    SoftmaxCE,
    as_float64,
    ce_accuracy,
    ce_labels,
    ce_loss_grad,
    lp_sum,
    lp_sum_and_phi_,
    optimum_loss,
)

ROW_BLOCK = 4  # the forward's GEMMs have a multiple of this many rows of float64 (see
# block_runs: twice as many of float32, more for an l_p loss whose p needs pow)

Tensor = torch.Tensor


class Problem:
    """X, y and the precomputed quantities of one training call, on the compute device."""

    def __init__(self, X, y, p: float | SoftmaxCE, device, dtype, gram: bool | None):
        X64 = as_float64("X", X)
        y64 = as_float64("y", y)
        if X64.dim() != 2:
            raise ValueError(f"X must be a 2-D matrix (m x d), got shape {tuple(X64.shape)}")
        self.vector = y64.dim() == 1
        #: softmax cross-entropy (y: class indices) instead of an l_p loss
        self.ce = p if isinstance(p, SoftmaxCE) else None
        self.labels = None
        if self.ce is not None:
            labels = ce_labels(y64, self.ce.n_classes)
            if gram:
                raise ValueError("the Gram form (gram=True) is only exact for p = 2")
            gram = False
            self.labels = labels.to(device)
            y64 = torch.nn.functional.one_hot(labels, self.ce.n_classes).to(torch.float64)
        Y64 = y64[:, None] if y64.dim() == 1 else y64
        if Y64.dim() != 2 or Y64.shape[0] != X64.shape[0]:
            raise ValueError(
                f"y must have shape (m,) or (m, k) with m = {X64.shape[0]}; got {tuple(y64.shape)}"
            )
        self.m, self.d = X64.shape
        self.k = Y64.shape[1]
        self.loss = self.ce if self.ce is not None else float(p)
        self.p = float("nan") if self.ce is not None else float(p)
        self.loss_id: float | str = self.ce.token if self.ce is not None else self.p
        self.dtype = dtype
        self.device = device
        self.gram = (self.p == 2.0) if gram is None else bool(gram)
        if self.gram and self.p != 2.0:
            raise ValueError("the Gram form (gram=True) is only exact for p = 2")
        m = self.m
        self.X64, self.Y64 = X64, Y64
        # residual form
        # one copy of X serves both GEMMs (as X^T in the forward one): half the cache
        self.X = X64.contiguous().to(device=device, dtype=dtype)  # (m, d)
        self.YT = Y64.T.contiguous().to(device=device, dtype=dtype)  # (k, m)
        # float64 copies for exact logging
        self.XT64 = X64.T.contiguous().to(device=device)
        self.YT64 = Y64.T.contiguous().to(device=device)
        if self.gram:
            self.A = (X64.T @ X64 / m).to(device=device, dtype=dtype)
            self.B = (Y64.T @ X64 / m).to(device=device, dtype=dtype)  # (k, d)
            self.c = float((Y64 * Y64).sum() / m)

    def loss64(self, We: Tensor) -> Tensor:
        """Exact float64 losses (R,) of end-to-end matrices We (R, k, d), residual form."""
        R = We.shape[0]
        We = pad_runs(self, We.to(torch.float64))  # as the forward: no BLAS remainder panel
        S = We.shape[0]
        if self.ce is not None:
            return ce_loss_grad(We, self.XT64.T, self.labels, self.ce.l2)[0][:R]
        W = We.reshape(S * self.k, self.d)
        r = (W @ self.XT64).view(S, self.k, self.m) - self.YT64  # float64 exact
        return (lp_sum(r.reshape(S, -1), self.p) / (self.p * self.m))[:R]

    def accuracy64(self, We: Tensor) -> Tensor | None:
        """Train accuracies (R,) of We for the cross-entropy loss (None for l_p)."""
        if self.ce is None:
            return None
        R = We.shape[0]
        return ce_accuracy(pad_runs(self, We.to(torch.float64)), self.XT64.T, self.labels)[:R]


def pad_runs(prob: Problem, We: Tensor) -> Tensor:
    """Float64 We (R, k, d) with zero runs appended up to ``padded_runs``."""
    R = We.shape[0]
    pad = padded_runs(R, block_runs(prob, torch.float64)) - R
    return torch.cat([We, We.new_zeros(pad, *We.shape[1:])]) if pad else We


class Forward:
    """Loss and gradient of all runs at once, into preallocated buffers.

    The GEMMs run on a padded buffer ``Wp`` of ``S`` runs whose ``S k`` rows are a whole
    number of blocks (``padded_runs``); run i of the program sits at run ``slots[i]`` of
    it (``slots`` None: at run i), and the other runs of ``Wp`` stay zero (finite; their
    losses and gradients are never read). No run's rows then fall into a BLAS kernel's
    or a vectorised loop's remainder, and a compaction keeps each run's row offset
    within its block (the engine's ``_Program.keep``), as both can change the rounding of a row (see
    "Compaction" in :mod:`depthaccel.train.engine`). ``We`` and ``G`` hold the program's R runs
    (views of ``Wp``, ``Gp`` when ``slots`` is None, else copied in and out)."""

    def __init__(self, prob: Problem, R: int, slots: Tensor | None = None):
        self.prob = prob
        self.R = R
        k, d, m = prob.k, prob.d, prob.m
        self.slots = slots
        self.step = block_runs(prob, prob.dtype)
        S = padded_runs(R if slots is None else int(slots.max()) + 1, self.step)
        self.S = S
        opts = {"device": prob.device, "dtype": prob.dtype}
        self.Wp = torch.zeros(S, k, d, **opts)
        self.Gp = torch.zeros(S, k, d, **opts)
        if slots is None:
            self.We = self.Wp[:R]  # the runs' rows (views)
            self.G = self.Gp[:R]
        else:
            self.We = torch.zeros(R, k, d, **opts)
            self.G = torch.zeros(R, k, d, **opts)
        self.acc: Tensor | None = None  # the runs' train accuracies, when asked for
        if prob.ce is not None:
            self.Xc = prob.X
            self.accp = torch.empty(S, device=prob.device, dtype=torch.float64)
        elif prob.gram:
            self.WA = torch.empty(S * k, d, **opts)
            self.tmp = torch.empty(S, k, d, **opts)
        else:
            self.P = torch.empty(S * k, m, **opts)
            self.aux = torch.empty(S, k * m, **opts) if prob.p != 2.0 else None
        self.scale = 1.0 / (prob.p * m) if prob.ce is None else 0.0
        self.inv_m = 1.0 / m

    def __call__(self, accuracy: bool = False) -> Tensor:
        """Fill self.G with dL/dW_e at self.We; return the losses (R,) in the compute dtype.

        ``accuracy`` (cross-entropy only): also set ``self.acc`` to the runs' train
        accuracies (R,), from the logits of this forward (exact when they are float64)."""
        if accuracy and self.prob.ce is None:
            raise ValueError("train accuracy is defined for the cross-entropy loss only")
        if self.slots is None:
            loss = self._padded(accuracy)[: self.R]
            self.acc = self.accp[: self.R] if accuracy else None
            return loss
        self.Wp.index_copy_(0, self.slots, self.We)
        loss = self._padded(accuracy)
        torch.index_select(self.Gp, 0, self.slots, out=self.G)
        self.acc = self.accp.index_select(0, self.slots) if accuracy else None
        return loss.index_select(0, self.slots)

    def _padded(self, accuracy: bool = False) -> Tensor:
        """Losses (S,) and gradients (``Gp``) of the S runs of ``Wp`` (and, when
        ``accuracy``, their train accuracies in ``accp``).

        Residual form, with P = W_e X^T overwritten in place: r = P - Y^T, then
        ``losses.lp_sum_and_phi_`` gives sum |r|^p and phi = |r|^{p-2} r (in place), and
        G = (1/m) phi X; the loss is sum |r|^p / (p m). Gram form (p = 2): see
        :mod:`depthaccel.train.engine`."""
        prob, S, k, d = self.prob, self.S, self.prob.k, self.prob.d
        if prob.ce is not None:  # softmax cross-entropy: losses.ce_loss_grad
            acc = self.accp if accuracy else None
            return ce_loss_grad(
                self.Wp, prob.X, prob.labels, prob.ce.l2, out=self.Gp, accuracy_out=acc
            )[0]
        Wf = self.Wp.view(S * k, d)
        if prob.gram:
            torch.mm(Wf, prob.A, out=self.WA)
            torch.sub(self.WA.view(S, k, d), prob.B, out=self.Gp)
            torch.sub(self.Gp, prob.B, out=self.tmp)  # We A - 2B
            self.tmp.mul_(self.Wp)
            loss = self.tmp.view(S, k * d).sum(-1)
            return loss.add_(prob.c).mul_(0.5)
        m = prob.m
        torch.mm(Wf, prob.X.T, out=self.P)
        r = self.P.view(S, k, m).sub_(prob.YT).view(S, k * m)
        lsum, phi = lp_sum_and_phi_(r, prob.p, aux=self.aux)
        torch.mm(phi.view(S * k, m), prob.X, out=self.Gp.view(S * k, d))
        self.Gp.mul_(self.inv_m)
        return lsum.mul_(self.scale)


def block_runs(prob: Problem, dtype: torch.dtype) -> int:
    """Runs per block: ``padded_runs`` pads to, and compaction keeps each run's slot
    modulo, this many runs. A block is ``ROW_BLOCK`` GEMM rows of float64 (twice as many
    of float32: the BLAS kernels' row panels), and for an l_p loss with p other than 2
    and 4 (whose forward takes elementwise powers of the S k m residuals) also a whole
    number of 128 bytes of residuals (two AVX-512 vectors: the unroll of torch's
    vectorised loops, whose remainder computes ``pow`` with ``std::pow``)."""
    size = torch.finfo(dtype).bits // 8
    rows = ROW_BLOCK * 8 // size
    if prob.ce is None and prob.p not in (2.0, 4.0):
        vec = 128 // size  # elements
        rows = math.lcm(rows, vec // math.gcd(vec, prob.m))
    return rows // math.gcd(rows, prob.k)


def padded_runs(R: int, step: int) -> int:
    """The smallest multiple of ``step`` (``block_runs``) that is >= R."""
    return -(-R // step) * step


def compacted_slots(slots: Tensor, step: int) -> Tensor:
    """New slots for the runs at ``slots`` (the runs that stay): each run keeps its slot
    modulo ``step`` (``block_runs``: its rows' offset within their block), and the runs
    of one residue keep their order, packed from the start."""
    lane = slots % step
    out = torch.empty_like(slots)
    for j in lane.unique().tolist():
        at = (lane == j).nonzero().squeeze(1)
        out[at] = j + step * torch.arange(at.numel(), device=slots.device)
    return out


def optimum_value(optimum: float | LpOptimum | None, prob: Problem) -> float:
    if optimum is None:
        if prob.ce is not None:
            optimum = optimum_loss(prob.X64, prob.labels.cpu(), prob.ce)
        else:
            optimum = optimum_loss(prob.X64, prob.Y64[:, 0] if prob.vector else prob.Y64, prob.p)
    Lstar = float(optimum.loss if isinstance(optimum, LpOptimum) else optimum)
    if not math.isfinite(Lstar):
        raise ValueError(f"optimum must be finite, got {Lstar!r}")
    return Lstar
