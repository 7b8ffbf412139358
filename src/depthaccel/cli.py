"""The ``depthaccel`` command line: it only parses arguments and dispatches."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthaccel",
        description=(
            "Implicit acceleration by overparameterization (Arora, Cohen & Hazan, ICML 2018): "
            "reproduce the paper, test depth on your own data, check the theory."
        ),
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
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
