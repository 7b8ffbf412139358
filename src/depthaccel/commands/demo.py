"""``depthaccel demo``: the end-to-end rule against a deep linear net on a generated problem."""

from __future__ import annotations

import argparse
import sys
import time

from depthaccel.commands.flags import add_output_flags, progress
from depthaccel.demo import DemoConfig, estimate_memory, format_table, run_demo
from depthaccel.resources import available_memory, format_bytes

_DESCRIPTION = """\
Generate a badly conditioned l_p regression (default l4, 500 x 30) and train, from the
same starting point and with the same learning rate:
  - plain gradient descent on a single layer (SGD depth 1),
  - gradient descent on a depth-N linear network started balanced (GD depth-N net),
  - EndToEndSGD with depth N on a single layer (Eq. 10).
Prints the distance from the optimum L - L* at a few iterations. Theorem 1 predicts that
the last two columns agree; on l4 both pull ahead of depth 1 (the paper's Section 8).
The learning rate is shared, not tuned per model ('depthaccel reproduce' grid-searches).
Exit status 1 if a model's loss or gradient became non-finite (learning rate too large),
2 on bad arguments (also: settings that need more memory than is available).
Takes about 10 s on a laptop CPU."""


#: The demo's options: flag, type, help (the default is DemoConfig's field of that name).
_OPTIONS = (
    ("--dim", int, "features"),
    ("--samples", int, "rows"),
    ("--cond", float, "condition number of the column scales squared"),
    ("--p", float, "loss exponent, >= 2"),
    ("--depth", int, "depth N"),
    ("--width", int, "hidden width"),
    ("--lr", float, "learning rate"),
    ("--steps", int, "iterations"),
    ("--init-scale", float, "norm of the common starting vector"),
    ("--seed", int, "random seed"),
)


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="short demo: EndToEndSGD vs a deep linear net vs SGD on a generated l4 regression",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, conv, what in _OPTIONS:
        default = getattr(d, _field(flag))
        p.add_argument(flag, type=conv, default=default, help=f"{what} (default {default:g})")
    add_output_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        cfg = DemoConfig(**{_field(flag): getattr(args, _field(flag)) for flag, _, _ in _OPTIONS})
    except ValueError as e:
        print(f"depthaccel demo: error: {e}", file=sys.stderr)
        return 2
    need, have = estimate_memory(cfg), available_memory("cpu")
    if have is not None and need > have:
        print(
            f"depthaccel demo: error: these settings need about {format_bytes(need)} of "
            f"memory, more than the {format_bytes(have)} available; use a smaller --width, "
            "--depth, --dim or --samples",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    try:
        result = run_demo(cfg, quiet=not progress(args))
    except ValueError as e:  # e.g. a generated problem that is singular in float64
        print(f"depthaccel demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndepthaccel demo: interrupted", file=sys.stderr)
        return 130
    print(format_table(result))
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 1 if any(v is not None for v in result.diverged.values()) else 0
