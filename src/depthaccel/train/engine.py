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
   ``bookkeeping.Monitor``);
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
  blocks (``forward.block_runs``: ``ROW_BLOCK`` = 4 rows of float64, 8 of float32, the BLAS
  kernels' row panels; for an l_p loss with p other than 2 and 4, whose forward takes
  ``pow`` of the residuals, also whole 128-byte vectors of residuals); the padding runs
  are zero and never read (``forward.Forward``; ``forward.Problem.loss64`` too);
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

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from depthaccel.losses import LpOptimum, SoftmaxCE
from depthaccel.train.bookkeeping import (
    Monitor,
    fresh_state,
    log_iterations,
    resume_state,
    run_results,
)
from depthaccel.train.forward import (
    ROW_BLOCK,
    Forward,
    Problem,
    block_runs,
    compacted_slots,
    optimum_value,
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

# _Program builds its forwards through this module's name ``_Forward`` (the tests record
# the programs a call builds by replacing it); the tests also reach the forward's parts
# through the names they had here before the forward had a module of its own.
_Forward, _Problem, _block_runs = Forward, Problem, block_runs

Tensor = torch.Tensor


class _Program:
    """The tensor program of a call: the runs in it (``rows``: their rows in the call's
    bookkeeping, ascending; None = all R runs), their groups, and the forward's buffers
    (None once no run is left)."""

    def __init__(self, prob: Problem, groups: list[Group], R: int):
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

    prob = Problem(X, y, p, device, dtype, gram)
    Lstar = optimum_value(optimum, prob)
    groups, row_of = build_groups(
        runs, prob.d, prob.k, device=device, dtype=dtype, fast_width1=fast_width1
    )
    state = fresh_state(prob, runs, groups, T, Lstar, thr, log_points, log_scale)
    if resume is not None:
        resume_state(state, resume, groups)
    prog = _Program(prob, groups, len(runs))
    monitor = Monitor(state, prob, diverge_factor, lazy=not mask_every_step)
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
            with_acc = monitor.wants_accuracy(t)
            loss = prog.fwd(with_acc)
            active = monitor.observe(t, loss, prog.fwd.We, prog.fwd.acc if with_acc else None)
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
    return run_results(runs, row_of, state, Lstar, elapsed0 + time.perf_counter() - t_start)


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


def _drop(prog: _Program, monitor: Monitor, keep: Tensor, loss: Tensor) -> None:
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
