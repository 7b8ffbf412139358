"""The reproduce framework: registry, JSON, curves CSV, plotting and REPORT.md."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import depthaccel.experiments as experiments_pkg
from depthaccel.experiments import base
from depthaccel.experiments.base import (
    EXPERIMENTS,
    Claim,
    Curve,
    ExperimentError,
    ExperimentResult,
    ExperimentSpec,
    format_lr,
    get_experiment,
    log_grid,
    plot_gap_panels,
    read_curves_csv,
    run_experiment,
    to_jsonable,
    write_curves_csv,
    write_report,
)
from depthaccel.experiments.context import ExperimentContext

PAPER_NAMES = {
    "fig2",
    "fig3",
    "fig4-left",
    "fig4-right",
    "fig5-left",
    "fig5-right",
    "sec7",
    "thm2",
    "claim1",
}
EXTRA_NAMES = {"mnist-e2e"}  # questions the paper raises (not one of its figures)


def test_registry_names_and_every_module_is_registered():
    assert set(EXPERIMENTS) == PAPER_NAMES | EXTRA_NAMES
    registered = {s.module for s in EXPERIMENTS.values()}
    # every module of the package that provides the experiment interface is registered
    # (supporting modules without Config/run, e.g. model code, need not be)
    on_disk = set()
    for m in pkgutil.iter_modules(experiments_pkg.__path__):
        if m.name == "base" or m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"depthaccel.experiments.{m.name}")
        if hasattr(mod, "Config") and hasattr(mod, "run"):
            on_disk.add(m.name)
    assert on_disk <= registered, f"experiment modules not in the registry: {on_disk - registered}"
    for spec in EXPERIMENTS.values():
        assert spec.summary and "claim" in spec.summary


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ExperimentError, match="unknown experiment 'fig9'.*fig2"):
        get_experiment("fig9")


def test_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(
        EXPERIMENTS, "ghost", ExperimentSpec("ghost", "depthaccel.experiments.no_such_mod", "x")
    )
    with pytest.raises(ExperimentError, match="registered but its module .*no_such_mod is missing"):
        get_experiment("ghost")


def test_module_without_interface_is_a_clear_error(monkeypatch):
    mod = types.ModuleType("fakepkg.noiface")
    monkeypatch.setitem(sys.modules, "fakepkg.noiface", mod)
    monkeypatch.setitem(EXPERIMENTS, "noiface", ExperimentSpec("noiface", "fakepkg.noiface", "x"))
    with pytest.raises(ExperimentError, match="does not provide Config, Config.quick"):
        get_experiment("noiface")


def test_every_present_module_provides_the_interface():
    for name in EXPERIMENTS:
        try:
            mod = get_experiment(name)
        except ExperimentError as exc:
            if "is missing" in str(exc):
                continue  # written by another helper; the CLI reports it as an error
            raise
        q, f = mod.Config.quick(), mod.Config.full()
        assert type(q) is type(f) is mod.Config
        json.dumps(to_jsonable(q))


def test_to_jsonable():
    @dataclass
    class C:
        a: tuple = (1, 2)
        b: float = float("inf")

    out = to_jsonable({"c": C(), "x": np.float32(1.5), "arr": np.arange(3), "p": Path("/a")})
    assert out == {"c": {"a": [1, 2], "b": "inf"}, "x": 1.5, "arr": [0, 1, 2], "p": "/a"}
    json.dumps(out)


def test_log_grid_and_format_lr():
    g = log_grid(1e-4, 1.0, 2)
    assert len(g) == 9 and g[0] == 1e-4 and g[-1] == 1.0
    ratios = np.diff(np.log10(g))
    np.testing.assert_allclose(ratios, 0.5, atol=1e-3)
    assert log_grid(1e-3, 1e-3) == (1e-3,)
    with pytest.raises(ValueError):
        log_grid(1.0, 0.1)
    assert [format_lr(x) for x in (1e-3, 3.162e-4, 0.5, 2e-3, 1e-5)] == [
        "1e-3",
        "3.16e-4",
        "0.5",
        "2e-3",
        "1e-5",
    ]


def test_curves_csv_roundtrip(tmp_path):
    curves = [
        Curve("depth 2, lr 1e-3", np.array([0, 10, 20]), np.array([1.0, 0.5, 1e-17]), panel="l2"),
        Curve('a "quoted", label', np.array([0, 5]), np.array([2.0, math.pi]), panel="l4"),
    ]
    p = write_curves_csv(tmp_path / "c.csv", curves)
    back = read_curves_csv(p)
    assert [c.panel for c in back] == ["l2", "l4"]
    assert back[0].label == "depth 2, lr 1e-3"
    np.testing.assert_array_equal(back[0].iters, [0, 10, 20])
    np.testing.assert_array_equal(back[0].values, curves[0].values)
    np.testing.assert_array_equal(back[1].values, curves[1].values)


def _figures_of(monkeypatch):
    import matplotlib.pyplot as plt

    figs = []
    real = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figs.append(fig), real(fig)))
    return figs


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the closed figure, drawn again as saved
    canvas.draw()
    return canvas.get_renderer()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_plot_gap_panels_legends_never_cover_the_axes(tmp_path, monkeypatch):
    figs = _figures_of(monkeypatch)
    it = np.arange(100)
    same = [Curve(f"model {j}", it, np.geomspace(1, 10.0 ** -(j + 1), 100)) for j in range(8)]
    plot_gap_panels(tmp_path / "a.png", [("l2", same), ("l4", same)], ncols=1)
    fig = figs[-1]
    assert len(fig.legends) == 1  # one shared legend below the figure
    r = _renderer(fig)
    leg = fig.legends[0].get_window_extent(r)
    assert all(not _overlaps(leg, ax.get_window_extent(r)) for ax in fig.axes)
    other = [Curve(f"other {j}", it, np.geomspace(1, 1e-3, 100)) for j in range(3)]
    plot_gap_panels(tmp_path / "b.png", [("l2", same), ("l4", other)])
    fig = figs[-1]
    r = _renderer(fig)
    assert not fig.legends
    for ax in fig.axes:  # a legend per panel, below it
        assert not _overlaps(ax.get_legend().get_window_extent(r), ax.get_window_extent(r))


def test_plot_gap_panels_writes_png(tmp_path):
    c = Curve("x", np.arange(5), np.array([1.0, 0.1, 0.0, -1.0, 1e-3]))
    p = plot_gap_panels(tmp_path / "f.png", [("l2", [c]), ("l4", [])], suptitle="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- a fake experiment to drive run_experiment / write_report end to end -------------


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

    def run(config, ctx):
        if fail:
            raise ValueError("boom: bad thing")
        c = Curve("m", np.arange(config.iters), np.linspace(1, 0.1, config.iters))
        fig = plot_gap_panels(ctx.out_dir / "fake.png", [("p", [c])])
        csv = write_curves_csv(ctx.out_dir / "curves.csv", [c])
        return ExperimentResult(
            name="fake",
            title="A fake experiment",
            mode="",
            settings={"iters": config.iters, "lr": 1e-3},
            figures=[fig],
            curves=[csv],
            claims=[Claim("it goes down", "1 -> 0.1", True), Claim("a|b", "no", False, "quick")],
            notes=["a choice"],
        )

    mod.Config, mod.run = Config, run
    return mod


@pytest.fixture
def fake_registry(monkeypatch):
    monkeypatch.setitem(sys.modules, "fakepkg.exp_ok", _fake_module())
    monkeypatch.setitem(sys.modules, "fakepkg.exp_bad", _fake_module(fail=True))
    monkeypatch.setitem(
        EXPERIMENTS, "fake", ExperimentSpec("fake", "fakepkg.exp_ok", "fake; claims: none")
    )
    monkeypatch.setitem(
        EXPERIMENTS, "bad", ExperimentSpec("bad", "fakepkg.exp_bad", "bad; claims: none")
    )


def test_run_experiment_writes_files_and_report(tmp_path, fake_registry):
    res = run_experiment("fake", tmp_path, quick=True)
    assert res.mode == "quick" and res.wall_time > 0 and res.settings["iters"] == 3
    d = tmp_path / "fake"
    assert (d / "fake.png").is_file() and (d / "curves.csv").is_file()
    settings = json.loads((d / "settings.json").read_text())
    assert settings["iters"] == 3 and settings["config"] == {"iters": 3}
    saved = json.loads((d / "result.json").read_text())
    assert saved["figures"] == ["fake/fake.png"]  # relative to OUT
    report = (tmp_path / "REPORT.md").read_text()
    assert "## fake: A fake experiment" in report
    assert "![fake](fake/fake.png)" in report
    assert "| it goes down | 1 -> 0.1 | **PASS** |" in report
    assert "| a\\|b | no (quick) | **FAIL** |" in report
    assert "- a choice" in report
    assert "| 1/2 | 1 claim(s) FAIL |" in report

    # re-running replaces the section, it is not duplicated
    run_experiment("fake", tmp_path, quick=False)
    report = (tmp_path / "REPORT.md").read_text()
    assert report.count("## fake:") == 1 and "*Mode: full;" in report


def test_failed_experiment_is_recorded_and_raised(tmp_path, fake_registry):
    run_experiment("fake", tmp_path, quick=True)
    with pytest.raises(ValueError, match="boom"):
        run_experiment("bad", tmp_path, quick=True)
    saved = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert saved["status"] == "error" and "boom: bad thing" in saved["error"]
    report = write_report(tmp_path).read_text()
    assert "## fake:" in report and "**ERROR**" in report and "boom: bad thing" in report


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


def test_report_section_anchor():
    r = ExperimentResult("fig4-left", "Fig. 4 left: GD vs AdaGrad", "quick", {})
    assert base._anchor(r) == "fig4-left-fig-4-left-gd-vs-adagrad"


# --- trainer helpers -----------------------------------------------------------------


def _small_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(40)
    return X, y


def test_search_picks_lowest_final_gap_and_extends_edges(one_torch_thread):
    from depthaccel.train import Run, grid_search, train

    X, y = _small_problem()
    models = [Run("gd", 1.0, depth=1), Run("gd", 1.0, depth=2, init_scale=0.3)]
    grid = (1e-3, 1e-2)  # the best rate for 200 iterations is above this grid
    found = base.search(X, y, 4, models, grid, 200, train_fn=train, max_extensions=6)
    from dataclasses import replace

    runs = [replace(m, lr=lr) for m in models for lr in grid]
    ref = grid_search(X, y, 4, runs, 200, extend=True, max_extensions=6, warn=False)
    for f, r in zip(found, ref, strict=True):
        assert f["extensions"] >= 1 and f["lrs"][0] == 1e-3
        gaps = [(x.final_gap, x.run.lr) for x in f["results"] if not x.diverged]
        assert f["best_lr"] == min(gaps)[1]
        assert f["best_lr"] == pytest.approx(r.best_lr, rel=1e-3)
        assert f["on_edge"] == r.on_edge
    rows = base.search_settings(found)
    assert rows[0]["chosen_lr"] == found[0]["best_lr"] and len(rows[0]["grid"]) == len(
        found[0]["lrs"]
    )
    # one grid per model
    per = base.search(
        X, y, 4, models, [(1e-3, 3e-3), (1e-2, 3e-2)], 50, train_fn=train, extend=False
    )
    assert per[0]["lrs"] == [1e-3, 3e-3] and per[1]["lrs"] == [1e-2, 3e-2]
    with pytest.raises(ValueError, match="3 grids for 2 models"):
        base.search(X, y, 4, models, [(1e-3,), (1e-2,), (1e-1,)], 10, train_fn=train)


def test_narrow_grid_and_two_stage_search(one_torch_thread):
    from depthaccel.train import Run, train

    g = base.narrow_grid(1e-2, 5, 10**0.25)
    assert len(g) == 5 and g[2] == 1e-2
    np.testing.assert_allclose(np.diff(np.log10(g)), 0.25, atol=1e-3)
    X, y = _small_problem()
    models = [Run("gd", 1.0, depth=1)]
    broad = base.log_grid(1e-4, 1.0, 1)
    found, rec = base.two_stage_search(
        X, y, 4, models, broad, 300, presearch_iters=100, narrow_points=3, train_fn=train
    )
    assert rec["presearch_iters"] == 100 and rec["broad_grid"] == list(broad)
    pre_best = rec["presearch"][0]["chosen_lr"]
    assert set(base.narrow_grid(pre_best, 3, 10**0.25, 0)) <= set(found[0]["lrs"])
    assert base.narrow_grid(1.0, 3, 10.0, 0) == (0.01, 0.1, 1.0)
    assert base.narrow_grid(1.0, 3, 10.0) == (0.1, 1.0, 10.0)
    assert found[0]["results"][0].iters[-1] == 300


def test_the_context_routes_training_through_its_store(tmp_path):
    """ctx.train trains directly without a store and through the store with one (a
    second context on the same store reuses the run: nothing global links them)."""
    from depthaccel.train import Run, train

    X, y = _small_problem()
    run = [Run("gd", 1e-2)]
    plain = ExperimentContext(tmp_path / "a")
    first = ExperimentContext(tmp_path / "b", store=tmp_path / "s.sqlite")
    second = ExperimentContext(tmp_path / "c", store=tmp_path / "s.sqlite")
    ref = train(X, y, 2, run, 20, log_points=5)[0].final_gap
    assert plain.train(X, y, 2, run, 20, log_points=5)[0].final_gap == ref
    assert plain.store_summary() is None and not (tmp_path / "s.sqlite").exists()
    assert first.train(X, y, 2, run, 20, log_points=5)[0].final_gap == pytest.approx(ref)
    assert (first.stats.reused, first.stats.trained) == (0, 1)
    assert second.train(X, y, 2, run, 20, log_points=5)[0].final_gap == pytest.approx(ref)
    assert (second.stats.reused, second.stats.trained) == (1, 0)
    assert (first.stats.reused, first.stats.trained) == (0, 1)  # untouched by the second
    assert second.store_summary()["training_seconds"] == first.stats.training_seconds > 0


def test_the_context_caches_optima_in_its_cache_only():
    from depthaccel.experiments.context import ContextCache
    from depthaccel.losses import lp_optimum

    X, y = _small_problem()
    shared = ContextCache()
    a, b = ExperimentContext(Path("a"), cache=shared), ExperimentContext(Path("b"), cache=shared)
    opt = a.optimum(X, y, 4)
    assert opt.loss == pytest.approx(lp_optimum(X, y, 4).loss, rel=1e-12)
    assert b.optimum(X, y, 4) is opt  # shared cache
    assert ExperimentContext(Path("c")).optimum(X, y, 4) is not opt  # a fresh context
    assert a.optimum(X, y, 2) is not opt


def test_context_arguments_are_checked():
    import torch

    assert ExperimentContext(Path("x"), dtype="float64").dtype is torch.float64
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        ExperimentContext(Path("x"), dtype="float16")
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        ExperimentContext(Path("x"), checkpoint_every=0)


def test_context_map_is_a_loop_or_the_executor():
    calls = []

    class Recorder:
        name = "recorder"

        def map(self, fn, items, *, gpu=False):
            calls.append(gpu)
            return [fn(i) for i in items]

    assert ExperimentContext(Path("x")).map(lambda v: v * 2, [1, 2]) == [2, 4]
    ctx = ExperimentContext(Path("x"), executor=Recorder())
    assert ctx.map(lambda v: v + 1, (1, 2), gpu=True) == [2, 3] and calls == [True]


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
            }
        },
    )
    text = base.report_section(r, tmp_path)
    assert "45 runs read from the results store" in text and "0 trained now" in text
    assert "training time of all the runs used: 6.4 min" in text


def test_store_counts_are_recorded_per_experiment(tmp_path, fake_registry, monkeypatch):
    from depthaccel.train import Run, train

    X, y = _small_problem()

    def run(config, ctx):
        res = ctx.train(X, y, 2, [Run("gd", 1e-2)], 20, log_points=5)
        return ExperimentResult("fake", "F", "", {"gap": res[0].final_gap})

    monkeypatch.setattr(sys.modules["fakepkg.exp_ok"], "run", run)
    store = tmp_path / "s.sqlite"
    first = run_experiment("fake", tmp_path, quick=True, store=store)
    second = run_experiment("fake", tmp_path, quick=True, store=store)
    s1, s2 = first.settings["results_store"], second.settings["results_store"]
    assert (s1["runs_reused"], s1["runs_trained"]) == (0, 1)
    assert (s2["runs_reused"], s2["runs_trained"]) == (1, 0)
    assert s2["training_seconds"] == s1["training_seconds"] > 0
    ref = train(X, y, 2, [Run("gd", 1e-2)], 20, log_points=5)[0].final_gap
    assert second.settings["gap"] == pytest.approx(ref, rel=1e-12)
    # without a store nothing is recorded
    third = run_experiment("fake", tmp_path, quick=True)
    assert "results_store" not in third.settings


def test_search_rescues_a_model_whose_every_rate_diverged(one_torch_thread):
    from depthaccel.train import Run, train

    X, y = _small_problem()
    models = [Run("gd", 1.0, depth=1)]
    found = base.search(X, y, 4, models, (10.0, 100.0), 100, train_fn=train, max_extensions=0)
    f = found[0]
    assert f["extensions"] >= 1 and f["best"] is not None
    assert min(f["lrs"]) < 10.0 and all(r.diverged for r in f["results"] if r.run.lr >= 10)
    none = base.search(
        X, y, 4, models, (10.0, 100.0), 100, train_fn=train, max_extensions=0, rescue_diverged=0
    )
    assert none[0]["best"] is None and none[0]["extensions"] == 0


def test_refine_search_adds_half_steps_and_rechooses(one_torch_thread):
    from depthaccel.train import Run, train

    X, y = _small_problem()
    models = [Run("gd", 1.0, depth=1)]
    found = base.search(X, y, 4, models, (1e-3, 1e-2, 1e-1), 200, train_fn=train, extend=False)
    best = found[0]["best_lr"]
    ref = base.refine_search(X, y, 4, found, 200, 10**0.5, train_fn=train)
    lrs = ref[0]["lrs"]
    assert len(lrs) == 5 and float(f"{best / 10**0.5:.4g}") in lrs
    gaps = {r.run.lr: r.final_gap for r in ref[0]["results"] if not r.diverged}
    assert ref[0]["best_lr"] == min(gaps, key=gaps.get)
    assert found[0]["lrs"] == [1e-3, 1e-2, 1e-1]  # the input is not modified
