"""Flags that mean the same in every command: ``--no-progress`` and ``--quiet``.

- ``--no-progress``: no progress bars (they go to stderr).
- ``--quiet`` (``-q``): no progress bars and no notes on stderr (what the results store
  reused, data checks); results, warnings that change a result, and errors still print.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["add_output_flags", "notes", "progress"]


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--no-progress`` and ``--quiet`` to a command's parser."""
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they go to stderr)"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars and no notes on stderr (what was reused, data checks); "
        "results and errors still print",
    )


def progress(args: argparse.Namespace) -> bool:
    """Whether to show progress bars."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def notes(args: argparse.Namespace) -> Callable[[str], None]:
    """Where one-line notes go: stderr, or nowhere with ``--quiet``."""
    if getattr(args, "quiet", False):
        return lambda message: None
    return lambda message: print(message, file=sys.stderr, flush=True)
