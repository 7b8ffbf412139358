"""Settings shared by the experiments that train the MNIST tutorial net (``fig5-right``,
``mnist-e2e``): the tutorial's data split, schedule and net, and the analysis of the
batch-loss curves. Each experiment's ``Config`` extends :class:`TutorialConfig`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthaccel.models import mnist_tutorial as mt
from depthaccel.reporting import Curve, write_curves_csv

__all__ = [
    "TutorialConfig",
    "TutorialMeasured",
    "loss_axis",
    "common_steps",
    "factor_shapes_text",
    "final_validation_errors",
    "history_curves",
    "measured_fields",
    "plot_histories",
    "renderer",
    "train_seconds",
    "CHECKPOINT_EVERY",
    "checkpointing",
    "mnist_fingerprint",
    "stored_net_tasks",
    "train_net_tasks",
]

_SCHEDULE_FIELDS = (
    "train_size", "batch_size", "base_lr", "decay_rate", "momentum", "l2_weight", "l2_on",
    "seed", "eval_every", "validation_eval", "time_limit_s",
)  # fmt: skip


@dataclass(frozen=True)
class TutorialConfig:
    """The tutorial's settings (defaults: the tutorial, 10 epochs of 55000 images).

    Steps: ``int(epochs * train_size) // batch_size`` (the tutorial's formula: 8593 for 10
    epochs of 55000 images). The learning rate decays once per ``train_size`` images.
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
    factor_init: str = "tutorial"
    factor_std: float = 0.1
    l2_on: str = "factors"
    smooth_window: int = 100
    checkpoints: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)
    max_test_error: float | None = 1.5  # percent; None: report test error without a claim
    time_limit_s: float | None = None  # stop every net at the same step when exceeded
    # torch intra-op threads during the run (None: unchanged). 1 by default: these small
    # convolutions gain little from a second thread, and on a shared 2-core machine two
    # threads per process were measured 3-8x slower per step than one (spin-wait thrash).
    threads: int | None = 1
    channels_last: bool = True  # memory layout of convolutions (speed only)

    def n_steps(self) -> int:
        return int(self.epochs * self.train_size) // self.batch_size

    def validate(self) -> None:
        """ValueError naming the first bad field (the shared fields)."""
        if self.factor_init not in mt.FACTOR_INITS:
            raise ValueError(
                f"factor_init must be one of {mt.FACTOR_INITS}, got {self.factor_init!r}"
            )
        if self.l2_on not in mt.L2_TARGETS:
            raise ValueError(f"l2_on must be one of {mt.L2_TARGETS}, got {self.l2_on!r}")
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

    @contextlib.contextmanager
    def torch_threads(self) -> Iterator[None]:
        """Run the block with ``threads`` torch intra-op threads (None: unchanged); the
        previous count is restored afterwards."""
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def schedule(self, *, same_dropout_masks: bool = True) -> mt.Schedule:
        """The training schedule of these settings (the tutorial's, by default)."""
        shared = {f: getattr(self, f) for f in _SCHEDULE_FIELDS}
        return mt.Schedule(steps=self.n_steps(), same_dropout_masks=same_dropout_masks, **shared)

    # --- what an experiment's Config says about one of its nets (see train_net) ---

    def build_net(self, item: Any, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        """The net of ``item``, initialised (the experiment's Config defines it)."""
        raise NotImplementedError

    def l2_target(self, item: Any) -> str:
        """What the L2 penalty of ``item``'s net applies to: "product" or "factors"."""
        raise NotImplementedError

    def optimizers(self, item: Any) -> dict[str, Any] | None:
        """``mt.train_side_by_side``'s optimizers for ``item`` (None: the tutorial's SGD
        with momentum)."""
        return None

    def labels(self) -> dict[str, str]:
        """Each net's name in the figure and the curves, by its history key (the
        experiment's Config defines it)."""
        raise NotImplementedError

    def shares_dropout_masks(self) -> bool:
        """Whether the global RNG is re-seeded per step (the same masks for every net)."""
        return True

    def net_options(self) -> dict[str, Any]:
        """Keyword arguments of ``mt.tutorial_net`` / ``mt.overparameterized_tutorial_net``
        that these settings fix (dropout, memory layout)."""
        return {"dropout": self.dropout, "channels_last": self.channels_last}

    @classmethod
    def ci_sized(cls, **fields: Any) -> TutorialConfig:
        """A CI-sized run: 1280 training images, validation only at the end, a short
        smoothing window, two checkpoints, no test-error claim; ``fields`` on top."""
        ci = {"train_size": 1280, "eval_every": 0, "smooth_window": 5}
        ci.update(checkpoints=(0.5, 1.0), max_test_error=None)
        return cls(**{**ci, **fields})

    def data(self, ctx: Any) -> tuple[Any, mt.Splits, torch.device, torch.dtype]:
        """(MNIST, split, device, dtype): MNIST from ``ctx.data_dir``
        (``depthaccel.data.load_mnist``) split per these settings on ``ctx.device`` in
        ``ctx.dtype`` (float32 when unset)."""
        from depthaccel.data import load_mnist

        dev, dtype = torch.device(ctx.device), ctx.dtype or torch.float32
        data = load_mnist(ctx.data_dir)
        return data, self.splits(data, dev, dtype), dev, dtype

    def splits(
        self, data: Any, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> mt.Splits:
        """The tutorial's split of ``data`` (``depthaccel.data.load_mnist``) per these
        settings, on ``device`` in ``dtype``."""
        return mt.make_splits(
            data,
            train_size=self.train_size,
            validation_size=self.validation_size,
            validation_eval=self.validation_eval,
            test_size=self.test_size,
            channels_last=self.channels_last,
            device=device,
            dtype=dtype,
        )


#: Steps between two checkpoints of a net trained as a stored task (about 5% of the
#: tutorial's 8593 steps; a checkpoint of the tutorial net with its optimizer is ~15 MB).
CHECKPOINT_EVERY = 500


def train_net(
    item: Any,
    start: bytes | None = None,
    emit: Any = None,
    *,
    cfg: TutorialConfig,
    data: Any,
    device: str,
    dtype: torch.dtype,
    progress: bool = False,
) -> tuple[mt.History, list[float], int, float]:
    """Train one net of a tutorial experiment on the tutorial's schedule: (history,
    learning rate per step, steps done, test error in %). ``item`` names the net (a
    dataclass with a ``key``); ``cfg`` builds it and says where its L2 goes and which
    optimizer it gets (:meth:`TutorialConfig.build_net`, ``l2_target``, ``optimizers``).
    With shared dropout masks (the global RNG re-seeded per step) this is exactly the
    net's part of ``mt.train_side_by_side`` over all the experiment's nets: the same
    minibatches, masks and init, hence the same numbers (tested). ``start``, ``emit``:
    its checkpoints (:func:`checkpointing`). The one task function of fig5-right and
    mnist-e2e."""
    dev = torch.device(device)
    splits = cfg.splits(data, dev, dtype)
    net = cfg.build_net(item, dev, dtype)
    hist, lrs, done = mt.train_side_by_side(
        {item.key: net},
        splits,
        cfg.schedule(same_dropout_masks=cfg.shares_dropout_masks()),
        l2_on={item.key: cfg.l2_target(item)},
        optimizers=cfg.optimizers(item),
        progress=progress,
        desc=f"{type(cfg).__module__.rsplit('.', 1)[-1]} {item.key}",
        **checkpointing(start, emit),
    )
    return hist[item.key], lrs, done, mt.error_rate(net, splits.test_x, splits.test_y)


def checkpointing(start: bytes | None, emit: Any, every: int | None = None) -> dict:
    """Keyword arguments of ``mt.train_side_by_side`` for a net trained as a resumable
    stored task: ``start`` (the bytes of its latest checkpoint, or None) unpacked with
    ``torch.load(weights_only=True)``, and a ``checkpoint`` that packs the state with
    ``torch.save`` and hands it to ``emit(steps, bytes)`` (None: no checkpoints) every
    ``every`` steps (default ``CHECKPOINT_EVERY``)."""
    import io

    def pack(state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        emit(int(state["steps"]), buf.getvalue())

    begin = None
    if start is not None:
        begin = torch.load(io.BytesIO(start), map_location="cpu", weights_only=True)
    return {
        "start": begin,
        "checkpoint": pack if emit is not None else None,
        "checkpoint_every": CHECKPOINT_EVERY if every is None else every,
    }


def mnist_fingerprint(data: Any) -> str:
    """sha256 hex of the MNIST arrays (``depthaccel.data.load_mnist``): shapes and bytes."""
    import hashlib

    h = hashlib.sha256()
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        a = np.ascontiguousarray(getattr(data, name))
        h.update(f"{name}{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stored_net_tasks(
    kind: str, cfg: TutorialConfig, data: Any, device: Any, dtype: torch.dtype
) -> Any:
    """How the nets of a tutorial experiment are kept in the results store
    (:class:`~depthaccel.experiments.context.StoredTasks`): each task trains one net
    (the item, a dataclass) and returns ``(History, learning rates, steps done, test
    error %)``; the key names the item, every setting of ``cfg``, device type, dtype and
    the data's fingerprint. A net stopped by ``time_limit_s`` before its last step is
    not stored (another run would stop it elsewhere)."""
    import dataclasses

    from depthaccel.experiments.context import StoredTasks

    shared = {
        "settings": dataclasses.asdict(cfg),
        "device": torch.device(device).type,
        "dtype": str(dtype).removeprefix("torch."),
        "data": mnist_fingerprint(data),
    }
    steps = cfg.n_steps()

    def encode(r: tuple) -> dict[str, Any]:
        h, lrs, done, err = r
        return {"history": dataclasses.asdict(h), "lrs": list(lrs), "done": done, "err": err}

    def decode(d: dict[str, Any]) -> tuple:
        return mt.History(**d["history"]), d["lrs"], int(d["done"]), float(d["err"])

    return StoredTasks(
        kind=kind,
        config=lambda item: {"item": dataclasses.asdict(item), **shared},
        encode=encode,
        decode=decode,
        label=lambda item: f"{kind}: {getattr(item, 'key', item)}",
        keep=lambda r: r[2] >= steps,
        resumable=True,
    )


def train_net_tasks(
    ctx: Any,
    train_net: Any,
    items: list[Any],
    *,
    kind: str,
    cfg: TutorialConfig,
    data: Any,
    dtype: torch.dtype,
) -> dict[str, tuple[mt.History, list[float], int, float]]:
    """Each item (a dataclass with a ``key``) trained by ``train_net(item, start, emit,
    cfg=, data=, device=, dtype=, progress=)`` as a task of its own (``ctx.map``: in
    parallel on an executor, each asking for a GPU under ``--device cuda``), kept in the
    results store (:func:`stored_net_tasks`) and, with a store, checkpointed every
    ``CHECKPOINT_EVERY`` steps (``start``/``emit``: :func:`checkpointing`); results by
    key."""
    import functools

    task = functools.partial(
        train_net,
        cfg=cfg,
        data=data,
        device=str(ctx.device),
        dtype=dtype,
        progress=ctx.progress and ctx.executor is None,
    )
    out = ctx.map(
        task,
        items,
        gpu=torch.device(ctx.device).type == "cuda",
        stored=stored_net_tasks(kind, cfg, data, ctx.device, dtype),
    )
    return {item.key: o for item, o in zip(items, out, strict=True)}


@dataclass
class TutorialMeasured:
    """The common part of what an experiment on the tutorial net measured (each
    experiment's ``Measured`` extends it): the nets' per-step histories (cut to the steps
    all of them did), the learning rate at the first and last step and the test errors."""

    quick: bool
    config: Any
    steps_done: int
    hist: dict[str, mt.History]
    lr_first_last: tuple[float, float]
    test_error_pct: dict[str, float]


def loss_axis(ax: Any, ylabel: str, title: str) -> None:
    """A batch-loss panel's axes: log y, integer iteration ticks, labels, title, grid."""
    from matplotlib.ticker import MaxNLocator

    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)


#: The batch-loss panel's y-label, and the cross-entropy panel (History field, title,
#: y-label) of a tutorial-net figure.
_LOSS_YLABEL = r"$\mathrm{CE} + \lambda \|W\|^2$"
_CE_PANEL = ("ce", "batch cross-entropy", r"$\mathrm{CE}$ (batch mean)")


def plot_histories(axes: Any, hist: dict[str, mt.History], loss_title: str, draw: Any) -> None:
    """The two panels of a tutorial-net figure: the batch loss (CE + L2, titled
    ``loss_title``) on ``axes[0]`` and the batch cross-entropy on ``axes[1]``;
    ``draw(ax, field, net, x, y)`` draws one net's per-step values ``y`` (at the 1-based
    steps ``x``), then each panel gets :func:`loss_axis`."""
    for ax, (key, title, ylabel) in zip(
        axes, (("loss", loss_title, _LOSS_YLABEL), _CE_PANEL), strict=True
    ):
        for k, h in hist.items():
            y = np.asarray(getattr(h, key))
            draw(ax, key, k, np.arange(1, len(y) + 1), y)
        loss_axis(ax, ylabel, title)


def final_validation_errors(hist: dict[str, mt.History]) -> dict[str, float | None]:
    """Each net's last validation error (%), None for a net never validated."""
    return {k: (h.val_error[-1] if h.val_error else None) for k, h in hist.items()}


def train_seconds(hist: dict[str, mt.History]) -> dict[str, float]:
    """Each net's training time (s)."""
    return {k: h.seconds for k, h in hist.items()}


def common_steps(
    results: dict[str, tuple[mt.History, list[float], int, float]],
) -> tuple[dict[str, mt.History], list[float], int, dict[str, float]]:
    """Per-net task results ``(history, learning rates, steps done, test error)`` -> (the
    histories cut to the fewest steps any net did, those steps' learning rates, that
    number of steps, test errors). A time limit can stop separate tasks at different
    steps; the curves are compared over the steps all of them did."""
    import dataclasses

    done = min(r[2] for r in results.values())
    hist = {}
    for k, (h, _, _, _) in results.items():
        keep = [i for i, s in enumerate(h.val_steps) if s <= done]
        hist[k] = dataclasses.replace(
            h,
            loss=h.loss[:done],
            ce=h.ce[:done],
            step_seconds=h.step_seconds[:done],
            val_steps=[h.val_steps[i] for i in keep],
            val_error=[h.val_error[i] for i in keep],
        )
    lrs = list(next(iter(results.values()))[1][:done])
    return hist, lrs, done, {k: r[3] for k, r in results.items()}


def history_curves(hist: dict[str, mt.History], labels: dict[str, str]) -> list[Curve]:
    """Each net's per-step batch loss and cross-entropy (panels ``batch_loss``,
    ``batch_cross_entropy``, against the 1-based step) and its validation error
    (``val_error_pct``, at the steps it was measured)."""
    curves = []
    for k, h in hist.items():
        it = np.arange(1, len(h.loss) + 1)
        curves.append(Curve(labels[k], it, np.asarray(h.loss), panel="batch_loss"))
        curves.append(Curve(labels[k], it, np.asarray(h.ce), panel="batch_cross_entropy"))
        if h.val_steps:
            curves.append(
                Curve(labels[k], np.asarray(h.val_steps), np.asarray(h.val_error), "val_error_pct")
            )
    return curves


def measured_fields(
    ctx: Any, config: TutorialConfig, steps: tuple, data: Any, dtype: torch.dtype, summary: Any
) -> dict[str, Any]:
    """The fields every tutorial experiment's ``Measured`` takes from its run: the
    :class:`TutorialMeasured` fields of ``steps`` (:func:`common_steps`'s result), the
    factor shapes of ``summary`` (an ``overparameterize`` summary) and the run's facts
    (torch threads, device, dtype, data source). Call it inside ``config.torch_threads()``."""
    hist, lrs, done, test_err = steps
    return {
        "quick": ctx.quick,
        "config": config,
        "steps_done": done,
        "hist": hist,
        "lr_first_last": (lrs[0], lrs[-1]),
        "test_error_pct": test_err,
        "factor_shapes": factor_shapes_text(summary),
        "torch_threads": torch.get_num_threads(),
        "device": ctx.device,
        "dtype": str(dtype)[6:],
        "data_source": ctx.data_source(data) if hasattr(data, "source") else "",
    }


def renderer(figure: str, plot: Any) -> Callable[[TutorialMeasured, Any, Path], list[Path]]:
    """A tutorial experiment's ``render(measured, claims, outdir)``: every net's curves
    (``curves.csv.gz``: :func:`history_curves`, named by ``config.labels()``) and its
    figure ``figure``, drawn by ``plot(path, measured)``."""

    def render(measured: TutorialMeasured, claims: Any, outdir: Path) -> list[Path]:
        curves = history_curves(measured.hist, measured.config.labels())
        csv_path = write_curves_csv(outdir / "curves.csv.gz", curves)
        return [plot(outdir / figure, measured), csv_path]

    return render


def factor_shapes_text(summary: Any) -> str:
    """The factor shapes of each overparameterized layer of an ``overparameterize``
    summary, e.g. ``fc1: 512x3136 -> 512x512, fc2: 10x512 -> 10x10``."""
    return ", ".join(
        f"{c.name}: " + " -> ".join("x".join(map(str, s)) for s in c.factor_shapes)
        for c in summary.layers
    )
