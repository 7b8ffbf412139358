"""Spread over seeds and the every-seed verdict, against the statistics module."""

from __future__ import annotations

import math
import statistics

import pytest

from depthaccel.experiments.seeds import (
    check_seeds,
    every_seed,
    failing_seeds,
    gap_range_text,
    range_text,
    seeds_text,
    spread,
)


def test_spread_matches_statistics():
    vals = [0.0123, 0.0151, 0.0098, 0.0131]
    s = spread(vals)
    assert (s.n, s.n_finite) == (4, 4)
    assert s.min == min(vals) and s.max == max(vals)
    assert s.mean == pytest.approx(statistics.fmean(vals), rel=1e-15)
    assert s.sd == pytest.approx(statistics.stdev(vals), rel=1e-14)
    assert s.text() == "0.0098..0.0151 (mean 0.0126 +- 0.00219)"


def test_spread_single_and_nonfinite():
    assert spread([2.5]).sd == 0.0 and spread([2.5]).text() == "2.5"
    s = spread([1.0, float("nan"), 2.0])
    assert s.n_finite == 2 and math.isnan(s.mean)
    assert s.text() == "n/a (1 of 3 seeds non-finite)"
    with pytest.raises(ValueError, match="no values"):
        spread([])


def test_every_seed_verdicts():
    assert every_seed({0: True, 1: True, 2: True}) is True
    assert every_seed({0: True, 1: False, 2: True}) is False
    assert every_seed({0: True, 1: None}) is None
    assert every_seed({0: None, 1: False}) is False
    assert failing_seeds({0: True, 1: False, 2: False}) == [1, 2]
    assert seeds_text({0: True, 1: True}) == "holds for every seed (0, 1)"
    assert seeds_text({0: True, 7: False}) == "fails for seed(s) 7 of 0, 7"
    with pytest.raises(ValueError):
        every_seed({})


def test_check_seeds():
    assert check_seeds([0, 1, 2]) == (0, 1, 2)
    for bad in ([], [0, 0], [0.5], [True]):
        with pytest.raises(ValueError, match="seeds"):
            check_seeds(bad)


def test_range_text():
    assert range_text(spread([0.5])) == "0.5"
    assert range_text(spread([0.12341, 0.12339])) == "0.123"  # agree to 3 digits
    assert range_text(spread([2.0, 0.5, 1.0])) == "0.500..2.00"
    assert range_text(spread([1.004, 1.0, 1.012])) == "1.00..1.01"  # not "1..1.01"
    # a non-finite value anywhere is reported, never hidden behind a finite min and max
    # (min/max of a list with a NaN in the middle are finite)
    assert range_text(spread([1.0, float("nan"), 2.0])).startswith("n/a (1 of 3")
    assert range_text(spread([1.0, float("inf")])).startswith("n/a (1 of 2")


def test_gap_range_text():
    from depthaccel.experiments.loss_scale import gap_text

    assert gap_range_text(spread([2e-3]), 4.0) == gap_text(2e-3, 4.0)
    assert gap_range_text(spread([3e-3, 1e-3, 2e-3]), 2.0) == (
        f"{gap_text(1e-3, 2.0)} .. {gap_text(3e-3, 2.0)}"
    )
    assert gap_range_text(spread([1e-3, float("nan")]), 4.0).startswith("n/a (1 of 2")
