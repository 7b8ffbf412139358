"""experiments.invariance: the rate ratio that grid-searched GD should show between two
feature scales, and the scaling law it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments.invariance import compare_searched, feature_scale_k, main, summary


def _gd_depth_n(X, y, layers, lr, T):
    """Plain GD on (1/2m)||X W_1^T ... W_N^T - y||^2 (float64), returns the layers."""
    m = X.shape[0]
    Ws = [W.copy() for W in layers]
    for _ in range(T):
        prods = [np.eye(X.shape[1])]
        for W in Ws:
            prods.append(W @ prods[-1])
        r = X @ prods[-1].T[:, 0] - y  # (m,)
        g_e = (r[None, :] @ X) / m  # dL/dW_e, (1, d)
        grads = []
        for j in range(len(Ws)):
            left = np.eye(1)
            for W in Ws[:j:-1]:
                left = left @ W
            grads.append(left.T @ g_e @ prods[j].T)
        Ws = [W - lr * G for W, G in zip(Ws, grads, strict=True)]
    return Ws


@pytest.mark.parametrize("N", [1, 2, 3])
def test_features_times_k_equal_rate_times_k_to_the_2_over_n(N):
    rng = np.random.default_rng(N)
    X, y = rng.standard_normal((20, 4)), rng.standard_normal(20)
    shapes = [(3, 4)] + [(3, 3)] * (N - 2) + [(1, 3)] if N > 1 else [(1, 4)]
    layers = [0.3 * rng.standard_normal(s) for s in shapes]
    k, lr, T = 0.2, 0.05, 40
    on_kx = _gd_depth_n(k * X, y, layers, lr, T)
    on_x = _gd_depth_n(X, y, [k ** (1 / N) * W for W in layers], lr * k ** (2 / N), T)
    for W_kx, W_x in zip(on_kx, on_x, strict=True):
        np.testing.assert_allclose(k ** (1 / N) * W_kx, W_x, rtol=1e-11, atol=1e-13)


def _settings(k, lrs, gaps, spacing=1.259):
    out = {
        "chosen_lr": dict(lrs),
        "final_gaps": dict(gaps),
        "grid_search": {
            "l2": {
                "search": [
                    {"model": f"depth-{n} GD (width 1)", "seed": s, "spacing_at_best": spacing}
                    for n in (1, 2, 3)
                    for s in (0, 1)
                ]
            }
        },
    }
    if k is not None:
        out["setup"] = {"feature_scale_k": k}
    return out


def test_rows_give_the_predicted_ratio_and_judge_it_to_one_grid_step():
    a = _settings(None, {f"l2/depth{n}/seed0": 0.01 for n in (1, 2, 3)}, {})
    a["final_gaps"] = {f"l2/depth{n}/seed0": 1e-3 for n in (1, 2, 3)}
    b = _settings(
        0.25,
        {
            "l2/depth1/seed0": 0.16,  # exactly 16x
            "l2/depth2/seed0": 0.04 * 1.25,  # within one step (1.259)
            "l2/depth3/seed0": 0.01 * 4 ** (2 / 3) * 1.6,  # off by more than a step
        },
        {f"l2/depth{n}/seed0": 2e-3 for n in (1, 2, 3)},
    )
    assert feature_scale_k(a) == 1.0 and feature_scale_k(b) == 0.25
    rows = compare_searched(a, b)
    assert [r.depth for r in rows] == [1, 2, 3]
    assert [r.predicted_ratio for r in rows] == pytest.approx([16, 4, 4 ** (2 / 3)])
    assert rows[0].off_by == pytest.approx(1.0)
    assert [r.within_grid for r in rows] == [True, True, False]
    assert rows[0].gap_ratio == pytest.approx(2.0)


def test_command_line_prints_a_table(tmp_path, capsys):
    import json

    a = _settings(1.0, {"l2/depth2/seed1": 0.001}, {"l2/depth2/seed1": 0.01})
    b = _settings(0.5, {"l2/depth2/seed1": 0.002}, {"l2/depth2/seed1": 0.011})
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert main([str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "| l2 | 2 | 1 | 0.001 | 0.002 | 2 | 2 | 1 | yes |" in out
    assert main([]) == 2


def _searched(depth, seed, grid, gaps, chosen):
    return {"model": f"depth-{depth} GD", "seed": seed, "grid": grid, "final_gap": gaps,
            "chosen_lr": chosen, "spacing_at_best": 1.26}  # fmt: skip


def test_gaps_agree_within_a_grid_step_or_the_seed_spread():
    keys = [f"l4/depth2/seed{s}" for s in (0, 1)]

    def per_seed(*values):
        return dict(zip(keys, values, strict=True))

    # k 1 -> 0.5 at depth 2: the rate should double (0.002 -> 0.004)
    a = {"chosen_lr": per_seed(0.002, 0.002), "final_gaps": per_seed(1e-2, 1.1e-2)}
    b = {
        "setup": {"feature_scale_k": 0.5},
        "chosen_lr": per_seed(0.004, 0.004),
        # seed 0: 0.8x a's gap, and one step down the grid moves it by x1.3 (agrees);
        # seed 1: 0.5x, beyond both one step (x1.2; the diverged step above is ignored)
        # and the seed spread (x1.1 at a, x1.45 at b)
        "final_gaps": per_seed(8e-3, 5.5e-3),
        "grid_search": {"l4": {"search": [
            _searched(2, 0, [0.002, 0.004, 0.008], [1.04e-2, 8e-3, None], 0.004),
            _searched(2, 1, [0.002, 0.004, 0.008], [6.6e-3, 5.5e-3, None], 0.004),
        ]}},
    }  # fmt: skip
    rows = compare_searched(a, b)
    assert [r.gap_step for r in rows] == pytest.approx([1.3, 1.2])
    assert [r.seed_spread for r in rows] == pytest.approx([8 / 5.5, 8 / 5.5])
    assert [r.gap_agrees for r in rows] == [True, False]
    text = summary(rows)
    assert text.startswith("2 of 2 chosen rates moved")
    assert "1 of 2 final gaps agree" in text and "(not: l4 depth 2 seed 1)" in text
    # without search records the seed spread alone decides (x1.1 at a; at b as given)
    bare = {**b, "grid_search": {}}
    rows = compare_searched(a, {**bare, "final_gaps": per_seed(1.05e-2, 1.1e-2)})
    assert np.isnan(rows[0].gap_step)
    assert [r.gap_agrees for r in rows] == [True, True]
    rows = compare_searched(a, {**bare, "final_gaps": per_seed(2e-2, 2.2e-2)})
    assert [r.gap_agrees for r in rows] == [False, False]
