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


# ------------------------------------------------------------ metadata, citation, typing


def test_metadata_names_license_urls_and_classifiers():
    project = pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "Permission is hereby granted, free of charge" in (REPO / "LICENSE").read_text()
    assert "1802.06509" in project["urls"]["Paper"]
    assert "Typing :: Typed" in project["classifiers"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # (SPDX)
    dev = project["optional-dependencies"]["dev"]
    assert any(d.startswith("mypy") for d in dev) and any(d.startswith("build") for d in dev)
    assert (REPO / "src" / "depthaccel" / "py.typed").exists()
    assert pyproject()["tool"]["setuptools"]["package-data"]["depthaccel"] == ["py.typed"]


def test_citation_prefers_the_paper_and_the_readme_has_its_bibtex():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"] == (
        "On the Optimization of Deep Networks: Implicit Acceleration by Overparameterization"
    )
    assert [a["family-names"] for a in paper["authors"]] == ["Arora", "Cohen", "Hazan"]
    assert paper["year"] == 2018 and "ICML 2018" in paper["conference"]["name"]
    assert any("1802.06509" in i["value"] for i in paper["identifiers"])
    version = re.search(
        r'^__version__ = "(.+)"', (REPO / "src/depthaccel/__init__.py").read_text(), re.M
    )
    assert version and str(cff["version"]) == version.group(1) == pyproject()["project"]["version"]
    bib = re.search(
        r"```bibtex\n(@inproceedings\{.*?\n\})\n```", (REPO / "README.md").read_text(), re.S
    )
    assert bib, "README has no BibTeX block"
    for field in ("Arora, Sanjeev and Cohen, Nadav and Hazan, Elad", "1802.06509", "2018"):
        assert field in bib.group(1)


def test_changelog_follows_keep_a_changelog_from_the_current_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text and "## [Unreleased]" in text
    version = pyproject()["project"]["version"]
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)
    heads = set(re.findall(r"^### (\w+)", text, re.M))
    assert heads <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _mypy(*args: str, python: str | None = None) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(REPO / ".mypy_cache")]
    if python:
        cmd += ["--python-executable", python]
    return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_public_api_passes_mypy_strict():
    """A user's script over the package's exports type-checks under ``mypy --strict``
    (the package ships py.typed; ``step()`` is typed as torch types it), and a wrong call
    is caught, so the check can fail."""
    r = _mypy("tests/typecheck/public_api.py")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = "import torch\nfrom depthaccel import EndToEndSGD\nEndToEndSGD([torch.zeros(2)], lr='a', depth=2)\n"
    r = _mypy("-c", bad)
    assert r.returncode == 1 and "[arg-type]" in r.stdout, r.stdout


# ------------------------------------------------------------ the built package


@pytest.mark.slow
def test_sdist_and_wheel_install_and_run_outside_the_tree(tmp_path):
    """``python -m build`` (the wheel built from the sdist), each installed in a fresh
    venv outside the source tree: ``depthaccel --version``, the shortest demo, and the
    installed package's types (py.typed) seen by mypy. Torch comes from pip's index."""
    pytest.importorskip("build")
    dist = tmp_path / "dist"
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    sdist, wheel = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert len(sdist) == 1 and len(wheel) == 1
    import tarfile
    import zipfile

    names = zipfile.ZipFile(wheel[0]).namelist()
    assert "depthaccel/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    members = {m.split("/", 1)[1] for m in tarfile.open(sdist[0]).getnames() if "/" in m}
    assert {"LICENSE", "CITATION.cff", "CHANGELOG.md", "src/depthaccel/py.typed"} <= members

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, exe = str(venv / "bin" / "python"), str(venv / "bin" / "depthaccel")
    torch_req = "torch==" + __import__("torch").__version__.split("+")[0]
    for i, artefact in enumerate((sdist[0], wheel[0])):
        extra = [torch_req] if i == 0 else ["--force-reinstall", "--no-deps"]
        r = subprocess.run(
            [py, "-m", "pip", "install", "-q", str(artefact), *extra],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        r = subprocess.run(
            [exe, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0 and r.stdout.startswith("depthaccel "), r.stdout + r.stderr
    r = subprocess.run(
        [exe, "demo", "--steps", "30", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "EndToEndSGD" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        [py, "-c", "import depthaccel, pathlib; print(pathlib.Path(depthaccel.__file__).parent)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert str(venv) in r.stdout  # the installed copy, not the source tree
    r = _mypy("tests/typecheck/public_api.py", python=py)
    assert r.returncode == 0, r.stdout + r.stderr
