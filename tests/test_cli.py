"""The top-level command line: ``depthaccel --version`` and ``python -m depthaccel``."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from depthaccel.cli import COMMANDS, main, version_string


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == version_string()
    assert out.startswith(f"depthaccel {importlib.metadata.version('depthaccel')} (torch ")


def test_no_command_prints_help_exit_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS) and "--version" in out


def test_python_dash_m_runs_the_same_cli():
    r = subprocess.run(
        [sys.executable, "-m", "depthaccel", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.strip() == version_string()
