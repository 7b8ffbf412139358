"""Experiment results: claims, the result record and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from depthaccel.experiments.results import Claim, ExperimentResult, to_jsonable


def test_to_jsonable():
    @dataclass
    class C:
        a: tuple = (1, 2)
        b: float = float("inf")

    out = to_jsonable({"c": C(), "x": np.float32(1.5), "arr": np.arange(3), "p": Path("/a")})
    assert out == {"c": {"a": [1, 2], "b": "inf"}, "x": 1.5, "arr": [0, 1, 2], "p": "/a"}
    json.dumps(out)


def test_result_json_roundtrip(tmp_path):
    r = ExperimentResult(
        "x",
        "T",
        "quick",
        {"a": 1},
        figures=[tmp_path / "x" / "f.png"],
        claims=[Claim.judged("c", "p", "m", False, why="w", details={"seed": [0, 1]})],
        wall_time=1.5,
    )
    back = ExperimentResult.from_json(r.to_json(tmp_path), tmp_path)
    assert back.figures == [tmp_path / "x" / "f.png"]
    assert back.claims == r.claims and back.wall_time == 1.5 and back.n_failed == 1


def test_claim_verdicts_and_counts():
    claims = [
        Claim.judged("a", "pa", "1", True, why="dropped for a PASS"),
        Claim.judged("b", "pb", "2", False, why="b is 2"),
        Claim.judged("c", "pc", "3", None),
    ]
    r = ExperimentResult(claims=claims)
    assert [c.verdict for c in claims] == ["PASS", "FAIL", "NOT ASSESSED"]
    assert [c.why for c in claims] == ["", "b is 2", ""]
    assert (r.n_passed, r.n_failed, r.n_assessed) == (1, 1, 2)


def test_claim_checks_its_fields():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("a", "p", "m", "not assessed")
    with pytest.raises(ValueError, match="needs a why"):
        Claim.judged("a", "p", "m", False)


def test_claim_reads_the_older_json_form():
    old = {"text": "t", "measured": "m", "passed": False, "note": "quick mode"}
    c = Claim.from_json(old)
    assert (c.statement, c.verdict, c.why, c.details) == (
        "t",
        "FAIL",
        "quick mode",
        {"note": "quick mode"},
    )


@pytest.mark.parametrize(
    "text, words, short",
    [
        # remarks go, nested ones included; the first clause is kept
        (
            "ms per step (mean of 100 steps; batch 64, 1 thread(s)): a 1.0, b 2.0; c",
            15,
            "ms per step: a 1.0, b 2.0",
        ),
        # math parentheses (no space before them) stay
        ("eigenvalues are K(s_r, s_r') of Claim 1", 20, "eigenvalues are K(s_r, s_r') of Claim 1"),
        ("lr x y1^(p-2) = 1.78 (largest stable)", 20, "lr x y1^(p-2) = 1.78"),
        ("one two three four", 2, "one two ..."),
    ],
)
def test_legacy_claims_are_shortened_without_breaking_math(text, words, short):
    from depthaccel.experiments.results import _shorten

    assert _shorten(text, words) == short
