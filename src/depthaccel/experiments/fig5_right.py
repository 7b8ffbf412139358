"""Fig. 5 right: TensorFlow's MNIST convolutional tutorial, original vs overparameterized.

The paper (Section 8, last paragraphs) trains the tutorial's network
(:mod:`depthaccel.experiments.mnist_cnn`) with the tutorial's own hyperparameters, and the
same network with each dense matrix replaced by a product of two (a depth-2 linear
network; hidden width = the layer's output width, about 15% more parameters), and plots
the batch loss per iteration: the overparameterized net's loss falls considerably faster.

Here both nets see the same minibatches in the same order (the tutorial's sequential
order), the same dropout masks (the global RNG is re-seeded per step, identically for
both) and the same convolution weights and biases at init; only the dense weights differ.
The batch loss of every step is recorded; the claim compares trailing moving averages:
for checkpoints ``t`` (fractions of the run), the iteration at which the
overparameterized net first reaches the original net's smoothed loss at ``t`` gives the
speed-up ``t / t_over``.

Choices where the paper is silent (Appendix C is not available), each a config field:

- ``factor_init``: how the factors start. ``"tutorial"`` (default): every factor drawn
  like every matrix of the tutorial, truncated normal with stddev ``factor_std`` = 0.1
  (what adding a variable to the tutorial's code does by default; the paper mentions
  varying "standard deviations of initializations", i.e. such a stddev).
  ``"random"``: :func:`depthaccel.overparameterize`'s ``init="random"`` (PyTorch's default
  layer init per factor). ``"preserve"``: balanced factors of the tutorial's initial
  weight (both nets then start as the same function). ``"residual"``: ``W_1`` = the
  tutorial's initial weight of the original net, ``W_2 .. W_N`` = identity (the "linear
  residual" init of Fig. 5 left on the added matrices; again the same function at init).
- ``l2_on``: the tutorial's L2 penalty ``5e-4 * sum_i l2_loss(.)`` on the dense
  parameters applies to each factor (``"factors"``, default: weight decay on every
  factor, as in the paper's Eq. 4) or to the product matrix (``"product"``).
- ``factored_forward``: apply the factors one after another (``x W_1^T W_2^T``) instead
  of forming the product ``W_2 W_1`` each step; the same function and gradients up to
  round-off, and much cheaper for ``fc1`` (forming 512x512 @ 512x3136 costs 8x the layer).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from depthaccel.experiments import mnist_cnn
from depthaccel.experiments.base import Claim, Curve, ExperimentResult, write_curves_csv
from depthaccel.experiments.context import ExperimentContext
from depthaccel.overparam import ProductWeight, overparameterize

NAME = "fig5-right"
TITLE = (
    "Fig. 5 right: MNIST conv tutorial vs the same net with each dense matrix a product "
    "of two; claim: the overparameterized net's batch loss falls faster"
)
FACTOR_INITS = ("tutorial", "random", "preserve", "residual")
L2_TARGETS = ("factors", "product")
DENSE_LAYERS = ("fc1", "fc2")


@dataclass(frozen=True)
class Config:
    """Settings of the Fig. 5 right experiment (defaults = the tutorial = ``full()``).

    Steps: ``int(epochs * train_size) // batch_size`` (the tutorial's formula: 8593 for
    10 epochs of 55000 images). The learning rate decays once per ``train_size`` images.
    """

    epochs: float = 10.0
    train_size: int = 55000  # training images after the validation hold-out (<= 55000)
    validation_size: int = 5000  # first images of the training file, held out
    validation_eval: int = 5000  # how many held-out images each validation pass scores
    test_size: int = 10000
    eval_every: int = 860  # steps between validation passes (0: only at the end)
    batch_size: int = 64
    base_lr: float = 0.01
    decay_rate: float = 0.95
    momentum: float = 0.9
    l2_weight: float = 5e-4
    dropout: float = 0.5
    seed: int = 66478  # the tutorial's SEED
    depth: int = 2
    factor_hidden: str | int = "out"
    factor_init: str = "tutorial"
    factor_std: float = 0.1
    l2_on: str = "factors"
    factored_forward: bool = True
    same_dropout_masks: bool = True
    smooth_window: int = 100
    checkpoints: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)
    max_test_error: float | None = 1.5  # percent; None: report test error without a claim
    time_limit_s: float | None = None  # stop both nets at the same step when exceeded
    # extra overparameterized nets trained alongside on the same batches, as
    # (factor_init, l2_on) pairs: how the result depends on the paper's silent choices
    variants: tuple[tuple[str, str], ...] = ()
    # torch intra-op threads during the run (None: unchanged). 1 by default: these small
    # convolutions gain little from a second thread, and on a shared 2-core machine two
    # threads per process were measured 3-8x slower per step than one (spin-wait thrash).
    threads: int | None = 1
    channels_last: bool = True  # memory layout of convolutions (speed only)

    @classmethod
    def full(cls) -> Config:
        """The tutorial's setting: 10 epochs of 55000 images, batch 64 (8593 steps), with a
        2-hour safety limit (both nets stop at the same step; the report says so)."""
        return cls(
            time_limit_s=7200.0,
            variants=(("tutorial", "product"), ("residual", "factors")),
        )

    @classmethod
    def quick(cls) -> Config:
        """CI size: 30 steps on the first 1280 training images, small evaluations."""
        return cls(
            epochs=1.5,
            train_size=1280,
            validation_eval=256,
            test_size=512,
            eval_every=0,
            smooth_window=5,
            checkpoints=(0.5, 1.0),
            max_test_error=None,
        )

    def n_steps(self) -> int:
        return int(self.epochs * self.train_size) // self.batch_size

    def validate(self) -> None:
        """ValueError naming the first bad field."""
        if self.factor_init not in FACTOR_INITS:
            raise ValueError(f"factor_init must be one of {FACTOR_INITS}, got {self.factor_init!r}")
        if self.l2_on not in L2_TARGETS:
            raise ValueError(f"l2_on must be one of {L2_TARGETS}, got {self.l2_on!r}")
        for v in self.variants:
            if len(v) != 2 or v[0] not in FACTOR_INITS or v[1] not in L2_TARGETS:
                raise ValueError(
                    f"variants must be (factor_init, l2_on) pairs from {FACTOR_INITS} x "
                    f"{L2_TARGETS}, got {v!r}"
                )
        if not 0 < self.train_size <= 60000 - self.validation_size:
            raise ValueError(
                f"train_size must be in 1..{60000 - self.validation_size}, got {self.train_size}"
            )
        if self.batch_size < 1 or self.train_size <= self.batch_size:
            raise ValueError(
                f"need 1 <= batch_size < train_size, got {self.batch_size}, {self.train_size}"
            )
        if self.n_steps() < 1:
            raise ValueError(f"epochs={self.epochs} gives no training step")
        if not 0 <= self.validation_eval <= self.validation_size:
            raise ValueError("validation_eval must be in 0..validation_size")
        if not 0 < self.test_size <= 10000:
            raise ValueError(f"test_size must be in 1..10000, got {self.test_size}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        for name in ("base_lr", "factor_std"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.smooth_window < 1:
            raise ValueError(f"smooth_window must be >= 1, got {self.smooth_window}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if not self.checkpoints or not all(0 < c <= 1 for c in self.checkpoints):
            raise ValueError(f"checkpoints must be fractions in (0, 1], got {self.checkpoints}")


# ----------------------------------------------------------------------------- models


def dense_factors(layer: nn.Module) -> list[torch.Tensor] | None:
    """The factors ``[W_1, ..., W_N]`` of a layer overparameterized by
    :func:`depthaccel.overparameterize`, or None for a plain layer."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    plist = layer.parametrizations.weight
    if len(plist) != 1 or not isinstance(plist[0], ProductWeight):
        return None
    return [getattr(plist, f"original{i}") for i in range(plist[0].depth)]


def dense_forward(layer: nn.Linear, x: torch.Tensor, factored: bool = True) -> torch.Tensor:
    """``layer(x)``; for an overparameterized Linear with ``factored``, computed as
    ``(((x W_1^T) W_2^T) ... W_N^T) + b`` without forming ``W_N ... W_1``."""
    factors = dense_factors(layer) if factored else None
    if factors is None:
        return layer(x)
    for f in factors[:-1]:
        x = F.linear(x, f)
    return F.linear(x, factors[-1], layer.bias)


class Fig5Net(mnist_cnn.TutorialCNN):
    """The tutorial net whose dense layers may be overparameterized (see ``dense_forward``)."""

    def __init__(self, dropout: float = 0.5, factored_forward: bool = True) -> None:
        super().__init__(dropout=dropout)
        self.factored_forward = factored_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(dense_forward(self.fc1, x.flatten(1), self.factored_forward))
        return dense_forward(self.fc2, self.dropout(x), self.factored_forward)


def l2_penalty(model: mnist_cnn.TutorialCNN, on: str = "factors") -> torch.Tensor:
    """The tutorial's regulariser ``sum l2_loss(p)`` over the dense weights and biases.

    ``l2_loss(p) = sum(p**2) / 2``. For an overparameterized layer the weight terms are
    ``sum_j l2_loss(W_j)`` (``on="factors"``) or ``l2_loss(W_N ... W_1)`` (``"product"``).
    """
    if on not in L2_TARGETS:
        raise ValueError(f"l2 target must be one of {L2_TARGETS}, got {on!r}")
    total = model.fc1.bias.new_zeros(())
    for name in DENSE_LAYERS:
        layer = getattr(model, name)
        factors = dense_factors(layer)
        weights = factors if (factors is not None and on == "factors") else [layer.weight]
        for w in weights:
            total = total + mnist_cnn.tf_l2_loss(w)
        total = total + mnist_cnn.tf_l2_loss(layer.bias)
    return total


def _tutorial_net(cfg: Config, device: torch.device | str, dtype: torch.dtype) -> Fig5Net:
    net = Fig5Net(cfg.dropout, cfg.factored_forward)
    net = mnist_cnn.tutorial_init_(net, cfg.seed).to(device=device, dtype=dtype)
    return net.to(memory_format=torch.channels_last) if cfg.channels_last else net


def overparameterized_net(
    cfg: Config,
    factor_init: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Fig5Net, Any]:
    """(net, overparameterize summary): the tutorial net (seed ``cfg.seed``) with its dense
    layers overparameterized and the factors initialised per ``factor_init`` (one of
    ``FACTOR_INITS``; the random draws use seed ``cfg.seed + 1``, so two nets with the same
    ``factor_init`` start identical)."""
    if factor_init not in FACTOR_INITS:
        raise ValueError(f"factor_init must be one of {FACTOR_INITS}, got {factor_init!r}")
    original = _tutorial_net(cfg, device, dtype)
    over = _tutorial_net(cfg, device, dtype)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    over, summary = overparameterize(
        over,
        depth=cfg.depth,
        hidden=cfg.factor_hidden,
        init="preserve" if factor_init == "preserve" else "random",
        include=list(DENSE_LAYERS),
        generator=gen,
    )
    with torch.no_grad():
        for name in DENSE_LAYERS:
            factors = dense_factors(getattr(over, name))
            if factor_init == "tutorial":
                for f in factors:
                    mnist_cnn.truncated_normal_(f, cfg.factor_std, gen)
            elif factor_init == "residual":
                factors[0].copy_(getattr(original, name).weight)
                for f in factors[1:]:
                    f.copy_(torch.eye(*f.shape, dtype=f.dtype, device=f.device))
    return over, summary


def build_models(
    cfg: Config, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Fig5Net, Fig5Net, Any]:
    """(original, overparameterized, overparameterize summary), initialised as configured.

    Both start from the tutorial's init with ``cfg.seed`` (identical convolutions and
    biases); the overparameterized net's dense weights are then factored per
    ``cfg.factor_init``.
    """
    cfg.validate()
    over, summary = overparameterized_net(cfg, cfg.factor_init, device, dtype)
    return _tutorial_net(cfg, device, dtype), over, summary


# ---------------------------------------------------------------------------- training


@dataclass
class Splits:
    """Tensors on the device: train (x, y), validation (x, y), test (x, y)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def make_splits(data: Any, cfg: Config, device: torch.device | str, dtype: torch.dtype) -> Splits:
    """The tutorial's split: the first ``validation_size`` training images are held out,
    the next ``train_size`` train; pixels scaled to ``(x - 127.5) / 255``."""

    def tx(images: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(mnist_cnn.scale_images(images)).to(device=device, dtype=dtype)
        # one channel: channels_last has the same memory layout, but says so to the convs
        return t.contiguous(memory_format=torch.channels_last) if cfg.channels_last else t

    def ty(labels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)

    v, n = cfg.validation_size, cfg.train_size
    return Splits(
        train_x=tx(data.train_images[v : v + n]),
        train_y=ty(data.train_labels[v : v + n]),
        val_x=tx(data.train_images[: cfg.validation_eval]),
        val_y=ty(data.train_labels[: cfg.validation_eval]),
        test_x=tx(data.test_images[: cfg.test_size]),
        test_y=ty(data.test_labels[: cfg.test_size]),
    )


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Percent of ``x`` misclassified by ``model`` in eval mode (no dropout)."""
    if len(x) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    wrong = 0
    for i in range(0, len(x), batch):
        wrong += int((model(x[i : i + batch]).argmax(1) != y[i : i + batch]).sum())
    model.train(was_training)
    return 100.0 * wrong / len(x)


@dataclass
class History:
    """Per-step records of one net; validation error at ``val_steps``."""

    loss: list[float] = dataclasses.field(default_factory=list)  # CE + L2 (the tutorial's)
    ce: list[float] = dataclasses.field(default_factory=list)
    val_steps: list[int] = dataclasses.field(default_factory=list)
    val_error: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def train_pair(
    nets: dict[str, nn.Module],
    splits: Splits,
    cfg: Config,
    *,
    l2_on: dict[str, str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, History], list[float], int]:
    """Train the nets side by side, step by step on the same minibatches.

    ``l2_on`` maps a net's name to where its L2 penalty applies (default ``cfg.l2_on``).

    Returns (histories by name, learning rate per step, steps done). Stops early (all nets
    at the same step) when ``cfg.time_limit_s`` is exceeded; raises FloatingPointError on
    a non-finite loss.
    """
    opts = {
        k: torch.optim.SGD(m.parameters(), lr=cfg.base_lr, momentum=cfg.momentum)
        for k, m in nets.items()
    }
    hist = {k: History() for k in nets}
    lrs: list[float] = []
    n_steps = cfg.n_steps()
    for m in nets.values():
        m.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=NAME, unit="step", mininterval=2.0)
    t_start = time.perf_counter()
    step = 0
    for step in range(n_steps):
        lr = mnist_cnn.staircase_lr(
            step,
            base_lr=cfg.base_lr,
            decay_rate=cfg.decay_rate,
            batch_size=cfg.batch_size,
            decay_examples=cfg.train_size,
        )
        lrs.append(lr)
        off = mnist_cnn.batch_offset(step, cfg.batch_size, cfg.train_size)
        xb = splits.train_x[off : off + cfg.batch_size]
        yb = splits.train_y[off : off + cfg.batch_size]
        for k, model in nets.items():
            t0 = time.perf_counter()
            if cfg.same_dropout_masks:
                torch.manual_seed(cfg.seed * 7919 + step)
            opt = opts[k]
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            ce = F.cross_entropy(model(xb), yb)
            loss = ce + cfg.l2_weight * l2_penalty(model, (l2_on or {}).get(k, cfg.l2_on))
            loss.backward()
            opt.step()
            lv, cv = loss.item(), ce.item()
            if not (math.isfinite(lv) and math.isfinite(cv)):
                raise FloatingPointError(
                    f"{NAME}: net {k!r} diverged at step {step} (batch loss {lv})"
                )
            hist[k].loss.append(lv)
            hist[k].ce.append(cv)
            hist[k].seconds += time.perf_counter() - t0
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and cfg.validation_eval:
            for k, model in nets.items():
                hist[k].val_steps.append(step + 1)
                hist[k].val_error.append(error_rate(model, splits.val_x, splits.val_y))
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix({k: f"{h.loss[-1]:.3f}" for k, h in hist.items()})
        if cfg.time_limit_s is not None and time.perf_counter() - t_start > cfg.time_limit_s:
            break
    if bar is not None:
        bar.close()
    done = step + 1
    if cfg.validation_eval:
        for k, model in nets.items():
            if hist[k].val_steps[-1:] != [done]:
                hist[k].val_steps.append(done)
                hist[k].val_error.append(error_rate(model, splits.val_x, splits.val_y))
    return hist, lrs, done


# ------------------------------------------------------------------------------ analysis


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: ``s_t = mean(v[max(0, t - window + 1) .. t])``."""
    v = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.concatenate([[0.0], np.cumsum(v)])
    t = np.arange(1, len(v) + 1)
    lo = np.maximum(0, t - window)
    return (c[t] - c[lo]) / (t - lo)


def first_reach(curve: np.ndarray, level: float) -> int | None:
    """First (1-based) iteration at which ``curve <= level``, or None."""
    hit = np.flatnonzero(np.asarray(curve) <= level)
    return int(hit[0]) + 1 if hit.size else None


def speedups(
    base: np.ndarray, other: np.ndarray, fractions: tuple[float, ...]
) -> list[dict[str, Any]]:
    """For each checkpoint ``t = round(f * len(base))``: the level ``base[t-1]``, the
    iteration ``t_other`` at which ``other`` first reaches it, and ``t / t_other``
    (0 when never reached)."""
    rows = []
    n = len(base)
    for f in fractions:
        t = max(1, min(n, round(f * n)))
        level = float(base[t - 1])
        t_o = first_reach(other, level)
        rows.append(
            {
                "fraction": f,
                "iteration": t,
                "level": level,
                "iteration_other": t_o,
                "speedup": (t / t_o) if t_o else 0.0,
            }
        )
    return rows


def _speedup_text(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        reached = f"{r['iteration_other']}" if r["iteration_other"] else "never"
        parts.append(
            f"level {r['level']:.3g} (original at it. {r['iteration']}): overparam. at {reached}"
            f" ({r['speedup']:.2f}x)"
        )
    return "; ".join(parts)


# ------------------------------------------------------------------------------ plotting


def plot(
    path: Path,
    hist: dict[str, History],
    window: int,
    labels: dict[str, str],
) -> Path:
    """Two panels (batch loss = CE + L2; batch cross-entropy) vs iteration: raw light,
    smoothed solid, log y."""
    from depthaccel.experiments.base import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"original": "tab:blue", "overparameterized": "tab:red"}
    extra = iter(["tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:gray"] * 4)
    colors |= {k: next(extra) for k in hist if k not in colors}
    for ax, key, title in (
        (axes[0], "loss", "batch loss (cross-entropy + L2, the tutorial's objective)"),
        (axes[1], "ce", "batch cross-entropy"),
    ):
        for k, h in hist.items():
            y = np.asarray(getattr(h, key))
            x = np.arange(1, len(y) + 1)
            c = colors[k]
            main = k in ("original", "overparameterized")
            if main:  # raw batch losses only for the two nets of the claim
                ax.plot(x, y, color=c, alpha=0.18, lw=0.6)
            ax.plot(
                x,
                smooth(y, window),
                color=c,
                lw=1.6 if main else 1.1,
                ls="-" if main else "--",
                label=f"{labels[k]} (smoothed)",
            )
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("batch loss")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 5 right: MNIST tutorial, SGD+momentum (moving average over {window})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------- run


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}
    table |= {"bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(config: Config, ctx: ExperimentContext) -> ExperimentResult:
    """Train both nets, write ``fig5_right.png`` and ``curves.csv`` into ``ctx.out_dir``,
    and check the claim (see the module docstring)."""

    cfg = config
    cfg.validate()
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, ctx)
    finally:
        torch.set_num_threads(threads_before)


def _run(cfg: Config, ctx: ExperimentContext) -> ExperimentResult:
    from depthaccel.data import load_mnist

    out_dir = ctx.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tdtype = _resolve_dtype(ctx.dtype)
    dev = torch.device(ctx.device)
    t_all = time.perf_counter()

    data = load_mnist(ctx.data_dir)
    splits = make_splits(data, cfg, dev, tdtype)
    plain, over, summary = build_models(cfg, dev, tdtype)
    labels = {
        "original": "original",
        "overparameterized": f"overparameterized (depth-{cfg.depth} dense; init "
        f"{cfg.factor_init}, L2 on {cfg.l2_on})",
    }
    nets = {"original": plain, "overparameterized": over}
    l2_on = {"original": cfg.l2_on, "overparameterized": cfg.l2_on}
    for init, target in cfg.variants:
        key = f"variant {init}/{target}"
        nets[key] = overparameterized_net(cfg, init, dev, tdtype)[0]
        labels[key] = f"variant: overparam. init {init}, L2 on {target}"
        l2_on[key] = target
    hist, lrs, done = train_pair(nets, splits, cfg, l2_on=l2_on, progress=ctx.progress)
    test_err = {k: error_rate(m, splits.test_x, splits.test_y) for k, m in nets.items()}

    # curves
    curves = []
    for k, h in hist.items():
        it = np.arange(1, len(h.loss) + 1)
        curves.append(Curve(labels[k], it, np.asarray(h.loss), panel="batch_loss"))
        curves.append(Curve(labels[k], it, np.asarray(h.ce), panel="batch_cross_entropy"))
        if h.val_steps:
            curves.append(
                Curve(labels[k], np.asarray(h.val_steps), np.asarray(h.val_error), "val_error_pct")
            )
    csv_path = write_curves_csv(out_dir / "curves.csv", curves)
    fig_path = plot(out_dir / "fig5_right.png", hist, cfg.smooth_window, labels)

    # claims
    w = cfg.smooth_window
    sm = {k: {q: smooth(getattr(h, q), w) for q in ("loss", "ce")} for k, h in hist.items()}
    rows = {
        q: speedups(sm["original"][q], sm["overparameterized"][q], cfg.checkpoints)
        for q in ("loss", "ce")
    }
    variant_rows = {
        k: {q: speedups(sm["original"][q], sm[k][q], cfg.checkpoints) for q in ("loss", "ce")}
        for k in hist
        if k.startswith("variant ")
    }
    quick_note = "" if done >= 1000 else f"short run ({done} steps): not the paper's setting"
    # A speed-up over a few dozen steps says nothing about the paper's 8600-step claim.
    assessable = not quick_note
    claims = []
    for q, what in (
        ("loss", "batch loss (cross-entropy + L2, the tutorial's objective)"),
        ("ce", "batch cross-entropy (data term only)"),
    ):
        r = rows[q]
        ok = all(x["speedup"] > 1.0 for x in r)
        final = (sm["original"][q][-1], sm["overparameterized"][q][-1])
        claims.append(
            Claim(
                text=(
                    f"The overparameterized net's (factor init {cfg.factor_init}, L2 on the "
                    f"{cfg.l2_on}) {what} falls faster: it reaches the original net's "
                    "smoothed level at every checkpoint in fewer iterations"
                ),
                measured=(
                    _speedup_text(r)
                    + f"; final smoothed {final[0]:.4g} (original) vs {final[1]:.4g} "
                    f"(overparam.), window {w}"
                ),
                passed=ok if assessable else None,
                note=quick_note,
            )
        )
    # The paper leaves the factor init and the L2 placement open: each variant gets its
    # own verdict on the paper's quantity (batch loss), so the table shows which readings
    # of the setup reproduce the claim.
    for k, vr in variant_rows.items():
        init, target = k.removeprefix("variant ").split("/")
        final = (sm["original"]["loss"][-1], sm[k]["loss"][-1])
        claims.append(
            Claim(
                text=(
                    f"Variant (factor init {init}, L2 on the {target}; a choice the paper "
                    "leaves open): the overparameterized net's batch loss falls faster"
                ),
                measured=(
                    "batch loss: "
                    + _speedup_text(vr["loss"])
                    + f"; final smoothed {final[0]:.4g} (original) vs {final[1]:.4g}; "
                    "cross-entropy: " + _speedup_text(vr["ce"])
                ),
                passed=all(x["speedup"] > 1.0 for x in vr["loss"]) if assessable else None,
                note=quick_note,
            )
        )
    test_txt = (
        f"test error {test_err['original']:.2f}% (original) vs "
        f"{test_err['overparameterized']:.2f}% (overparameterized) on {cfg.test_size} images"
    )
    test_all = ", ".join(f"{k} {v:.2f}%" for k, v in test_err.items())
    if cfg.max_test_error is not None:
        claims.append(
            Claim(
                text=(
                    "All nets reach the tutorial's accuracy (test error below "
                    f"{cfg.max_test_error}%; the tutorial states about 0.7-0.8%)"
                ),
                measured=f"test error on {cfg.test_size} images: {test_all}",
                passed=max(test_err.values()) < cfg.max_test_error,
                note=quick_note,
            )
        )

    n_plain, n_over = _count(plain), _count(over)
    sec = {k: h.seconds for k, h in hist.items()}
    notes = [
        f"Ran {done} of {cfg.n_steps()} steps"
        + (" (stopped by the time limit)" if done < cfg.n_steps() else "")
        + f"; {test_txt}.",
        f"Parameters: {n_plain:,} (original) vs {n_over:,} (overparameterized, "
        f"{100 * (n_over / n_plain - 1):.1f}% more); dense factors "
        + ", ".join(
            f"{c.name}: " + " -> ".join("x".join(map(str, s)) for s in c.factor_shapes)
            for c in summary.layers
        )
        + ".",
        f"Factor init (paper silent): {cfg.factor_init!r} = "
        + {
            "tutorial": f"each factor truncated normal stddev {cfg.factor_std}, like every "
            "matrix of the tutorial",
            "random": "overparameterize(init='random'): PyTorch's default layer init per factor",
            "preserve": "balanced SVD factors of the original's initial weight (same function)",
            "residual": "W_1 = the original's initial weight, W_2 = identity (same function)",
        }[cfg.factor_init]
        + f"; L2 penalty (paper silent) on the {cfg.l2_on} of each dense layer "
        "(5e-4 * sum of TF l2_loss = sum(x^2)/2, plus the biases).",
        "Same minibatches (the tutorial's sequential order), same dropout masks and same "
        "convolution init for both nets; batch loss recorded every step; claims compare "
        f"trailing moving averages over {w} steps.",
        "Training time per net: "
        + ", ".join(f"{k} {v:.0f} s ({1e3 * v / max(done, 1):.0f} ms/step)" for k, v in sec.items())
        + f"; torch threads {torch.get_num_threads()}.",
        "Input scaling as the tutorial: (x - 127.5)/255; flatten order NCHW (a fixed "
        "permutation of fc1's inputs vs TF's NHWC).",
    ]
    for k in variant_rows:
        notes.append(
            f"{labels[k]}: trained alongside on the same batches, dropout masks and conv "
            f"init; final smoothed loss {sm[k]['loss'][-1]:.4g}, cross-entropy "
            f"{sm[k]['ce'][-1]:.4g}; test error {test_err[k]:.2f}%."
        )
    settings = {
        "what_was_run": (
            f"TensorFlow's MNIST conv tutorial in PyTorch ({ctx.device}, {str(tdtype)[6:]}), "
            f"{done} SGD+momentum steps of batch {cfg.batch_size} on {cfg.train_size} "
            f"training images, original vs each dense matrix a product of {cfg.depth} "
            f"(hidden width {cfg.factor_hidden!r})."
        ),
        "config": dataclasses.asdict(cfg),
        "steps_done": done,
        "params": {"original": n_plain, "overparameterized": n_over},
        "test_error_pct": test_err,
        "final_validation_error_pct": {
            k: (h.val_error[-1] if h.val_error else None) for k, h in hist.items()
        },
        "speedups": rows,
        "speedups_variants": variant_rows,
        "lr_first_last": [lrs[0], lrs[-1]],
        "train_seconds": sec,
        "data_source": getattr(data, "source", ""),
    }
    return ExperimentResult(
        name=NAME,
        title=TITLE,
        mode="",
        settings=settings,
        figures=[fig_path],
        curves=[csv_path],
        claims=claims,
        wall_time=time.perf_counter() - t_all,
        notes=notes,
        device=ctx.device,
    )
