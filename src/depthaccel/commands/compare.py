"""``depthaccel compare``: does depth accelerate gradient descent on your own table?

Parsing only; the work is :func:`depthaccel.compare.run_compare`.
"""

from __future__ import annotations

import argparse
import sys

from depthaccel.commands import jobs
from depthaccel.commands.flags import add_output_flags, progress
from depthaccel.compare import CompareConfig, run_compare
from depthaccel.compare.config import (
    DEFAULT_CE_L2,
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_ITERS,
    DEFAULT_LRS,
    DEFAULT_METHODS,
    DEFAULT_RELATIVE_THRESHOLDS,
    ITERS,
    NONNEGATIVE,
    SEED,
    check_depth,
    check_device,
    check_method,
    check_positive,
    parse_loss,
)
from depthaccel.data.scaling import LOSS_SCALES, parse_feature_scale
from depthaccel.executors.base import ShardFailedError
from depthaccel.outdir import OutputFolderError
from depthaccel.reporting import format_lr
from depthaccel.resources import MemoryEstimateError
from depthaccel.signals import exit_status
from depthaccel.store import StoreError
from depthaccel.train import METHODS
from depthaccel.validation import COUNT, Integral, Interval, arg_type

_DESCRIPTION = """\
Train linear models of several depths and optimizers on your regression or
classification table (CSV or NPZ), pick each model's best learning rate, and report
whether depth accelerates gradient descent on it, by how much, and against the adaptive
optimizers."""

_EPILOG = f"""\
Models: every method at every depth (the Eq. 12 end-to-end scheme 'e2e' only at depths
> 1; at depth 1 it is plain GD), hidden width --hidden (k, the
number of outputs: 1 for one target, as in the paper), --init
(near-zero by default); each model at every learning rate of --lrs (default
{", ".join(format_lr(x) for x in DEFAULT_LRS)}). Each model's best rate is the one with
the lowest final gap (ties: fewer iterations to reach the thresholds); diverged runs are
marked, never chosen. Thresholds default to {", ".join(f"{r:g}" for r in DEFAULT_RELATIVE_THRESHOLDS)}
times the initial gap L(0) - L*.

Outputs in --out (an empty or new folder, or one holding only outputs of an earlier
compare: a folder with other files is refused unless --force; the input is never an
output; every file is replaced atomically, so an interrupted write keeps the previous
set): compare.png (gap vs iteration, best rate per model, log scale),
summary.csv (one row per run: method, depth, lr, final_gap, diverged, first-hit iteration
per threshold, best_for_model), curves.csv (run, iteration, gap), REPORT.md (table and
verdict), and the results store depthaccel-store.sqlite: re-running the command reuses
finished runs (it says how many), and an interrupted run (Ctrl-C, kill -9) resumes from
its last checkpoint, redoing at most --checkpoint-every iterations.

Before anything is written, the grid's memory is estimated from the table's rows and
features, --hidden and the number of runs; a grid that cannot fit is refused with the
estimate. Gaps below the data's round-off floor (printed at the start) count as
converged: they are reported as such, never compared as ratios.

Exit status: 0 on success, 1 when the data or the store cannot be used, 2 on bad
arguments (also: an unusable --out folder, a grid too large for the memory), in which
case no file is created.

Examples:
  depthaccel compare --data my_table.csv --target price --loss l4 --iters 20000
  depthaccel compare --data my_table.csv --target a,b,c --loss l2        # 3 outputs
  depthaccel compare --data wine.csv --target cultivar --loss ce --iters 2000
"""


def _arg(check):
    """An argparse type from one of compare's validators (``depthaccel.compare.config``):
    its ValueError becomes argparse's usage error (exit 2)."""

    def parse(text: str):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _csv_list(check, what: str):
    """A comma-separated list, each item through ``check``."""

    def parse(text: str):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty list of {what}")
        out = []
        for s in items:
            try:
                out.append(check(s))
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"bad {what} {s!r}: {e}") from None
        return tuple(out)

    return parse


def _loss(s: str) -> str:
    parse_loss(s)
    return s.lower()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="does depth accelerate GD on your table? (grid, best rates, plot, verdict)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", required=True, metavar="FILE", help="the table (.csv, .csv.gz, .tsv, .npz)"
    )
    p.add_argument(
        "--target",
        default=None,
        metavar="COL",
        help="target column (default: the last column); several, comma-separated "
        "(a,b,c), for a multi-output regression with one output per target",
    )
    p.add_argument(
        "--loss",
        type=_arg(_loss),
        default="l4",
        help="l2, l4 or l<p> with p >= 2 (regression), or ce: softmax cross-entropy on a "
        "column of class labels (default: l4)",
    )
    p.add_argument(
        "--l2",
        type=arg_type(NONNEGATIVE, "--l2"),
        default=None,
        metavar="LAMBDA",
        help=f"L2 term (LAMBDA/2)||W||^2 of --loss ce (default: {DEFAULT_CE_L2:g}, so that the "
        "optimum exists; 0: none, and on separable data the loss itself is reported)",
    )
    p.add_argument(
        "--feature-scale",
        type=_arg(parse_feature_scale),
        default="zscore",
        metavar="SCALE",
        help="global scale k of the standardised features the trainer sees (k X): zscore "
        "(k = 1), zscore-unit-row (1/sqrt(d)), zscore-unit-col (1/sqrt(m)) or a number "
        "(default: zscore)",
    )
    p.add_argument(
        "--loss-scale",
        choices=LOSS_SCALES,
        default="paper",
        help="l_p losses: paper = (1/p)|r|^p, plain = |r|^p (default: paper)",
    )
    p.add_argument(
        "--depths",
        type=_csv_list(check_depth, "depth"),
        default=(1, 2, 3),
        help="comma-separated depths (default: 1,2,3)",
    )
    p.add_argument(
        "--methods",
        type=_csv_list(check_method, "method"),
        default=DEFAULT_METHODS,
        help=f"comma-separated, from {','.join(METHODS)} (default: all)",
    )
    p.add_argument(
        "--iters",
        type=arg_type(ITERS, "--iters"),
        default=DEFAULT_ITERS,
        help=f"full-batch iterations per run (default: {DEFAULT_ITERS})",
    )
    p.add_argument(
        "--lrs",
        type=_csv_list(lambda s: check_positive("learning rate", s), "learning rate"),
        default=DEFAULT_LRS,
        help="comma-separated learning rates (default: 1e-4..1, two per decade)",
    )
    p.add_argument(
        "--thresholds",
        type=_csv_list(lambda s: check_positive("threshold", s), "threshold"),
        default=None,
        help="comma-separated gap thresholds for iterations-to-reach "
        "(default: 1e-1..1e-6 times the initial gap)",
    )
    p.add_argument(
        "--out", default="compare-results", help="output directory (default: compare-results)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an --out folder that holds files depthaccel did not write "
        "(files named like an output are replaced; the others are left alone)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=arg_type(Interval(Integral, 0, None, whole_floats=True), "--checkpoint-every"),
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="K",
        help=f"save the training state every K iterations, 0 = never (default: {DEFAULT_CHECKPOINT_EVERY})",
    )
    p.add_argument(
        "--device",
        type=_arg(check_device),
        default="cpu",
        help="torch device: cpu, cuda, cuda:1 (default: cpu)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="compute dtype (default: float64)",
    )
    p.add_argument(
        "--no-header",
        action="store_true",
        help="the CSV has no header row: every row is data, columns are named c1 .. cn "
        "(default: a header row is required; a first row of numbers only is refused)",
    )
    p.add_argument(
        "--no-standardize",
        action="store_true",
        help="train on the raw values (default: z-score features and target)",
    )
    p.add_argument(
        "--hidden",
        type=arg_type(COUNT, "--hidden"),
        default=None,
        help="hidden width (default: the number of outputs k; 1 for one target, as in the paper)",
    )
    p.add_argument(
        "--init",
        choices=("near_zero", "identity", "balanced"),
        default="near_zero",
        help="initialisation of the nets (default: near_zero, as in the paper)",
    )
    p.add_argument(
        "--init-scale",
        type=arg_type(NONNEGATIVE, "--init-scale"),
        default=None,
        help="std of the initial Gaussian draws (default: the trainer's, 1e-3 for near_zero)",
    )
    p.add_argument(
        "--seed",
        type=arg_type(SEED, "--seed"),
        default=0,
        help="initialisation seed (default: 0)",
    )
    p.add_argument(
        "--convention",
        choices=("tf", "torch"),
        default="tf",
        help="defaults of the adaptive optimizers: TensorFlow 1 (the paper) or PyTorch (default: tf)",
    )
    p.add_argument(
        "--threads",
        type=arg_type(Interval(Integral, 0, jobs.MAX_THREADS, whole_floats=True), "--threads"),
        default=1,
        help="torch CPU threads, 0 = torch's default (default: 1: these GEMMs are small, and "
        "extra threads slowed training 14x on a busy 2-core machine)",
    )
    add_output_flags(p)
    jobs.add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The command; torch's thread count (``--threads``) is restored afterwards, so a
    caller in the same process (a test, a notebook) keeps its own."""
    import torch

    threads_before = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace) -> int:
    prog = "depthaccel compare"
    try:
        cfg = CompareConfig(
            data=args.data,
            target=args.target,
            loss=args.loss,
            depths=args.depths,
            methods=args.methods,
            iters=args.iters,
            lrs=args.lrs,
            thresholds=args.thresholds,
            out=args.out,
            checkpoint_every=args.checkpoint_every or None,
            device=args.device,
            dtype=args.dtype,
            standardize=not args.no_standardize,
            header=False if args.no_header else None,
            hidden=args.hidden,
            init=args.init,
            init_scale=args.init_scale,
            seed=args.seed,
            convention=args.convention,
            force=args.force,
            l2=args.l2,
            feature_scale=args.feature_scale,
            loss_scale=args.loss_scale,
        )
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                f"{prog}: error: --device {cfg.device} but CUDA is not available", file=sys.stderr
            )
            return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    executor = None
    try:
        executor, error = jobs.open_executor(args, prog)
        if error is not None:
            print(error, file=sys.stderr)
            return 2
        res = run_compare(cfg, progress=progress(args), log=print, executor=executor)
    except (OutputFolderError, MemoryEstimateError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, StoreError, OSError, ShardFailedError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (depthaccel.signals)
        print(
            f"\n{prog}: interrupted; finished runs and the last checkpoint are in the store: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return exit_status(e)
    finally:
        jobs.close_executor(executor)  # a Ray cluster this command started stops here
    print(res.verdict.text)
    resumed = ""
    if res.resumed:
        resumed = ", resumed from checkpoints at iteration " + ", ".join(
            str(i) for i in res.resumed.values()
        )
    print(
        f"{len(res.results)} runs: {res.reused} reused from the store, {res.computed} trained"
        f"{resumed} ({res.wall_time:.1f} s)"
    )
    print(f"outputs in {cfg.out}/: " + ", ".join(p.name for p in res.outputs.values()))
    return 0
