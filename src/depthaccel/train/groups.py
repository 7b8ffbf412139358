r"""The engine's groups: runs trained by one batched program, and how runs are grouped.

All runs of a ``train`` call share one buffer of end-to-end matrices ``W_e = W_N ... W_1``
(Eq. 5), shape (R, k, d), and one gradient buffer ``G = dL^1/dW (W_e)``. A *group* owns the
parameters and optimizer states of its runs (a contiguous slice ``rows`` of the R runs),
turns its slice of G into the gradients of its own parameters, updates them, and writes
its new ``W_e`` back. Three kinds:

* ``Width1Group`` -- width-1 nets with one output, any depths (gd or one adaptive
  method): the factors are a row ``v = W_1`` (1 x d) and scalars ``s_2..s_N``, so
  ``W_e = (prod_j s_j) v``, ``dL/dv = (prod_j s_j) g`` and
  ``dL/ds_j = (prod_{i != j} s_i) <v, g>``. All depths share one group (scalars padded
  with 1 and masked);
* ``NetGroup`` -- depth-N nets of one shape (any widths and outputs): batched ``bmm``
  with ``dL/dW_j = (W_N..W_{j+1})^T G (W_{j-1}..W_1)^T``;
* ``E2EGroup`` -- the end-to-end scheme at one depth:
  ``W_e <- W_e - lr * end_to_end_update(W_e, G)`` (Eq. 10; Eq. 12 for k = 1).

The nets' update is Eq. 4 (gd: ``W_j <- (1 - lr*lambda) W_j - lr * dL/dW_j``) or an
adaptive rule of :mod:`depthaccel.train.kernels` on every factor.

Every group masks frozen (diverged) runs with ``torch.where``: a run's parameters and
optimizer state stop changing from the iteration it diverged (see ``Group.step``).

Compaction (``Group.keep``): the engine drops frozen runs from the tensor program. A
group then keeps only the rows of its remaining runs in every per-run tensor
(parameters, optimizer states, per-run hyperparameters, cached products), without any
arithmetic (``index_select``), so a kept run's numbers are exactly what they were; the
dropped runs' tensors are kept as they were when dropped (frozen: they would not
change any more), and :meth:`Group.full_tensors` gives every run's tensors, in the
group's original layout, for a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from depthaccel.nets import DeepLinear, balanced_factors, layer_widths
from depthaccel.train import kernels
from depthaccel.train.runs import ADAPTIVE_METHODS, Run
from depthaccel.update import end_to_end_update

__all__ = [
    "E2EGroup",
    "Group",
    "NetGroup",
    "Width1Group",
    "batch_signature",
    "build_groups",
    "initial_factors",
]

Tensor = torch.Tensor
#: the e2e groups' update runs on a multiple of this many runs (zero padding runs)
RUN_BLOCK = 32


def initial_factors(run: Run, d: int, k: int) -> list[Tensor]:
    """The factors ``[W_1, ..., W_N]`` (float64, CPU) a run's depth-``net_depth`` net starts
    from: :class:`depthaccel.nets.DeepLinear` with the run's hidden/init/init_scale/seed.

    ``near_zero_balanced``: the balanced factors (Eq. 7, :func:`depthaccel.nets.
    balanced_factors`) of the end-to-end matrix ``W_e`` the ``near_zero`` net with the same
    hidden/init_scale/seed starts from -- the same ``W_e``, without that net's imbalance
    (fig2's control)."""
    init = "near_zero" if run.init == "near_zero_balanced" else run.init
    net = DeepLinear(
        d,
        k,
        run.net_depth,
        run.hidden,
        init,
        run.init_scale,
        seed=run.seed,
        dtype=torch.float64,
    )
    factors = [f.detach().clone() for f in net.factors]
    if run.init == "near_zero_balanced" and run.net_depth > 1:
        factors = balanced_factors(net.end_to_end().detach(), run.net_depth, run.hidden)
    return factors


def _col(values: Sequence[float], shape_tail: int, ref: Tensor) -> Tensor:
    return torch.tensor(values, dtype=ref.dtype, device=ref.device).view(-1, *([1] * shape_tail))


def _take(x, idx: Tensor):
    """Rows ``idx`` of a per-run tensor (leading dimension = runs); a Python number (a
    hyperparameter shared by all runs) or None stays as it is."""
    return x.index_select(0, idx) if isinstance(x, Tensor) else x


class Group:
    """Runs trained by one batched program. Subclasses hold the parameters and optimizer
    states of their R_g runs (rows ``rows`` of the engine's (R, k, d) buffers)."""

    kind = ""

    def __init__(self, runs: list[Run], rows: slice):
        self.runs = runs
        self.rows = rows
        # after a compaction: every run's tensors as of the last compaction (the dropped
        # runs' final ones) and the positions of the kept runs among the group's runs
        self._full: dict[str, Tensor] | None = None
        self._pos: Tensor | None = None

    @property
    def size(self) -> int:
        """Number of runs still in the tensor program (all of them before a compaction)."""
        return len(self.runs) if self._pos is None else int(self._pos.numel())

    def keep(self, idx: Tensor) -> None:
        """Compaction: keep only the runs at positions ``idx`` (int64, ascending) of the
        group's current rows; the others leave the tensor program with their tensors as
        they are now (see the module docstring). The engine assigns the new ``rows``."""
        # the tensors are replaced, never modified in place, by steps: no copy needed
        self._full = self.full_tensors()
        pos = (
            self._pos if self._pos is not None else torch.arange(len(self.runs), device=idx.device)
        )
        self._pos = pos.index_select(0, idx)
        self._select(idx)

    def full_tensors(self) -> dict[str, Tensor]:
        """:meth:`tensors` of all the group's runs, in their original order (the kept
        runs' current values, the dropped runs' values when dropped): the group's part
        of a checkpoint, the same layout with or without compaction."""
        own = self.tensors()
        if self._full is None:
            return own
        out = {}
        for name, t in own.items():
            out[name] = self._full[name].index_copy(0, self._pos, t)
        return out

    def _select(self, idx: Tensor) -> None:  # pragma: no cover - abstract
        """Keep rows ``idx`` of every per-run tensor (``_take``; no arithmetic)."""
        raise NotImplementedError

    def write_we(self, We: Tensor) -> None:  # pragma: no cover - abstract
        """Write the runs' end-to-end matrices ``W_e = W_N ... W_1`` (Eq. 5) into ``We``
        (R_g, k, d)."""
        raise NotImplementedError

    def step(self, G: Tensor, active: Tensor | None, t: int) -> None:  # pragma: no cover
        """One update from the gradient G (R_g, k, d) of W_e; ``active`` (R_g,) bool masks
        frozen runs (None: all runs active)."""
        raise NotImplementedError

    def tensors(self) -> dict[str, Tensor]:  # pragma: no cover
        """Every tensor that evolves (parameters, optimizer states): the group's part of
        a checkpoint."""
        raise NotImplementedError

    def load_tensors(self, sd: dict[str, Tensor]) -> None:
        """Continue from ``sd`` (a :meth:`tensors` dict of a checkpoint); ValueError when
        its names or shapes differ."""
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

    def _select_opt(self, idx: Tensor) -> None:
        # has_wd and the form of each hp (float or tensor) stay: same ops, same numbers
        self.lr = _take(self.lr, idx)
        self.wd = _take(self.wd, idx)
        self.decay = _take(self.decay, idx)
        self.hp = {name: _take(v, idx) for name, v in self.hp.items()}

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


class Width1Group(Group, _OptMixin):
    """Width-1 nets with one output, any depths: ``W_1 = v`` (1 x d), ``W_2..W_N`` scalars.

    With ``S = (s_2..s_N)`` (padded with 1 to the group's largest depth) and
    ``c = prod_j s_j``: ``W_e = c v`` (Eq. 5), ``dL/dv = c g`` and
    ``dL/ds_j = (prod_{i != j} s_i) <v, g>``; the exclusive products come from a prefix and
    a suffix cumulative product (``_excl``). Updates: Eq. 4 or an adaptive rule.
    """

    kind = "width1"

    def __init__(
        self, runs: list[Run], rows: slice, inits: list[list[Tensor]], device, dtype
    ) -> None:
        super().__init__(runs, rows)
        opts = {"device": device, "dtype": dtype}
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
        self.smask = smask.to(device=device)
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

    def _select(self, idx: Tensor) -> None:
        # Q and padded stay: masking with an all-True smask row changes no number
        self.v, self.S, self.c = (_take(x, idx) for x in (self.v, self.S, self.c))
        self.smask = _take(self.smask, idx)
        self.state_v = {n: _take(x, idx) for n, x in self.state_v.items()}
        self.state_S = {n: _take(x, idx) for n, x in self.state_S.items()}
        self._select_opt(idx)


class NetGroup(Group, _OptMixin):
    """Depth-N nets of one shape (any widths/outputs) and one method: batched bmm.

    With factors ``F_0..F_{N-1}`` (``F_j = W_{j+1}``, n_{j+1} x n_j), the left products
    ``L_j = F_{N-1} ... F_{j+1}`` (k x n_{j+1}; ``L_{N-1} = I``) give ``W_e = L_0 F_0`` and
    the right chain ``V_0 = G``, ``V_j = V_{j-1} F_{j-1}^T`` (k x n_j) gives the gradients
    ``dL/dF_j = L_j^T V_j``: every product has k (the number of outputs) as one side, so
    a step costs O(k sum_j n_j n_{j+1}) instead of O(d sum_j n_j n_{j+1}). Updates: Eq. 4
    (gd) or an adaptive rule on every factor.
    """

    kind = "net"

    def __init__(
        self, runs: list[Run], rows: slice, inits: list[list[Tensor]], device, dtype
    ) -> None:
        super().__init__(runs, rows)
        opts = {"device": device, "dtype": dtype}
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

    def _select(self, idx: Tensor) -> None:
        self.W = [_take(w, idx) for w in self.W]
        self.states = [{n: _take(x, idx) for n, x in st.items()} for st in self.states]
        self.left = [_take(x, idx) for x in self.left]
        self.We = _take(self.We, idx)
        self._select_opt(idx)


class E2EGroup(Group):
    """The end-to-end scheme at one depth N: ``W_e <- W_e - lr * D`` with
    ``D = end_to_end_update(W_e, G, depth=N, weight_decay=lambda)`` (Eq. 10; Eq. 12 for
    k = 1). Each run starts from the product (Eq. 5) of the factors its depth-ceil(N) net
    would start from."""

    kind = "e2e"

    def __init__(
        self, runs: list[Run], rows: slice, inits: list[list[Tensor]], device, dtype
    ) -> None:
        super().__init__(runs, rows)
        opts = {"device": device, "dtype": dtype}
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
        D = self._direction(W, Gs)
        new = torch.addcmul(self.W, self.lr, D, value=-1)
        self.W = new if act is None else torch.where(act, new, self.W)

    def _direction(self, W: Tensor, G: Tensor) -> Tensor:
        """``end_to_end_update`` on the group's runs padded with zero runs (a frozen run's
        inputs) to a multiple of ``RUN_BLOCK``: its elementwise transcendental functions
        (the fractional powers) round differently in a vectorised loop's remainder, so
        without the padding a run's bits would depend on the group's size (compaction)."""
        Rg = W.shape[0]
        pad = -Rg % RUN_BLOCK
        wd = self.wd
        if pad:
            W = torch.cat([W, W.new_zeros(pad, *W.shape[1:])])
            G = torch.cat([G, G.new_zeros(pad, *G.shape[1:])])
            if isinstance(wd, Tensor):
                wd = torch.cat([wd, wd.new_zeros(pad, *wd.shape[1:])])
        return end_to_end_update(W, G, depth=self.depth, weight_decay=wd)[:Rg]

    def tensors(self) -> dict[str, Tensor]:
        return {"W": self.W}

    def load_tensors(self, sd):
        self.W = self.W.clone()
        super().load_tensors(sd)

    def _select(self, idx: Tensor) -> None:
        self.W, self.lr, self.wd = (_take(x, idx) for x in (self.W, self.lr, self.wd))


def batch_signature(run: Run, d: int, k: int, fast_width1: bool = True) -> tuple:
    """Runs with equal signatures (on data with d features and k outputs) are trained by
    one group: e2e runs per depth; width-1 single-output nets of one method together
    (any depth; unless ``fast_width1`` is False); other nets per method and widths."""
    if run.method == "e2e":
        return ("e2e", float(run.depth))
    conv = run.convention if run.method in ADAPTIVE_METHODS else ""
    widths = tuple(layer_widths(d, k, run.net_depth, run.hidden))
    if fast_width1 and k == 1 and all(w == 1 for w in widths[1:-1]):
        return ("width1", run.method, conv)
    return ("net", run.method, conv, widths)


_GROUP_CLASSES: dict[str, type[Group]] = {
    "width1": Width1Group,
    "net": NetGroup,
    "e2e": E2EGroup,
}


def build_groups(
    runs: Sequence[Run], d: int, k: int, *, device, dtype, fast_width1: bool = True
) -> tuple[list[Group], np.ndarray]:
    """The groups of ``runs`` (first-appearance order of their signatures), each starting
    from its runs' :func:`initial_factors`, and ``row_of``: run index -> its row in the
    (R, k, d) buffers (a group's runs occupy consecutive rows)."""
    by_signature: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        by_signature.setdefault(batch_signature(r, d, k, fast_width1), []).append(i)
    groups: list[Group] = []
    row_of = np.empty(len(runs), dtype=np.int64)
    r0 = 0
    for sig, idx in by_signature.items():
        g_runs = [runs[i] for i in idx]
        inits = [initial_factors(r, d, k) for r in g_runs]
        rows = slice(r0, r0 + len(idx))
        groups.append(_GROUP_CLASSES[sig[0]](g_runs, rows, inits, device, dtype))
        row_of[idx] = np.arange(r0, r0 + len(idx))
        r0 += len(idx)
    return groups, row_of
