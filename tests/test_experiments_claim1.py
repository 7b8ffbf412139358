"""claim1 experiment: the independent references and the quick run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthaccel.experiments import claim1
from depthaccel.experiments.claim1 import (
    Config,
    MatrixCase,
    check_case,
    definition_matrix,
    formula_eigenvalues,
    random_matrix,
)
from depthaccel.experiments.context import ExperimentContext
from depthaccel.preconditioner import preconditioner_matrix


def test_formula_by_hand_diag_2_1_depth_2():
    # K(a, b) = (a^2 - b^2)/(a - b) = a + b for N = 2: pairs of (2, 1) -> 4, 3, 3, 2
    W = np.diag([2.0, 1.0])
    np.testing.assert_allclose(formula_eigenvalues(W, 2), [2.0, 3.0, 3.0, 4.0], rtol=1e-15)
    # the definition: [W^T W]^{1/2} kron I + I kron [W W^T]^{1/2} = diag(4, 3, 3, 2)
    np.testing.assert_allclose(definition_matrix(W, 2), np.diag([4.0, 3.0, 3.0, 2.0]), atol=1e-15)


def test_formula_rank_deficient_and_fractional():
    # W = [[3, 0, 0]] (1 x 3, rank 1): pairs (3, 3), (3, 0), (3, 0)
    W = np.array([[3.0, 0.0, 0.0]])
    n = 1.5
    expect = sorted([n * 3 ** (2 * (n - 1) / n), 3 ** (2 - 2 / n), 3 ** (2 - 2 / n)])
    np.testing.assert_allclose(formula_eigenvalues(W, n), expect, rtol=1e-14)
    # zero matrix: K(0, 0) = 0 for N > 1, 1 for N = 1
    Z = np.zeros((2, 3))
    np.testing.assert_array_equal(formula_eigenvalues(Z, 3), np.zeros(6))
    np.testing.assert_array_equal(formula_eigenvalues(Z, 1), np.ones(6))


def test_random_matrix_rank_and_repeats():
    rng = np.random.default_rng(1)
    W = random_matrix(MatrixCase(5, 4, 2), rng)
    s = np.linalg.svd(W, compute_uv=False)
    assert s[1] > 0.05 and s[2] < 1e-12
    W = random_matrix(MatrixCase(4, 4, 4, repeated=True), rng)
    s = np.linalg.svd(W, compute_uv=False)
    assert abs(s[0] - s[1]) < 1e-12 and abs(s[2] - s[3]) < 1e-12
    with pytest.raises(ValueError, match="rank 5 exceeds"):
        random_matrix(MatrixCase(3, 4, 5), rng)


def test_check_case_detects_a_wrong_preconditioner(monkeypatch):
    rng = np.random.default_rng(2)
    W = random_matrix(MatrixCase(3, 4, 3), rng)
    G = rng.standard_normal(W.shape)
    ok = check_case(W, G, 3.0)
    assert ok["spectrum"] < 1e-12 and ok["definition"] < 1e-12 and ok["action"] < 1e-12

    # a preconditioner with the wrong depth must be caught by all three checks
    monkeypatch.setattr(
        claim1, "preconditioner_matrix", lambda W, depth: preconditioner_matrix(W, depth + 0.5)
    )
    bad = check_case(W, G, 3.0)
    assert bad["spectrum"] > 1e-3 and bad["definition"] > 1e-3 and bad["action"] > 1e-3


def test_quick_run_passes_and_writes_files(tmp_path):
    cfg = Config.quick()
    m = claim1.measure(cfg, ExperimentContext(tmp_path, quick=True))
    claims = claim1.judge(m, cfg)
    assert [c.verdict for c in claims] == ["PASS", "PASS", "PASS"]
    assert max(r.spectrum for r in m.rows) < 1e-10 and max(r.action for r in m.rows) < 1e-10
    paths = claim1.render(m, claims, tmp_path)
    assert (tmp_path / "claim1.png").read_bytes()[:4] == b"\x89PNG" and len(paths) == 2
    lines = (tmp_path / "deviations.csv").read_text().splitlines()
    assert len(lines) == 1 + len(cfg.cases) * cfg.trials * len(cfg.depths)


def _synthetic(spectrum: float) -> claim1.Measured:
    rows = [
        claim1.Deviation(3, 4, 3, False, 2.0, 1e-15, 1e-15, 1e-15),
        claim1.Deviation(4, 4, 4, True, 1.5, spectrum, float("nan"), 2e-15),
    ]
    return claim1.Measured(False, rows, [])


def test_judge_passes_below_the_tolerance_and_fails_above_it():
    cfg = Config.full()
    ok = claim1.judge(_synthetic(3e-14), cfg)
    assert [c.verdict for c in ok] == ["PASS", "PASS", "PASS"]
    assert ok[0].measured == "max relative deviation 3.0e-14 over 2 matrix/depth pairs"
    assert ok[0].details["worst at"] == {"shape": "4x4", "rank": 4, "repeated": True, "depth": 1.5}
    bad = claim1.judge(_synthetic(2e-6), cfg)
    assert [c.verdict for c in bad] == ["FAIL", "PASS", "PASS"]
    assert bad[0].why == "the deviation 2.0e-06 exceeds the tolerance 1e-10"
    # NaN (no definition check at fractional N) is not the worst case
    assert bad[1].details["worst at"]["depth"] == 2.0


def test_definition_matches_library_integer_depths():
    rng = np.random.default_rng(3)
    for case in (MatrixCase(2, 5, 2), MatrixCase(5, 2, 1)):
        W = random_matrix(case, rng)
        for N in (1, 2, 4):
            P = preconditioner_matrix(torch.from_numpy(W), N).numpy()
            np.testing.assert_allclose(P, definition_matrix(W, N), atol=1e-12 * np.abs(P).max())
