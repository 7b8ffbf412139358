"""``depthaccel reproduce``: run the paper's experiments and write figures and a claims report."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
import traceback

from depthaccel.experiments.base import (
    EXPERIMENTS,
    ExperimentError,
    get_experiment,
    run_experiment,
    write_report,
)
from depthaccel.experiments.context import ContextCache

_EPILOG_HEAD = """\
experiments (run in this order by 'all'):
"""

_EPILOG_TAIL = """
Per experiment, OUT/<name>/ gets the figure(s) (PNG, loss gap on a log scale against
iteration, legend with model and chosen learning rate), the curves (CSV), settings.json
(every chosen learning rate and grid) and result.json; OUT/REPORT.md is rebuilt with a
summary table and, per experiment, what was run, how long it took, the figure, the
settings, the claims table (claim | measured | PASS/FAIL) and notes.

Exit status: 0 when every experiment ran (a FAIL claim is a result, not an error: the
summary line says so), 1 when an experiment raised an error (the others still run), 2 on
bad arguments. Data: --data-dir, else $DEPTHACCEL_DATA_DIR, else ../shared/data in a
source checkout.
"""


def _epilog() -> str:
    width = max(len(n) for n in EXPERIMENTS)
    lines = [_EPILOG_HEAD]
    for spec in EXPERIMENTS.values():
        lines.append(
            textwrap.fill(
                spec.summary,
                width=88,
                break_on_hyphens=False,
                initial_indent=f"  {spec.name:<{width}}  ",
                subsequent_indent=" " * (width + 4),
            )
        )
    return "\n".join(lines) + "\n" + _EPILOG_TAIL


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's experiments (figures + claims report)",
        description=(
            "Reproduce the experiments and claims of Arora, Cohen & Hazan (ICML 2018): "
            "figures, curves, settings and a PASS/FAIL claims report."
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="experiment name(s) from the list below, or 'all'",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized runs (seconds to a minute each) instead of the paper's full setup",
    )
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="training dtype (default: the trainer's default; losses are logged in float64)",
    )
    p.add_argument("--data-dir", default=None, help="data directory (see below)")
    p.add_argument(
        "--store",
        default=None,
        metavar="PATH",
        help="results store (sqlite file or directory; default: OUT/depthaccel-store.sqlite): "
        "finished runs are reused across experiments and re-runs (a repeated command is "
        "near-instant and says how many runs it reused), long runs checkpoint and resume "
        "after a crash or kill",
    )
    p.add_argument(
        "--no-store",
        action="store_true",
        help="train without a results store (nothing reused, no checkpoints)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=50_000,
        metavar="K",
        help="with the store: checkpoint long runs every K iterations; a killed run "
        "resumes and redoes at most K iterations (default 50000)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a busy 2-core machine more threads were "
        "much slower; raise it on a machine of your own)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they go to stderr)"
    )
    p.set_defaults(func=run)
    return p


def _resolve_names(names: list[str]) -> list[str]:
    if "all" in names:
        if len(names) > 1:
            raise ExperimentError("'all' cannot be combined with other names")
        return list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ExperimentError(
            f"unknown experiment(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(EXPERIMENTS)} (or 'all')"
        )
    return list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    try:
        names = _resolve_names(args.names)
    except ExperimentError as exc:
        print(f"depthaccel reproduce: error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "depthaccel reproduce: error: --device cuda but CUDA is not available",
                file=sys.stderr,
            )
            return 2
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        print(
            f"depthaccel reproduce: error: --data-dir {args.data_dir!r} is not a directory",
            file=sys.stderr,
        )
        return 2
    if args.threads < 1:
        print("depthaccel reproduce: error: --threads must be >= 1", file=sys.stderr)
        return 2
    if args.checkpoint_every < 1:
        print("depthaccel reproduce: error: --checkpoint-every must be >= 1", file=sys.stderr)
        return 2
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_all(args, names)
    finally:
        torch.set_num_threads(threads_before)  # the command leaves global torch state as it was


def _run_all(args: argparse.Namespace, names: list[str]) -> int:
    store = (
        None if args.no_store else (args.store or os.path.join(args.out, "depthaccel-store.sqlite"))
    )
    # every experiment gets its own context (its own store counts); they share the data
    # and optima through one cache
    context_options = dict(
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
        data_dir=args.data_dir,
        store=store,
        checkpoint_every=args.checkpoint_every,
        cache=ContextCache(),
    )
    mode = "quick" if args.quick else "full"
    errors: list[str] = []
    failed_claims: list[str] = []
    t_all = time.perf_counter()
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ({mode}) ...", flush=True)
        try:
            get_experiment(name)  # a missing module is an error of this experiment
            res = run_experiment(name, args.out, quick=args.quick, **context_options)
        except Exception as exc:  # keep going with the others
            msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"[{i}/{len(names)}] {name}: ERROR: {msg}", file=sys.stderr, flush=True)
            errors.append(name)
            continue
        n_fail = res.n_failed
        verdict = "no FAIL" if n_fail == 0 else f"{n_fail} FAIL"
        if res.n_assessed < len(res.claims):
            verdict += f", {len(res.claims) - res.n_assessed} not assessed in {mode} mode"
        st = res.settings.get("results_store") or {}
        runs = (
            f"; runs: {st['runs_reused']} reused from the store, {st['runs_trained']} trained"
            if st
            else ""
        )
        print(
            f"[{i}/{len(names)}] {name}: done in {res.wall_time:.1f} s; "
            f"claims {res.n_passed}/{res.n_assessed} pass ({verdict}){runs}",
            flush=True,
        )
        if n_fail:
            failed_claims.append(name)
    report = write_report(args.out)
    took = time.perf_counter() - t_all
    ok = len(names) - len(errors)
    summary = f"{ok}/{len(names)} experiments ran in {took:.1f} s"
    summary += (
        f"; claims FAIL in: {', '.join(failed_claims)}" if failed_claims else "; no claim FAILs"
    )
    if errors:
        summary += f"; ERRORS in: {', '.join(errors)}"
    if store is not None:
        summary += f"; results store: {store}"
    print(f"{summary}. Report: {report}")
    return 1 if errors else 0
