"""``depthaccel reproduce``: run the paper's experiments and write figures and a claims report."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import time
import traceback
from typing import Any

from depthaccel.commands import jobs
from depthaccel.commands.flags import add_output_flags, notes, progress
from depthaccel.data.catalog import ensure_data
from depthaccel.data.scaling import DEFAULT_SETUP, SetupAxes, parse_feature_scale
from depthaccel.experiments import (
    EXPERIMENTS,
    ContextCache,
    ExperimentError,
    config_for,
    get_experiment,
    run_experiment,
    write_report,
)
from depthaccel.outdir import MANIFEST_NAME, OutputFolder, OutputFolderError
from depthaccel.signals import exit_status
from depthaccel.store import DEFAULT_FILENAME as STORE_FILENAME

_STORE_NAMES = tuple(STORE_FILENAME + s for s in ("", "-wal", "-shm", "-journal"))

_DESCRIPTION = """\
Reproduce the experiments and claims of Arora, Cohen & Hazan (ICML 2018): figures,
curves, settings and a PASS/FAIL claims report."""

_EPILOG_HEAD = """\
experiments (run in this order by 'all'):
"""

_EPILOG_TAIL = """
Per experiment, OUT/<name>/ gets the figure(s) (PNG, loss gap on a log scale against
iteration, legend with model and chosen learning rate), the curves (CSV), settings.json
(every chosen learning rate and grid) and result.json; OUT/REPORT.md is rebuilt as a
scorecard (experiment | claims PASS/assessed | key claim: measured | mode | time), the
experiments not in it with the command that gets them, and per experiment what was
run, the figure, the claims table (claim | paper | measured | verdict) and collapsed
details and notes; settings stay in settings.json. Quick-mode figures say so.

OUT must be a new or empty folder or one that depthaccel wrote (a manifest,
OUT/.depthaccel-outputs.json, lists its files; a results folder of an earlier version is
recognised); a folder holding other files is refused unless --force. Files are replaced
atomically. Progress: each experiment's line says the time so far and an estimate of the
time left (from a table of typical costs; run one after another, scaled to this
machine's pace once a tenth of the work is done).

Exit status: 0 when every experiment ran (a FAIL claim is a result, not an error: the
summary line says so), 1 when an experiment raised an error (the others still run), 2 on
bad arguments (also: an --out that is a file, cannot be written, or holds other files),
in which case nothing is written, 3 when experiments were skipped because their data is
missing (checked once before any experiment starts; the last message says what is
missing and what to do). Data: --data-dir, else $DEPTHACCEL_DATA_DIR, else
../shared/data in a source checkout, else the cache folder; see
`depthaccel data where|check|fetch`.
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
        description=_DESCRIPTION,
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
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an --out folder that holds files depthaccel did not write",
    )
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
        "--feature-scale",
        type=_feature_scale_arg,
        default=DEFAULT_SETUP.feature_scale,
        metavar="SCALE",
        help="global scale k of the z-scored Ethanol features, a setup choice the paper "
        "does not state (fixed-rate runs depend on it): 'zscore' (k=1), 'zscore-unit-row' "
        "(k=1/sqrt(d): unit mean squared row norm), 'zscore-unit-col' (k=1/sqrt(m): "
        f"unit-norm columns) or a number (default {DEFAULT_SETUP.feature_scale}, chosen by "
        "the paper's Fig. 2 text; see the report)",
    )
    p.add_argument(
        "--loss-scale",
        choices=("paper", "plain"),
        default=DEFAULT_SETUP.loss_scale,
        help="the l_p loss that is minimised and reported: 'paper' (default, the paper's "
        "text: (1/m) sum (1/p)|r|^p) or 'plain' ((1/m) sum |r|^p: gradients p times "
        "larger, so fixed-rate runs differ); tables give both scales",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a busy 2-core machine more threads were "
        "much slower; raise it on a machine of your own)",
    )
    add_output_flags(p)
    p.add_argument(
        "--precondition-every",
        type=int,
        default=None,
        metavar="K",
        help="mnist-e2e only: EndToEndSGD recomputes each dense weight's SVD every K steps "
        "(1: exact Eq. 10; default: the experiment's, 10)",
    )
    jobs.add_arguments(p)
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
    if not 1 <= args.threads <= jobs.MAX_THREADS:
        print(
            f"depthaccel reproduce: error: --threads must be in [1, {jobs.MAX_THREADS}]",
            file=sys.stderr,
        )
        return 2
    if args.checkpoint_every < 1:
        print("depthaccel reproduce: error: --checkpoint-every must be >= 1", file=sys.stderr)
        return 2
    k_every = getattr(args, "precondition_every", None)
    if k_every is not None and (k_every < 1 or "mnist-e2e" not in names):
        print(
            "depthaccel reproduce: error: --precondition-every must be >= 1 and applies to "
            "mnist-e2e only",
            file=sys.stderr,
        )
        return 2
    try:
        _output_folder(args, names).check(outputs=["REPORT.md", *names])
        _check_store_is_not_an_output(args)
    except OutputFolderError as exc:
        print(f"depthaccel reproduce: error: {exc}", file=sys.stderr)
        return 2
    try:
        executor, error = jobs.open_executor(args, "depthaccel reproduce")
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while a Ray cluster starts
        print("\ndepthaccel reproduce: interrupted", file=sys.stderr)
        return exit_status(exc)
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    if executor is not None and args.no_store:
        print(
            "depthaccel reproduce: note: with --no-store the linear runs train in this "
            "process; only independent tasks (fig5-right's nets) and concurrent experiments "
            "use the cluster",
            file=sys.stderr,
        )
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    interrupted: int | None = None
    try:
        return _run_all(args, names, executor)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C; SIGTERM (depthaccel.signals)
        interrupted = exit_status(exc) if isinstance(exc, KeyboardInterrupt) else 143
        print(
            "\ndepthaccel reproduce: interrupted; finished runs and the last checkpoints are "
            "in the results store: run the same command again to resume",
            file=sys.stderr,
        )
        return interrupted
    finally:
        jobs.close_executor(executor)  # a Ray cluster this command started stops here
        torch.set_num_threads(threads_before)  # the command leaves global torch state as it was
        if interrupted is not None and _experiment_threads_alive():
            # Concurrent experiments' threads may be inside torch: an interpreter exit
            # would stop them mid-call (abort, C++ stack trace). What is worth keeping is
            # already safe (store transactions, atomic outputs), so leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(interrupted)


def _adopt_legacy(rel: str, path) -> bool:
    """Files of a results folder written before the manifest existed: OUT/REPORT.md as
    write_report writes it, and anything in OUT/<experiment>/ beside a result.json."""
    parts = rel.split("/")
    if rel == "REPORT.md":
        with open(path, "rb") as fh:
            return fh.read(64).startswith(b"# Reproduction report: Arora, Cohen & Hazan")
    return (
        len(parts) > 1
        and parts[0] in EXPERIMENTS
        and (path.parents[len(parts) - 2] / "result.json").is_file()
    )


def _check_store_is_not_an_output(args: argparse.Namespace) -> None:
    """Refuse a ``--store`` that is (or lies inside) one of the outputs in ``--out``:
    REPORT.md, the manifest or an experiment's folder would be written over it."""
    if not args.store or args.no_store:
        return
    store = os.path.abspath(args.store)
    if os.path.isdir(store):
        store = os.path.join(store, STORE_FILENAME)
    out = os.path.abspath(args.out)
    outputs = [os.path.join(out, n) for n in ("REPORT.md", MANIFEST_NAME)]
    folders = [os.path.join(out, n) for n in EXPERIMENTS]
    real = os.path.realpath(store)
    for cand in {store, real}:
        clash = any(_same_path(cand, o) for o in outputs) or any(
            _same_path(cand, f)
            or cand.startswith(os.path.realpath(f) + os.sep)
            or cand.startswith(f + os.sep)
            for f in folders
        )
        if clash:
            raise OutputFolderError(
                f"--store {args.store!r} is an output of --out {args.out!r} (REPORT.md, "
                f"{MANIFEST_NAME} and the experiments' folders are written there); "
                "choose another --store path"
            )


def _same_path(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _feature_scale_arg(text: str) -> str | float:
    """argparse type of ``--feature-scale``: a preset name or a number k > 0."""
    try:
        return parse_feature_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output_folder(args: argparse.Namespace, names: list[str]) -> OutputFolder:
    allowed = list(_STORE_NAMES)
    if args.store and not args.no_store:
        store = os.path.abspath(args.store)
        if os.path.isdir(store):
            store = os.path.join(store, STORE_FILENAME)
        rel = os.path.relpath(store, os.path.abspath(args.out))
        if not rel.startswith(".."):
            allowed += [rel + s for s in ("", "-wal", "-shm", "-journal")]
    return OutputFolder(args.out, force=args.force, allowed=allowed, adopt=_adopt_legacy)


def _eta(names: list[str], done: int, elapsed: float, quick: bool, workers: int = 1) -> str:
    """ "elapsed 1.2 min, about 3 min left": the remaining experiments' typical costs
    (their ``SPEC.cost``, shared by ``workers`` when experiments run concurrently).

    One after another (``workers`` 1), the costs are scaled by how the finished
    experiments compare with theirs, once those make up at least a tenth of the total
    (a few seconds of reused or tiny experiments say nothing about the pace of hours of
    training). Concurrently, the elapsed time also went into the experiments still
    running, so it is no measure of pace: the typical costs are given as they are."""
    col = 0 if quick else 1
    cost = [EXPERIMENTS[n].cost[col] if n in EXPERIMENTS else (5.0, 300.0)[col] for n in names]
    if done == len(names):
        return f"elapsed {_fmt_time(elapsed)}"
    left = sum(cost[done:]) / max(1, workers)
    seen = sum(cost[:done])
    if workers <= 1 and done and seen > 0 and seen >= 0.1 * sum(cost):
        left *= elapsed / seen
    return f"elapsed {_fmt_time(elapsed)}, about {_fmt_time(left)} left"


#: A coarse duration for ETAs: (below this many seconds, divide by, unit, format).
_ETA_UNITS = ((90, 1, "s", ".0f"), (5400, 60, "min", ".0f"), (float("inf"), 3600, "h", ".1f"))


def _fmt_time(s: float) -> str:
    limit, div, unit, fmt = next(u for u in _ETA_UNITS if s < u[0] or u[0] == float("inf"))
    return f"{s / div:{fmt}} {unit}"


def _claims_words(res, mode: str) -> str:
    """ "claims 3/4 pass (1 FAIL)", or what there is when nothing was assessed."""
    n_not = len(res.claims) - res.n_assessed
    if not res.claims:
        return "no claims to assess"
    if res.n_assessed == 0:
        return f"no claim assessed ({n_not} not assessed in {mode} mode)"
    verdict = "no FAIL" if res.n_failed == 0 else f"{res.n_failed} FAIL"
    if n_not:
        verdict += f", {n_not} not assessed in {mode} mode"
    return f"claims {res.n_passed}/{res.n_assessed} pass ({verdict})"


def _data_preflight(
    args: argparse.Namespace, names: list[str]
) -> tuple[list[str], str, dict[str, tuple[str, str]]]:
    """Check once, before any experiment starts, the data the experiments need (fetching
    it once when downloads are allowed). Returns the experiments to run, the message that
    says what to do when some are skipped for missing data (several lines; empty when
    none is), and for each skipped one (why, the command that gets its data) for the
    report."""
    from depthaccel.data.catalog import fetch_commands

    needs: dict[str, list[str]] = {}
    for n in names:
        ds = getattr(EXPERIMENTS[n], "data", "")
        if ds:
            needs.setdefault(ds, []).append(n)
    if not needs:
        return names, "", {}
    report = ensure_data(
        needs,
        args.data_dir,
        progress=progress(args),
        log=notes(args),
    )
    skipped = [n for ds in report.unusable for n in needs[ds]]
    if not skipped:
        return names, "", {}
    print(
        f"data check: skipping {', '.join(skipped)} ({', '.join(report.unusable)} not "
        "available; what to do is printed at the end)",
        file=sys.stderr,
        flush=True,
    )
    advice = report.advice({ds: needs[ds] for ds in report.unusable})
    why = {}
    for ds in report.unusable:
        fetch = fetch_commands([ds])[-1]
        program = fetch.split(" data fetch")[0]  # depthaccel, or its path when not on PATH
        for n in needs[ds]:
            again = f"{program} reproduce {n}{' --quick' if args.quick else ''}"
            why[n] = (f"its data ({ds}) is missing", f"{fetch} && {again}")
    return [n for n in names if n not in skipped], advice, why


def _run_all(args: argparse.Namespace, names: list[str], executor: Any = None) -> int:
    store = (
        None if args.no_store else (args.store or os.path.join(args.out, "depthaccel-store.sqlite"))
    )
    _output_folder(args, names).prepare()
    n_asked = len(names)
    names, data_advice, skipped = _data_preflight(args, names)
    # every experiment gets its own context (its own store counts); they share the data
    # and optima through one cache
    context_options = dict(
        device=args.device,
        dtype=args.dtype,
        progress=progress(args),
        log=notes(args),
        data_dir=args.data_dir,
        store=store,
        checkpoint_every=args.checkpoint_every,
        cache=ContextCache(),
        executor=executor,
        setup=SetupAxes(args.feature_scale, args.loss_scale),
    )
    mode = "quick" if args.quick else "full"
    errors: list[str] = []
    failed_claims: list[str] = []
    assessed = [0]  # claims assessed over all experiments
    t_all = time.perf_counter()

    def one(name: str) -> Any:
        """The experiment's result, or the exception it raised."""
        try:
            get_experiment(name)  # a missing module is an error of this experiment
            config = None
            if name == "mnist-e2e" and getattr(args, "precondition_every", None) is not None:
                config = dataclasses.replace(
                    config_for(name, quick=args.quick), precondition_every=args.precondition_every
                )
            return run_experiment(
                name, args.out, quick=args.quick, config=config, **context_options
            )
        except Exception as exc:  # keep going with the others
            return exc

    def tell(i: int, name: str, res: Any, order: list[str], done: int) -> None:
        """Print the experiment's outcome; the ETA counts ``order[:done]`` as finished."""
        if isinstance(res, Exception):
            msg = "".join(traceback.format_exception_only(type(res), res)).strip()
            print(f"[{i}/{len(names)}] {name}: ERROR: {msg}", file=sys.stderr, flush=True)
            errors.append(name)
            return
        st = res.settings.get("results_store") or {}
        runs = (
            f"; runs: {st['runs_reused']} reused from the store, {st['runs_trained']} trained"
            if st
            else ""
        )
        if st.get("tasks_reused") or st.get("tasks_run"):
            runs += f"; tasks: {st['tasks_reused']} reused from the store, {st['tasks_run']} run"
        print(
            f"[{i}/{len(names)}] {name}: done in {res.wall_time:.1f} s; "
            f"{_claims_words(res, mode)}{runs}; "
            f"{_eta(order, done, time.perf_counter() - t_all, args.quick, workers)}",
            flush=True,
        )
        assessed[0] += res.n_assessed
        if res.n_failed:
            failed_claims.append(name)

    concurrent = _concurrent(executor, names)
    workers = max(1, int(getattr(executor, "workers", 1))) if concurrent else 1
    if concurrent:
        _run_concurrently(names, one, tell, executor, mode)
    else:
        for i, name in enumerate(names, 1):
            eta = _eta(names, i - 1, time.perf_counter() - t_all, args.quick)
            print(f"[{i}/{len(names)}] {name} ({mode}) ... {eta}", flush=True)
            tell(i, name, one(name), names, i)
    failed_claims.sort(key=names.index)
    errors.sort(key=names.index)
    report = write_report(args.out, skipped=skipped)
    took = time.perf_counter() - t_all
    ok = len(names) - len(errors)
    summary = f"{ok}/{n_asked} experiments ran in {took:.1f} s"
    if failed_claims:
        summary += f"; claims FAIL in: {', '.join(failed_claims)}"
    elif assessed[0]:
        summary += f"; no claim FAILs ({assessed[0]} assessed)"
    else:
        summary += "; no claim was assessed"
    if errors:
        summary += f"; ERRORS in: {', '.join(errors)}"
    if store is not None:
        summary += f"; results store: {store}"
    if data_advice:
        summary += f"; {n_asked - len(names)} skipped for missing data"
    print(f"{summary}. Report: {report}", flush=True)
    if data_advice:
        print(f"depthaccel reproduce: {data_advice}", file=sys.stderr, flush=True)
    return 1 if errors else (3 if data_advice else 0)


_THREAD_PREFIX = "depthaccel experiment "


def _experiment_threads_alive() -> bool:
    import threading

    return any(t.name.startswith(_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())


def _concurrent(executor: Any, names: list[str]) -> bool:
    """Experiments run concurrently on a Ray executor (their shards and tasks share the
    cluster); in this process, one after another."""
    return executor is not None and getattr(executor, "turns", False) is None and len(names) > 1


def _run_concurrently(names, one, tell, executor, mode) -> None:
    """Every experiment in a thread of its own; their code takes turns
    (``depthaccel.executors.turns``: one at a time, pyplot is not thread-safe) and gives
    the turn away while its shards or tasks run on the cluster. An experiment whose
    registry entry names others in ``after`` (it reuses their stored runs) starts only
    when those have ended, so the same run is never trained twice at once."""
    import threading

    from depthaccel.executors.turns import DriverTurns

    turns = DriverTurns()
    executor.turns = turns
    finished: list[str] = []
    ended = {n: threading.Event() for n in names}
    stopped = threading.Event()  # the command was interrupted: the threads end quietly
    waits = {n: [a for a in EXPERIMENTS[n].after if a in ended] for n in names}

    def work(i: int, name: str) -> None:
        try:
            for a in waits[name]:  # runs it reuses from `a`: never trained twice at once
                ended[a].wait()
            with turns.turn():
                if stopped.is_set():
                    return
                print(f"[{i}/{len(names)}] {name} ({mode}) ... started", flush=True)
                res = one(name)
                if stopped.is_set():  # its error is the closing executor's, not its own
                    return
                finished.append(name)
                order = finished + [n for n in names if n not in finished]
                tell(i, name, res, order, len(finished))
        finally:
            ended[name].set()

    print(
        f"running {len(names)} experiments concurrently on {executor.name} "
        f"({executor.workers} workers)",
        flush=True,
    )
    threads = [
        threading.Thread(target=work, args=(i, n), name=f"{_THREAD_PREFIX}{n}", daemon=True)
        for i, n in enumerate(names, 1)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)  # a short wait: Ctrl-C reaches this thread
    except BaseException:
        stopped.set()  # before the executor closes and the threads' Ray calls fail
        raise
    finally:
        executor.turns = None
