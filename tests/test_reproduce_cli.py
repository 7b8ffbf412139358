"""The ``depthaccel reproduce`` command: arguments, help, exit codes, files written."""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

# Imported first: a fixture that patches experiments.registry.EXPERIMENTS before this module's
# first import would otherwise leave it holding the fake registry after the test.
import depthaccel.commands.reproduce  # noqa: F401
from depthaccel.cli import main
from depthaccel.experiments import EXPERIMENTS, Claim, ExperimentResult, ExperimentSpec
from depthaccel.outdir import LEGACY_BEFORE, MANIFEST_NAME
from depthaccel.reporting import Curve, plot_gap_panels, write_curves_csv


def test_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, spec in EXPERIMENTS.items():
        assert f"  {name} " in out, name
        assert spec.summary.split()[0] in out
    for opt in ("--quick", "--out", "--device", "--dtype", "--data-dir"):
        assert opt in out


def test_reproduce_is_listed_in_top_level_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "reproduce" in capsys.readouterr().out


def test_unknown_name_is_a_clear_error(capsys, tmp_path):
    rc = main(["reproduce", "fig9", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown experiment(s) 'fig9'" in err and "fig4-left" in err
    assert not (tmp_path / "REPORT.md").exists()


def test_all_with_other_names_is_an_error(capsys, tmp_path):
    assert main(["reproduce", "all", "fig2", "--out", str(tmp_path)]) == 2
    assert "'all' cannot be combined" in capsys.readouterr().err


def test_bad_data_dir_is_an_error(capsys, tmp_path):
    rc = main(["reproduce", "claim1", "--out", str(tmp_path), "--data-dir", str(tmp_path / "no")])
    assert rc == 2 and "is not a directory" in capsys.readouterr().err


def _fake(
    name: str, *, fail_claim: bool = False, error: bool = False, assessed: bool = True
) -> types.ModuleType:
    mod = types.ModuleType(f"fakecli.{name}")

    @dataclass(frozen=True)
    class Config:
        n: int = 5

        @classmethod
        def quick(cls):
            return cls(4)

        @classmethod
        def full(cls):
            return cls(50)

    def run(config, ctx):
        if error:
            raise RuntimeError(f"{name} exploded")
        c = Curve("model A, lr 1e-3", np.arange(config.n), np.geomspace(1, 1e-3, config.n))
        return ExperimentResult(
            name=name,
            title=f"Fake {name}",
            mode="",
            settings={"n": config.n, "device": ctx.device, "dtype": str(ctx.dtype)},
            figures=[plot_gap_panels(ctx.out_dir / f"{name}.png", [("l4", [c])])],
            curves=[write_curves_csv(ctx.out_dir / "curves.csv", [c])],
            claims=[Claim.legacy("goes down", "1 -> 1e-3", (not fail_claim) if assessed else None)],
        )

    mod.Config, mod.run = Config, run
    return mod


@pytest.fixture
def fake_experiments(monkeypatch):
    """Replace the registry by three fake experiments: one fine, one with a FAIL claim,
    one that raises."""
    specs = {
        "good": _fake("good"),
        "failing": _fake("failing", fail_claim=True),
        "broken": _fake("broken", error=True),
        "unassessed": _fake("unassessed", assessed=False),
    }
    monkeypatch.setattr(
        "depthaccel.experiments.registry.EXPERIMENTS",
        {n: ExperimentSpec(n, f"fakecli.{n}", f"{n}; claims: x") for n in specs},
    )
    monkeypatch.setattr(
        "depthaccel.commands.reproduce.EXPERIMENTS",
        {n: ExperimentSpec(n, f"fakecli.{n}", f"{n}; claims: x") for n in specs},
    )
    for n, m in specs.items():
        monkeypatch.setitem(sys.modules, f"fakecli.{n}", m)


def test_all_runs_everything_reports_errors_and_fail_claims(fake_experiments, tmp_path, capsys):
    rc = main(["reproduce", "all", "--quick", "--out", str(tmp_path), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1  # one experiment raised
    assert "broken: ERROR: RuntimeError: broken exploded" in cap.err
    assert "3/4 experiments ran" in cap.out
    assert "claims FAIL in: failing" in cap.out and "ERRORS in: broken" in cap.out
    for n in ("good", "failing"):
        d = tmp_path / n
        assert (d / f"{n}.png").read_bytes()[:4] == b"\x89PNG"
        assert (d / "curves.csv").read_text().startswith("panel,series,iteration,value")
        assert json.loads((d / "settings.json").read_text())["n"] == 4
    report = (tmp_path / "REPORT.md").read_text()
    assert "## good\n\n**Fake good**" in report and "## failing\n\n**Fake failing**" in report
    assert "| goes down |  | 1 -> 1e-3 | **FAIL** |" in report
    assert "broken exploded" in report


def test_fail_claim_is_exit_0(fake_experiments, tmp_path, capsys):
    rc = main(["reproduce", "failing", "good", "--out", str(tmp_path), "--dtype", "float64"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "claims FAIL in: failing" in out
    settings = json.loads((tmp_path / "good" / "settings.json").read_text())
    assert settings["n"] == 50 and settings["dtype"] == "torch.float64"  # full mode by default


@pytest.mark.slow
def test_reproduce_all_quick_real(tmp_path, capsys, ethanol_data_dir):
    """The real quick configs of every experiment, end to end (about 2 minutes)."""
    rc = main(["reproduce", "all", "--quick", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    n = len(EXPERIMENTS)
    assert f"{n}/{n} experiments ran" in out
    report = (tmp_path / "REPORT.md").read_text()
    for name in EXPERIMENTS:
        assert f"\n## {name}\n" in report  # each experiment has its section
        saved = json.loads((tmp_path / name / "result.json").read_text())
        assert saved["status"] == "ok" and saved["mode"] == "quick"
        assert saved["figures"] and all((tmp_path / f).is_file() for f in saved["figures"])
        assert (tmp_path / name / "settings.json").is_file()


def test_store_is_on_by_default_and_a_rerun_reuses_every_run(tmp_path, capsys, ethanol_data_dir):
    args = ["reproduce", "fig4-right", "--quick", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    first = capsys.readouterr().out
    curves_first = (tmp_path / "fig4-right" / "curves.csv").read_text()
    assert main(args + ["--checkpoint-every", "500"]) == 0
    second = capsys.readouterr().out
    assert (tmp_path / "depthaccel-store.sqlite").is_file()
    assert ", 0 trained" not in first and "0 reused from the store" in first
    assert ", 0 trained" in second and "0 reused from the store" not in second
    assert (tmp_path / "fig4-right" / "curves.csv").read_text() == curves_first


def test_no_store_and_bad_checkpoint_every(tmp_path, capsys):
    assert main(["reproduce", "claim1", "--quick", "--out", str(tmp_path), "--no-store"]) == 0
    assert not (tmp_path / "depthaccel-store.sqlite").exists()
    capsys.readouterr()
    assert main(["reproduce", "claim1", "--out", str(tmp_path), "--checkpoint-every", "0"]) == 2
    assert "--checkpoint-every" in capsys.readouterr().err


def test_the_command_restores_the_torch_thread_count(fake_experiments, tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    want = 2 if before != 2 else 3
    main(["reproduce", "good", "--quick", "--out", str(tmp_path), "--threads", str(want)])
    assert torch.get_num_threads() == before


def test_each_experiment_gets_its_own_context(fake_experiments, tmp_path, monkeypatch, capsys):
    """Two experiments of one command: separate contexts (their own folders and store
    counts) sharing one cache of data and optima."""
    seen = []

    def spy(config, ctx):
        seen.append(ctx)
        return ExperimentResult("good", "G", "", {})

    monkeypatch.setattr(sys.modules["fakecli.good"], "run", spy)
    monkeypatch.setattr(sys.modules["fakecli.failing"], "run", spy)
    assert main(["reproduce", "good", "failing", "--quick", "--out", str(tmp_path)]) == 0
    a, b = seen
    assert a is not b and a.stats is not b.stats and a.cache is b.cache
    assert (a.out_dir, b.out_dir) == (tmp_path / "good", tmp_path / "failing")
    assert a.store == b.store == tmp_path / "depthaccel-store.sqlite" and a.quick
    assert a.loss_scale == "paper"  # the paper's text by default


def test_loss_scale_reaches_the_context(fake_experiments, tmp_path, monkeypatch, capsys):
    seen = []

    def spy(config, ctx):
        seen.append(ctx)
        return ExperimentResult("good", "G", "", {})

    monkeypatch.setattr(sys.modules["fakecli.good"], "run", spy)
    assert (
        main(
            ["reproduce", "good", "--quick", "--out", str(tmp_path), "--loss-scale", "plain"]
            + ["--feature-scale", "zscore-unit-col"]
        )
        == 0
    )
    assert seen[0].loss_scale == "plain"
    assert seen[0].setup.feature_scale == "zscore-unit-col"
    assert seen[0].ran_on()["executor"] == "in-process"
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "good", "--out", str(tmp_path / "x"), "--loss-scale", "linear"])
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists()
    for bad in ("zscores", "-1", "nan"):
        with pytest.raises(SystemExit) as exc:
            main(["reproduce", "good", "--out", str(tmp_path / "x"), "--feature-scale", bad])
        assert exc.value.code == 2
        assert "feature_scale" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------- output folder, progress


def _snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_out_that_is_a_file_or_unwritable_is_one_line_exit_2(
    fake_experiments, tmp_path, capsys, monkeypatch
):
    f = tmp_path / "results"
    f.write_text("not a folder")
    assert main(["reproduce", "good", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err
    assert f.read_text() == "not a folder"
    assert main(["reproduce", "good", "--out", str(f / "sub")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(ro) else real(p, m))
    assert main(["reproduce", "good", "--out", str(ro)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not writable" in err
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(fake_experiments, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["reproduce", "good", "--out", str(ro / "results")]) == 2
    finally:
        ro.chmod(0o755)
    assert "is not writable" in capsys.readouterr().err


def test_folder_with_user_files_is_refused_untouched(fake_experiments, tmp_path, capsys):
    (tmp_path / "REPORT.md").write_text("# my own report")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "curves.csv").write_text("mine")
    before = _snapshot(tmp_path)
    assert main(["reproduce", "good", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "did not write (REPORT.md, good/curves.csv)" in err and "--force" in err
    assert _snapshot(tmp_path) == before
    assert main(["reproduce", "good", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "REPORT.md").read_text().startswith("# Reproduction report")


def test_own_and_legacy_folders_are_accepted(fake_experiments, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["reproduce", "good", "--out", str(out)]) == 0
    assert main(["reproduce", "failing", "--out", str(out)]) == 0  # our own folder
    (out / MANIFEST_NAME).unlink()  # a results folder of an earlier version
    for p in out.rglob("*"):  # written before output folders had a manifest
        os.utime(p, (LEGACY_BEFORE - 86400, LEGACY_BEFORE - 86400))
    assert main(["reproduce", "good", "--out", str(out)]) == 0
    assert main(["reproduce", "failing", "--out", str(out)]) == 0  # still ours
    (out / "REPORT.md").write_text("edited")
    assert main(["reproduce", "good", "--out", str(out)]) == 2


def test_progress_lines_give_an_eta_and_honest_claim_counts(fake_experiments, tmp_path, capsys):
    rc = main(["reproduce", "good", "unassessed", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[1/2] good (quick) ... elapsed 0 s, about " in out and " left" in out
    assert "[1/2] good: done in" in out and "claims 1/1 pass (no FAIL)" in out
    assert "[2/2] unassessed: done in" in out
    assert "no claim assessed (1 not assessed in quick mode)" in out
    assert "0/0" not in out
    assert "| none assessed (1 claims) |" in (tmp_path / "REPORT.md").read_text()
    # nothing assessed anywhere: never "no claim FAILs"
    assert "no claim FAILs (1 assessed)" in out and "no claim FAILs;" not in out
    rc = main(["reproduce", "unassessed", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "; no claim was assessed" in out and "no claim FAILs" not in out


def test_eta_scales_the_cost_table():
    from depthaccel.commands.reproduce import _eta

    names = ["fig2", "fig3"]
    assert all(s.cost[0] > 0 and s.cost[1] > 0 for s in EXPERIMENTS.values())
    # fig2 took twice its table cost: fig3 is expected to take twice its cost too
    q2, q3 = EXPERIMENTS["fig2"].cost[0], EXPERIMENTS["fig3"].cost[0]
    text = _eta(names, 1, 2 * q2, quick=True)
    assert text == f"elapsed {2 * q2:.0f} s, about {2 * q3:.0f} s left"
    assert _eta(names, 2, 30.0, quick=True) == "elapsed 30 s"
    assert _eta(names, 0, 0.0, quick=False).endswith((" min left", " h left"))


def test_eta_does_not_extrapolate_from_little_evidence_or_concurrent_time():
    from depthaccel.commands.reproduce import _eta

    names = ["claim1", "fig3"]
    c1, c3 = EXPERIMENTS["claim1"].cost[1], EXPERIMENTS["fig3"].cost[1]
    assert c1 < 0.1 * (c1 + c3)  # claim1 is too small a sample of the pace
    # claim1 took 15x its typical cost (a loaded machine, or Ray starting): fig3's
    # typical cost stands, not 15x it
    assert _eta(names, 1, 15 * c1, quick=False) == _eta(names, 0, 15 * c1, quick=False)
    # concurrently, two workers share the remaining typical cost, unscaled
    two = _eta(["fig3", "fig2"], 1, 1e6, quick=False, workers=2)
    from depthaccel.commands.reproduce import _fmt_time

    assert two.endswith(f"about {_fmt_time(EXPERIMENTS['fig2'].cost[1] / 2)} left")


def test_store_messages_are_not_doubled(tmp_path):
    from depthaccel.experiments.context import ExperimentContext
    from depthaccel.train import Run

    msgs = []
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, store=tmp_path, log=msgs.append)
    X = np.random.default_rng(0).standard_normal((20, 3))
    ctx.train(X, X @ np.ones(3), 2, [Run("gd", 0.1)], 5)
    assert msgs and msgs[0].startswith("store ") and "store: store" not in " ".join(msgs)


@pytest.fixture
def fake_experiments_with_data(monkeypatch):
    """Two experiments without data, two needing Ethanol, one needing MNIST."""
    specs = {
        "nodata1": "",
        "eth1": "ethanol",
        "nodata2": "",
        "eth2": "ethanol",
        "mn": "mnist",
    }
    registry = {
        n: ExperimentSpec(n, f"fakecli.{n}", f"{n}; claims: x", data=d) for n, d in specs.items()
    }
    monkeypatch.setattr("depthaccel.experiments.registry.EXPERIMENTS", registry)
    monkeypatch.setattr("depthaccel.commands.reproduce.EXPERIMENTS", registry)
    for n in specs:
        monkeypatch.setitem(sys.modules, f"fakecli.{n}", _fake(n))
    return specs


def test_missing_data_is_checked_once_and_told_once(
    fake_experiments_with_data, tmp_path, monkeypatch, capsys
):
    """A fresh clone without data: the experiments that need none run; one message at
    the end says what is missing and what to do (no ERROR per experiment)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("DEPTHACCEL_DATA_DIR", str(empty))
    from depthaccel.data import catalog

    calls = []
    real = catalog.check_data
    monkeypatch.setattr(catalog, "check_data", lambda *a, **k: calls.append(a) or real(*a, **k))
    rc = main(["reproduce", "all", "--quick", "--out", str(tmp_path / "out"), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 3
    assert "ERROR" not in cap.err and "ERRORS" not in cap.out
    assert (tmp_path / "out" / "nodata1" / "curves.csv").is_file()
    assert (tmp_path / "out" / "nodata2" / "curves.csv").is_file()
    assert not (tmp_path / "out" / "eth1").exists() and not (tmp_path / "out" / "mn").exists()
    assert "2/5 experiments ran" in cap.out and "3 skipped for missing data" in cap.out
    assert "[1/2] nodata1" in cap.out and "[2/2] nodata2" in cap.out
    # the message about the data comes once, at the end, over several lines, and says
    # what is missing, where we looked and what to do
    last = cap.err[cap.err.index("depthaccel reproduce: data not available") :]
    lines = last.strip().splitlines()
    assert len(lines) >= 6
    assert "ethanol (needed by eth1, eth2)" in last and "mnist (needed by mn)" in last
    assert str(empty) in last and "depthaccel data fetch ethanol mnist" in last
    assert "data folders searched, in order:" in last and "DEPTHACCEL_DATA_DIR" in last
    # the report lists the skipped experiments with why and the command that gets them
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| eth1 | its data (ethanol) is missing |" in report
    line = next(x for x in report.splitlines() if x.startswith("| eth1 |"))
    fetch, again = line.split("`")[1].split(" && ")
    # one program in both commands: depthaccel, or its path when it is not on PATH
    assert fetch.endswith("depthaccel data fetch ethanol")
    assert again == fetch.replace("data fetch ethanol", "reproduce eth1 --quick")
    assert cap.err.count("data not available") == 1
    assert cap.err.index("data check: skipping eth1, eth2, mn") < cap.err.index(
        "data not available"
    )
    assert calls  # the pre-flight went through check_data


def test_missing_data_without_download_and_the_real_registry(tmp_path, monkeypatch, capsys):
    """The real registry says which experiments need data; with downloads off nothing is
    fetched and only the message comes."""
    monkeypatch.setenv("DEPTHACCEL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DEPTHACCEL_DOWNLOAD", "0")
    assert {n for n, s in EXPERIMENTS.items() if s.data == "ethanol"} >= {"fig2", "fig3"}
    assert EXPERIMENTS["fig5-right"].data == "mnist" and EXPERIMENTS["claim1"].data == ""
    rc = main(["reproduce", "fig2", "fig5-right", "--quick", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 3 and "0/2 experiments ran" in cap.out
    assert "trying a download" not in cap.err
    message = cap.err[cap.err.index("data not available") :]
    assert message.count("depthaccel data fetch ethanol mnist") == 1
    assert "download: not tried (DEPTHACCEL_DOWNLOAD=0)" in message


def test_concurrent_experiments_wait_for_those_whose_runs_they_reuse(monkeypatch):
    """``reproduce --jobs``: an experiment listing another in ``after`` (fig4-left reuses
    fig3's GD runs) starts only when that one ended, so no run is trained twice at once;
    the others run concurrently. Here "late" is listed first but must start after "early"
    ended, and "free" overlaps "early"."""
    import threading
    import time

    import depthaccel.commands.reproduce as rp

    specs = {
        "late": ExperimentSpec("late", "x", "late", after=("early",)),
        "early": ExperimentSpec("early", "x", "early"),
        "free": ExperimentSpec("free", "x", "free"),
    }
    monkeypatch.setattr(rp, "EXPERIMENTS", specs)
    assert EXPERIMENTS["fig4-left"].after == ("fig3",)  # the real registry's dependency

    class Executor:  # what _run_concurrently needs of an executor
        name, workers, turns = "stub", 2, None

    ex = Executor()
    log: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def one(name):
        with lock:
            log.append((name, "start", time.perf_counter()))
        with ex.turns.released():  # as an executor does while its shards train
            time.sleep(0.3)
        with lock:
            log.append((name, "end", time.perf_counter()))
        return name

    rp._run_concurrently(list(specs), one, lambda *a: None, ex, "quick")
    at = {(n, what): t for n, what, t in log}
    assert at[("late", "start")] >= at[("early", "end")]
    assert at[("free", "start")] < at[("early", "end")]  # independent ones overlap
    assert ex.turns is None  # the turns are removed afterwards
