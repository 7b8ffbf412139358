"""experiments.invariance: the rate ratio that grid-searched GD should show between two
feature scales, and the scaling law it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from depthaccel.experiments.invariance import compare_searched, feature_scale_k, main


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
