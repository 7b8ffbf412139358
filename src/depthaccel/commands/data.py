"""``depthaccel data where|check|fetch``: where the data is looked for, what is there,
and downloading the official files (see :mod:`depthaccel.data.catalog`)."""

from __future__ import annotations

import argparse
import os
import sys

from depthaccel.commands.flags import add_output_flags, progress
from depthaccel.data import catalog

_DESCRIPTION = """\
The experiments need two public data sets, under one data folder:
  ethanol  gas_sensor_drift/batch1.dat .. batch10.dat (UCI-270, from the official archive),
           or this project's prepared table gas_sensor_drift/ethanol_2565.csv.gz
  mnist    mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (official IDX files)
The data folder is, in this order: --data-dir, $DEPTHACCEL_DATA_DIR, ../shared/data
beside a source checkout (when it exists), else the cache folder
(~/.cache/depthaccel or $XDG_CACHE_HOME/depthaccel), where downloads go.

  where   print those candidates and which one is used
  check   list every file as OK / MISSING / CORRUPT with its size and sha256
          (exit 1 when a data set is not usable)
  fetch   download the missing or corrupt official files, verify each sha256, and
          put it in place only then (progress bars on stderr); offline, print exact
          manual instructions (exit 1)"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "data",
        help="where the data is looked for, what is there (check), download it (fetch)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("where", "check", "fetch"), help="what to do")
    p.add_argument(
        "datasets",
        nargs="*",
        metavar="DATASET",
        help=f"data set(s): {', '.join(catalog.DATASETS)} (default: all)",
    )
    p.add_argument("--data-dir", default=None, help="data folder (default: see above)")
    add_output_flags(p)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(args.datasets)) or list(catalog.DATASETS)
    unknown = [n for n in names if n not in catalog.DATASETS]
    if unknown:
        args._parser.error(
            f"unknown data set(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(catalog.DATASETS)}"
        )
    if args.data_dir is not None and os.path.exists(args.data_dir):
        if not os.path.isdir(args.data_dir):
            args._parser.error(f"--data-dir {args.data_dir!r} is not a directory")
    if args.action == "where":
        return _where(args)
    if args.action == "check":
        report = catalog.check_data(names, args.data_dir)
        print(report.format())
        if not report.ok:
            print(report.advice(), file=sys.stderr)
        return 0 if report.ok else 1
    return _fetch(args, names)


def _where(args: argparse.Namespace) -> int:
    print("The data folder is the first of these that applies:")
    for i, loc in enumerate(catalog.data_locations(args.data_dir), 1):
        if loc.path is None:
            state = "not set" if i < 3 else "not in a source checkout"
            shown = "-"
        else:
            state = "exists" if loc.exists else "does not exist"
            shown = str(loc.path)
        mark = "  <- used" if loc.chosen else ""
        print(f"  {i}. {loc.how}: {shown} ({state}){mark}")
    print("Files needed (relative to the data folder):")
    for name in catalog.DATASETS:
        for f in catalog.catalog(name):
            size = "size unknown" if f.size is None else f"{f.size:,} bytes"
            src = f.urls[0] if f.urls else (f.archive_urls[0] if f.archive_urls else f.note)
            print(f"  {name:<8} {f.path:<40} {size:>16}  sha256 {f.sha256}")
            print(f"  {'':<8} from {src}")
    return 0


def _fetch(args: argparse.Namespace, names: list[str]) -> int:
    res = catalog.fetch_data(
        names,
        args.data_dir,
        progress=progress(args),
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    for path in res.fetched:
        print(f"fetched {path}")
    report = res.report
    print(report.format())
    if res.errors:
        for e in res.errors:
            print(f"depthaccel data fetch: could not download: {e}", file=sys.stderr)
    if not report.ok or res.errors:
        print(
            "To get the files by hand (e.g. on an offline machine):\n"
            + catalog.offline_instructions(report),
            file=sys.stderr,
        )
    if not res.fetched and not res.errors:
        print("nothing to fetch: every official file is present and verified"
              if all(not d.missing and not d.corrupt for d in report.datasets.values())
              else "nothing downloadable is missing")  # fmt: skip
    return 0 if report.ok else 1
