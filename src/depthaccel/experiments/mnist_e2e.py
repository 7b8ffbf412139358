"""Depth without depth on MNIST: does the end-to-end preconditioner alone give the
overparameterized net's speed-up?

The paper's explanation of Fig. 5 right is Theorem 1: gradient descent on a product of
matrices moves the product by the preconditioned rule of Eq. 10,

    W <- W - eta * (P_W(G) + lambda*N*W),
    P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N},

so one could get depth's acceleration with the original layers and an optimizer that
applies ``P_W`` (:class:`depthaccel.EndToEndSGD`). The paper raises this but does not
test it. Here TensorFlow's MNIST tutorial net is trained three ways, side by side on the
same minibatches, dropout masks and learning-rate schedule (the tutorial's: SGD with
momentum 0.9, ``0.01 * 0.95^epoch``, batch 64, 10 epochs, loss = cross-entropy +
``5e-4 * l2_loss`` of the dense weights and biases):

- ``original``: the tutorial net with ``torch.optim.SGD``;
- ``overparameterized``: each dense weight a product of two (hidden width = output width;
  every factor truncated normal 0.1, as the tutorial draws every matrix), L2 on the
  product, SGD (fig5-right's product-L2 configuration);
- ``e2e``: the original net, with ``EndToEndSGD(depth=2, momentum=0.9)`` on the dense
  weights (``precondition_every=K``, the SVD recomputed every K steps) and SGD with
  momentum on the convolutions and biases (the same optimizer, ``depth=1`` group). The
  L2 term stays in the loss, so the preconditioned gradient includes it: to first order
  that is what the product-L2 overparameterized net does.

Claims: the e2e net reaches the original net's smoothed batch-loss levels in a number of
iterations similar to the overparameterized net's (at most ``similar`` times as many),
and the wall-clock time per step of each net. Differences from a strict first-order
equivalence, stated in the notes: the overparameterized net's factors are not balanced
and its end-to-end matrix starts elsewhere (product of two random factors), and momentum
on the factors is not momentum on the end-to-end direction.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from depthaccel.experiments import tutorial_config
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.mnist_analysis import (
    iterations_to_levels,
    ratio_of_means,
    similar,
    smooth,
)
from depthaccel.experiments.results import Claim
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.models import mnist_tutorial as mt
from depthaccel.optim import EndToEndSGD
from depthaccel.reporting import finish_figure, pyplot

NAME = "mnist-e2e"
TITLE = (
    "MNIST tutorial net: original vs overparameterized (depth-2 dense) vs the original with "
    "EndToEndSGD(depth=2) on its dense layers; claim: the preconditioner alone gives the "
    "overparameterized net's speed-up"
)
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "TensorFlow's MNIST tutorial in PyTorch ({measured.device}, {measured.dtype}): "
    "{measured.steps_done} steps of batch {config.batch_size} on "
    "{config.train_size} images, original vs overparameterized vs "
    "EndToEndSGD(depth={config.depth}, "
    "precondition_every={config.precondition_every})."
)
NETS = ("original", "overparameterized", "e2e")


@dataclass(frozen=True)
class Config(tutorial_config.TutorialConfig):
    """Settings of the experiment (defaults: the tutorial, 10 epochs = ``full()``; the
    shared fields: :class:`~depthaccel.experiments.tutorial_config.TutorialConfig`)."""

    l2_on: str = "product"  # the overparameterized net's L2 target
    # SVD of each dense weight every K steps (K = 1: exact Eq. 10). 10 by measurement:
    # benchmarks/precondition_every_gap.py --mnist-steps (see benchmarks/README.md)
    precondition_every: int = 10
    similar: float = 1.25  # e2e may need at most this many times the overparam. iterations
    # steps of the separate timing run (the three nets side by side, interleaved per step,
    # fresh from their init; a multiple of precondition_every averages its SVD refreshes)
    timing_steps: int = 100

    @classmethod
    def full(cls) -> Config:
        """The tutorial's 10 epochs (8593 steps), with a 3-hour safety limit (all nets stop
        at the same step; the report says so)."""
        return cls(time_limit_s=3 * 3600.0)

    @classmethod
    def quick(cls) -> Config:
        """CI size: 20 steps on 1280 images, small evaluations (claims not assessed)."""
        return cls.ci_sized(epochs=1.0, validation_eval=128, test_size=256, timing_steps=10)

    def build_net(self, item: Any, device: torch.device, dtype: torch.dtype) -> nn.Module:
        # all three built, in order, so each net's init is the one it gets side by side
        return build_nets(self, device, dtype)[0][item.key]

    def l2_target(self, item: Any) -> str:
        return _l2_on(self, item.key)

    def optimizers(self, item: Any) -> dict[str, Any] | None:
        return _optimizers(self, item.key)

    def labels(self) -> dict[str, str]:
        return {
            "original": "original (SGD + momentum)",
            "overparameterized": f"overparameterized (depth-{self.depth} dense, L2 on the "
            f"{self.l2_on}; SGD + momentum)",
            "e2e": f"original + EndToEndSGD(depth={self.depth}, momentum={self.momentum}, "
            f"precondition_every={self.precondition_every}) on the dense layers",
        }

    def validate(self) -> None:
        """ValueError naming the first bad field."""
        super().validate()
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 2:
            raise ValueError(f"depth must be an integer >= 2, got {self.depth!r}")
        if (
            isinstance(self.precondition_every, bool)
            or not isinstance(self.precondition_every, int)
            or self.precondition_every < 1
        ):
            raise ValueError(
                f"precondition_every must be an integer >= 1, got {self.precondition_every!r}"
            )
        if not (math.isfinite(self.similar) and self.similar > 0):
            raise ValueError(f"similar must be a finite number > 0, got {self.similar}")
        if isinstance(self.timing_steps, bool) or not isinstance(self.timing_steps, int):
            raise ValueError(f"timing_steps must be an integer >= 1, got {self.timing_steps!r}")
        if self.timing_steps < 1:
            raise ValueError(f"timing_steps must be an integer >= 1, got {self.timing_steps!r}")


# ------------------------------------------------------------------------ the three nets


def e2e_optimizer(
    net: mt.TutorialCNN,
    schedule: mt.Schedule,
    *,
    depth: float,
    precondition_every: int,
    precondition_dtype: torch.dtype | None = None,
) -> EndToEndSGD:
    """``EndToEndSGD`` for the tutorial net: Eq. 10 of depth ``depth`` on the dense
    weights (fc1, fc2), plain SGD (``depth=1``) on the convolutions and all biases; the
    schedule's momentum everywhere (torch.optim.SGD's rule on the preconditioned
    direction). ``precondition_dtype``: the dense layers' amortised cache (None: their
    own dtype)."""
    dense = [getattr(net, name).weight for name in mt.DENSE_LAYERS]
    rest = [p for p in net.parameters() if all(p is not w for w in dense)]
    group: dict[str, Any] = {
        "params": dense,
        "depth": depth,
        "precondition_every": precondition_every,
    }
    if precondition_dtype is not None:
        group["precondition_dtype"] = precondition_dtype
    return EndToEndSGD(
        [group, {"params": rest, "depth": 1}],
        lr=schedule.base_lr,
        depth=1,
        momentum=schedule.momentum,
    )


def build_nets(
    cfg: Config, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[dict[str, nn.Module], Any]:
    """(nets by name, overparameterize summary): original and e2e start identical (the
    tutorial's init with ``cfg.seed``); the overparameterized net shares their
    convolutions and biases, its dense factors drawn per ``cfg.factor_init``."""
    cfg.validate()
    kw = dict(device=device, dtype=dtype, **cfg.net_options())
    over, summary = mt.overparameterized_tutorial_net(
        cfg.seed, depth=cfg.depth, factor_init=cfg.factor_init, factor_std=cfg.factor_std, **kw
    )
    nets = {
        "original": mt.tutorial_net(cfg.seed, **kw),
        "overparameterized": over,
        "e2e": mt.tutorial_net(cfg.seed, **kw),
    }
    return nets, summary


BF16 = "e2e, bfloat16 preconditioner"  # timed only (precondition_dtype=torch.bfloat16)
# where each net's L2 applies ("factors" of a plain net: its own weights); the
# overparameterized net: cfg.l2_on
L2_ON = {"original": "factors", "e2e": "factors", BF16: "factors"}


@dataclass(frozen=True)
class NetTask:
    """One net of the experiment (``key`` in ``NETS``), trained as a task of its own."""

    key: str


def _l2_on(cfg: Config, key: str) -> str:
    return L2_ON.get(key, cfg.l2_on)


def _e2e_maker(cfg: Config, **options: Any) -> Any:
    """``make(net, schedule)`` of the e2e net's optimizer (``e2e_optimizer`` with the
    settings' depth and ``precondition_every``; ``options``: e.g. ``precondition_dtype``)."""
    return functools.partial(
        e2e_optimizer, depth=cfg.depth, precondition_every=cfg.precondition_every, **options
    )


def _optimizers(cfg: Config, key: str) -> dict[str, Any] | None:
    if key != "e2e":
        return None  # the tutorial's SGD with momentum
    return {"e2e": _e2e_maker(cfg)}


train_net = tutorial_config.train_net  # the one task function (tutorial_config)


def step_times_ms(
    cfg: Config, splits: mt.Splits, device: torch.device, dtype: torch.dtype
) -> dict[str, list[float]]:
    """Wall-clock ms of each training step of each net, measured fairly: fresh nets trained
    ``cfg.timing_steps`` steps side by side, taking turns at every step (so they share
    the machine's load), forward + backward + optimizer + reading the loss. With
    ``precondition_every > 1`` a fourth configuration is timed too (key ``BF16``): the
    e2e net with ``precondition_dtype=torch.bfloat16`` (its amortised cache and cached
    products in bfloat16; not trained in full)."""
    nets = build_nets(cfg, device, dtype)[0]
    opts = {"e2e": _e2e_maker(cfg)}
    if cfg.precondition_every > 1:
        nets[BF16] = mt.tutorial_net(cfg.seed, device=device, dtype=dtype, **cfg.net_options())
        opts[BF16] = _e2e_maker(cfg, precondition_dtype=torch.bfloat16)
    sched = dataclasses.replace(
        cfg.schedule(), steps=cfg.timing_steps, eval_every=0, validation_eval=0, time_limit_s=None
    )
    hist, _, done = mt.train_side_by_side(
        nets, splits, sched, l2_on={k: _l2_on(cfg, k) for k in nets}, optimizers=opts
    )
    return {k: [1e3 * t for t in hist[k].step_seconds[:done]] for k in nets}


def plot(path: Path, measured: Measured) -> Path:
    """Batch loss and batch cross-entropy vs iteration of each net of ``measured`` (raw
    light, smoothed solid over the config's ``smooth_window``; log y; integer iteration
    ticks)."""
    from matplotlib.lines import Line2D

    hist, window = measured.hist, measured.config.smooth_window
    labels = measured.config.labels()
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    styles = {
        "original": ("tab:blue", "-"),
        "overparameterized": ("tab:red", "--"),
        "e2e": ("tab:green", "-."),
    }

    def draw(ax: Any, key: str, k: str, x: np.ndarray, y: np.ndarray) -> None:
        color, ls = styles.get(k, ("tab:gray", ":"))
        ax.plot(x, y, color=color, alpha=0.12, lw=0.5)
        ax.plot(x, smooth(y, window), color=color, ls=ls, lw=1.6, label=labels[k])

    tutorial_config.plot_histories(axes, hist, "batch loss (cross-entropy + L2)", draw)
    handles, texts = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="tab:gray", alpha=0.35, lw=0.8))
    texts.append("light lines: the raw per-step batch values (each net's colour)")
    fig.legend(handles, texts, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"MNIST tutorial: depth without depth (moving average over {window})")
    return finish_figure(fig, path, measured.quick, rect=(0, 0.12, 1, 1))


#: the experiment's render(measured, claims, outdir): this figure and every net's curves
render = tutorial_config.renderer("mnist_e2e.png", plot)


# ---------------------------------------------------------------------------------- run


@dataclass
class Measured(tutorial_config.TutorialMeasured):
    """What mnist-e2e measured: the three nets' per-step histories (cut to the steps all
    of them did), their test errors, wall-clock ms per step (the fair side-by-side
    timing, and each net's own training run), parameter counts and the run's facts."""

    ms_per_step: dict[str, float]
    ms_per_step_in_training: dict[str, float]
    load: tuple[str, str]
    params: dict[str, int]
    factor_shapes: str
    torch_threads: int
    device: str
    dtype: str
    data_source: str
    #: the timing run's ms of each step, per net (``ms_per_step`` is their mean)
    step_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    """Train the three nets (each a task kept in the results store) and time their steps."""
    config.validate()
    with config.torch_threads():
        data, splits, dev, dtype = config.data(ctx)
        nets, summary = build_nets(config, "cpu", dtype)  # for counts and the summary
        out = tutorial_config.train_net_tasks(
            ctx, train_net, [NetTask(k) for k in NETS], kind=NAME, cfg=config, data=data,
            dtype=dtype,
        )  # fmt: skip
        own_ms = {k: 1e3 * out[k][0].seconds / max(out[k][2], 1) for k in NETS}
        load_before = _load()
        step_ms = step_times_ms(config, splits, dev, dtype)
        ms = {k: float(np.mean(v)) for k, v in step_ms.items()}
        fields = tutorial_config.measured_fields(
            ctx, config, tutorial_config.common_steps(out), data, dtype, summary
        )
    return Measured(
        **fields,
        ms_per_step=ms,
        step_ms=step_ms,
        ms_per_step_in_training=own_ms,
        load=(load_before, _load()),
        params={k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()},
    )


_PAPER_LOSS = "overparameterization led to significant speedup ... not by any architectural change"
_PAPER_TIME = "not discussed (the paper emulates the update, it times nothing)"


def _it(v: int | None) -> str:
    return "never" if v is None else str(v)


def _ratio(m: Measured, key: str) -> tuple[float, float, float] | None:
    """Net ``key``'s mean step time over the overparameterized net's, with the 95%
    interval of the steps timed side by side (None when the per-step times were not
    recorded)."""
    a, b = m.step_ms.get(key), m.step_ms.get("overparameterized")
    if not a or not b or len(a) != len(b):
        return None
    return ratio_of_means(a, b)


def _ratio_text(m: Measured, key: str, ratio: tuple[float, float, float] | None) -> str:
    """E.g. ``0.996x (95% interval 0.981..1.012 over 100 steps)``."""
    if ratio is None:
        return f"{m.ms_per_step[key] / m.ms_per_step['overparameterized']:.2f}x"
    r, lo, hi = ratio
    return f"{r:.3f}x (95% interval {lo:.3f}..{hi:.3f} over {len(m.step_ms[key])} steps)"


def _noise(ratio: tuple[float, float, float] | None) -> str:
    """``; within the timing noise (ratio 0.996, 95% 0.981..1.012)`` when the interval
    of the time ratio to the overparameterized net contains 1, else ``""``."""
    if ratio is None or not (ratio[1] <= 1.0 <= ratio[2]):
        return ""
    r, lo, hi = ratio
    return f"; within the timing noise (ratio {r:.3f}, 95% {lo:.3f}..{hi:.3f})"


def judge(measured: Measured, config: Config) -> list[Claim]:
    """The e2e net reaches each checkpoint level of the original within ``similar`` x
    the overparameterized net's iterations (batch loss; cross-entropy); an e2e step costs
    no more than an overparameterized one; all nets reach the tutorial's accuracy. NOT
    ASSESSED below 1000 steps (quick mode)."""
    cfg, m = config, measured
    w = cfg.smooth_window
    sm = {q: {k: smooth(getattr(h, q), w) for k, h in m.hist.items()} for q in ("loss", "ce")}
    assessable = m.steps_done >= 1000
    short = {} if assessable else {"not assessed": f"short run ({m.steps_done} steps)"}
    claims = []
    for q, what in (("loss", "batch loss"), ("ce", "batch cross-entropy")):
        rows = iterations_to_levels(sm[q], cfg.checkpoints)
        last = rows[-1]
        worst = [r for r in rows if not similar(r, cfg.similar)]
        claims.append(
            Claim.judged(
                f"The preconditioner alone gives the overparameterized net's speed-up ({what})",
                _PAPER_LOSS,
                f"last level: original {last['original']}, overparam. "
                f"{_it(last['overparameterized'])}, e2e {_it(last['e2e'])} iterations",
                not worst if assessable else None,
                why=f"at {len(worst)} level(s) e2e needs more than {cfg.similar}x the "
                "overparameterized net's iterations",
                details={
                    **short,
                    "iterations to the original's levels": [
                        f"{r['level']:.3g}: original {r['original']}, overparam. "
                        f"{_it(r['overparameterized'])}, e2e {_it(r['e2e'])}"
                        for r in rows
                    ],
                    "final smoothed": {k: float(sm[q][k][-1]) for k in NETS},
                    "window": w,
                },
            )
        )
    ms, K = m.ms_per_step, cfg.precondition_every
    over = ms["overparameterized"]
    ratio_e2e = _ratio(m, "e2e")  # one bootstrap per net, shared by its cells
    claims.append(
        Claim.judged(
            f"With precondition_every={K}, an e2e step costs no more time than an "
            "overparameterized one",
            _PAPER_TIME,
            f"ms per step: e2e {ms['e2e']:.1f}, overparameterized {over:.1f}, original "
            f"{ms['original']:.1f}{_noise(ratio_e2e)}",
            (ms["e2e"] <= over) if assessable else None,
            why=f"an e2e step took {_ratio_text(m, 'e2e', ratio_e2e)} the overparameterized net's",
            details={
                **short,
                "ms per step": ms,
                "e2e / overparameterized": _ratio_text(m, "e2e", ratio_e2e),
                "timed": f"{cfg.timing_steps} steps, nets taking turns, batch "
                f"{cfg.batch_size}, {m.torch_threads} thread(s)",
            },
        )
    )
    if BF16 in ms:
        ratio_bf16 = _ratio(m, BF16)
        claims.append(
            Claim.judged(
                f"With precondition_every={K} and a bfloat16 cache, an e2e step costs no "
                "more than an overparameterized one",
                _PAPER_TIME,
                f"ms per step: {ms[BF16]:.1f} (bfloat16 cache) vs {over:.1f} "
                f"(overparameterized){_noise(ratio_bf16)}",
                (ms[BF16] <= over) if assessable else None,
                why=f"it took {_ratio_text(m, BF16, ratio_bf16)} the overparameterized net's step",
                details={
                    **short,
                    "bfloat16 cache / overparameterized": _ratio_text(m, BF16, ratio_bf16),
                    "note": "only timed: the trained e2e net uses float32",
                },
            )
        )
    if cfg.max_test_error is not None:
        err = m.test_error_pct
        claims.append(
            Claim.judged(
                f"All three nets reach the tutorial's accuracy (test error < "
                f"{cfg.max_test_error}%)",
                "not the paper's claim: a check that every net trained",
                "test error " + ", ".join(f"{k} {v:.2f}%" for k, v in err.items()),
                max(err.values()) < cfg.max_test_error,
                why=f"the worst net's test error is {max(err.values()):.2f}%",
                details={"test images": cfg.test_size},
            )
        )
    return claims


def settings(measured: Measured, config: Config) -> dict:
    m = measured
    return {
        "steps_done": m.steps_done,
        "params": m.params,
        "test_error_pct": m.test_error_pct,
        "final_validation_error_pct": tutorial_config.final_validation_errors(m.hist),
        "ms_per_step": m.ms_per_step,
        "ms_per_step_in_training": m.ms_per_step_in_training,
        "load_average_before_after": list(m.load),
        "train_seconds": tutorial_config.train_seconds(m.hist),
        "lr_first_last": list(m.lr_first_last),
        "data_source": m.data_source,
    }


NOTES = (
    "e2e: EndToEndSGD with torch.optim.SGD's momentum rule applied to the Eq. 10 direction "
    "of fc1 and fc2 (SVD every precondition_every steps; the steps in between apply the "
    "cached matrix's operator to the current gradient); the convolutions and biases get "
    "plain SGD with momentum; the tutorial's L2 stays in the loss, so it is preconditioned "
    "with the data gradient (first-order match of L2 on the product).",
    "Not a strict first-order equivalence: the overparameterized net's factors start "
    "unbalanced and their product is not the original's initial weight, while e2e starts "
    "at the original's weight and follows the balanced-factor rule; momentum on factors "
    "is not momentum on the end-to-end direction.",
    "Same minibatches (the tutorial's order), dropout masks and learning-rate schedule for "
    "all nets; claims compare trailing moving averages. Wall-clock per step is measured on "
    "fresh nets taking turns at every step; each net's own training run (a task of its "
    "own, beside other work) is in settings.json, not comparable across nets.",
)


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "?"


# ------------------------------------------------------ the cost of precondition_every


def precondition_every_table(
    ks: list[int],
    steps: int,
    *,
    data_dir: str | Path | None = None,
    window: int = 50,
    cfg: Config | None = None,
) -> str:
    """Markdown table: the e2e net trained ``steps`` steps with each ``precondition_every``
    in ``ks`` (``ks[0]`` is the reference, normally 1 = exact) on the same batches and
    dropout masks: final smoothed batch loss, the largest gap of the smoothed batch loss
    to the reference's, ``||W_K - W_ref|| / ||W_ref - W_0||`` of fc1 and ms per step."""
    from depthaccel.data import load_mnist

    base = cfg or Config()
    cfg = dataclasses.replace(base, epochs=steps * base.batch_size / base.train_size + 1e-9)
    splits = mt.make_splits(
        load_mnist(data_dir),
        train_size=cfg.train_size,
        validation_size=cfg.validation_size,
        validation_eval=0,
        test_size=1,
        channels_last=cfg.channels_last,
    )
    sched = dataclasses.replace(cfg.schedule(), steps=steps, eval_every=0, validation_eval=0)
    kw = dict(channels_last=cfg.channels_last, dropout=cfg.dropout)
    nets = {f"K={k}": mt.tutorial_net(cfg.seed, **kw) for k in ks}
    W0 = nets[f"K={ks[0]}"].fc1.weight.detach().clone()
    opts = {
        f"K={k}": (lambda net, s, k=k: e2e_optimizer(net, s, depth=cfg.depth, precondition_every=k))
        for k in ks
    }
    t0 = time.perf_counter()
    hist, _, done = mt.train_side_by_side(nets, splits, sched, optimizers=opts, desc="K")
    ref = f"K={ks[0]}"
    sm = {k: smooth(h.loss, window) for k, h in hist.items()}
    W_ref = nets[ref].fc1.weight.detach()
    lines = [
        f"{done} steps, batch {cfg.batch_size}, tutorial schedule, depth {cfg.depth}, momentum "
        f"{cfg.momentum}; smoothing window {window}; {time.perf_counter() - t0:.0f} s in all",
        "",
        "| K | final smoothed batch loss | max gap of smoothed loss to K="
        f"{ks[0]} | fc1: rel. distance to K={ks[0]} | ms / step |",
        "|---|---|---|---|---|",
    ]
    for k, h in hist.items():
        gap = float(np.max(np.abs(sm[k] - sm[ref])))
        dist = float(
            torch.linalg.norm(nets[k].fc1.weight.detach() - W_ref) / torch.linalg.norm(W_ref - W0)
        )
        lines.append(
            f"| {k[2:]} | {sm[k][-1]:.4f} | {gap:.4f} | {dist:.3f} | {1e3 * h.seconds / done:.0f} |"
        )
    return "\n".join(lines)


SPEC = ExperimentSpec(
    NAME,
    "mnist_e2e",
    "MNIST tutorial: original vs overparameterized vs the original with "
    "EndToEndSGD(depth=2) on its dense layers; claim: the preconditioner alone gives "
    "the overparameterized net's speed-up; wall-clock per step of all three",
    data="mnist",
    title=TITLE,
    cost=(37.0, 4100.0),
    config=Config,
)
