"""mnist-e2e: the three nets, the e2e optimizer's parameter split, the level analysis, quick mode."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from depthaccel.experiments import EXPERIMENTS, run_experiment
from depthaccel.experiments import mnist_e2e as me
from depthaccel.experiments.mnist_analysis import iterations_to_levels, similar
from depthaccel.models import mnist_tutorial as mt
from depthaccel.reporting import read_curves_csv

# one intra-op thread: small nets, and far faster on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registered():
    assert EXPERIMENTS["mnist-e2e"].module == "mnist_e2e"


def test_nets_start_as_configured():
    cfg = dataclasses.replace(me.Config.quick(), channels_last=False)
    nets, summary = me.build_nets(cfg)
    assert set(nets) == set(me.NETS)
    orig, e2e, over = nets["original"], nets["e2e"], nets["overparameterized"]
    for a, b in zip(orig.parameters(), e2e.parameters(), strict=True):
        assert torch.equal(a, b)  # e2e starts as the original
    assert torch.equal(orig.conv1.weight, over.conv1.weight)
    assert [c.name for c in summary.layers] == ["fc1", "fc2"]


def test_e2e_optimizer_preconditions_exactly_the_dense_weights():
    net = mt.tutorial_net(1)
    opt = me.e2e_optimizer(net, me.Config.quick().schedule(), depth=2, precondition_every=7)
    dense, rest = opt.param_groups
    assert len(dense["params"]) == 2
    assert dense["params"][0] is net.fc1.weight and dense["params"][1] is net.fc2.weight
    assert dense["depth"] == 2 and dense["precondition_every"] == 7 and rest["depth"] == 1
    assert dense["momentum"] == rest["momentum"] == 0.9
    assert len(dense["params"]) + len(rest["params"]) == len(list(net.parameters()))


def test_e2e_optimizer_at_depth_one_is_the_tutorial_sgd():
    """With depth 1 the e2e net is the original net, bit for bit (same optimizer rule)."""
    a, b = mt.tutorial_net(3), mt.tutorial_net(3)
    sched = me.Config.quick().schedule()
    opt_a = me.e2e_optimizer(a, sched, depth=1, precondition_every=1)
    opt_b = torch.optim.SGD(b.parameters(), lr=sched.base_lr, momentum=sched.momentum)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    for _ in range(2):
        for net, opt in ((a, opt_a), (b, opt_b)):
            torch.manual_seed(5)  # the same dropout mask
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_iterations_to_levels_by_hand():
    curves = {
        "original": np.array([5.0, 4.0, 3.0, 2.0]),
        "overparameterized": np.array([4.0, 2.5, 1.5, 1.0]),
        "e2e": np.array([5.0, 5.0, 4.5, 3.5]),
    }
    rows = iterations_to_levels(curves, (0.5, 1.0))
    assert rows[0] == {
        "fraction": 0.5,
        "level": 4.0,
        "original": 2,
        "overparameterized": 1,
        "e2e": 4,
    }
    assert rows[1]["level"] == 2.0 and rows[1]["overparameterized"] == 3
    assert not similar(rows[0], 1.25)  # 4 > 1.25 * 1
    assert rows[1]["e2e"] is None and not similar(rows[1], 1.25)
    assert similar({"overparameterized": 4, "e2e": 5}, 1.25)
    assert not similar({"overparameterized": 4, "e2e": 6}, 1.25)


@pytest.mark.parametrize(
    "field,value",
    [
        ("factor_init", "zeros"),
        ("l2_on", "both"),
        ("depth", 1),
        ("precondition_every", 0),
        ("similar", 0.0),
        ("train_size", 56000),
        ("checkpoints", (0.0,)),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(me.Config.quick(), **{field: value}).validate()


def test_quick_mode_runs_and_writes_outputs(tmp_path, mnist_data_dir):
    res = run_experiment("mnist-e2e", tmp_path, quick=True, data_dir=mnist_data_dir)
    out = tmp_path / "mnist-e2e"
    assert res.status == "ok" and res.mode == "quick"
    assert (out / "mnist_e2e.png").stat().st_size > 10_000
    settings = json.loads((out / "settings.json").read_text())
    assert settings["steps_done"] == me.Config.quick().n_steps() == 20
    assert set(settings["ms_per_step"]) == {*me.NETS, me.BF16}  # K = 10: bfloat16 timed too
    curves = read_curves_csv(out / "curves.csv.gz")
    losses = [c for c in curves if c.panel == "batch_loss"]
    assert len(losses) == 3 and all(np.all(np.isfinite(c.values)) for c in losses)
    ce = {
        ("e2e" if "EndToEndSGD" in c.label else c.label.split(" ")[0]): c.values
        for c in curves
        if c.panel == "batch_cross_entropy"
    }
    assert set(ce) == set(me.NETS)
    assert ce["original"][-5:].mean() < ce["original"][:5].mean()  # it learns
    assert ce["original"][0] == ce["e2e"][0]  # same start, same first batch and mask
    assert ce["original"][-1] != ce["e2e"][-1]  # then different rules
    assert all(c.passed is None for c in res.claims)  # a 20-step run assesses nothing


def test_reproduce_precondition_every_flag(tmp_path, capsys, monkeypatch, mnist_data_dir):
    from depthaccel.cli import main

    # refused before anything runs: bad K, or without mnist-e2e
    assert main(["reproduce", "claim1", "--precondition-every", "5", "--out", str(tmp_path)]) == 2
    assert "mnist-e2e only" in capsys.readouterr().err
    assert (
        main(["reproduce", "mnist-e2e", "--precondition-every", "0", "--out", str(tmp_path)]) == 2
    )
    seen = {}

    def fake_run(name, out, *, quick, config, **kw):
        seen[name] = config
        raise RuntimeError("stop here")

    monkeypatch.setattr("depthaccel.commands.reproduce.run_experiment", fake_run)
    main(
        [
            "reproduce",
            "mnist-e2e",
            "--quick",
            "--precondition-every",
            "3",
            "--no-store",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--data-dir",
            str(mnist_data_dir),
        ]
    )
    assert seen["mnist-e2e"] == dataclasses.replace(me.Config.quick(), precondition_every=3)


def _fake_mnist(n_train: int = 800, n_test: int = 64):
    from depthaccel.data.mnist import MNIST

    rng = np.random.default_rng(5)
    return MNIST(
        train_images=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, n_train).astype(np.uint8),
        test_images=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, n_test).astype(np.uint8),
        source="synthetic",
    )


def test_each_net_as_its_own_task_takes_exactly_its_side_by_side_steps():
    """mnist-e2e trains every net as a task of its own (ctx.map, kept in the results
    store): with the dropout masks re-seeded per step, each net alone takes bit for bit
    the steps it takes beside the other two (same batches, masks, init, optimizers)."""
    cfg = dataclasses.replace(
        me.Config.quick(), train_size=640, validation_size=64, validation_eval=0,
        test_size=32, batch_size=32, epochs=0.5, precondition_every=3,
    )  # fmt: skip
    data = _fake_mnist()
    splits = cfg.splits(data)
    nets = me.build_nets(cfg)[0]
    opts = {"e2e": lambda net, s: me.e2e_optimizer(net, s, depth=2, precondition_every=3)}
    together, lrs, done = mt.train_side_by_side(
        nets, splits, cfg.schedule(), l2_on={"overparameterized": "product"}, optimizers=opts
    )
    assert done == cfg.n_steps() == 10
    for k in me.NETS:
        h, lrs1, done1, err = me.train_net(
            me.NetTask(k), cfg=cfg, data=data, device="cpu", dtype=torch.float32
        )
        assert h.loss == together[k].loss and h.ce == together[k].ce  # bit for bit
        assert lrs1 == lrs and done1 == done and 0 <= err <= 100
    assert together["e2e"].loss != together["original"].loss  # the optimizers differ


def test_step_times_are_measured_side_by_side_for_all_three_nets():
    cfg = dataclasses.replace(
        me.Config.quick(),
        train_size=640,
        validation_size=64,
        validation_eval=0,
        test_size=32,
        timing_steps=4,
    )
    splits = cfg.splits(_fake_mnist())
    ms = me.step_times_ms(cfg, splits, torch.device("cpu"), torch.float32)
    assert set(ms) == {*me.NETS, me.BF16}
    assert all(len(v) == 4 and min(v) > 0 for v in ms.values())  # ms of each of the 4 steps
    exact = dataclasses.replace(cfg, precondition_every=1)  # bfloat16 needs a cache: not timed
    assert set(me.step_times_ms(exact, splits, torch.device("cpu"), torch.float32)) == set(me.NETS)
    net = mt.tutorial_net(cfg.seed)
    opt = me.e2e_optimizer(
        net, cfg.schedule(), depth=2, precondition_every=10, precondition_dtype=torch.bfloat16
    )
    assert opt.param_groups[0]["precondition_dtype"] == torch.bfloat16
    assert opt.param_groups[0]["params"][0] is net.fc1.weight
    with pytest.raises(ValueError, match="timing_steps"):
        dataclasses.replace(cfg, timing_steps=0).validate()


def test_a_checkpoint_resumes_every_net_bit_for_bit():
    """train_side_by_side's checkpoint (through torch.save / torch.load(weights_only))
    and ``start=``: the three nets (SGD, overparameterized, EndToEndSGD with its amortised
    cache) continue exactly as an uninterrupted run, histories and weights."""
    import io

    cfg = dataclasses.replace(
        me.Config.quick(), train_size=640, validation_size=64, validation_eval=32,
        test_size=32, batch_size=32, epochs=0.75, eval_every=4, precondition_every=3,
    )  # fmt: skip
    splits = cfg.splits(_fake_mnist())
    opts = {"e2e": lambda net, s: me.e2e_optimizer(net, s, depth=2, precondition_every=3)}
    l2 = {"overparameterized": "product"}
    nets = me.build_nets(cfg)[0]
    whole, lrs, done = mt.train_side_by_side(
        nets, splits, cfg.schedule(), l2_on=l2, optimizers=opts
    )
    assert done == cfg.n_steps() == 15
    saved = []

    def keep(state):
        buf = io.BytesIO()
        torch.save(state, buf)
        saved.append(buf.getvalue())

    first = me.build_nets(cfg)[0]
    mt.train_side_by_side(
        first, splits, cfg.schedule(), l2_on=l2, optimizers=opts, checkpoint=keep,
        checkpoint_every=4,
    )  # fmt: skip
    assert len(saved) == 3  # after steps 4, 8, 12 (none at the last step)
    state = torch.load(io.BytesIO(saved[1]), weights_only=True)
    assert state["steps"] == 8
    again = me.build_nets(cfg)[0]  # fresh nets and optimizers, as a new process has
    rest, lrs2, done2 = mt.train_side_by_side(
        again, splits, cfg.schedule(), l2_on=l2, optimizers=opts, start=state
    )
    assert done2 == done and lrs2 == lrs
    for k in me.NETS:
        assert rest[k].loss == whole[k].loss and rest[k].ce == whole[k].ce
        assert rest[k].val_steps == whole[k].val_steps == [4, 8, 12, 15]
        assert rest[k].val_error == whole[k].val_error
        for a, b in zip(again[k].parameters(), nets[k].parameters(), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        mt.train_side_by_side(
            {"original": me.build_nets(cfg)[0]["original"]}, splits, cfg.schedule(), start=state
        )
    with pytest.raises(ValueError, match="same_dropout_masks"):
        mt.train_side_by_side(
            me.build_nets(cfg)[0], splits, cfg.schedule(same_dropout_masks=False), start=state
        )


def test_a_net_task_killed_mid_way_resumes_from_the_store_with_the_same_numbers(
    tmp_path, monkeypatch
):
    """A stored, checkpointed net task (the e2e net: EndToEndSGD and its amortised
    cache) that dies after two checkpoints is resumed by the next map from the latest
    one, and ends with exactly the numbers of an uninterrupted run."""
    from depthaccel.experiments import tutorial_config as tc
    from depthaccel.experiments.context import ExperimentContext
    from depthaccel.store import Store

    monkeypatch.setattr(tc, "CHECKPOINT_EVERY", 4)
    cfg = dataclasses.replace(
        me.Config.quick(), train_size=640, validation_size=64, validation_eval=0,
        test_size=32, batch_size=32, epochs=0.75, precondition_every=3,
    )  # fmt: skip
    data, items = _fake_mnist(), [me.NetTask("e2e")]
    kw = dict(kind=me.NAME, cfg=cfg, data=data, dtype=torch.float32)
    plain = tc.train_net_tasks(ExperimentContext(tmp_path / "a"), me.train_net, items, **kw)
    store = tmp_path / "s.sqlite"
    real_lr = mt.staircase_lr

    def dies_at_step_10(step, **k):
        if step == 10:
            raise RuntimeError("worker killed")
        return real_lr(step, **k)

    monkeypatch.setattr(mt, "staircase_lr", dies_at_step_10)
    ctx = ExperimentContext(tmp_path / "b", store=store, log=lambda m: None)
    with pytest.raises(RuntimeError, match="worker killed"):
        tc.train_net_tasks(ctx, me.train_net, items, **kw)
    with Store(store) as st:
        assert [it for _, it in st.checkpoints()] == [8]
    steps_run = []

    def counting(step, **k):
        steps_run.append(step)
        return real_lr(step, **k)

    monkeypatch.setattr(mt, "staircase_lr", counting)
    logs = []
    ctx = ExperimentContext(tmp_path / "b", store=store, log=logs.append)
    resumed = tc.train_net_tasks(ctx, me.train_net, items, **kw)
    assert any("from step 8" in m for m in logs)
    assert steps_run == list(range(8, cfg.n_steps()))  # only the steps after the checkpoint
    h0, lrs0, done0, err0 = plain["e2e"]
    h1, lrs1, done1, err1 = resumed["e2e"]
    assert (h1.loss, h1.ce, lrs1, done1, err1) == (h0.loss, h0.ce, lrs0, done0, err0)
    with Store(store) as st:
        assert st.checkpoints() == [] and ctx.stats.tasks_run == 1


def _synthetic(e2e_loss: np.ndarray, ms_e2e: float, steps: int = 2000):
    """Three nets' histories: the original falls slowly, the overparameterized one fast,
    e2e as given."""
    cfg = me.Config.full()
    t = np.arange(1, steps + 1, dtype=float)
    curves = {"original": 5.0 / t**0.2, "overparameterized": 5.0 / t**0.5, "e2e": e2e_loss}
    hist = {
        k: SimpleNamespace(loss=v, ce=v / 2, val_error=[], seconds=1.0) for k, v in curves.items()
    }
    ms = {"original": 100.0, "overparameterized": 170.0, "e2e": ms_e2e, me.BF16: 140.0}
    m = me.Measured(
        False, cfg, steps, hist, (0.01, 0.001), {k: 0.9 for k in me.NETS}, ms, ms,
        ("0", "0"), {}, "", 1, "cpu", "float32", "",
    )  # fmt: skip
    return m, cfg


def _timed(m, jitter: float, n: int = 200, seed: int = 1):
    """Per-step times around each net's mean (relative noise ``jitter``), rescaled so
    their means are exactly ``m.ms_per_step``."""
    rng = np.random.default_rng(seed)
    for k, v in m.ms_per_step.items():
        x = 1.0 + jitter * rng.standard_normal(n)
        m.step_ms[k] = list(v * x / x.mean())
    return m


def test_judge_on_synthetic_histories():
    t = np.arange(1, 2001, dtype=float)
    m, cfg = _synthetic(5.0 / t**0.5, ms_e2e=150.0)  # e2e as fast as overparameterized
    claims = me.judge(m, cfg)
    assert [c.verdict for c in claims[:4]] == ["PASS", "PASS", "PASS", "PASS"]
    assert claims[2].measured == "ms per step: e2e 150.0, overparameterized 170.0, original 100.0"
    m, cfg = _synthetic(5.0 / t**0.2, ms_e2e=200.0)  # e2e as slow as the original
    claims = me.judge(m, cfg)
    assert [c.verdict for c in claims[:3]] == ["FAIL", "FAIL", "FAIL"]
    assert claims[2].why == "an e2e step took 1.18x the overparameterized net's"
    # with the per-step times, the ratio comes with its interval; noise decides nothing
    _timed(m, jitter=0.02)
    claims = me.judge(m, cfg)
    assert claims[2].why.startswith("an e2e step took 1.176x (95% interval 1.1")
    assert claims[2].why.endswith(" over 200 steps) the overparameterized net's")
    assert "timing noise" not in claims[2].measured
    close, _ = _synthetic(5.0 / t**0.5, ms_e2e=170.5)  # 0.3% slower: within the noise
    claims = me.judge(_timed(close, jitter=0.2), cfg)
    assert claims[2].verdict == "FAIL"  # the criterion is unchanged: the mean decides
    assert "; within the timing noise (ratio 1.003, 95% " in claims[2].measured
    m.steps_done = 20  # a short run assesses nothing but the accuracy check
    assert [c.verdict for c in me.judge(m, cfg)[:3]] == ["NOT ASSESSED"] * 3


def test_ratio_of_means_against_its_definition_and_a_slow_bootstrap():
    from depthaccel.experiments.mnist_analysis import ratio_of_means

    rng = np.random.default_rng(3)
    b = 100.0 + 10.0 * rng.standard_normal(50)
    a = 1.1 * b + 5.0 * rng.standard_normal(50)
    r, lo, hi = ratio_of_means(a, b, n_boot=300, seed=7)
    assert r == pytest.approx(a.mean() / b.mean(), rel=1e-15)
    # the same resamples drawn one by one, in a plain loop
    gen = np.random.default_rng(7)
    idx = gen.integers(0, 50, size=(300, 50))
    boots = sorted(sum(a[i] for i in row) / sum(b[i] for i in row) for row in idx)
    want = np.percentile(boots, [2.5, 97.5])
    assert (lo, hi) == pytest.approx(tuple(want), rel=1e-12)
    assert lo < r < hi
    assert ratio_of_means(2 * b, b) == pytest.approx((2.0, 2.0, 2.0))  # no noise, no width
    # four times the steps: about half the width
    b4 = 100.0 + 10.0 * rng.standard_normal(200)
    a4 = 1.1 * b4 + 5.0 * rng.standard_normal(200)
    _, lo4, hi4 = ratio_of_means(a4, b4)
    _, lo1, hi1 = ratio_of_means(a, b)
    assert 0.35 < (hi4 - lo4) / (hi1 - lo1) < 0.7
    with pytest.raises(ValueError, match="paired"):
        ratio_of_means(a, b[:-1])
    with pytest.raises(ValueError, match="finite"):
        ratio_of_means(a, np.full(50, np.nan))
