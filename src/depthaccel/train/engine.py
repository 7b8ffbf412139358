r"""The batched full-batch trainer: a whole grid of runs as one tensor program.

Every run's model is linear in x, so each run is summarised by its end-to-end matrix
``W_e = W_N ... W_1`` (Eq. 5; k x d). All runs' ``W_e`` live in one buffer ``We`` of
shape (R, k, d) and one step of the whole grid is:

1. residuals of all runs at once (one GEMM): ``P = We X^T`` (R*k x m), ``r = P - Y^T``;
   loss ``L_r = (1/(p m)) sum |r|^p`` and gradient ``G_r = (1/m) (|r|^{p-2} r) X``
   (a second GEMM; ``losses.lp_sum_and_phi_``). For p = 2 the Gram form replaces both
   (per-step cost independent of m): ``G = We A - B``, ``L = (1/2)(<We, We A - 2B> + c)``
   with ``A = X^T X/m``, ``B = Y^T X/m``, ``c = ||Y||^2/m``. For the softmax
   cross-entropy (``p`` a ``losses.SoftmaxCE``) loss and gradient come from
   ``losses.ce_loss_grad`` on the logits ``We X^T``;
2. bookkeeping on the loss of the *current* iterate (divergence, first hits, logging:
   ``_Monitor``);
3. each group of runs (:mod:`depthaccel.train.groups`: width-1 nets, general nets, the
   e2e scheme of Eq. 10/12) turns its slice of G into the gradients of its own
   parameters and updates them, then writes its new ``W_e``.

Divergence: a run whose loss at iteration t is non-finite or above
``diverge_factor * L_0`` is frozen from t on (its parameters and optimizer state stop
changing: updates are masked with ``torch.where``), marked ``diverged_at = t``, and its
logged gaps from t on are NaN. Runs never mix: each run is one row of the GEMMs and all
other operations are row-wise, so a divergent run (inf/NaN included) cannot change
another run's numbers: within one tensor program, the other curves are bit-identical
to those of the same grid with tame runs in its slots (tested). Across grids of
different sizes a run's curve agrees to round-off (~1e-15 relative), not always bit for
bit: a BLAS GEMM and torch's vectorised elementwise loops round a row (an element)
differently when it falls in a remainder block past the last whole one (see
"Compaction"), and grids of different sizes put a run in different blocks.

Masking: on the CPU a host-side check "did any run diverge this step?" costs ~1 us and
lets the groups skip the masking ops while every run is fine; on accelerators that
check would synchronise every step, so the masks are applied at every step there
(``mask_every_step``; both paths give the same numbers, tested).

Compaction: frozen runs leave the tensor program, so that an iteration costs in
proportion to the runs still active (a learning-rate grid's rates past the stability
edge diverge within a few iterations of a 1e6-iteration call). The rule: after the
update of iteration t, if t is a multiple of C (``compact_every``, default
``COMPACT_EVERY`` = 1000 on every device) and a run of the program is frozen, every run
frozen at or before t leaves it -- unless the runs left would make GEMMs of 1 to 3 rows
(``MIN_GEMM_ROWS``: runs x k): then the frozen runs stay, masked, until no run is left
(a rule kept from before the padding below, which makes it unnecessary for the bits,
so that the compaction schedule and the checkpoints' resumption did not change). Each
group keeps its other runs' rows of every per-run tensor (``Group.keep``:
``index_select``, no arithmetic) and the forward's buffers are rebuilt for the runs
left. The check is free on the lazy path (the host already knows whether a run froze)
and one host sync per C iterations with ``mask_every_step``. A frozen run is carried,
masked, for at most C iterations (0.1% of a 1e6-iteration call; longer only under the
floor of 4 rows, where that costs little); C is the same on every device so that both
masking paths run the same programs and give the same numbers. ``compact=False`` keeps
every run to the end (a diagnostic; the reference of the tests).

A dropped run's results are unchanged: its ``diverged_at`` and first hits cannot change
after it froze (its loss stays above the limit or NaN), its logged gaps from
``diverged_at`` on are NaN, its tensors stay as they were when it froze. The other runs
do the same operations on the same numbers in smaller tensors, and that alone could
change their last bits: a BLAS GEMM computes whole blocks of rows with one kernel and
the rows past the last whole block with another, which rounds differently (MKL on an
AMD EPYC: the last ``rows mod 4`` rows of a float64 GEMM; in float32 with d = 6 a row's
bits also depend on its row's parity), and torch's vectorised loops compute ``pow`` in
a remainder with ``std::pow``, not the vector kernel; removing runs moves the others
across those boundaries (measured before the fix: up to 1.2e-12 relative in a 200-
iteration test, grown to 0.6 at the stability edge). So every tensor whose size
follows the number of runs is padded to whole blocks, and a run keeps its place within
its block:

* the forward computes on ``S >= R`` runs whose ``S k`` rows are a whole number of
  blocks (``_block_runs``: ``ROW_BLOCK`` = 4 rows of float64, 8 of float32, the BLAS
  kernels' row panels; for an l_p loss with p other than 2 and 4, whose forward takes
  ``pow`` of the residuals, also whole 128-byte vectors of residuals); the padding runs
  are zero and never read (``_Forward``; ``_Problem.loss64`` too);
* after a compaction, run i sits at slot ``slots[i]`` of that padded buffer, and a run
  keeps its slot modulo the block (``compacted_slots``: runs of one residue are packed
  in order), so its rows keep their offset within a block;
* the groups' per-run powers are computed on tensors padded to a multiple of 32 runs
  (the e2e scheme's update, ``groups.RUN_BLOCK``; Adam's bias corrections with per-run
  betas, ``kernels._pow``).

With these, compacted results are bit-identical to uncompacted ones on the mixed test
grids (every group kind, float64 and float32, k = 1 and 2, both masking paths) and a
run's forward gives the same bits in programs of any size (tested). The price: a few
zero rows in every GEMM (at most a block), and after a compaction two copies of the
runs' W_e and G per step and blocks that are not full (see benchmarks/README.md,
"Compaction"). This rests on the kernels being deterministic functions of the
shapes and a row's offset within its block, as MKL's and torch's CPU kernels are, and
on ``ROW_BLOCK`` being a multiple of the BLAS's row panel (4 for MKL's dgemm on an AMD
EPYC; on an Intel AVX-512 CPU only GEMMs of 1-3 rows rounded differently): a BLAS with wider panels needs a larger
``ROW_BLOCK``, and one that split a GEMM's reduction by its row count would break it;
the engine's tests (a run's forward in programs of any size, the mixed grids) say so
on any machine they run on. ``sweep.MATH_VERSION`` did not change: the math is the
same and only round-off moved (stored results computed before the padding agree with
new ones to round-off, as results of different shard plans do; see DEVELOPERS.md,
"Executors").

Resumability: ``checkpoint_every=K`` calls ``checkpoint(state)`` after every K-th
update, where ``state`` is :meth:`TrainState.to_dict` (ints, floats, strings, lists, a
numpy array and CPU tensors; ``torch.save``-able): the iteration counter, all parameters
and optimizer states, the logs and first hits so far and the divergence bookkeeping.
Compaction does not change it: the groups' :meth:`~depthaccel.train.groups.Group.
full_tensors` hold every run in its original row (a dropped run's frozen tensors, what
the masked update leaves them at), and ``log_vals`` holds a dropped run's frozen loss at
its later logged iterations, as the masked engine logs it (never used by a result).
``train(..., resume=state)`` with the same X, y, p, runs, iters and logging options
continues from it; it first drops the runs that the uninterrupted call had dropped by
then (those frozen at or before its last compaction, ``_last_compaction``: a function
of the runs' divergence iterations, t, C and k; one forward of all runs gives their
frozen losses for the log), so in float64 the result is bit-identical
to an uninterrupted call (the initial RNG draws are not needed any more). A checkpoint
written before compaction existed (frozen runs still in its program) resumes the same
way; the uninterrupted call that it is then compared with would have dropped those runs
earlier, which changes no bits either (tested). A state that does not match the call is
refused with a ValueError.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
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
from depthaccel.train.groups import Group, build_groups, initial_factors
from depthaccel.train.runs import Run, RunResult, check_runs
from depthaccel.train.state import TrainState
from depthaccel.validation import COUNT, Integral, Interval, check

__all__ = [
    "COMPACT_EVERY",
    "DEFAULT_DTYPE",
    "MIN_GEMM_ROWS",
    "ROW_BLOCK",
    "initial_factors",
    "log_iterations",
    "train",
]

DEFAULT_DTYPE = torch.float64
COMPACT_EVERY = 1000  # C: the default period of the compaction check (iterations)
MIN_GEMM_ROWS = 4  # a compaction leaves at least this many GEMM rows (runs x k), or none
ROW_BLOCK = 4  # the forward's GEMMs have a multiple of this many rows of float64 (see
# _block_runs: twice as many of float32, more for an l_p loss whose p needs pow)
_NEVER = np.iinfo(np.int64).max

Tensor = torch.Tensor


def log_iterations(iters: int, log_points: int = 1000, *, log_scale: bool = False) -> np.ndarray:
    """About ``log_points`` distinct iterations in [0, iters], always with 0 and ``iters``:
    evenly spaced, or geometrically spaced (``log_scale``; for log-x plots)."""
    if log_points < 2:
        raise ValueError(f"log_points must be >= 2, got {log_points}")
    if log_scale and iters > 1:
        pts = np.concatenate([[0], np.geomspace(1, iters, log_points - 1)])
    else:
        pts = np.linspace(0, iters, min(log_points, iters + 1))
    out = np.unique(np.round(pts).astype(np.int64))
    return np.union1d(out, np.array([0, iters], dtype=np.int64))


class _Problem:
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
        We = _pad_runs(self, We.to(torch.float64))  # as the forward: no BLAS remainder panel
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
        return ce_accuracy(_pad_runs(self, We.to(torch.float64)), self.XT64.T, self.labels)[:R]


def _pad_runs(prob: _Problem, We: Tensor) -> Tensor:
    """Float64 We (R, k, d) with zero runs appended up to ``padded_runs``."""
    R = We.shape[0]
    pad = padded_runs(R, _block_runs(prob, torch.float64)) - R
    return torch.cat([We, We.new_zeros(pad, *We.shape[1:])]) if pad else We


class _Forward:
    """Loss and gradient of all runs at once, into preallocated buffers.

    The GEMMs run on a padded buffer ``Wp`` of ``S`` runs whose ``S k`` rows are a whole
    number of blocks (``padded_runs``); run i of the program sits at run ``slots[i]`` of
    it (``slots`` None: at run i), and the other runs of ``Wp`` stay zero (finite; their
    losses and gradients are never read). No run's rows then fall into a BLAS kernel's
    or a vectorised loop's remainder, and a compaction keeps each run's row offset
    within its block (``_Program.keep``), as both can change the rounding of a row (see
    "Compaction" in the module docstring). ``We`` and ``G`` hold the program's R runs
    (views of ``Wp``, ``Gp`` when ``slots`` is None, else copied in and out)."""

    def __init__(self, prob: _Problem, R: int, slots: Tensor | None = None):
        self.prob = prob
        self.R = R
        k, d, m = prob.k, prob.d, prob.m
        self.slots = slots
        self.step = _block_runs(prob, prob.dtype)
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
        if prob.ce is not None:
            self.Xc = prob.X
        elif prob.gram:
            self.WA = torch.empty(S * k, d, **opts)
            self.tmp = torch.empty(S, k, d, **opts)
        else:
            self.P = torch.empty(S * k, m, **opts)
            self.aux = torch.empty(S, k * m, **opts) if prob.p != 2.0 else None
        self.scale = 1.0 / (prob.p * m) if prob.ce is None else 0.0
        self.inv_m = 1.0 / m

    def __call__(self) -> Tensor:
        """Fill self.G with dL/dW_e at self.We; return the losses (R,) in the compute dtype."""
        if self.slots is None:
            return self._padded()[: self.R]
        self.Wp.index_copy_(0, self.slots, self.We)
        loss = self._padded()
        torch.index_select(self.Gp, 0, self.slots, out=self.G)
        return loss.index_select(0, self.slots)

    def _padded(self) -> Tensor:
        """Losses (S,) and gradients (``Gp``) of the S runs of ``Wp``.

        Residual form, with P = W_e X^T overwritten in place: r = P - Y^T, then
        ``losses.lp_sum_and_phi_`` gives sum |r|^p and phi = |r|^{p-2} r (in place), and
        G = (1/m) phi X; the loss is sum |r|^p / (p m). Gram form (p = 2): see the
        module docstring."""
        prob, S, k, d = self.prob, self.S, self.prob.k, self.prob.d
        if prob.ce is not None:  # softmax cross-entropy: losses.ce_loss_grad
            return ce_loss_grad(self.Wp, prob.X, prob.labels, prob.ce.l2, out=self.Gp)[0]
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


def _block_runs(prob: _Problem, dtype: torch.dtype) -> int:
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
    """The smallest multiple of ``step`` (``_block_runs``) that is >= R."""
    return -(-R // step) * step


def compacted_slots(slots: Tensor, step: int) -> Tensor:
    """New slots for the runs at ``slots`` (the runs that stay): each run keeps its slot
    modulo ``step`` (``_block_runs``: its rows' offset within their block), and the runs
    of one residue keep their order, packed from the start."""
    lane = slots % step
    out = torch.empty_like(slots)
    for j in lane.unique().tolist():
        at = (lane == j).nonzero().squeeze(1)
        out[at] = j + step * torch.arange(at.numel(), device=slots.device)
    return out


class _Program:
    """The tensor program of a call: the runs in it (``rows``: their rows in the call's
    bookkeeping, ascending; None = all R runs), their groups, and the forward's buffers
    (None once no run is left)."""

    def __init__(self, prob: _Problem, groups: list[Group], R: int):
        self.prob = prob
        self.live = list(groups)  # the groups with runs in the program
        self.fwd: _Forward | None = _Forward(prob, R)
        self._write()

    def _write(self) -> None:
        assert self.fwd is not None
        for grp in self.live:
            grp.write_we(self.fwd.We[grp.rows])

    def step(self, active: Tensor | None, t: int) -> None:
        """Step 3 of the module docstring; ``active`` masks frozen runs (None: none)."""
        fwd = self.fwd
        if fwd is None:
            return
        for grp in self.live:
            grp.step(fwd.G[grp.rows], None if active is None else active[grp.rows], t)
            grp.write_we(fwd.We[grp.rows])

    def keep(self, keep: Tensor) -> None:
        """Keep only the runs where ``keep`` (bool, one per run of the program) is True:
        each group selects its rows (no arithmetic), the forward's buffers shrink."""
        r0 = 0
        live = []
        for grp in self.live:
            idx = keep[grp.rows].nonzero().squeeze(1)
            if idx.numel() != grp.size:
                grp.keep(idx)
            grp.rows = slice(r0, r0 + grp.size)
            r0 += grp.size
            if grp.size:
                live.append(grp)
        self.live = live
        old = self.fwd
        assert old is not None
        slots = old.slots if old.slots is not None else torch.arange(old.R, device=keep.device)
        slots = compacted_slots(slots[keep], old.step)
        self.fwd = None  # free the old buffers before allocating the smaller ones
        del old
        self.fwd = _Forward(self.prob, r0, slots) if r0 else None
        if self.fwd is not None:
            self._write()


# --------------------------------------------------------------------------- train


def train(
    X,
    y,
    p: float,
    runs: Sequence[Run],
    iters: int,
    *,
    optimum: float | LpOptimum | None = None,
    thresholds: Sequence[float] = (),
    log_points: int = 1000,
    log_scale: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = False,
    checkpoint_every: int | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | TrainState | None = None,
    diverge_factor: float = 1e6,
    gram: bool | None = None,
    fast_width1: bool = True,
    mask_every_step: bool | None = None,
    compact: bool = True,
    compact_every: int | None = None,
) -> list[RunResult]:
    r"""Train all ``runs`` on ``L(W) = (1/m) sum_i sum_c (1/p)|x_i^T w_c - y_ic|^p`` for
    ``iters`` full-batch iterations, batched; returns one :class:`RunResult` per run, in order.

    Models have no bias (the paper's linear networks have none; standardise the data).
    The number of outputs k is y's number of columns (1 for a vector y).

    Args:
        X: design matrix (m x d), numpy or torch.
        y: targets (m,) or (m, k).
        p: loss exponent (>= 2, real), or a :class:`depthaccel.losses.SoftmaxCE` (then y
            holds class indices 0..k-1, k = its ``n_classes``; the logged losses come
            with the train accuracy, ``RunResult.accuracy``).
        runs: the runs (any mix of methods, depths, widths, lrs, seeds).
        iters: T, number of updates; the loss is recorded at iterations 0..T.
        optimum: L* (a float or an :class:`LpOptimum`); default: ``lp_optimum(X, y, p)``.
        thresholds: gap thresholds for ``first_hit``: the first t with ``L_t - L* < thr``,
            tested at every iteration on the loss computed in the compute dtype (for
            float32 its absolute error is ~1e-7 * L, so thresholds below ~1e-6 L* are
            unreliable there; exact in float64 up to round-off). For p = 2 the loss of
            each iteration comes from the Gram form (cancellation: absolute error
            ~ eps * ||y||^2).
        log_points: about this many logged iterations, always including 0 and T.
        log_scale: space the logged iterations geometrically instead of evenly.
        device: torch device of the computation (CPU or CUDA).
        dtype: compute dtype, default ``DEFAULT_DTYPE`` (float64). Logged losses are
            always evaluated in float64 from the current weights.
        progress: show a tqdm bar (rate, ETA).
        checkpoint_every, checkpoint: call ``checkpoint(state)`` after every
            ``checkpoint_every``-th update (see the module docstring).
        resume: a state from ``checkpoint`` (or a :class:`TrainState`) to continue from.
        diverge_factor: a run diverges when its loss is non-finite or exceeds
            ``diverge_factor * L_0`` (its loss at iteration 0).
        gram: use the Gram form (p = 2 only); default: p == 2.
        fast_width1: use the analytic width-1 path for width-1 single-output nets
            (False forces the general bmm path; for tests).
        mask_every_step: apply the divergence masks at every step (True) or only once a
            run has diverged (False; checks on the host every step). Default: True on
            accelerators, False on the CPU. Same numbers either way.
        compact: drop frozen runs from the tensor program (see "Compaction" in the
            module docstring); False keeps them (masked) to the end: a diagnostic.
        compact_every: C, the period of the compaction check in iterations; default
            ``COMPACT_EVERY`` (1000) on every device, so that both masking paths give
            the same numbers.

    Raises:
        ValueError: bad shapes, NaN/inf in X or y, no runs, bad iters/thresholds, or a
            resume state that does not match the call.
    """
    t_start = time.perf_counter()
    runs = check_runs(runs)
    T = _check_iters(iters)
    thr = _check_thresholds(thresholds)
    if not (diverge_factor > 1):
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor!r}")
    dtype = dtype or DEFAULT_DTYPE
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    device = torch.device(device)
    if mask_every_step is None:
        mask_every_step = device.type != "cpu"
    elif not isinstance(mask_every_step, bool):
        raise ValueError(f"mask_every_step must be True, False or None, got {mask_every_step!r}")
    if compact_every is None:
        compact_every = COMPACT_EVERY
    C = check("compact_every", compact_every, COUNT)
    if not isinstance(p, SoftmaxCE):
        p = float(p)
        if not (math.isfinite(p) and p >= 2):
            raise ValueError(f"p must be a finite real number >= 2, got {p!r}")

    prob = _Problem(X, y, p, device, dtype, gram)
    Lstar = _optimum_value(optimum, prob)
    groups, row_of = build_groups(
        runs, prob.d, prob.k, device=device, dtype=dtype, fast_width1=fast_width1
    )
    state = _fresh_state(prob, runs, groups, T, Lstar, thr, log_points, log_scale)
    if resume is not None:
        _resume(state, resume, groups)
    prog = _Program(prob, groups, len(runs))
    monitor = _Monitor(state, prob, diverge_factor, lazy=not mask_every_step)
    if compact and state.t > 0:
        # a resumed call continues with the program of the uninterrupted one: without
        # the runs frozen at or before its last compaction (iteration c)
        c = _last_compaction(state.diverged_at, state.t, C, prob.k)
        keep = monitor.diverged_at > c
        if not bool(keep.all()):
            _drop(prog, monitor, keep, prog.fwd())

    bar = _ProgressBar(T, state.t, len(runs)) if progress else None
    elapsed0 = state.elapsed
    K = checkpoint_every if checkpoint is not None and checkpoint_every else 0

    def save(t: int) -> None:
        monitor.sync()
        state.t = t
        state.elapsed = elapsed0 + time.perf_counter() - t_start
        state.groups = [g.full_tensors() for g in groups]
        checkpoint(state.to_dict())  # type: ignore[misc]

    t = state.t
    with torch.no_grad():
        while prog.fwd is not None:  # until t = T, or until no run is left
            loss = prog.fwd()
            active = monitor.observe(t, loss, prog.fwd.We)
            if t == T:
                break
            prog.step(active, t)
            if compact and t % C == 0 and monitor.has_frozen(t):
                keep = monitor.diverged_at > t
                left = int(keep.sum()) * prob.k
                if left == 0 or left >= MIN_GEMM_ROWS:
                    # frozen runs did not move in the step: their losses are still `loss`
                    _drop(prog, monitor, keep, loss)
            t += 1
            if K and t % K == 0:
                save(t)
            if bar is not None:
                bar.advance(t)
        if prog.fwd is None:
            # every run is frozen and out of the program: iterations t..T only log the
            # frozen losses and checkpoint, at the same iterations as ever
            for c in range((t // K + 1) * K, T + 1, K) if K else ():
                monitor.log_frozen_through(c - 1)
                save(c)
            monitor.log_frozen_through(T)
    if bar is not None:
        bar.close(T)
    monitor.sync()
    return _results(runs, row_of, state, Lstar, elapsed0 + time.perf_counter() - t_start)


def _last_compaction(diverged_at: Tensor, t: int, C: int, k: int) -> int:
    """The last iteration < t at which a call compacted (or a negative number: never),
    from the runs' divergence iterations: the last check c (a multiple of C) at which
    the runs left, ``left(c)`` (those not frozen at c), were none or at least
    ``MIN_GEMM_ROWS`` GEMM rows; ``left`` only decreases, so once too few are left no
    check drops anything until none is left."""
    c = (t - 1) // C * C
    div = diverged_at.cpu()
    left = int((div > c).sum())
    if left == 0 or left * k >= MIN_GEMM_ROWS:
        return c
    need = -(-MIN_GEMM_ROWS // k)  # runs of at least MIN_GEMM_ROWS rows
    if div.numel() < need:
        return -1  # never enough runs: it compacts only once none is left
    tau = int(div.sort(descending=True).values[need - 1])  # left(c) >= need iff c < tau
    return (min(c, tau - 1)) // C * C


def _drop(prog: _Program, monitor: _Monitor, keep: Tensor, loss: Tensor) -> None:
    """Compaction: the runs of the program where ``keep`` is False leave it; ``loss`` is
    the program's losses at the iterate of the frozen runs (for their log)."""
    monitor.keep(keep, monitor.logged(loss, prog.fwd.We))
    prog.keep(keep)


_ITERS = Interval(Integral, 0, None, whole_floats=True)


def _check_iters(iters: int) -> int:
    return check("iters", iters, _ITERS)


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    thr = [float(x) for x in thresholds]
    if any(not (x > 0 and math.isfinite(x)) for x in thr):
        raise ValueError(f"thresholds must be finite and > 0, got {thresholds!r}")
    return thr


def _optimum_value(optimum: float | LpOptimum | None, prob: _Problem) -> float:
    if optimum is None:
        if prob.ce is not None:
            optimum = optimum_loss(prob.X64, prob.labels.cpu(), prob.ce)
        else:
            optimum = optimum_loss(prob.X64, prob.Y64[:, 0] if prob.vector else prob.Y64, prob.p)
    Lstar = float(optimum.loss if isinstance(optimum, LpOptimum) else optimum)
    if not math.isfinite(Lstar):
        raise ValueError(f"optimum must be finite, got {Lstar!r}")
    return Lstar


def _fresh_state(
    prob: _Problem,
    runs: list[Run],
    groups: list[Group],
    T: int,
    Lstar: float,
    thr: list[float],
    log_points: int,
    log_scale: bool,
) -> TrainState:
    """The state of the call before iteration 0, its tensors on the compute device."""
    log_iters = log_iterations(T, log_points, log_scale=log_scale)
    R = len(runs)
    i64 = {"device": prob.device, "dtype": torch.int64}
    return TrainState(
        t=0,
        iters=T,
        p=prob.loss_id,
        optimum=Lstar,
        thresholds=thr,
        log_iters=log_iters,
        run_configs=[json.dumps(r.config_dict(), sort_keys=True) for r in runs],
        shape=(prob.m, prob.d, prob.k),
        dtype=str(prob.dtype),
        gram=bool(prob.gram),
        log_vals=torch.full(
            (len(log_iters), R), float("nan"), device=prob.device, dtype=torch.float64
        ),
        first_hit=torch.full((R, len(thr)), _NEVER, **i64),
        diverged_at=torch.full((R,), _NEVER, **i64),
        log_acc=None
        if prob.ce is None
        else torch.full((len(log_iters), R), float("nan"), device=prob.device, dtype=torch.float64),
        groups=[g.tensors() for g in groups],
    )


def _resume(state: TrainState, resume: dict[str, Any] | TrainState, groups: list[Group]) -> None:
    """Continue ``state`` (fresh) from the saved ``resume``: load its bookkeeping into
    ``state`` and its parameters into ``groups``; ValueError when it does not match."""
    saved = resume if isinstance(resume, TrainState) else TrainState.from_dict(resume)
    why = saved.mismatch(state)
    if why is not None:
        raise ValueError(f"resume state does not match this call: {why}")
    if not 0 < saved.t <= state.iters:
        raise ValueError(f"resume state has t={saved.t}, outside 1..{state.iters}")
    for g, sd in zip(groups, saved.groups, strict=True):
        g.load_tensors(sd)
    for name in ("log_vals", "first_hit", "diverged_at"):
        live = getattr(state, name)
        live.copy_(getattr(saved, name).to(live.device))
    if state.log_acc is not None:
        if saved.log_acc is None:
            raise ValueError("resume state does not match this call: no logged accuracies")
        state.log_acc.copy_(saved.log_acc.to(state.log_acc.device))
    state.loss0 = saved.loss0.to(device=state.log_vals.device, dtype=_dtype_of(state.dtype))
    state.t = saved.t
    state.elapsed = saved.elapsed


def _dtype_of(name: str) -> torch.dtype:
    return {str(torch.float32): torch.float32, str(torch.float64): torch.float64}[name]


class _Monitor:
    """Step 2 of the module docstring: divergence, first hits and logging, on the losses
    of the current iterate of the runs in the program.

    Until the first compaction its bookkeeping tensors are the state's own; after it,
    they hold the program's rows (``rows``), and :meth:`sync` writes them back into
    the state (before a checkpoint and at the end). Runs out of the program are frozen,
    so their bookkeeping no longer changes, except the log, where they get their
    constant frozen loss (``frozen_log``)."""

    def __init__(self, state: TrainState, prob: _Problem, diverge_factor: float, *, lazy: bool):
        self.state = state
        self.prob = prob
        self.diverge_factor = diverge_factor
        self.full_limit = None if state.loss0 is None else state.loss0 * diverge_factor
        self.limit = self.full_limit
        self.lazy = lazy
        self.rows: Tensor | None = None  # the program's runs (None: all, in order)
        self.diverged_at = state.diverged_at
        self.first_hit = state.first_hit
        self.active = self.diverged_at == _NEVER
        self.any_frozen = not bool(self.active.all())
        self.frozen_log: Tensor | None = None  # (R,) the frozen loss of each dropped run
        self.thr = torch.tensor(state.thresholds, device=prob.device, dtype=prob.dtype)
        self.next_log = int(np.searchsorted(state.log_iters, state.t))
        self.exact_log = prob.dtype == torch.float64 and not prob.gram

    def logged(self, loss: Tensor, We: Tensor) -> Tensor:
        """The logged (float64) losses of the program's runs: ``loss`` itself in float64
        residual form, else exact float64 losses of the end-to-end matrices ``We``."""
        return loss.to(torch.float64) if self.exact_log else self.prob.loss64(We)

    def observe(self, t: int, loss: Tensor, We: Tensor) -> Tensor | None:
        """Book iteration t's losses (those of the program's runs, whose end-to-end
        matrices are ``We``); return the runs still active (None: all of them, and
        nothing needs masking)."""
        st = self.state
        if self.limit is None:
            st.loss0 = loss.clone()
            self.full_limit = self.limit = st.loss0 * self.diverge_factor
        ok = loss <= self.limit  # False for NaN
        if self.lazy:
            # frozen runs keep their (bad) loss, so "ok == active" means nothing new
            if bool(torch.ne(ok, self.active).any()):
                self.diverged_at.masked_fill_(self.active & ~ok, t)
                self.active &= ok
                self.any_frozen = True
            active = self.active if self.any_frozen else None
        else:
            torch.minimum(self.diverged_at, torch.where(ok, _NEVER, t), out=self.diverged_at)
            active = self.diverged_at > t
        if st.thresholds:
            hit = (loss - st.optimum).unsqueeze(1) < self.thr
            torch.minimum(self.first_hit, torch.where(hit, t, _NEVER), out=self.first_hit)
        if self.next_log < len(st.log_iters) and t == st.log_iters[self.next_log]:
            vals = self.logged(loss, We)
            acc = self.prob.accuracy64(We)
            if self.rows is None:
                st.log_vals[self.next_log] = vals
                if acc is not None:
                    st.log_acc[self.next_log] = acc
            else:
                assert self.frozen_log is not None
                row = st.log_vals[self.next_log]
                row.copy_(self.frozen_log).index_copy_(0, self.rows, vals)
                if acc is not None:  # dropped runs diverged: no accuracy (NaN)
                    st.log_acc[self.next_log].fill_(float("nan")).index_copy_(0, self.rows, acc)
            self.next_log += 1
        return active

    def has_frozen(self, t: int) -> bool:
        """Whether a run of the program is frozen at iteration t (after observing it);
        free on the lazy path, one host sync otherwise."""
        if self.lazy:
            return self.any_frozen
        return bool((self.diverged_at <= t).any())

    def keep(self, keep: Tensor, logged: Tensor) -> None:
        """Compaction: only the program's runs where ``keep`` is True stay; the others'
        frozen losses are ``logged`` (:meth:`logged` of the program's current losses)."""
        st = self.state
        R = st.diverged_at.shape[0]
        rows = self.rows if self.rows is not None else torch.arange(R, device=keep.device)
        if self.frozen_log is None:
            self.frozen_log = torch.full_like(st.log_vals[0], float("nan"))
        drop = ~keep
        self.frozen_log[rows[drop]] = logged[drop]
        self.sync()
        assert self.full_limit is not None
        self.rows = rows[keep]
        self.diverged_at = st.diverged_at[self.rows]
        self.first_hit = st.first_hit[self.rows]
        self.limit = self.full_limit[self.rows]
        self.active = self.diverged_at == _NEVER
        self.any_frozen = not bool(self.active.all())

    def sync(self) -> None:
        """Write the program's bookkeeping into the state (no-op before a compaction)."""
        if self.rows is not None:
            self.state.diverged_at.index_copy_(0, self.rows, self.diverged_at)
            self.state.first_hit.index_copy_(0, self.rows, self.first_hit)

    def log_frozen_through(self, t: int) -> None:
        """Log iterations up to t when no run is left in the program (all frozen)."""
        st = self.state
        assert self.frozen_log is not None
        while self.next_log < len(st.log_iters) and st.log_iters[self.next_log] <= t:
            st.log_vals[self.next_log] = self.frozen_log
            self.next_log += 1


class _ProgressBar:
    """A tqdm bar over the iterations, updated about 1000 times."""

    def __init__(self, T: int, t0: int, R: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=T, initial=t0, unit="it", desc=f"training {R} runs", smoothing=0.05)
        self.every = max(1, T // 1000)
        self.last = t0

    def advance(self, t: int) -> None:
        if t - self.last >= self.every:
            self.bar.update(t - self.last)
            self.last = t

    def close(self, T: int) -> None:
        self.bar.update(T - self.last)
        self.bar.close()


def _results(
    runs: list[Run], row_of: np.ndarray, state: TrainState, Lstar: float, wall: float
) -> list[RunResult]:
    logs = state.log_vals.cpu().numpy()
    accs = None if state.log_acc is None else state.log_acc.cpu().numpy()
    fh = state.first_hit.cpu().numpy()
    dv = state.diverged_at.cpu().numpy()
    log_iters = state.log_iters
    results = []
    for i, r in enumerate(runs):
        row = row_of[i]
        gap = logs[:, row] - Lstar
        div = int(dv[row]) if dv[row] != _NEVER else None
        acc = None if accs is None else accs[:, row].copy()
        if div is not None:
            gap[log_iters >= div] = np.nan
            if acc is not None:
                acc[log_iters >= div] = np.nan
        hits = {
            th: (int(fh[row, j]) if fh[row, j] != _NEVER else None)
            for j, th in enumerate(state.thresholds)
        }
        results.append(
            RunResult(
                run=r,
                iters=log_iters.copy(),
                gap=gap,
                first_hit=hits,
                final_gap=float(gap[-1]),
                diverged=div is not None,
                diverged_at=div,
                wall_time=wall,
                accuracy=acc,
            )
        )
    return results
