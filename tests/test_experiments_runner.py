"""Running an experiment by name (runner) and REPORT.md (report), end to end with fakes."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from depthaccel.experiments.registry import EXPERIMENTS, ExperimentSpec
from depthaccel.experiments.report import report_section, write_report
from depthaccel.experiments.results import Claim, ExperimentResult
from depthaccel.experiments.runner import run_experiment
from depthaccel.reporting import Curve, plot_gap_panels, write_curves_csv


@dataclass
class FakeMeasured:
    iters: int
    gaps: list[float]


def _fake_module(fail: bool = False) -> types.ModuleType:
    mod = types.ModuleType("fakepkg.exp_ok")

    @dataclass(frozen=True)
    class Config:
        iters: int = 10

        @classmethod
        def quick(cls):
            return cls(iters=3)

        @classmethod
        def full(cls):
            return cls(iters=100)

    def measure(config, ctx):
        if fail:
            raise ValueError("boom: bad thing")
        return FakeMeasured(config.iters, list(np.linspace(1, 0.1, config.iters)))

    def judge(m, config):
        return [
            Claim.judged(
                "it goes down", "the loss falls", f"{m.gaps[0]:g} -> {m.gaps[-1]:g}", True
            ),
            Claim.judged("a|b", "b", "no", False, why="b is not a", details={"seeds": [1, 2]}),
        ]

    def render(m, claims, outdir):
        c = Curve("m", np.arange(m.iters), np.array(m.gaps))
        fig = plot_gap_panels(outdir / "fake.png", [("p", [c])])
        csv = write_curves_csv(outdir / "curves.csv", [c])
        return [fig, csv]

    mod.Config, mod.measure, mod.judge, mod.render = Config, measure, judge, render
    mod.DESCRIBE = "A fake run of {measured.iters} iterations."
    mod.NOTES = ("a choice",)
    mod.SPEC = ExperimentSpec("fake", "fakepkg.exp_ok", "fake; claims: none", title="A fake one")
    return mod


@pytest.fixture
def fake_registry(monkeypatch):
    monkeypatch.setitem(sys.modules, "fakepkg.exp_ok", _fake_module())
    monkeypatch.setitem(sys.modules, "fakepkg.exp_bad", _fake_module(fail=True))
    monkeypatch.setitem(EXPERIMENTS, "fake", sys.modules["fakepkg.exp_ok"].SPEC)
    monkeypatch.setitem(
        EXPERIMENTS, "bad", ExperimentSpec("bad", "fakepkg.exp_bad", "bad; claims: none")
    )


def test_run_experiment_writes_files_and_report(tmp_path, fake_registry):
    res = run_experiment("fake", tmp_path, quick=True)
    assert res.mode == "quick" and res.wall_time > 0
    assert res.settings["measured"]["iters"] == 3
    d = tmp_path / "fake"
    assert (d / "fake.png").is_file() and (d / "curves.csv").is_file()
    settings = json.loads((d / "settings.json").read_text())
    assert settings["config"] == {"iters": 3} and settings["measured"]["gaps"][0] == 1.0
    saved = json.loads((d / "result.json").read_text())
    assert saved["figures"] == ["fake/fake.png"]  # relative to OUT
    assert saved["claims"][1]["verdict"] == "FAIL" and saved["claims"][1]["why"] == "b is not a"
    report = (tmp_path / "REPORT.md").read_text()
    assert "## fake\n\n**A fake one**" in report
    assert "A fake run of 3 iterations. *Mode: quick;" in report
    assert "[settings.json](fake/settings.json)" in report and '"iters"' not in report
    assert "![fake](fake/fake.png)" in report
    assert "| it goes down | the loss falls | 1 -> 0.1 | **PASS** |" in report
    assert "| a\\|b | b | no | **FAIL** |" in report
    assert "  - why it fails: b is not a" in report and "  - seeds: [1, 2]" in report
    assert "- a choice" in report
    # the scorecard: passed/assessed, the key claim beside our number, mode
    assert "| [fake](#fake) | 1/2 (1 FAIL) | a\\|b: no (FAIL) | quick |" in report

    # re-running replaces the section, it is not duplicated
    run_experiment("fake", tmp_path, quick=False)
    report = (tmp_path / "REPORT.md").read_text()
    assert report.count("## fake\n") == 1 and "*Mode: full;" in report


def test_rejudging_stored_measurements_needs_no_measure(tmp_path, fake_registry):
    """judge_and_render works from a Measured value alone (no training)."""
    from depthaccel.experiments.runner import judge_and_render

    mod = sys.modules["fakepkg.exp_ok"]
    res = judge_and_render(mod, mod.Config.quick(), FakeMeasured(2, [1.0, 0.5]), tmp_path)
    assert [c.verdict for c in res.claims] == ["PASS", "FAIL"]
    assert res.figures == [tmp_path / "fake.png"]


def test_failed_experiment_is_recorded_and_raised(tmp_path, fake_registry):
    run_experiment("fake", tmp_path, quick=True)
    with pytest.raises(ValueError, match="boom"):
        run_experiment("bad", tmp_path, quick=True)
    saved = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert saved["status"] == "error" and "boom: bad thing" in saved["error"]
    report = write_report(tmp_path).read_text()
    assert "## fake\n" in report and "**ERROR**" in report and "boom: bad thing" in report


def test_report_lists_what_is_not_in_it_with_the_command(tmp_path, fake_registry):
    run_experiment("fake", tmp_path, quick=True)
    report = write_report(
        tmp_path, skipped={"fig2": ("its data (ethanol) is missing", "make data && x")}
    ).read_text()
    assert "## Not in this report" in report
    assert "| fig2 | its data (ethanol) is missing | `make data && x` |" in report
    assert "| thm2 | not run into this folder | `depthaccel reproduce thm2 --quick` |" in report


def test_report_says_when_runs_came_from_the_store(tmp_path):
    r = ExperimentResult(
        "x",
        "T",
        "full",
        {
            "results_store": {
                "path": "s",
                "runs_reused": 45,
                "runs_trained": 0,
                "training_seconds": 386.5,
            },
            "ran_on": {"torch_threads": 1, "dtype": "default", "cpus": 2, "machine": "x86_64"},
        },
    )
    text = report_section(r, tmp_path)
    assert "45 runs read from the results store" in text and "0 trained now" in text
    assert "training time of all the runs used: 6.4 min" in text
    assert "task results" not in text
    r.settings["results_store"].update(tasks_reused=3, tasks_run=1)
    text = report_section(r, tmp_path)
    assert "3 task results (e.g. trained nets) read from the store" in text
    assert "1 computed now" in text


def _small_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(40)
    return X, y


def test_store_counts_are_recorded_per_experiment(tmp_path, fake_registry, monkeypatch):
    from depthaccel.train import Run, train

    X, y = _small_problem()

    def run(config, ctx):
        res = ctx.train(X, y, 2, [Run("gd", 1e-2)], 20, log_points=5)
        return FakeMeasured(1, [res[0].final_gap])

    monkeypatch.setattr(sys.modules["fakepkg.exp_ok"], "measure", run)
    store = tmp_path / "s.sqlite"
    first = run_experiment("fake", tmp_path, quick=True, store=store)
    second = run_experiment("fake", tmp_path, quick=True, store=store)
    s1, s2 = first.settings["results_store"], second.settings["results_store"]
    assert (s1["runs_reused"], s1["runs_trained"]) == (0, 1)
    assert (s2["runs_reused"], s2["runs_trained"]) == (1, 0)
    assert s2["training_seconds"] == s1["training_seconds"] > 0
    ref = train(X, y, 2, [Run("gd", 1e-2)], 20, log_points=5)[0].final_gap
    assert second.settings["measured"]["gaps"][0] == pytest.approx(ref, rel=1e-12)
    # without a store nothing is recorded
    third = run_experiment("fake", tmp_path, quick=True)
    assert "results_store" not in third.settings


def test_the_scorecard_leads_with_a_fail_then_an_assessed_claim():
    from depthaccel.experiments.report import key_claim

    na = Claim.judged("a", "p", "m", None)
    ok = Claim.judged("b", "p", "m", True)
    bad = Claim.judged("c", "p", "m", False, why="w")
    assert key_claim(ExperimentResult(claims=[na, ok, bad])) is bad
    assert key_claim(ExperimentResult(claims=[na, ok])) is ok
    assert key_claim(ExperimentResult(claims=[na])) is na
    assert key_claim(ExperimentResult()) is None


def _setup_settings(feature_scale, loss_scale="paper"):
    from depthaccel.data.scaling import DEFAULT_RULE, DEFAULT_SETUP, SetupAxes

    shape = (2565, 128)
    out = SetupAxes(feature_scale, loss_scale).describe(shape)
    out["default"] = {"setup": DEFAULT_SETUP.describe(shape), "rule": DEFAULT_RULE}
    return out


def test_setup_text_names_the_axes_k_and_whether_they_are_the_default():
    from depthaccel.data.scaling import DEFAULT_SETUP
    from depthaccel.experiments.report import setup_text

    text = setup_text(_setup_settings("zscore-unit-row"))
    assert text.startswith("feature scale zscore-unit-row (k = 0.0884: unit mean squared row")
    assert "paper loss scale (1/p)|r|^p" in text
    assert text.endswith("(the default)") == (DEFAULT_SETUP.feature_scale == "zscore-unit-row")
    assert setup_text(_setup_settings("zscore")).endswith("(NOT the default)")
    plain = setup_text(_setup_settings(0.3, "plain"))
    assert plain.startswith("feature scale k = 0.3 (k = 0.3), plain loss scale |r|^p")
    assert plain.endswith("(NOT the default)")


def test_the_report_opens_with_the_setup_and_the_rule(tmp_path):
    from depthaccel.data.scaling import DEFAULT_RULE
    from depthaccel.experiments.report import _setup_opening

    def result(name, setup=None):
        settings = {} if setup is None else {"setup": setup}
        return ExperimentResult(name, "T", "full", settings)

    assert _setup_opening([result("claim1")]) == []  # no Ethanol experiment: no note
    rs = [
        result("claim1"),
        result("fig2", _setup_settings("zscore-unit-row")),
        result("fig3", _setup_settings("zscore-unit-row")),
        result("fig4-right", _setup_settings("zscore")),
        result("setup", _setup_settings("zscore-unit-row")),  # spans many: not listed
    ]
    note = " ".join(_setup_opening(rs))
    assert "fig2, fig3: feature scale zscore-unit-row (k = 0.0884" in note
    assert "fig4-right: feature scale zscore (k = 1: unit variance per column)" in note
    assert "(NOT the default)" in note and DEFAULT_RULE in note
    assert "setup: feature" not in note and "[setup](#setup)" in note
    section = report_section(rs[3], tmp_path)
    assert "*Mode: full; feature scale zscore (k = 1" in section
    assert "feature scale" not in report_section(rs[4], tmp_path)
    assert "feature scale" not in report_section(rs[0], tmp_path)
