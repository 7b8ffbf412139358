"""The ``depthaccel`` command line: it only parses arguments and dispatches.

Each sub-command lives in ``depthaccel.commands.<name>`` and provides
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func`` with
``parser.set_defaults(func=...)``); the function receives the parsed namespace and
returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import sys
import warnings

from depthaccel.signals import exit_status, handle_sigterm

# Sub-command modules under depthaccel.commands, in the order --help lists them.
COMMANDS: tuple[str, ...] = ("reproduce", "demo", "compare", "data")


def version_string() -> str:
    """``depthaccel X (torch Y, Python Z)``; X from the installed package's metadata."""
    try:
        version = importlib.metadata.version("depthaccel")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        from depthaccel import __version__

        version = f"{__version__} (not installed)"
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"depthaccel {version} (torch {torch_version}, Python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """``--version``: computed only when asked for."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_string())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthaccel",
        description=(
            "Implicit acceleration by overparameterization (Arora, Cohen & Hazan, ICML 2018): "
            "reproduce the paper, test depth on your own data, check the theory."
        ),
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version (and torch's) and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"depthaccel.commands.{name}").add_parser(sub)
    parser.set_defaults(_commands=sub.choices)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach a command's user as one line, without Python's source location."""
    text = " ".join(str(message).split())
    print(f"depthaccel: warning: {text}", file=file or sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # the command's own usage, not the top-level one
        command = args._commands.get(args.command) if args.command else None
        (command or parser).error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings(), handle_sigterm():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM where the command has no handler
        print(f"\ndepthaccel {args.command}: interrupted", file=sys.stderr)
        return exit_status(e)
    except BrokenPipeError:  # e.g. `depthaccel data where | head`: not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
