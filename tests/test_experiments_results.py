"""Experiment results: claims, the result record and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        claims=[Claim("c", "m", True)],
        wall_time=1.5,
    )
    back = ExperimentResult.from_json(r.to_json(tmp_path), tmp_path)
    assert back.figures == [tmp_path / "x" / "f.png"]
    assert back.claims == r.claims and back.wall_time == 1.5 and back.n_passed == 1


def test_claim_verdicts_and_counts():
    claims = [Claim("a", "1", True), Claim("b", "2", False), Claim("c", "3", None)]
    r = ExperimentResult(claims=claims)
    assert [c.verdict for c in claims] == ["PASS", "FAIL", "not assessed"]
    assert (r.n_passed, r.n_failed, r.n_assessed) == (1, 1, 2)
