"""Tests of depthaccel.executors (the package): make_executor, Ray stays optional."""

from __future__ import annotations

import subprocess
import sys

import pytest

from depthaccel.executors import (
    RAY_MISSING,
    Executor,
    ExecutorError,
    LocalExecutor,
    TaskHooks,
    make_executor,
)


def test_one_job_without_an_address_stays_in_process(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert make_executor(1) is None
    assert make_executor(1, threads=4) is None


@pytest.mark.parametrize("bad", [{"jobs": 0}, {"jobs": -2}, {"jobs": 1.5}, {"threads": 0}])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        make_executor(**bad)


def test_without_ray_a_one_line_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for kwargs in ({"jobs": 2}, {"address": "127.0.0.1:6379"}):
        with pytest.raises(ExecutorError) as info:
            make_executor(**kwargs)
        assert str(info.value) == RAY_MISSING and "\n" not in RAY_MISSING
        assert "pip install 'depthaccel[ray]'" in RAY_MISSING
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # the address may come from the env
    with pytest.raises(ExecutorError, match="Ray is not installed"):
        make_executor(1)


def test_importing_the_package_does_not_import_ray():
    code = (
        "import sys, depthaccel, depthaccel.sweep, depthaccel.executors, depthaccel.cli\n"
        "from depthaccel.executors import LocalExecutor\n"
        "depthaccel.cli.build_parser()\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_local_executor_is_an_executor():
    ex = LocalExecutor(2)
    assert isinstance(ex, Executor)
    assert ex.workers == 2 and ex.name == "local"
    assert ex.map(lambda x: x * x, [1, 2, 3]) == [1, 4, 9]
    got = []
    hooks = TaskHooks(on_result=lambda i, r: got.append((i, r)))
    assert ex.map(lambda x: -x, [1, 2], hooks=hooks) == [-1, -2]
    assert got == [(0, -1), (1, -2)]
    assert ex.settings() == {"executor": "local", "workers": 2}
    with pytest.raises(ValueError, match="workers"):
        LocalExecutor(0)
