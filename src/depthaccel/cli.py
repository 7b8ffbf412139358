"""The ``depthaccel`` command line: it only parses arguments and dispatches.

Each sub-command lives in ``depthaccel.commands.<name>`` and provides
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func`` with
``parser.set_defaults(func=...)``); the function receives the parsed namespace and
returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules under depthaccel.commands, in the order --help lists them.
COMMANDS: tuple[str, ...] = ("reproduce", "demo", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthaccel",
        description=(
            "Implicit acceleration by overparameterization (Arora, Cohen & Hazan, ICML 2018): "
            "reproduce the paper, test depth on your own data, check the theory."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"depthaccel.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
