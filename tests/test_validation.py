"""Tests of depthaccel.validation: one declaration of what a parameter may be, for the
library and the command line."""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import pytest

from depthaccel.validation import COUNT, SEED, Integral, Interval, Real, arg_type, check


def reference(kind, left, right, closed, whole, v) -> bool:
    """Membership written out case by case (independent of Interval.__contains__)."""
    if type(v) in (bool, np.bool_):
        return False
    if kind is Integral:
        if type(v) in (int, np.int64, np.int32):
            x = int(v)
        elif whole and type(v) in (float, np.float64) and math.isfinite(v) and v == int(v):
            x = int(v)
        else:
            return False
    else:
        if type(v) not in (int, float, np.int64, np.float64) or v != v:
            return False
        x = float(v)
    lo_ok = (
        x > -math.inf if left is None else (x > left or (x == left and closed in ("both", "left")))
    )
    hi_ok = (
        x < math.inf
        if right is None
        else (x < right or (x == right and closed in ("both", "right")))
    )
    return lo_ok and hi_ok


VALUES = [
    0, 1, 2, 5, -3, 10**30, 0.0, 1.0, 1.5, 2.0, -0.5, math.inf, -math.inf, math.nan,
    True, False, np.int64(3), np.float64(2.0), np.float64(0.25), np.bool_(True), "2", None,
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, left, right, closed, whole",
    [
        (k, lo, hi, c, w)
        for k, (lo, hi), c, w in itertools.product(
            (Integral, Real), ((None, None), (1, None), (None, 2), (0, 2), (1, 1)),
            ("both", "left", "right", "neither"), (False, True),
        )
        if not (k is Real and w)
    ],
)  # fmt: skip
def test_membership_matches_a_written_out_reference(kind, left, right, closed, whole):
    iv = Interval(kind, left, right, closed, whole)
    for v in VALUES:
        assert (v in iv) == reference(kind, left, right, closed, whole, v), (iv, v)


def test_check_converts_or_raises_one_line():
    assert check("workers", 3, COUNT) == 3 and type(check("workers", 2.0, COUNT)) is int
    assert check("seed", np.int64(-7), SEED) == -7
    assert check("lr", np.float64(0.5), Interval(Real, 0, None, "neither")) == 0.5
    for bad in (0, True, 1.5, "2", None, math.nan):
        with pytest.raises(ValueError, match=r"^workers must be an integer >= 1, got ") as e:
            check("workers", bad, COUNT)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0"):
        check("lr", 0, Interval(Real, 0, None, "neither"))
    with pytest.raises(ValueError, match=r"p must be a number in \[2, 100\], got inf"):
        check("p", math.inf, Interval(Real, 2, 100))
    with pytest.raises(ValueError, match="empty interval"):
        Interval(Integral, 2, 1)


def test_arg_type_is_argparse_usage_error():
    parse = arg_type(Interval(Integral, 1, 1024), "--threads")
    assert parse("8") == 8
    for bad, msg in (("0", "got 0"), ("99999999999999999999999", "got 999"), ("x", "got 'x'")):
        with pytest.raises(
            argparse.ArgumentTypeError, match=r"--threads must be an integer in \[1, 1024\], " + msg
        ):
            parse(bad)
    real = arg_type(Interval(Real, 0, None, "neither"), "--lr")
    assert real("1e-3") == 1e-3
    with pytest.raises(argparse.ArgumentTypeError, match="--lr must be a finite number > 0"):
        real("nan")


def test_the_library_and_the_command_line_share_the_declarations():
    from depthaccel.executors import LocalExecutor, make_executor
    from depthaccel.train import Run

    for build in (lambda: LocalExecutor(0), lambda: make_executor(jobs=True)):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            build()
    with pytest.raises(ValueError, match="hidden must be an integer >= 1, got 0"):
        Run("gd", 0.1, depth=2, hidden=0)
    with pytest.raises(ValueError, match="seed must be an integer, got 1.5"):
        Run("gd", 0.1, seed=1.5)
    assert Run("gd", 0.1, seed=2.0).seed == 2 and type(Run("gd", 0.1, hidden=3.0).hidden) is int
