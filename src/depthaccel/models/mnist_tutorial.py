"""TensorFlow's MNIST convolutional tutorial, in PyTorch (the model of the paper's Fig. 5 right),
optionally with its dense layers overparameterized, and the tutorial's training loop.

Source: ``tensorflow/models``, ``tutorials/image/mnist/convolutional.py`` (the tutorial
the paper cites in Section 8). Architecture, initialisation, input scaling, loss,
regulariser, learning-rate schedule and minibatch order follow that file:

- input: pixels ``(x - 127.5) / 255`` in ``[-0.5, 0.5]``, one channel, 28 x 28;
- conv 5x5, 32 filters, 'SAME' padding, ReLU, 2x2 max-pool (stride 2);
- conv 5x5, 64 filters, 'SAME' padding, ReLU, 2x2 max-pool -> 7 x 7 x 64 = 3136;
- dense 3136 -> 512, ReLU, dropout (keep probability 0.5, training only);
- dense 512 -> 10 (logits); loss = mean softmax cross-entropy
  ``+ 5e-4 * (l2(fc1.W) + l2(fc1.b) + l2(fc2.W) + l2(fc2.b))`` with TF's
  ``l2_loss(x) = sum(x**2) / 2``;
- init: every weight truncated normal (stddev 0.1, cut at 2 stddev, as
  ``tf.truncated_normal``), conv1 bias 0, conv2 / fc1 / fc2 biases 0.1;
- SGD with momentum 0.9 (TF's ``MomentumOptimizer`` equals ``torch.optim.SGD`` with
  ``momentum=0.9, dampening=0``), learning rate ``0.01 * 0.95 ** floor(step * 64 / 55000)``
  (``tf.train.exponential_decay(..., staircase=True)``), batch 64, no shuffling: step
  ``s`` takes rows ``[o, o + 64)`` with ``o = (s * 64) % (55000 - 64)``.

The flatten order differs from TF's (NCHW here, NHWC there): a fixed permutation of the
3136 inputs of ``fc1``, immaterial with random initialisation.

Overparameterization (Section 8 of the paper): :func:`overparameterized_tutorial_net`
replaces each dense weight by a product ``W_N ... W_1`` of N factors (Eq. 1, via
:func:`depthaccel.overparameterize`); :class:`FactoredTutorialCNN` applies the factors one
after another (:func:`dense_forward`), and :func:`l2_penalty` puts the tutorial's L2
penalty on each factor (weight decay on every factor, as in Eq. 4) or on the product.
:func:`train_side_by_side` trains several nets on the same minibatches, dropout masks and
learning-rate schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from depthaccel.overparam import OverparamSummary, overparameterize
from depthaccel.overparam import factors as layer_factors

__all__ = [
    "DENSE_LAYERS",
    "FACTOR_INITS",
    "L2_TARGETS",
    "FactoredTutorialCNN",
    "History",
    "Schedule",
    "Splits",
    "TutorialCNN",
    "batch_offset",
    "dense_forward",
    "error_rate",
    "l2_penalty",
    "make_splits",
    "overparameterized_tutorial_net",
    "scale_images",
    "staircase_lr",
    "tf_l2_loss",
    "train_side_by_side",
    "truncated_normal_",
    "tutorial_init_",
    "tutorial_net",
]

PIXEL_DEPTH = 255.0
IMAGE_SIZE = 28
NUM_LABELS = 10
INIT_STDDEV = 0.1
L2_WEIGHT = 5e-4
#: How the factors of an overparameterized dense layer start (see
#: :func:`overparameterized_tutorial_net`).
FACTOR_INITS = ("tutorial", "random", "preserve", "residual")
#: Where the L2 penalty of an overparameterized dense layer applies.
L2_TARGETS = ("factors", "product")
DENSE_LAYERS = ("fc1", "fc2")


class TutorialCNN(nn.Module):
    """The tutorial's LeNet-5-like network; its dense layers are ``fc1`` and ``fc2`` (nn.Linear)."""

    def __init__(self, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear((IMAGE_SIZE // 4) ** 2 * 64, hidden)
        self.fc2 = nn.Linear(hidden, NUM_LABELS)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2, 2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(self.dropout(x))


def truncated_normal_(t: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Fill ``t`` like ``tf.truncated_normal(stddev=std)``: N(0, std^2) redrawn outside +-2 std."""
    with torch.no_grad():
        return nn.init.trunc_normal_(t, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def tutorial_init_(model: TutorialCNN, seed: int) -> TutorialCNN:
    """Initialise ``model`` in place as the tutorial does (weights N_trunc(0, 0.1^2); biases 0/0.1/0.1/0.1)."""
    gen = torch.Generator(device=model.conv1.weight.device).manual_seed(seed)
    with torch.no_grad():
        for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
            truncated_normal_(layer.weight, INIT_STDDEV, gen)
        model.conv1.bias.zero_()
        for layer in (model.conv2, model.fc1, model.fc2):
            layer.bias.fill_(0.1)
    return model


def tf_l2_loss(t: torch.Tensor) -> torch.Tensor:
    """TensorFlow's ``tf.nn.l2_loss``: ``sum(t**2) / 2``."""
    return t.pow(2).sum() / 2


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 images ``(n, 28, 28)`` -> float32 ``(n, 1, 28, 28)`` in [-0.5, 0.5]: ``(x - 127.5) / 255``."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (n, 28, 28), got {images.shape}")
    out = (images.astype(np.float32) - PIXEL_DEPTH / 2.0) / PIXEL_DEPTH
    return out[:, None, :, :]


def staircase_lr(
    step: int,
    *,
    base_lr: float = 0.01,
    decay_rate: float = 0.95,
    batch_size: int = 64,
    decay_examples: int = 55000,
) -> float:
    """The tutorial's learning rate at (0-based) step ``step``.

    ``lr = base_lr * decay_rate ** floor(step * batch_size / decay_examples)``
    (``tf.train.exponential_decay(base_lr, global_step * batch_size, decay_examples,
    decay_rate, staircase=True)``, with ``global_step = step`` before the update).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return base_lr * decay_rate ** math.floor(step * batch_size / decay_examples)


def batch_offset(step: int, batch_size: int, train_size: int) -> int:
    """The tutorial's minibatch start: ``(step * batch_size) % (train_size - batch_size)``."""
    if train_size <= batch_size:
        raise ValueError(
            f"training set ({train_size}) must be larger than the batch ({batch_size})"
        )
    return (step * batch_size) % (train_size - batch_size)


# ----------------------------------------------------------------- overparameterized


def dense_forward(layer: nn.Linear, x: torch.Tensor, factored: bool = True) -> torch.Tensor:
    """``layer(x)``; for an overparameterized Linear with ``factored``, computed as
    ``(((x W_1^T) W_2^T) ... W_N^T) + b`` without forming ``W_N ... W_1``."""
    factors = layer_factors(layer) if factored else None
    if factors is None:
        return layer(x)
    for f in factors[:-1]:
        x = F.linear(x, f)
    return F.linear(x, factors[-1], layer.bias)


class FactoredTutorialCNN(TutorialCNN):
    """The tutorial net whose dense layers may be overparameterized; with
    ``factored_forward`` they apply their factors one after another (:func:`dense_forward`:
    the same function and gradients up to round-off, and much cheaper for ``fc1``)."""

    def __init__(self, dropout: float = 0.5, factored_forward: bool = True) -> None:
        super().__init__(dropout=dropout)
        self.factored_forward = factored_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(dense_forward(self.fc1, x.flatten(1), self.factored_forward))
        return dense_forward(self.fc2, self.dropout(x), self.factored_forward)


def l2_penalty(model: TutorialCNN, on: str = "factors") -> torch.Tensor:
    """The tutorial's regulariser ``sum l2_loss(p)`` over the dense weights and biases.

    ``l2_loss(p) = sum(p**2) / 2``. For an overparameterized layer the weight terms are
    ``sum_j l2_loss(W_j)`` (``on="factors"``) or ``l2_loss(W_N ... W_1)`` (``"product"``).
    """
    if on not in L2_TARGETS:
        raise ValueError(f"l2 target must be one of {L2_TARGETS}, got {on!r}")
    total = model.fc1.bias.new_zeros(())
    for name in DENSE_LAYERS:
        layer = getattr(model, name)
        factors = layer_factors(layer)
        weights = factors if (factors is not None and on == "factors") else [layer.weight]
        for w in weights:
            total = total + tf_l2_loss(w)
        total = total + tf_l2_loss(layer.bias)
    return total


def tutorial_net(
    seed: int,
    *,
    dropout: float = 0.5,
    factored_forward: bool = True,
    channels_last: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FactoredTutorialCNN:
    """The tutorial net initialised as the tutorial does with ``seed``
    (:func:`tutorial_init_`), on ``device`` in ``dtype`` (channels-last convolutions if
    asked: speed only)."""
    net = FactoredTutorialCNN(dropout, factored_forward)
    net = tutorial_init_(net, seed).to(device=device, dtype=dtype)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def overparameterized_tutorial_net(
    seed: int,
    *,
    depth: int = 2,
    hidden: str | int = "out",
    factor_init: str = "tutorial",
    factor_std: float = 0.1,
    dropout: float = 0.5,
    factored_forward: bool = True,
    channels_last: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[FactoredTutorialCNN, OverparamSummary]:
    """(net, overparameterize summary): the tutorial net (``seed``) with its dense layers
    overparameterized to depth ``depth`` (hidden width ``hidden``, see
    :func:`depthaccel.overparameterize`) and the factors initialised per ``factor_init``:

    - ``"tutorial"``: every factor truncated normal with stddev ``factor_std``, like every
      matrix of the tutorial;
    - ``"random"``: ``overparameterize(init="random")`` (PyTorch's default layer init);
    - ``"preserve"``: balanced factors of the tutorial's initial weight (same function);
    - ``"residual"``: ``W_1`` = the tutorial's initial weight, ``W_2 .. W_N`` = identity
      (same function).

    The random draws use seed ``seed + 1``, so two nets with the same arguments start
    identical; the convolutions and biases equal those of ``tutorial_net(seed)``.
    """
    if factor_init not in FACTOR_INITS:
        raise ValueError(f"factor_init must be one of {FACTOR_INITS}, got {factor_init!r}")
    kw = {"dropout": dropout, "factored_forward": factored_forward, "device": device}
    kw.update(channels_last=channels_last, dtype=dtype)
    original = tutorial_net(seed, **kw)
    over = tutorial_net(seed, **kw)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    over, summary = overparameterize(
        over,
        depth=depth,
        hidden=hidden,
        init="preserve" if factor_init == "preserve" else "random",
        include=list(DENSE_LAYERS),
        generator=gen,
    )
    with torch.no_grad():
        for name in DENSE_LAYERS:
            factors = layer_factors(getattr(over, name))
            if factor_init == "tutorial":
                for f in factors:
                    truncated_normal_(f, factor_std, gen)
            elif factor_init == "residual":
                factors[0].copy_(getattr(original, name).weight)
                for f in factors[1:]:
                    f.copy_(torch.eye(*f.shape, dtype=f.dtype, device=f.device))
    return over, summary


# -------------------------------------------------------------------------- training


@dataclass
class Splits:
    """Tensors on the device: train (x, y), validation (x, y), test (x, y)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def make_splits(
    data: Any,
    *,
    train_size: int,
    validation_size: int = 5000,
    validation_eval: int = 5000,
    test_size: int = 10000,
    channels_last: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Splits:
    """The tutorial's split of ``data`` (``depthaccel.data.load_mnist``): the first
    ``validation_size`` training images are held out (the first ``validation_eval`` of
    them scored), the next ``train_size`` train, the first ``test_size`` test images
    test; pixels scaled to ``(x - 127.5) / 255``."""

    def tx(images: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(scale_images(images)).to(device=device, dtype=dtype)
        # one channel: channels_last has the same memory layout, but says so to the convs
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    def ty(labels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)

    v, n = validation_size, train_size
    return Splits(
        train_x=tx(data.train_images[v : v + n]),
        train_y=ty(data.train_labels[v : v + n]),
        val_x=tx(data.train_images[:validation_eval]),
        val_y=ty(data.train_labels[:validation_eval]),
        test_x=tx(data.test_images[:test_size]),
        test_y=ty(data.test_labels[:test_size]),
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
    step_seconds: list[float] = dataclasses.field(default_factory=list)  # wall-clock, per step


@dataclass(frozen=True)
class Schedule:
    """The tutorial's training schedule (defaults: the tutorial's values).

    ``steps`` minibatch steps of ``batch_size`` in the tutorial's sequential order over
    ``train_size`` images; learning rate ``staircase_lr`` (``base_lr``, ``decay_rate``,
    one decay per ``train_size`` images); SGD with ``momentum``; loss = mean
    cross-entropy + ``l2_weight * l2_penalty(net, l2_on)``; with ``same_dropout_masks``
    the global RNG is re-seeded per step (``seed * 7919 + step``), identically for every
    net; validation every ``eval_every`` steps (0: only at the end) when
    ``validation_eval``; stop (every net at the same step) after ``time_limit_s``.
    """

    steps: int
    train_size: int
    batch_size: int = 64
    base_lr: float = 0.01
    decay_rate: float = 0.95
    momentum: float = 0.9
    l2_weight: float = L2_WEIGHT
    l2_on: str = "factors"
    seed: int = 66478
    same_dropout_masks: bool = True
    eval_every: int = 0
    validation_eval: int = 0
    time_limit_s: float | None = None


def _sgd(model: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=schedule.base_lr, momentum=schedule.momentum)


def train_side_by_side(
    nets: dict[str, nn.Module],
    splits: Splits,
    schedule: Schedule,
    *,
    l2_on: dict[str, str] | None = None,
    optimizers: dict[str, Callable[[nn.Module, Schedule], torch.optim.Optimizer]] | None = None,
    progress: bool = False,
    desc: str = "mnist",
    start: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
) -> tuple[dict[str, History], list[float], int]:
    """Train the nets side by side, step by step on the same minibatches.

    ``l2_on`` maps a net's name to where its L2 penalty applies (default
    ``schedule.l2_on``); ``optimizers`` maps a net's name to ``make(net, schedule) ->
    optimizer`` (default: SGD with the schedule's momentum, as the tutorial). The
    learning rate of every parameter group is set to the schedule's rate each step.

    Checkpoints: with ``checkpoint`` and ``checkpoint_every = K``, after every K-th step
    (not the last) ``checkpoint(state)`` gets a fresh dict (``CHECKPOINT_FORMAT``: steps
    done, every net's and optimizer's ``state_dict``, the histories and learning rates so
    far; tensors, numbers, strings, lists and dicts only, so ``torch.load(...,
    weights_only=True)`` reads it back). ``start=state`` continues from such a state,
    for nets and optimizers built as for the first call: the per-step re-seeded dropout
    masks (``schedule.same_dropout_masks``, required) and the restored optimizer state
    make the rest of the run bit-identical to an uninterrupted one (tested). A time
    limit counts from this call's start.

    With ``schedule.same_dropout_masks`` the global RNG is re-seeded every step inside
    ``torch.random.fork_rng``: the caller's RNG state (CPU, and the nets' CUDA devices)
    is as it was before the call.

    Returns (histories by name, learning rate per step, steps done). Stops early (all nets
    at the same step) when ``schedule.time_limit_s`` is exceeded; raises
    FloatingPointError on a non-finite loss.
    """
    if (start is not None or checkpoint is not None) and not schedule.same_dropout_masks:
        raise ValueError("checkpoints need schedule.same_dropout_masks (reproducible masks)")
    if checkpoint is not None and (isinstance(checkpoint_every, bool) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    rng = contextlib.nullcontext()
    if schedule.same_dropout_masks:  # re-seeded per step: keep the caller's RNG state
        devices = sorted(
            {q.device.index or 0 for m in nets.values() for q in m.parameters() if q.is_cuda}
        )
        rng = torch.random.fork_rng(devices=devices)
    with rng:
        opts = {k: (optimizers or {}).get(k, _sgd)(m, schedule) for k, m in nets.items()}
        hist = {k: History() for k in nets}
        lrs: list[float] = []
        first = 0
        if start is not None:
            first = _restore(start, nets, opts, hist, lrs, schedule)
        for m in nets.values():
            m.train()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=schedule.steps, initial=first, desc=desc, unit="step", mininterval=2.0)
        t_start = time.perf_counter()
        step = first - 1
        for step in range(first, schedule.steps):
            lr = staircase_lr(
                step,
                base_lr=schedule.base_lr,
                decay_rate=schedule.decay_rate,
                batch_size=schedule.batch_size,
                decay_examples=schedule.train_size,
            )
            lrs.append(lr)
            off = batch_offset(step, schedule.batch_size, schedule.train_size)
            xb = splits.train_x[off : off + schedule.batch_size]
            yb = splits.train_y[off : off + schedule.batch_size]
            for k, model in nets.items():
                t0 = time.perf_counter()
                if schedule.same_dropout_masks:
                    torch.manual_seed(schedule.seed * 7919 + step)
                opt = opts[k]
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad(set_to_none=True)
                ce = F.cross_entropy(model(xb), yb)
                target = (l2_on or {}).get(k, schedule.l2_on)
                loss = ce + schedule.l2_weight * l2_penalty(model, target)
                loss.backward()
                opt.step()
                lv, cv = loss.item(), ce.item()
                if not (math.isfinite(lv) and math.isfinite(cv)):
                    raise FloatingPointError(
                        f"{desc}: net {k!r} diverged at step {step} (batch loss {lv})"
                    )
                hist[k].loss.append(lv)
                hist[k].ce.append(cv)
                dt = time.perf_counter() - t0
                hist[k].seconds += dt
                hist[k].step_seconds.append(dt)
            every = schedule.eval_every
            if every and (step + 1) % every == 0 and schedule.validation_eval:
                for k, model in nets.items():
                    hist[k].val_steps.append(step + 1)
                    hist[k].val_error.append(error_rate(model, splits.val_x, splits.val_y))
            if bar is not None:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix({k: f"{h.loss[-1]:.3f}" for k, h in hist.items()})
            if checkpoint is not None and (step + 1) % checkpoint_every == 0:
                if step + 1 < schedule.steps:
                    checkpoint(_snapshot(step + 1, nets, opts, hist, lrs))
            if (
                schedule.time_limit_s is not None
                and time.perf_counter() - t_start > schedule.time_limit_s
            ):
                break
        if bar is not None:
            bar.close()
        done = max(step + 1, first)
        if schedule.validation_eval:
            for k, model in nets.items():
                if hist[k].val_steps[-1:] != [done]:
                    hist[k].val_steps.append(done)
                    hist[k].val_error.append(error_rate(model, splits.val_x, splits.val_y))
        return hist, lrs, done


CHECKPOINT_FORMAT = "depthaccel.mnist_tutorial.checkpoint/1"


def _snapshot(
    steps: int,
    nets: dict[str, nn.Module],
    opts: dict[str, torch.optim.Optimizer],
    hist: dict[str, History],
    lrs: list[float],
) -> dict[str, Any]:
    """A copy (nothing shared with the live nets) of the training state after ``steps``."""
    import copy

    return {
        "format": CHECKPOINT_FORMAT,
        "steps": steps,
        "nets": {k: copy.deepcopy(m.state_dict()) for k, m in nets.items()},
        "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in opts.items()},
        "history": {k: dataclasses.asdict(h) for k, h in hist.items()},
        "lrs": list(lrs),
    }


def _restore(
    state: dict[str, Any],
    nets: dict[str, nn.Module],
    opts: dict[str, torch.optim.Optimizer],
    hist: dict[str, History],
    lrs: list[float],
    schedule: Schedule,
) -> int:
    """Load ``state`` (from ``_snapshot``) into the nets, optimizers, histories and
    learning rates; return the steps it had done. ValueError if it does not fit."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a {CHECKPOINT_FORMAT} state")
    steps = int(state["steps"])
    if set(state["nets"]) != set(nets) or not 0 < steps <= schedule.steps:
        raise ValueError(
            f"the checkpoint (nets {sorted(state['nets'])}, {steps} steps) does not fit this "
            f"call (nets {sorted(nets)}, {schedule.steps} steps)"
        )
    for k, m in nets.items():
        m.load_state_dict(state["nets"][k])
        opts[k].load_state_dict(state["optimizers"][k])
        hist[k] = History(**state["history"][k])
    lrs[:] = state["lrs"]
    return steps
