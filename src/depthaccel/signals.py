"""SIGTERM ends a command the way Ctrl-C does: as an exception, so that cleanup runs.

By default SIGTERM kills Python at once (no ``finally``: a Ray cluster the command
started would outlive it), and once Ray is initialised its handler calls
``sys.exit(15)`` from whatever the main thread is doing. The command line installs
:func:`handle_sigterm` instead: the first SIGTERM raises :class:`Terminated` (a
``KeyboardInterrupt``, so every ``except KeyboardInterrupt`` that saves a checkpoint or
cancels tasks handles it too); further ones are ignored while that cleanup runs (a
``kill -9`` still ends the process). :func:`exit_status` gives the documented exit
status: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.

An interruption can land where Python cannot raise it: in a ``__del__``, a weakref
callback, or an ``os.register_at_fork`` hook (logging's ``_releaseLock`` runs in the
parent after every fork, and starting Ray forks many processes). Python then prints
"Exception ignored in ..." with a traceback and carries on as if the signal had never
come. While :func:`handle_sigterm` is active such a swallowed interruption is delivered
again instead, in the main thread at its next instruction, and nothing is printed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["Terminated", "exit_status", "handle_sigterm", "terminated"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (raised in the main thread by :func:`handle_sigterm`)."""


# Set when SIGTERM arrived: code between the handler and the caller (Ray's waits turn
# any exception of a signal handler into a plain KeyboardInterrupt) may lose the type.
_sigterm_received = False


def terminated() -> Terminated:
    """Record that SIGTERM arrived and return the exception that says so (for code that
    learns of it otherwise, e.g. from Ray's own handler's ``SystemExit(15)``)."""
    global _sigterm_received
    _sigterm_received = True
    return Terminated()


def exit_status(exc: BaseException) -> int:
    """128 + the signal number: 143 for :class:`Terminated` (or any interruption after
    a SIGTERM arrived), 130 for Ctrl-C."""
    if isinstance(exc, Terminated) or _sigterm_received:
        return 128 + signal.SIGTERM
    return 128 + signal.SIGINT


def _signal_main_later(signum: int, delay: float = 0.01) -> None:
    time.sleep(delay)
    signal.pthread_kill(threading.main_thread().ident, signum)


@contextlib.contextmanager
def handle_sigterm() -> Iterator[None]:
    """While the block runs (main thread only; elsewhere a no-op), the first SIGTERM
    raises :class:`Terminated` and later ones are ignored, and an interruption that
    Python could only report as "Exception ignored" is raised again in the main thread;
    the previous handler and ``sys.unraisablehook`` are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _sigterm_received
    _sigterm_received = False
    fired = False

    def handler(signum, frame):
        nonlocal fired
        if fired:
            return  # cleanup of the first one is running
        fired = True
        raise terminated()

    def redeliver(unraisable) -> None:
        nonlocal fired
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)
            return
        if isinstance(unraisable.exc_value, Terminated):
            fired = False  # the handler raises again
            signum = signal.SIGTERM
        else:
            signum = signal.SIGINT
        # Not from here: whatever this hook raises is ignored too. A helper thread sends
        # the signal to the main thread again once this hook has returned.
        threading.Thread(target=_signal_main_later, args=(signum,), daemon=True).start()

    previous = signal.signal(signal.SIGTERM, handler)
    previous_hook, sys.unraisablehook = sys.unraisablehook, redeliver
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)
