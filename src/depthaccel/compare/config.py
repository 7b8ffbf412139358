"""The settings of ``depthaccel compare``: :class:`CompareConfig`, its validators (one per
kind of value, shared with the CLI's argument types; the numbers are declared once as
``depthaccel.validation`` intervals) and the grid of runs it describes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from depthaccel.data.scaling import SetupAxes, check_loss_scale, parse_feature_scale
from depthaccel.losses import MAX_P
from depthaccel.train import CONVENTIONS, INITS, METHODS, Run
from depthaccel.train.grid import log_grid
from depthaccel.train.runs import MAX_DEPTH
from depthaccel.validation import BOOL, COUNT, Integral, Interval, Options, Real, check, check_text

__all__ = [
    "DEFAULT_CE_L2",
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_ITERS",
    "DEFAULT_LRS",
    "DEFAULT_METHODS",
    "DEFAULT_RELATIVE_THRESHOLDS",
    "DEPTH",
    "ITERS",
    "LOG_POINTS",
    "MAX_ITERS",
    "NONNEGATIVE",
    "POSITIVE",
    "SEED",
    "SEED_RANGE",
    "CompareConfig",
    "build_runs",
    "check_depth",
    "check_device",
    "check_method",
    "check_positive",
    "check_seed",
    "parse_loss",
]

#: Learning-rate grid: 1e-4 .. 1 with two rates per decade.
DEFAULT_LRS: tuple[float, ...] = log_grid(1e-4, 1.0, 2)
#: Default gap thresholds, as fractions of the initial gap L(0) - L*.
DEFAULT_RELATIVE_THRESHOLDS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_METHODS: tuple[str, ...] = ("gd", "e2e", "adagrad", "adadelta", "adam")
DEFAULT_ITERS = 10_000
#: More iterations than this would take years at any speed the trainer reaches.
MAX_ITERS = 10**12
#: Seeds of torch's generator: a signed 64-bit integer.
SEED_RANGE = (-(2**63), 2**63 - 1)
DEFAULT_CHECKPOINT_EVERY = 2_000
#: The default L2 term of ``--loss ce``: small, but positive so that the optimum exists.
DEFAULT_CE_L2 = 1e-3

# What CompareConfig's numbers may be (a whole float such as 2.0 counts as an integer; a
# string is parsed first, as the command line's text).
ITERS = Interval(Integral, 1, MAX_ITERS, whole_floats=True)
DEPTH = Interval(Integral, 1, MAX_DEPTH, whole_floats=True)
SEED = Interval(Integral, *SEED_RANGE, whole_floats=True, label="a 64-bit integer")
LOG_POINTS = Interval(Integral, 2, None, whole_floats=True)
POSITIVE = Interval(Real, 0, None, closed="neither")
NONNEGATIVE = Interval(Real, 0, None)
_NOTHING_TO_RUN = (
    "nothing to run: the e2e scheme needs a depth > 1 (at depth 1 it is GD); "
    "add a depth > 1 or another method"
)


# ------------------------------------------------------------------ one value at a time


def parse_loss(name: str) -> float:
    """``l2`` -> 2, ``l4`` -> 4, ``l<p>`` -> p for any real p >= 2 (e.g. ``l3``, ``l2.5``);
    ``ce`` (softmax cross-entropy) -> nan: no exponent."""
    s = str(name).strip().lower()
    if s == "ce":
        return math.nan
    try:
        if not s.startswith("l"):
            raise ValueError
        p = float(s[1:])
    except ValueError:
        raise ValueError(
            f"unknown loss {name!r}: use ce (classification), l2, l4, or l<p> with a real "
            "p >= 2 (e.g. l3)"
        ) from None
    if not (math.isfinite(p) and p >= 2):
        raise ValueError(f"loss {name!r}: p must be a finite number >= 2, got {p:g}")
    if p > MAX_P:
        raise ValueError(
            f"loss {name!r}: p must be <= {MAX_P:g} (beyond, |residual|^p overflows float64)"
        )
    return p


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:<index>`` (the devices the trainer supports); the
    canonical spelling. Other torch devices (mps, meta, ...) raise ValueError."""
    text = str(device).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ValueError(f"unsupported device {device!r}: use cpu, cuda or cuda:<index>")
    return str(dev)


def _checked(name: str, v: Any, interval: Interval) -> Any:
    """``depthaccel.validation.check`` of ``v``, or ``check_text`` when it is a string
    (the command line's text): an int or float, else ValueError, one line naming ``name``."""
    return check_text(name, v, interval) if isinstance(v, str) else check(name, v, interval)


def check_depth(v: object) -> int:
    """A depth: an integer in [1, ``MAX_DEPTH``] (``2.0`` and ``"2"`` are accepted)."""
    return _checked("depth", v, DEPTH)


def check_method(v: object) -> str:
    """A method name among ``METHODS`` (case-insensitive)."""
    s = str(v).strip().lower()
    if s not in METHODS:
        raise ValueError(f"unknown method {v!r}; choose from {', '.join(METHODS)}")
    return s


def check_positive(name: str, v: object) -> float:
    """A finite number > 0 (a string is parsed first)."""
    return _checked(name, v, POSITIVE)


def check_seed(v: object, name: str = "seed") -> int:
    """A seed of torch's generator: an integer in ``SEED_RANGE``."""
    return _checked(name, v, SEED)


def _positive_sorted(what: str, values: Sequence[object]) -> tuple[float, ...]:
    """Each of ``values`` a finite number > 0 (``what``: one of them, e.g. "threshold");
    sorted, without repeats; not empty."""
    out = [check_positive(what, v) for v in values]
    if not out:
        raise ValueError(f"{what}s must not be empty")
    return tuple(sorted(set(out)))


# ------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class CompareConfig:
    """Settings of ``depthaccel compare`` (the CLI's flags, same names and defaults).

    Attributes:
        data: the user's table (CSV or NPZ, see ``depthaccel.data.load_table``).
        target: target column (default: the table's last column); several columns,
            comma-separated (``"a,b,c"``), make a multi-output problem (k = their number).
        loss: ``l2``, ``l4``, ``l<p>``, or ``ce`` (softmax cross-entropy on a column of
            class labels, integers or strings; classes from the data).
        l2: the L2 term ``(l2/2) ||W||^2`` of ``ce`` (None: ``DEFAULT_CE_L2``; 0: none,
            and then on separable data the loss has no minimiser: the report gives the
            loss itself instead of a gap). Not used by the l_p losses.
        depths: depths of the linear nets (integers >= 1).
        methods: among gd, e2e, adagrad, adadelta, adam (e2e only at depths > 1).
        iters: full-batch iterations per run.
        lrs: the learning-rate grid (every method and depth).
        thresholds: gap thresholds for iterations-to-reach; None = the fractions
            ``DEFAULT_RELATIVE_THRESHOLDS`` of the initial gap L(0) - L*.
        out: output directory (holds the results store too).
        checkpoint_every: save the training state every this many iterations (None: never).
        device, dtype: torch device and compute dtype (``float64`` or ``float32``).
        standardize: z-score features and target (the paper's setup) before training.
        header: CSV header row: None = required (an all-numeric first row is refused as a
            probable headerless file), False = no header (columns ``c1 .. cn``).
        hidden: hidden width of the nets; None: the number of outputs k (1 for one
            target, as in the paper: the smallest width that keeps the net as expressive
            as a single k x d layer when k <= d).
        init, init_scale: the initialisation (``near_zero``, ``identity`` or ``balanced``,
            see ``depthaccel.train.Run``) and its scale (None: the trainer's default).
        seed: seed of the initialisation.
        convention: ``tf`` or ``torch`` defaults for the adaptive optimizers.
        log_points: about this many logged iterations per curve.
        force: write into an output folder that holds files depthaccel did not write
            (``depthaccel.outdir``; files with an output's name are replaced).
        feature_scale: the global scale k of the features the trainer sees, ``k X``
            (``depthaccel.data.scaling``: ``zscore`` = 1, ``zscore-unit-row``,
            ``zscore-unit-col`` or a number).
        loss_scale: ``paper`` ((1/p)|r|^p) or ``plain`` (|r|^p, by scaling X and y by
            p^(1/p)); l_p losses only.
    """

    data: Path
    target: str | None = None
    loss: str = "l4"
    depths: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = DEFAULT_METHODS
    iters: int = DEFAULT_ITERS
    lrs: tuple[float, ...] = DEFAULT_LRS
    thresholds: tuple[float, ...] | None = None
    out: Path = Path("compare-results")
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY
    device: str = "cpu"
    dtype: str = "float64"
    standardize: bool = True
    header: bool | None = None
    hidden: int | None = None
    init: str = "near_zero"
    init_scale: float | None = None
    seed: int = 0
    convention: str = "tf"
    log_points: int = 1000
    force: bool = False
    l2: float | None = None
    feature_scale: str | float = "zscore"
    loss_scale: str = "paper"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("data", Path(self.data))
        set_("out", Path(self.out))
        parse_loss(self.loss)
        set_("loss", str(self.loss).strip().lower())
        if self.l2 is not None:
            if not self.is_ce:
                raise ValueError("l2 applies to the ce loss only (--loss ce)")
            set_("l2", _checked("l2", self.l2, NONNEGATIVE))
        set_("feature_scale", parse_feature_scale(self.feature_scale))
        check_loss_scale(self.loss_scale)
        if self.is_ce and self.loss_scale != "paper":
            raise ValueError("loss_scale applies to the l_p losses only (not to --loss ce)")
        if self.is_ce and self.target is not None and "," in str(self.target):
            raise ValueError("the ce loss takes one target column (the class labels)")
        if not self.depths:
            raise ValueError("depths must not be empty")
        set_("depths", tuple(sorted({check_depth(d) for d in self.depths})))
        methods = [str(m).strip().lower() for m in self.methods]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if not methods:
            raise ValueError("methods must not be empty")
        set_("methods", tuple(dict.fromkeys(methods)))
        if self.methods == ("e2e",) and self.depths == (1,):
            raise ValueError(_NOTHING_TO_RUN)
        set_("iters", _checked("iters", self.iters, ITERS))
        set_("lrs", _positive_sorted("learning rate", self.lrs))
        if self.thresholds is not None:
            set_("thresholds", _positive_sorted("threshold", self.thresholds))
        if self.checkpoint_every is not None:
            set_("checkpoint_every", _checked("checkpoint_every", self.checkpoint_every, COUNT))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if self.hidden is not None:
            set_("hidden", _checked("hidden", self.hidden, COUNT))
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        if self.init_scale is not None:
            check("init_scale", self.init_scale, NONNEGATIVE)  # Run takes it as given
        set_("seed", check_seed(self.seed))
        set_("log_points", _checked("log_points", self.log_points, LOG_POINTS))
        set_("device", check_device(self.device))
        check("standardize", self.standardize, BOOL)
        check("force", self.force, BOOL)
        check("header", self.header, Options((None, True, False)))

    @property
    def p(self) -> float:
        """The l_p exponent (nan for ``ce``)."""
        return parse_loss(self.loss)

    @property
    def setup(self) -> SetupAxes:
        """The feature and loss scales (``depthaccel.data.scaling.SetupAxes``)."""
        return SetupAxes(self.feature_scale, self.loss_scale)

    @property
    def is_ce(self) -> bool:
        return str(self.loss).strip().lower() == "ce"

    @property
    def ce_l2(self) -> float:
        """The L2 term of the ce loss (``DEFAULT_CE_L2`` unless set)."""
        return DEFAULT_CE_L2 if self.l2 is None else float(self.l2)


def build_runs(cfg: CompareConfig, k: int = 1) -> list[Run]:
    """Every (method, depth, lr) of the grid; e2e only at depths > 1; ``k`` outputs (the
    hidden width when ``cfg.hidden`` is None)."""
    runs = [
        Run(
            m,
            lr,
            depth=d,
            hidden=k if cfg.hidden is None else cfg.hidden,
            init=cfg.init,
            init_scale=cfg.init_scale,
            seed=cfg.seed,
            convention=cfg.convention,
        )
        for m in cfg.methods
        for d in cfg.depths
        if not (m == "e2e" and d == 1)
        for lr in cfg.lrs
    ]
    if not runs:
        raise ValueError(_NOTHING_TO_RUN)
    return runs
