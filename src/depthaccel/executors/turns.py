"""Turns for driver code that runs in several threads of one process.

``depthaccel reproduce all --jobs N`` runs its experiments in threads of the driver so
that their shards and tasks are on the cluster at the same time. The experiments' own
code (data loading, grid bookkeeping, plots with matplotlib's pyplot, which is not
thread-safe) must not run concurrently, so it runs only while its thread holds the
*turn*; an executor gives the turn away while it waits for remote work
(``DriverTurns.released``) and takes it back before returning to the experiment. The
driver's event handling done while waiting (store writes on the sweep's own SQLite
connection, its progress bar) is thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DriverTurns"]


class DriverTurns:
    """One thread at a time runs driver code; waiting on remote work lets another run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = threading.local()

    def holds(self) -> bool:
        """Whether the calling thread holds the turn."""
        return bool(getattr(self._held, "value", False))

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Run the body with the turn (blocks until no other thread has it)."""
        self._lock.acquire()
        self._held.value = True
        try:
            yield
        finally:
            self._held.value = False
            self._lock.release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the turn away for the body (a no-op in a thread that does not hold it)."""
        if not self.holds():
            yield
            return
        self._held.value = False
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
            self._held.value = True
