"""The bookkeeping of the batched trainer (step 2 of :mod:`depthaccel.train.engine`):
the call's :class:`TrainState` before iteration 0 (``fresh_state``) or continued from a
checkpoint (``resume_state``); divergence, first hits and the logged losses of each
iteration (``Monitor``); and the :class:`RunResult` of each run at the end
(``run_results``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from depthaccel.train.forward import Problem
from depthaccel.train.groups import Group
from depthaccel.train.runs import Run, RunResult
from depthaccel.train.state import TrainState

NEVER = np.iinfo(np.int64).max  # "not yet": a run's diverged_at or first hit

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


def fresh_state(
    prob: Problem,
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
        first_hit=torch.full((R, len(thr)), NEVER, **i64),
        diverged_at=torch.full((R,), NEVER, **i64),
        log_acc=None
        if prob.ce is None
        else torch.full((len(log_iters), R), float("nan"), device=prob.device, dtype=torch.float64),
        groups=[g.tensors() for g in groups],
    )


def resume_state(
    state: TrainState, resume: dict[str, Any] | TrainState, groups: list[Group]
) -> None:
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


class Monitor:
    """Step 2 of :mod:`depthaccel.train.engine`: divergence, first hits and logging, on the losses
    of the current iterate of the runs in the program.

    Until the first compaction its bookkeeping tensors are the state's own; after it,
    they hold the program's rows (``rows``), and :meth:`sync` writes them back into
    the state (before a checkpoint and at the end). Runs out of the program are frozen,
    so their bookkeeping no longer changes, except the log, where they get their
    constant frozen loss (``frozen_log``)."""

    def __init__(self, state: TrainState, prob: Problem, diverge_factor: float, *, lazy: bool):
        self.state = state
        self.prob = prob
        self.diverge_factor = diverge_factor
        self.full_limit = None if state.loss0 is None else state.loss0 * diverge_factor
        self.limit = self.full_limit
        self.lazy = lazy
        self.rows: Tensor | None = None  # the program's runs (None: all, in order)
        self.diverged_at = state.diverged_at
        self.first_hit = state.first_hit
        self.active = self.diverged_at == NEVER
        self.any_frozen = not bool(self.active.all())
        self.frozen_log: Tensor | None = None  # (R,) the frozen loss of each dropped run
        self.thr = torch.tensor(state.thresholds, device=prob.device, dtype=prob.dtype)
        self.next_log = int(np.searchsorted(state.log_iters, state.t))
        self.exact_log = prob.dtype == torch.float64 and not prob.gram
        # the forward's own accuracies are exact when its logits are float64
        self.forward_accuracy = prob.ce is not None and self.exact_log

    def wants_accuracy(self, t: int) -> bool:
        """Whether :meth:`observe` at iteration t takes the train accuracies from the
        forward (a logged iteration of a cross-entropy problem computed in float64)."""
        st = self.state
        return (
            self.forward_accuracy
            and self.next_log < len(st.log_iters)
            and t == st.log_iters[self.next_log]
        )

    def logged(self, loss: Tensor, We: Tensor) -> Tensor:
        """The logged (float64) losses of the program's runs: ``loss`` itself in float64
        residual form, else exact float64 losses of the end-to-end matrices ``We``."""
        return loss.to(torch.float64) if self.exact_log else self.prob.loss64(We)

    def observe(
        self, t: int, loss: Tensor, We: Tensor, accuracy: Tensor | None = None
    ) -> Tensor | None:
        """Book iteration t's losses (those of the program's runs, whose end-to-end
        matrices are ``We``; ``accuracy``: their train accuracies, when
        :meth:`wants_accuracy`); return the runs still active (None: all of them, and
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
            torch.minimum(self.diverged_at, torch.where(ok, NEVER, t), out=self.diverged_at)
            active = self.diverged_at > t
        if st.thresholds:
            hit = (loss - st.optimum).unsqueeze(1) < self.thr
            torch.minimum(self.first_hit, torch.where(hit, t, NEVER), out=self.first_hit)
        if self.next_log < len(st.log_iters) and t == st.log_iters[self.next_log]:
            vals = self.logged(loss, We)
            acc = accuracy if accuracy is not None else self.prob.accuracy64(We)
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
        self.active = self.diverged_at == NEVER
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


def run_results(
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
        div = int(dv[row]) if dv[row] != NEVER else None
        acc = None if accs is None else accs[:, row].copy()
        if div is not None:
            gap[log_iters >= div] = np.nan
            if acc is not None:
                acc[log_iters >= div] = np.nan
        hits = {
            th: (int(fh[row, j]) if fh[row, j] != NEVER else None)
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
