"""Checks of numeric parameters, declared once: an :class:`Interval` says what a parameter
may be (in the spirit of scikit-learn's ``Interval`` and ``_parameter_constraints``), and
the same declaration serves the library's functions and classes (:func:`check`,
:func:`check_params`) and the command line's options (:func:`arg_type`).

The rules every check applies:

* a bool is never a number (``True`` is not ``1`` here);
* an integer parameter takes Python and numpy integers, and a float only when
  ``whole_floats`` is set and the float is a whole number (``3.0``);
* a real parameter takes any int or float, but never NaN, and never an infinity unless
  a bound allows it;
* the bounds are inclusive (``closed="both"``), or exclusive on one or both sides.

Error messages are one line, ``"<name> must be <description>, got <value>"``, e.g.
``"threads must be an integer >= 1, got 0"``.

Example::

    THREADS = Interval(Integral, 1, None)
    threads = check("threads", threads, THREADS)          # in a function
    p.add_argument("--threads", type=arg_type(THREADS, "--threads"))  # on the command line
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

__all__ = [
    "COUNT",
    "Integral",
    "Interval",
    "Real",
    "SEED",
    "arg_type",
    "check",
    "check_params",
]


@dataclass(frozen=True)
class Interval:
    """The numbers a parameter may take.

    Args:
        kind: ``numbers.Integral`` (integers) or ``numbers.Real`` (real numbers).
        left, right: the bounds (None: unbounded on that side).
        closed: which bounds belong to the interval: "both" (default), "left",
            "right" or "neither".
        whole_floats: integers only: also accept a float that is a whole number.
    """

    kind: type
    left: float | None = None
    right: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"
    whole_floats: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (Integral, Real):
            raise ValueError(f"kind must be numbers.Integral or numbers.Real, got {self.kind}")
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both, left, right or neither, got {self.closed!r}")
        if self.left is not None and self.right is not None and self.left > self.right:
            raise ValueError(f"empty interval: left {self.left} > right {self.right}")

    def convert(self, value: Any) -> int | float | None:
        """``value`` as an int or float of this kind, or None when it is not one."""
        if isinstance(value, (bool, np.bool_)):
            return None
        if self.kind is Integral:
            if isinstance(value, (int, np.integer)):
                return int(value)
            if self.whole_floats and isinstance(value, (float, np.floating)):
                v = float(value)
                return int(v) if math.isfinite(v) and v.is_integer() else None
            return None
        if isinstance(value, (int, float, np.integer, np.floating)):
            v = float(value)
            return None if math.isnan(v) else v
        return None

    def __contains__(self, value: Any) -> bool:
        v = self.convert(value)
        if v is None:
            return False
        lo_open = self.closed in ("right", "neither")
        hi_open = self.closed in ("left", "neither")
        if self.left is None:
            if v == -math.inf:
                return False
        elif v < self.left or (lo_open and v == self.left):
            return False
        if self.right is None:
            if v == math.inf:
                return False
        elif v > self.right or (hi_open and v == self.right):
            return False
        return True

    def describe(self) -> str:
        """``"an integer >= 1"``, ``"a finite number > 0"``, ``"an integer in [1, 1024]"``."""
        what = "an integer" if self.kind is Integral else "a number"
        lo = "(" if self.closed in ("right", "neither") else "["
        hi = ")" if self.closed in ("left", "neither") else "]"
        if self.left is not None and self.right is not None:
            return f"{what} in {lo}{self.left:g}, {self.right:g}{hi}"
        if self.kind is Real and (self.left is None or self.right is None):
            what = "a finite number"
        if self.left is not None:
            return f"{what} {'>' if lo == '(' else '>='} {self.left:g}"
        if self.right is not None:
            return f"{what} {'<' if hi == ')' else '<='} {self.right:g}"
        return what


#: A count of things (workers, threads, hidden units, iterations between checkpoints):
#: an integer >= 1; a whole float such as 2.0 counts.
COUNT = Interval(Integral, 1, None, whole_floats=True)
#: A random seed: any integer (a whole float counts).
SEED = Interval(Integral, whole_floats=True)


def check(name: str, value: Any, interval: Interval) -> Any:
    """``value`` as an int (Integral) or float (Real) when it lies in ``interval``;
    else ValueError, one line naming ``name``."""
    if value not in interval:
        raise ValueError(f"{name} must be {interval.describe()}, got {value!r}")
    return interval.convert(value)


def check_params(params: Mapping[str, Any], constraints: Mapping[str, Interval]) -> dict:
    """:func:`check` of every parameter that has a constraint; returns the converted
    values by name (the first bad one raises)."""
    return {name: check(name, params[name], c) for name, c in constraints.items() if name in params}


def arg_type(interval: Interval, flag: str) -> Callable[[str], Any]:
    """An argparse ``type=`` for a command-line option: parses the text (an integer, or
    any float syntax for a real) and checks it against ``interval``; a bad value is
    argparse's one-line usage error (exit status 2)."""

    def parse(text: str) -> Any:
        try:
            value: Any = int(text) if interval.kind is Integral else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be {interval.describe()}, got {text!r}"
            ) from None
        if value not in interval:
            raise argparse.ArgumentTypeError(f"{flag} must be {interval.describe()}, got {text}")
        return interval.convert(value)

    return parse
