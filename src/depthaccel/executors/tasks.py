"""Independent tasks of ``Executor.map``: the forms of a task function, and the hooks that
report each task's result and checkpoints to the caller while the others run."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskFn", "TaskHooks"]

#: A task of ``Executor.map``: ``fn(item)``, or ``fn(item, start, emit)`` when its
#: :class:`TaskHooks` checkpoint it.
TaskFn = Callable[..., Any]


@dataclass(frozen=True)
class TaskHooks:
    """What ``Executor.map`` reports to its caller while the tasks run, and where
    checkpointed tasks start. Every hook is called in the caller's process and thread.

    Attributes:
        on_result: ``on_result(i, result)`` as soon as task ``i`` is done (so a driver
            can store it before the others end).
        on_checkpoint: with it, the tasks are checkpointed: each is called as
            ``fn(item, start, emit)`` and every ``emit(step, state)`` of task ``i``
            reaches ``on_checkpoint(i, step, state)`` while the task runs.
        resume: task ``i``'s ``start`` is ``resume[i]`` (None without ``resume``).
    """

    on_result: Callable[[int, Any], None] | None = None
    on_checkpoint: Callable[[int, int, Any], None] | None = None
    resume: Sequence[Any] | None = None

    @property
    def checkpointed(self) -> bool:
        return self.on_checkpoint is not None

    def start(self, i: int) -> Any:
        """Where checkpointed task ``i`` starts: ``resume[i]``, or None."""
        return None if self.resume is None else self.resume[i]

    def done(self, i: int, result: Any) -> None:
        """Task ``i`` finished with ``result``: tell ``on_result``."""
        if self.on_result is not None:
            self.on_result(i, result)

    def run(self, fn: TaskFn, i: int, item: Any) -> Any:
        """Task ``i`` in this process: ``fn(item)``, or ``fn(item, start, emit)`` when
        checkpointed; its result also goes to ``on_result``."""
        if self.on_checkpoint is None:
            result = fn(item)
        else:
            result = fn(item, self.start(i), functools.partial(self.on_checkpoint, i))
        self.done(i, result)
        return result
