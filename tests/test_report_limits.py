"""REPORT.md stays scannable: short table cells, no inline JSON; and the store keys of a
quick reproduction never change under a refactor (a stored full-mode run stays usable)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from depthaccel.experiments.report import MAX_CELL_WORDS, check_report

ROOT = Path(__file__).resolve().parents[1]


def test_check_report_finds_long_cells_and_inline_json():
    ok = "| a | b |\n|---|---|\n| short | cell \\| with a pipe |\n"
    assert check_report(ok) == []
    long = "| " + " ".join(["word"] * (MAX_CELL_WORDS + 1)) + " | x |\n"
    assert "a cell of 41 words" in check_report(long)[0]
    assert check_report("```json\n{\n}\n```")[0] == "line 1: inline JSON"


def test_committed_report_meets_the_limits():
    path = ROOT / "docs" / "reproduction" / "REPORT.md"
    text = path.read_text()
    if "| claims PASS / assessed |" not in text:
        pytest.skip("docs/reproduction/REPORT.md is in the older format (regenerate it)")
    assert check_report(text) == []
    assert len(text.splitlines()) <= 1200


@pytest.mark.slow
def test_quick_reproduction_keeps_its_store_keys_and_the_report_limits(tmp_path):
    """``reproduce --quick`` of the experiments listed in tests/data/quick_store_keys.json
    writes exactly the run and task keys pinned there (written by the code before the
    experiments were split into measure/judge/render; regenerate it only for a change
    meant to retrain), and its REPORT.md meets the limits."""
    from depthaccel.cli import main

    data = os.environ.get("DEPTHACCEL_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    if not (Path(data) / "gas_sensor_drift").is_dir() or not (Path(data) / "mnist").is_dir():
        pytest.skip("needs the Ethanol and MNIST data")
    pinned = json.loads((ROOT / "tests" / "data" / "quick_store_keys.json").read_text())
    out = tmp_path / "out"
    # the keys were pinned at feature scale k = 1 (z-scores), before the default moved
    argv = ["reproduce", *pinned["experiments"], "--quick", "--out", str(out), "--no-progress"]
    argv += ["--feature-scale", "zscore"]
    assert main([*argv, "--data-dir", data]) == 0
    with sqlite3.connect(out / "depthaccel-store.sqlite") as db:
        runs = sorted(r[0] for r in db.execute("SELECT key FROM runs"))
        tasks = sorted(r[0] for r in db.execute("SELECT key FROM tasks"))
    assert set(runs) == set(pinned["runs"]) and set(tasks) == set(pinned["tasks"])
    report = (out / "REPORT.md").read_text()
    assert check_report(report) == []
    assert "feature scale zscore (k = 1: unit variance per column)" in report
    assert "(NOT the default)" in report  # the pinned keys' setup, said so at the top


def test_readme_findings_are_generated_from_the_committed_results():
    """README's "What the reproduction found" is findings_section(docs/reproduction):
    regenerate it with `python -m depthaccel.experiments.findings docs/reproduction
    README.md` after regenerating the results."""
    from depthaccel.experiments.findings import BEGIN, END, findings_section

    readme = (ROOT / "README.md").read_text()
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == findings_section(ROOT / "docs" / "reproduction").strip()
