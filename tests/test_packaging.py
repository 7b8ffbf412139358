"""Packaging and the Makefile: the first-hour promises (torch index, pip progress, deps)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_scipy_is_a_test_dependency_only():
    deps = pyproject()["project"]
    assert not any(d.startswith("scipy") for d in deps["dependencies"])
    assert any(d.startswith("scipy") for d in deps["optional-dependencies"]["dev"])
    users = [
        p.relative_to(REPO)
        for p in (REPO / "src").rglob("*.py")
        if re.search(r"^\s*(import scipy|from scipy)", p.read_text(), re.M)
    ]
    assert users == []


def make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    r = subprocess.run(
        ["make", "-n", "-B", "setup", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_setup_takes_the_torch_index_and_shows_progress():
    default = make_dry_run()
    torch_line = next(ln for ln in default.splitlines() if "pip install torch==" in ln)
    assert "--index-url" not in torch_line  # the default works with pip's own index
    assert " -q" not in torch_line  # pip's progress is shown for the big downloads
    assert all(" -q" not in ln for ln in default.splitlines() if "pip install -e" in ln)
    cpu = make_dry_run("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu


def test_make_reproduce_accepts_the_missing_data_exit_status():
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    r = subprocess.run(
        ["make", "-n", "reproduce"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "depthaccel reproduce all" in r.stdout and "[ $? -eq 3 ]" in r.stdout
