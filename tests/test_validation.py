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


def test_options_match_by_type_and_value():
    from depthaccel.validation import BOOL, Options

    assert True in BOOL and False in BOOL
    for bad in (1, 0, np.bool_(True), "yes", None):
        assert bad not in BOOL, bad
    names = Options(("all", "2d", "none"))
    assert "2d" in names and np.str_("2d") in names  # a str subclass counts
    assert "3d" not in names and 2 not in names and None not in names
    some = Options((None, 1.5, True))
    assert None in some and 1.5 in some and True in some
    assert 1 not in some and 0 not in some  # bool and int never stand for each other
    with pytest.raises(ValueError, match=r"^nesterov must be True or False, got 1$"):
        check("nesterov", 1, BOOL)
    with pytest.raises(ValueError, match=r"^mode must be one of 'all', '2d', 'none', got '3d'$"):
        check("mode", "3d", names)
    why = Options((None, False), note=" (no fused kernel)")
    with pytest.raises(ValueError, match=r"^fused must be None or False, got True \(no fused"):
        check("fused", True, why)
    assert check("foreach", None, Options((None, True, False))) is None


def test_check_text_parses_then_checks():
    from depthaccel.validation import check_text

    assert check_text("iters", " 20 ", COUNT) == 20
    assert check_text("iters", "2.0", COUNT) == 2 and check_text("iters", "1e3", COUNT) == 1000
    assert check_text("lr", "1e-3", Interval(Real, 0, None)) == 1e-3
    strict = Interval(Integral, 1, 1024)  # no whole floats: "2.0" is not an integer
    for text, shown in (("2.0", "'2.0'"), ("x", "'x'"), ("", "''"), ("0", "0"), ("1025", "1025")):
        with pytest.raises(
            ValueError, match=rf"^n must be an integer in \[1, 1024\], got {shown}$"
        ):
            check_text("n", text, strict)
    with pytest.raises(ValueError, match=r"^iters must be an integer >= 1, got 1.5$"):
        check_text("iters", "1.5", COUNT)


def test_bounds_are_printed_exactly_and_labels_name_the_kind():
    seed = Interval(Integral, -(2**63), 2**63 - 1, label="a 64-bit integer")
    assert seed.describe() == (
        "a 64-bit integer in [-9223372036854775808, 9223372036854775807]"
    )  # fmt: skip
    assert Interval(Integral, 1, 10**12).describe() == "an integer in [1, 1e+12]"
    assert Interval(Real, 0.5, None).describe() == "a finite number >= 0.5"
    with pytest.raises(
        ValueError, match=rf"^seed must be a 64-bit integer in \[.*\], got {2**64}$"
    ):
        check("seed", 2**64, seed)
