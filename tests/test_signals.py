"""depthaccel.signals: an interruption Python can only report as "Exception ignored"
(raised in ``__del__`` or an at-fork hook) is delivered again, not lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from depthaccel.signals import Terminated, handle_sigterm


def _spin() -> None:
    time.sleep(5)  # a signal sent again ends the sleep at once


class _RaisesOnDelete:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Terminated()], ids=["SIGINT", "SIGTERM"])
def test_an_interruption_swallowed_in_del_is_raised_again(exc, capfd):
    with pytest.raises(type(exc)), handle_sigterm():
        _RaisesOnDelete(exc)  # deleted at once: Python can only "ignore" what it raises
        _spin()
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err, err


def test_other_unraisable_errors_still_reach_the_previous_hook():
    seen = []
    previous, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with handle_sigterm():
            _RaisesOnDelete(ValueError("boom"))
    finally:
        sys.unraisablehook = previous
    assert [type(u.exc_value) for u in seen] == [ValueError]


def test_the_hook_is_restored_after_the_block():
    before = sys.unraisablehook
    with handle_sigterm():
        assert sys.unraisablehook is not before
    assert sys.unraisablehook is before


def test_ctrl_c_during_a_fork_reaches_the_command():
    # The real case: starting Ray forks, and logging's at-fork hook (_releaseLock) runs
    # in the parent; a SIGINT landing there was printed as "Exception ignored in:
    # <function _releaseLock>" with a traceback, and the command carried on.
    script = textwrap.dedent(
        """
        import os
        import time
        from depthaccel.signals import handle_sigterm

        fired = []

        def hook():
            if not fired:
                fired.append(1)
                raise KeyboardInterrupt

        os.register_at_fork(after_in_parent=hook)
        try:
            with handle_sigterm():
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
                time.sleep(5)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "interrupted", done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
