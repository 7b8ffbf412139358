r"""The batched full-batch trainer: a whole grid of runs as one tensor program.

Every run's model is linear in x, so each run is summarised by its end-to-end matrix
``W_e`` (k x d). All runs' ``W_e`` live in one buffer ``We`` of shape (R, k, d) and one
step of the whole grid is:

1. residuals of all runs at once (one GEMM): ``P = We X^T`` (R*k x m), ``r = P - Y^T``;
   loss ``L_r = (1/(p m)) sum |r|^p`` and gradient ``G_r = (1/m) (|r|^{p-2} r) X``
   (a second GEMM). For p = 2 the Gram form replaces both (per-step cost independent
   of m): ``G = We A - B``, ``L = (1/2)(<We, We A - 2B> + c)`` with ``A = X^T X/m``,
   ``B = Y^T X/m``, ``c = ||Y||^2/m``;
2. bookkeeping on the loss of the *current* iterate (divergence, first hits, logging);
3. each group of runs with the same method and shapes turns its slice of G into the
   gradients of its own parameters and updates them, then writes its new ``W_e``.

Groups:
    * width-1 nets with one output (any depth, gd or one adaptive method): the factors
      are a row ``v = W_1`` (1 x d) and scalars ``s_2..s_N``, so ``W_e = (prod s) v``,
      ``dL/dv = (prod s) g`` and ``dL/ds_j = (prod_{i != j} s_i) <v, g>``. All depths
      share one group (scalars padded with 1 and masked);
    * general nets (any widths and outputs): batched ``bmm`` over the runs, with
      ``dL/dW_j = (W_N..W_{j+1})^T G (W_{j-1}..W_1)^T``, every product taken with the
      k-row side first (O(k n^2) per factor, not O(d n^2));
    * the e2e scheme, per depth: ``W_e <- W_e - lr * end_to_end_update(W_e, G)``, the one
      Eq. 10 kernel (Eq. 12 for k = 1).

Divergence: a run whose loss at iteration t is non-finite or above
``diverge_factor * L_0`` is frozen from t on (its parameters and optimizer state stop
changing: updates are masked with ``torch.where``), marked ``diverged_at = t``, and its
logged gaps from t on are NaN. Runs never mix: each run is one row of the GEMMs and all
other operations are row-wise, so a divergent run (inf/NaN included) cannot change
another run's numbers: the other curves are bit-identical to those of the same grid
with tame runs in its slots (tested). Removing runs from a grid changes the GEMMs' row
count, and MKL's blocking then changes the rounding of a row (measured: results depend
on the number of rows and on a row's position), so across grids of different sizes a
run's curve agrees to round-off (~1e-15 relative), not always bit for bit.

Resumability: ``checkpoint_every=K`` calls ``checkpoint(state)`` after every K-th
update, where ``state`` is a plain dict (ints, floats, strings, lists, numpy arrays and
CPU tensors; ``torch.save``-able) holding the iteration counter, all parameters and
optimizer states, the logs and first hits so far and the divergence bookkeeping.
``train(..., resume=state)`` with the same X, y, p, runs, iters and logging options
continues from it; in float64 the result is bit-identical to an uninterrupted call
(the initial RNG draws are not needed any more).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from depthaccel.losses import LpOptimum, lp_optimum, lp_sum, lp_sum_and_phi_
from depthaccel.nets import DeepLinear
from depthaccel.train import kernels
from depthaccel.train.runs import ADAPTIVE_METHODS, Run, RunResult
from depthaccel.update import end_to_end_update

__all__ = ["DEFAULT_DTYPE", "initial_factors", "log_iterations", "train"]

DEFAULT_DTYPE = torch.float64
STATE_FORMAT = "depthaccel.train.state/1"
_NEVER = np.iinfo(np.int64).max
_ALWAYS_MASK = False  # tests set True to run the accelerator path (masks every step) on the CPU

Tensor = torch.Tensor


def initial_factors(run: Run, d: int, k: int) -> list[Tensor]:
    """The factors ``[W_1, ..., W_N]`` (float64, CPU) a run's depth-``net_depth`` net starts
    from: :class:`depthaccel.nets.DeepLinear` with the run's hidden/init/init_scale/seed."""
    net = DeepLinear(
        d,
        k,
        run.net_depth,
        run.hidden,
        run.init,
        run.init_scale,
        seed=run.seed,
        dtype=torch.float64,
    )
    return [f.detach().clone() for f in net.factors]


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


# --------------------------------------------------------------------------- problem


class _Problem:
    """X, y and the precomputed quantities of one training call, on the compute device."""

    def __init__(self, X, y, p: float, device, dtype, gram: bool | None):
        X64 = _as_f64("X", X)
        y64 = _as_f64("y", y)
        if X64.dim() != 2:
            raise ValueError(f"X must be a 2-D matrix (m x d), got shape {tuple(X64.shape)}")
        self.vector = y64.dim() == 1
        Y64 = y64[:, None] if self.vector else y64
        if Y64.dim() != 2 or Y64.shape[0] != X64.shape[0]:
            raise ValueError(
                f"y must have shape (m,) or (m, k) with m = {X64.shape[0]}; got {tuple(y64.shape)}"
            )
        self.m, self.d = X64.shape
        self.k = Y64.shape[1]
        self.p = float(p)
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
        W = We.to(torch.float64).reshape(R * self.k, self.d)
        r = (W @ self.XT64).view(R, self.k, self.m) - self.YT64  # float64 exact
        return lp_sum(r.reshape(R, -1), self.p) / (self.p * self.m)


def _as_f64(name: str, a) -> Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach().to(device="cpu", dtype=torch.float64)
    else:
        t = torch.as_tensor(np.asarray(a, dtype=np.float64))
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


class _Forward:
    """Loss and gradient of all runs at once, into preallocated buffers."""

    def __init__(self, prob: _Problem, R: int):
        self.prob = prob
        self.R = R
        k, d, m = prob.k, prob.d, prob.m
        opts = {"device": prob.device, "dtype": prob.dtype}
        self.We = torch.zeros(R, k, d, **opts)
        self.G = torch.zeros(R, k, d, **opts)
        if prob.gram:
            self.WA = torch.empty(R * k, d, **opts)
            self.tmp = torch.empty(R, k, d, **opts)
        else:
            self.P = torch.empty(R * k, m, **opts)
            self.aux = torch.empty(R, k * m, **opts) if prob.p != 2.0 else None
        self.scale = 1.0 / (prob.p * m)
        self.inv_m = 1.0 / m

    def __call__(self) -> Tensor:
        """Fill self.G with dL/dW_e at self.We; return the losses (R,) in the compute dtype.

        Residual form, with P = W_e X^T overwritten in place: r = P - Y^T, then
        ``losses.lp_sum_and_phi_`` gives sum |r|^p and phi = |r|^{p-2} r (in place), and
        G = (1/m) phi X; the loss is sum |r|^p / (p m). Gram form (p = 2): see the
        module docstring."""
        prob, R, k, d = self.prob, self.R, self.prob.k, self.prob.d
        Wf = self.We.view(R * k, d)
        if prob.gram:
            torch.mm(Wf, prob.A, out=self.WA)
            torch.sub(self.WA.view(R, k, d), prob.B, out=self.G)
            torch.sub(self.G, prob.B, out=self.tmp)  # We A - 2B
            self.tmp.mul_(self.We)
            loss = self.tmp.view(R, k * d).sum(-1)
            return loss.add_(prob.c).mul_(0.5)
        m = prob.m
        torch.mm(Wf, prob.X.T, out=self.P)
        r = self.P.view(R, k, m).sub_(prob.YT).view(R, k * m)
        lsum, phi = lp_sum_and_phi_(r, prob.p, aux=self.aux)
        torch.mm(phi.view(R * k, m), prob.X, out=self.G.view(R * k, d))
        self.G.mul_(self.inv_m)
        return lsum.mul_(self.scale)


# --------------------------------------------------------------------------- groups


def _col(values: Sequence[float], shape_tail: int, ref: Tensor) -> Tensor:
    return torch.tensor(values, dtype=ref.dtype, device=ref.device).view(-1, *([1] * shape_tail))


class _Group:
    """Runs trained by one batched program. Subclasses hold parameters of R_g runs."""

    kind = ""

    def __init__(self, runs: list[Run], rows: slice):
        self.runs = runs
        self.rows = rows

    def write_we(self, We: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, G: Tensor, active: Tensor | None, t: int) -> None:  # pragma: no cover
        """One update from the gradient G (R_g, k, d) of W_e; ``active`` (R_g,) bool masks
        frozen runs (None: all runs active)."""
        raise NotImplementedError

    def tensors(self) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def load_tensors(self, sd: dict[str, Tensor]) -> None:
        own = self.tensors()
        if set(sd) != set(own):
            raise ValueError(
                f"resume state of group {self.kind!r} has keys {sorted(sd)}, expected {sorted(own)}"
            )
        for name, t in own.items():
            src = sd[name]
            if tuple(src.shape) != tuple(t.shape):
                raise ValueError(
                    f"resume state {self.kind}.{name} has shape {tuple(src.shape)}, expected {tuple(t.shape)}"
                )
            t.copy_(src.to(device=t.device, dtype=t.dtype))


class _OptMixin:
    """Per-run hyperparameter tensors and the optimizer kernel of a group."""

    def _setup_opt(self, runs: list[Run], tail: int, ref: Tensor) -> None:
        self.method = runs[0].method
        self.tf = runs[0].convention == "tf"
        self.lr = _col([r.effective_lr for r in runs], tail, ref)
        wd = [r.weight_decay for r in runs]
        self.has_wd = any(w != 0 for w in wd)
        self.wd = _col(wd, tail, ref)
        self.decay = 1 - self.lr * self.wd
        self.hp: dict[str, Tensor] = {}
        if self.method in ADAPTIVE_METHODS:
            hps = [r.optimizer_hparams() for r in runs]
            for name in hps[0]:
                vals = [h[name] for h in hps]
                self.hp[name] = vals[0] if len(set(vals)) == 1 else _col(vals, tail, ref)
            self.update = kernels.UPDATES[self.method]

    def _apply(self, p: Tensor, g: Tensor, state: dict[str, Tensor], mask: Tensor | None, t: int):
        """New value of p (and of the state), frozen where mask is False (None: nowhere)."""
        if self.method == "gd":
            new = torch.addcmul(p * self.decay if self.has_wd else p, self.lr, g, value=-1)
            return new if mask is None else torch.where(mask, new, p)
        if self.has_wd:
            g = g + self.wd * p
        new, st = self.update(p, g, state, self.hp, self.lr, t + 1, self.tf)
        for name, v in st.items():
            state[name] = v if mask is None else torch.where(mask, v, state[name])
        return new if mask is None else torch.where(mask, new, p)


class _Width1Group(_Group, _OptMixin):
    """Width-1 nets with one output, any depths: W_1 = v (1 x d), W_2..W_N scalars s."""

    kind = "width1"

    def __init__(self, runs, rows, prob: _Problem, inits: list[list[Tensor]]):
        super().__init__(runs, rows)
        opts = {"device": prob.device, "dtype": prob.dtype}
        Rg = len(runs)
        self.Q = max(len(f) for f in inits) - 1
        self.v = torch.stack([f[0].reshape(-1) for f in inits]).to(**opts)
        S = torch.ones(Rg, self.Q, dtype=torch.float64)
        smask = torch.zeros(Rg, self.Q, dtype=torch.bool)
        for i, f in enumerate(inits):
            for j, s in enumerate(f[1:]):
                S[i, j] = s.reshape(())
                smask[i, j] = True
        self.S = S.to(**opts)
        self.smask = smask.to(device=prob.device)
        self.padded = not bool(smask.all())
        self._setup_opt(runs, 1, self.v)
        self.state_v = kernels.init_state(self.method, self.v, self.hp)
        self.state_S = kernels.init_state(self.method, self.S, self.hp)
        self.c = self.S.prod(1, keepdim=True)

    def _excl(self) -> Tensor:
        S, Q = self.S, self.Q
        if Q == 1:
            return torch.ones_like(S)
        if Q == 2:
            return S.flip(1)
        pre = torch.cumprod(S, 1)
        suf = torch.cumprod(S.flip(1), 1).flip(1)
        one = torch.ones_like(S[:, :1])
        return torch.cat([one, pre[:, :-1]], 1) * torch.cat([suf[:, 1:], one], 1)

    def write_we(self, We: Tensor) -> None:
        torch.mul(self.v, self.c, out=We.view(We.shape[0], -1))

    def step(self, G: Tensor, active: Tensor | None, t: int) -> None:
        g = G.view(G.shape[0], -1)
        act = None if active is None else active.unsqueeze(1)
        dv = g * self.c
        if self.Q:
            vg = torch.linalg.vecdot(self.v, g).unsqueeze(1)
            dS = self._excl() * vg
            if act is None:
                mask = self.smask if self.padded else None
            else:
                mask = self.smask & act
            self.S = self._apply(self.S, dS, self.state_S, mask, t)
            self.c = self.S.prod(1, keepdim=True) if self.Q > 1 else self.S
        self.v = self._apply(self.v, dv, self.state_v, act, t)

    def tensors(self) -> dict[str, Tensor]:
        out = {"v": self.v, "S": self.S}
        out.update({f"v.{k}": v for k, v in self.state_v.items()})
        out.update({f"S.{k}": v for k, v in self.state_S.items()})
        return out

    def load_tensors(self, sd):
        self.v = self.v.clone()
        self.S = self.S.clone()
        super().load_tensors(sd)
        self.c = self.S.prod(1, keepdim=True)


class _NetGroup(_Group, _OptMixin):
    """Depth-N nets of one shape (any widths/outputs) and one method: batched bmm.

    With factors ``F_0..F_{N-1}`` (``F_j = W_{j+1}``, n_{j+1} x n_j), the left products
    ``L_j = F_{N-1} ... F_{j+1}`` (k x n_{j+1}; ``L_{N-1} = I``) give ``W_e = L_0 F_0`` and
    the right chain ``V_0 = G``, ``V_j = V_{j-1} F_{j-1}^T`` (k x n_j) gives the gradients
    ``dL/dF_j = L_j^T V_j``: every product has k (the number of outputs) as one side, so
    a step costs O(k sum_j n_j n_{j+1}) instead of O(d sum_j n_j n_{j+1}).
    """

    kind = "net"

    def __init__(self, runs, rows, prob: _Problem, inits: list[list[Tensor]]):
        super().__init__(runs, rows)
        opts = {"device": prob.device, "dtype": prob.dtype}
        N = len(inits[0])
        self.W = [torch.stack([f[j] for f in inits]).to(**opts) for j in range(N)]
        self._setup_opt(runs, 2, self.W[0])
        self.states = [kernels.init_state(self.method, w, self.hp) for w in self.W]
        self._left()

    def _left(self) -> None:
        N = len(self.W)
        left: list[Tensor | None] = [None] * N  # left[j] = L_j; None = identity
        acc = None
        for j in range(N - 1, 0, -1):
            acc = self.W[j] if acc is None else torch.bmm(acc, self.W[j])
            left[j - 1] = acc
        self.left = left
        self.We = self.W[0] if acc is None else torch.bmm(acc, self.W[0])

    def write_we(self, We: Tensor) -> None:
        We.copy_(self.We)

    def step(self, G: Tensor, active: Tensor | None, t: int) -> None:
        N = len(self.W)
        act = None if active is None else active.view(-1, 1, 1)
        grads: list[Tensor] = []
        V = G
        for j in range(N):
            if j > 0:
                V = torch.bmm(V, self.W[j - 1].mT)
            L = self.left[j]
            grads.append(V if L is None else torch.bmm(L.mT, V))
        self.W = [
            self._apply(w, gj, st, act, t)
            for w, gj, st in zip(self.W, grads, self.states, strict=True)
        ]
        self._left()

    def tensors(self) -> dict[str, Tensor]:
        out = {f"W{j + 1}": w for j, w in enumerate(self.W)}
        for j, st in enumerate(self.states):
            out.update({f"W{j + 1}.{k}": v for k, v in st.items()})
        return out

    def load_tensors(self, sd):
        self.W = [w.clone() for w in self.W]
        super().load_tensors(sd)
        self._left()


class _E2EGroup(_Group):
    """The end-to-end scheme (Eq. 12 for k = 1, Eq. 10 for k > 1) at one depth."""

    kind = "e2e"

    def __init__(self, runs, rows, prob: _Problem, inits: list[list[Tensor]]):
        super().__init__(runs, rows)
        opts = {"device": prob.device, "dtype": prob.dtype}
        self.depth = float(runs[0].depth)
        Wes = []
        for f in inits:
            W = f[0]
            for w in f[1:]:
                W = w @ W
            Wes.append(W)
        self.W = torch.stack(Wes).to(**opts)  # (Rg, k, d)
        self.lr = _col([r.effective_lr for r in runs], 2, self.W)
        has_wd = any(r.weight_decay != 0 for r in runs)
        self.wd = _col([r.weight_decay for r in runs], 2, self.W) if has_wd else 0.0

    def write_we(self, We: Tensor) -> None:
        We.copy_(self.W)

    def step(self, G: Tensor, active: Tensor | None, t: int) -> None:
        act = None if active is None else active.view(-1, 1, 1)
        W = self.W if act is None else torch.where(act, self.W, 0.0)
        Gs = G if act is None else torch.where(act, G, 0.0)
        D = end_to_end_update(W, Gs, depth=self.depth, weight_decay=self.wd)
        new = torch.addcmul(self.W, self.lr, D, value=-1)
        self.W = new if act is None else torch.where(act, new, self.W)

    def tensors(self) -> dict[str, Tensor]:
        return {"W": self.W}

    def load_tensors(self, sd):
        self.W = self.W.clone()
        super().load_tensors(sd)


def _batch_signature(run: Run, k: int, widths: tuple[int, ...], fast: bool) -> tuple:
    """Runs with equal signatures are trained by one group (one batched program)."""
    if run.method == "e2e":
        return ("e2e", float(run.depth))
    conv = run.convention if run.method in ADAPTIVE_METHODS else ""
    if fast and k == 1 and all(w == 1 for w in widths[1:-1]):
        return ("width1", run.method, conv)
    return ("net", run.method, conv, widths)


def _widths(run: Run, d: int, k: int) -> tuple[int, ...]:
    N = run.net_depth
    hid = list(run.hidden) if isinstance(run.hidden, tuple) else [run.hidden] * (N - 1)
    return (d, *hid, k)


_GROUP_CLASSES = {"width1": _Width1Group, "net": _NetGroup, "e2e": _E2EGroup}


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
    resume: dict[str, Any] | None = None,
    diverge_factor: float = 1e6,
    gram: bool | None = None,
    fast_width1: bool = True,
) -> list[RunResult]:
    r"""Train all ``runs`` on ``L(W) = (1/m) sum_i sum_c (1/p)|x_i^T w_c - y_ic|^p`` for
    ``iters`` full-batch iterations, batched; returns one :class:`RunResult` per run, in order.

    Models have no bias (the paper's linear networks have none; standardise the data).
    The number of outputs k is y's number of columns (1 for a vector y).

    Args:
        X: design matrix (m x d), numpy or torch.
        y: targets (m,) or (m, k).
        p: loss exponent (>= 2, real).
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
        resume: a state from ``checkpoint`` to continue from.
        diverge_factor: a run diverges when its loss is non-finite or exceeds
            ``diverge_factor * L_0`` (its loss at iteration 0).
        gram: use the Gram form (p = 2 only); default: p == 2.
        fast_width1: use the analytic width-1 path for width-1 single-output nets
            (False forces the general bmm path; for tests).

    Raises:
        ValueError: bad shapes, NaN/inf in X or y, no runs, bad iters/thresholds, or a
            resume state that does not match the call.
    """
    t_start = time.perf_counter()
    runs = list(runs)
    if not runs:
        raise ValueError("no runs given")
    for r in runs:
        if not isinstance(r, Run):
            raise ValueError(f"runs must be Run instances, got {type(r).__name__}")
    if isinstance(iters, bool) or int(iters) != iters or iters < 0:
        raise ValueError(f"iters must be an integer >= 0, got {iters!r}")
    T = int(iters)
    if not (diverge_factor > 1):
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor!r}")
    thr = [float(x) for x in thresholds]
    if any(not (x > 0 and math.isfinite(x)) for x in thr):
        raise ValueError(f"thresholds must be finite and > 0, got {thresholds!r}")
    dtype = dtype or DEFAULT_DTYPE
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    device = torch.device(device)
    p = float(p)
    if not (math.isfinite(p) and p >= 2):
        raise ValueError(f"p must be a finite real number >= 2, got {p!r}")

    prob = _Problem(X, y, p, device, dtype, gram)
    if optimum is None:
        optimum = lp_optimum(prob.X64, prob.Y64[:, 0] if prob.vector else prob.Y64, p)
    Lstar = float(optimum.loss if isinstance(optimum, LpOptimum) else optimum)
    if not math.isfinite(Lstar):
        raise ValueError(f"optimum must be finite, got {Lstar!r}")

    # ---- groups
    d, k = prob.d, prob.k
    by_signature: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        by_signature.setdefault(_batch_signature(r, k, _widths(r, d, k), fast_width1), []).append(i)
    R = len(runs)
    fwd = _Forward(prob, R)
    groups: list[_Group] = []
    row_of = np.empty(R, dtype=np.int64)
    r0 = 0
    for sig, idx in by_signature.items():
        g_runs = [runs[i] for i in idx]
        inits = [initial_factors(r, d, k) for r in g_runs]
        rows = slice(r0, r0 + len(idx))
        grp = _GROUP_CLASSES[sig[0]](g_runs, rows, prob, inits)
        groups.append(grp)
        row_of[idx] = np.arange(r0, r0 + len(idx))
        r0 += len(idx)

    log_iters = log_iterations(T, log_points, log_scale=log_scale)
    exact_log = dtype == torch.float64 and not prob.gram
    i64 = {"device": device, "dtype": torch.int64}
    log_vals = torch.full((len(log_iters), R), float("nan"), device=device, dtype=torch.float64)
    first_hit = torch.full((R, len(thr)), _NEVER, **i64)
    diverged_at = torch.full((R,), _NEVER, **i64)
    thr_t = torch.tensor(thr, device=device, dtype=dtype)
    loss0 = None
    t0 = 0
    elapsed0 = 0.0
    run_configs = [json.dumps(r.config_dict(), sort_keys=True) for r in runs]

    if resume is not None:
        t0, elapsed0, loss0 = _load_state(
            resume,
            groups,
            log_vals,
            first_hit,
            diverged_at,
            run_configs,
            T,
            p,
            Lstar,
            thr,
            log_iters,
            prob,
        )
        loss0 = loss0.to(device=device, dtype=dtype)
    for grp in groups:
        grp.write_we(fwd.We[grp.rows])

    limit = None if loss0 is None else loss0 * diverge_factor
    # On the CPU a host-side check of "all runs fine" costs ~1 us and saves the masking
    # ops; on accelerators the check would synchronise every step, so masks are always on.
    lazy = device.type == "cpu" and not _ALWAYS_MASK
    active_t = diverged_at == _NEVER
    any_frozen = not bool(active_t.all())
    next_log_idx = int(np.searchsorted(log_iters, t0))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, initial=t0, unit="it", desc=f"training {R} runs", smoothing=0.05)
    bar_every = max(1, T // 1000)
    last_bar = t0

    with torch.no_grad():
        for t in range(t0, T + 1):
            loss = fwd()
            if limit is None:
                loss0 = loss.clone()
                limit = loss0 * diverge_factor
            ok = loss <= limit  # False for NaN
            if lazy:
                # frozen runs keep their (bad) loss, so "ok == active" means nothing new
                if bool(torch.ne(ok, active_t).any()):
                    diverged_at.masked_fill_(active_t & ~ok, t)
                    active_t &= ok
                    any_frozen = True
                active = active_t if any_frozen else None
            else:
                torch.minimum(diverged_at, torch.where(ok, _NEVER, t), out=diverged_at)
                active = diverged_at > t
            if thr:
                hit = (loss - Lstar).unsqueeze(1) < thr_t
                torch.minimum(first_hit, torch.where(hit, t, _NEVER), out=first_hit)
            if next_log_idx < len(log_iters) and t == log_iters[next_log_idx]:
                log_vals[next_log_idx] = (
                    loss.to(torch.float64) if exact_log else prob.loss64(fwd.We)
                )
                next_log_idx += 1
            if t == T:
                break
            for grp in groups:
                rows = grp.rows
                grp.step(fwd.G[rows], None if active is None else active[rows], t)
                grp.write_we(fwd.We[rows])
            if checkpoint is not None and checkpoint_every and (t + 1) % checkpoint_every == 0:
                checkpoint(
                    _state(
                        t + 1,
                        T,
                        p,
                        Lstar,
                        thr,
                        log_iters,
                        groups,
                        log_vals,
                        first_hit,
                        diverged_at,
                        loss0,
                        run_configs,
                        prob,
                        elapsed0 + time.perf_counter() - t_start,
                    )
                )
            if bar is not None and (t + 1 - last_bar >= bar_every):
                bar.update(t + 1 - last_bar)
                last_bar = t + 1
    if bar is not None:
        bar.update(T - last_bar)
        bar.close()

    wall = elapsed0 + time.perf_counter() - t_start
    logs = log_vals.cpu().numpy()
    fh = first_hit.cpu().numpy()
    dv = diverged_at.cpu().numpy()
    results = []
    for i, r in enumerate(runs):
        row = row_of[i]
        gap = logs[:, row] - Lstar
        div = int(dv[row]) if dv[row] != _NEVER else None
        if div is not None:
            gap[log_iters >= div] = np.nan
        hits = {th: (int(fh[row, j]) if fh[row, j] != _NEVER else None) for j, th in enumerate(thr)}
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
            )
        )
    return results


def _state(
    t,
    T,
    p,
    Lstar,
    thr,
    log_iters,
    groups,
    log_vals,
    first_hit,
    diverged_at,
    loss0,
    run_configs,
    prob,
    elapsed,
):
    return {
        "format": STATE_FORMAT,
        "t": int(t),
        "iters": int(T),
        "p": float(p),
        "optimum": float(Lstar),
        "thresholds": list(thr),
        "log_iters": log_iters.copy(),
        "run_keys": list(run_configs),  # the runs' config JSONs (field name of format 1)
        "shape": [prob.m, prob.d, prob.k],
        "dtype": str(prob.dtype),
        "gram": bool(prob.gram),
        "log_vals": log_vals.detach().cpu().clone(),
        "first_hit": first_hit.detach().cpu().clone(),
        "diverged_at": diverged_at.detach().cpu().clone(),
        "loss0": loss0.detach().cpu().clone(),
        "groups": [
            {name: v.detach().cpu().clone() for name, v in g.tensors().items()} for g in groups
        ],
        "elapsed": float(elapsed),
    }


def _load_state(
    state, groups, log_vals, first_hit, diverged_at, run_configs, T, p, Lstar, thr, log_iters, prob
):
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"resume state is not a {STATE_FORMAT!r} dict")
    checks = {
        "iters": (state.get("iters"), T),
        "p": (state.get("p"), p),
        "optimum": (state.get("optimum"), Lstar),
        "thresholds": (list(state.get("thresholds", [])), list(thr)),
        "run_keys": (list(state.get("run_keys", [])), run_configs),
        "shape": (list(state.get("shape", [])), [prob.m, prob.d, prob.k]),
        "dtype": (state.get("dtype"), str(prob.dtype)),
        "gram": (state.get("gram"), bool(prob.gram)),
    }
    for name, (got, want) in checks.items():
        if got != want:
            raise ValueError(
                f"resume state does not match this call: {name} is {got!r}, expected {want!r}"
            )
    if not np.array_equal(np.asarray(state["log_iters"]), log_iters):
        raise ValueError("resume state does not match this call: different logged iterations")
    t = int(state["t"])
    if not 0 < t <= T:
        raise ValueError(f"resume state has t={t}, outside 1..{T}")
    if len(state["groups"]) != len(groups):
        raise ValueError("resume state has a different grouping of the runs")
    for g, sd in zip(groups, state["groups"], strict=True):
        g.load_tensors(sd)
    log_vals.copy_(torch.as_tensor(state["log_vals"]).to(log_vals.device))
    first_hit.copy_(torch.as_tensor(state["first_hit"]).to(first_hit.device))
    diverged_at.copy_(torch.as_tensor(state["diverged_at"]).to(diverged_at.device))
    return t, float(state.get("elapsed", 0.0)), torch.as_tensor(state["loss0"])
