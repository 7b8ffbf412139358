"""Two reproduction folders side by side (experiments.report_diff)."""

from __future__ import annotations

import json

from depthaccel.experiments.report_diff import claim_changes, diff_table, main
from depthaccel.experiments.results import RESULT_NAME, Claim, ExperimentResult


def _claim(statement, passed):
    return Claim.judged(statement, "p", "m", passed, why="w")


def _write(root, name, claims, status="ok"):
    r = ExperimentResult(name, "T", "full", {}, claims=claims, status=status)
    (root / name).mkdir(parents=True)
    (root / name / RESULT_NAME).write_text(json.dumps(r.to_json(root)))


def test_claim_changes_match_by_statement_then_by_position():
    old = [_claim("A holds; every seed", False), _claim("B holds", True)]
    new = [_claim("a  holds", True), _claim("B holds", True)]  # A reworded in case only
    assert claim_changes(old, new) == [("a  holds", "FAIL", "PASS")]
    # reworded beyond the key, same count: matched by position
    assert claim_changes(old, [_claim("A, reworded", False), _claim("B", False)]) == [
        ("B", "PASS", "FAIL")
    ]
    # a claim added and one gone (counts differ): both listed
    got = claim_changes(old, [_claim("B holds", True), _claim("C", None), _claim("D", True)])
    assert got == [
        ("C", "-", "NOT ASSESSED"),
        ("D", "-", "PASS"),
        ("A holds; every seed", "FAIL", "-"),
    ]


def test_diff_table_and_its_command(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old, "claim1", [_claim("x", True), _claim("y", False)])
    _write(new, "claim1", [_claim("x", True), _claim("y", True)])
    _write(old, "fig2", [_claim("z", False)])
    _write(new, "thm2", [_claim("t", True)])
    _write(new, "fig3", [], status="error")
    table = diff_table(old, new)
    lines = table.splitlines()
    assert lines[2] == "| claim1 | 1/2 | 2/2 | y: FAIL -> PASS |"
    assert lines[3] == "| thm2 | not run | 1/1 |  |"  # registry order
    assert lines[4] == "| fig2 | 0/1 | not run |  |"
    assert lines[5] == "| fig3 | not run | ERROR |  |"
    assert lines[-1] == "| in both | 1/2 | 2/2 | |"  # only what both folders have
    assert main([str(old), str(new)]) == 0 and capsys.readouterr().out.strip() == table
    assert main([str(old)]) == 2
    assert main([str(old), str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
