"""Checks of parameters, declared once: an :class:`Interval` says what a number may be and
:class:`Options` which few values a setting takes (in the spirit of scikit-learn's
``Interval``, ``StrOptions`` and ``_parameter_constraints``), and the same declaration
serves the library's functions and classes (:func:`check`, :func:`check_params`), text
such as a command line's (:func:`check_text`) and argparse options (:func:`arg_type`).

The rules every check applies:

* a bool is never a number (``True`` is not ``1`` here);
* an integer parameter takes Python and numpy integers, and a float only when
  ``whole_floats`` is set and the float is a whole number (``3.0``);
* a real parameter takes any int or float, but never NaN, and never an infinity unless
  a bound allows it;
* the bounds are inclusive (``closed="both"``), or exclusive on one or both sides;
* an option matches by type as well as value (``1`` is not ``True``, ``"2.0"`` not
  ``2.0``).

Error messages are one line, ``"<name> must be <description>, got <value>"``, e.g.
``"threads must be an integer >= 1, got 0"``. The checks run inside a
``torch.compile``'d function too (an optimizer's step): there they use only operations
Dynamo traces, and a bad value, which Dynamo cannot always print, is shown as ``a bad
value (run uncompiled to see it)``.

Example::

    THREADS = Interval(Integral, 1, None)
    threads = check("threads", threads, THREADS)          # in a function
    p.add_argument("--threads", type=arg_type(THREADS, "--threads"))  # on the command line
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

__all__ = [
    "BOOL",
    "COUNT",
    "Constraint",
    "Integral",
    "Interval",
    "Options",
    "Real",
    "SEED",
    "arg_type",
    "check",
    "check_params",
    "check_text",
    "shown",
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
        label: what the messages call a member instead of "an integer" / "a number"
            (e.g. "a 64-bit integer").
    """

    kind: type
    left: float | None = None
    right: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"
    whole_floats: bool = False
    label: str | None = None

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
                return int(v) if abs(v) < math.inf and v.is_integer() else None
            return None
        if isinstance(value, (int, float, np.integer, np.floating)):
            v = float(value)
            return None if v != v else v  # NaN (by comparison: Dynamo traces it)
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
        what = self.label or ("an integer" if self.kind is Integral else "a number")
        lo = "(" if self.closed in ("right", "neither") else "["
        hi = ")" if self.closed in ("left", "neither") else "]"
        if self.left is not None and self.right is not None:
            return f"{what} in {lo}{_bound(self.left)}, {_bound(self.right)}{hi}"
        if self.kind is Real and (self.left is None or self.right is None) and not self.label:
            what = "a finite number"
        if self.left is not None:
            return f"{what} {'>' if lo == '(' else '>='} {_bound(self.left)}"
        if self.right is not None:
            return f"{what} {'<' if hi == ')' else '<='} {_bound(self.right)}"
        return what


def _bound(b: float) -> str:
    """A bound as ``:g`` writes it (``1e+12``, ``0.5``), or every digit of an integer that
    ``:g`` would round (``9223372036854775807``)."""
    short = f"{b:g}"
    return short if isinstance(b, float) or float(short) == b else str(b)


@dataclass(frozen=True)
class Options:
    """A setting that takes one of a few values (names, None, True/False, dtypes).

    A value matches an option when it is that option, or has its type (a subclass
    counts, bool never stands for int or the reverse) and equals it.

    Args:
        values: the options, in the order the messages list them.
        note: said after the value in the error message (e.g. why an option is missing).
    """

    values: tuple[Any, ...]
    note: str = ""

    def __contains__(self, value: Any) -> bool:
        for v in self.values:
            if value is v:
                return True
            if isinstance(v, bool) or isinstance(value, bool) or v is None:
                continue
            if isinstance(value, type(v)) and value == v:
                return True
        return False

    def convert(self, value: Any) -> Any:
        """``value`` unchanged (an option is taken as given)."""
        return value

    def describe(self) -> str:
        """``"True or False"``, ``"one of 'all', '2d', 'none'"``."""
        names = [repr(v) for v in self.values]
        if all(isinstance(v, bool) or v is None for v in self.values):
            return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        return "one of " + ", ".join(names)


#: What a parameter may be: a number in an :class:`Interval`, or one of :class:`Options`.
Constraint = Interval | Options


#: A count of things (workers, threads, hidden units, iterations between checkpoints):
#: an integer >= 1; a whole float such as 2.0 counts.
COUNT = Interval(Integral, 1, None, whole_floats=True)
#: A random seed: any integer (a whole float counts).
SEED = Interval(Integral, whole_floats=True)
#: A switch: True or False (not 1, not "yes").
BOOL = Options((True, False))


def shown(value: Any) -> str:
    """``repr(value)``, except while Dynamo traces (``torch.compile``), where a symbolic
    float cannot be formatted."""
    torch = sys.modules.get("torch")  # no torch, no compiling: not imported for this
    if torch is not None and torch.compiler.is_compiling():
        return "a bad value (run uncompiled to see it)"
    return repr(value)


def check(name: str, value: Any, constraint: Constraint) -> Any:
    """``value`` as an int (Integral) or float (Real) when it lies in the interval, or as
    given when it is one of the options; else ValueError, one line naming ``name``."""
    if value not in constraint:
        note = getattr(constraint, "note", "")
        raise ValueError(f"{name} must be {constraint.describe()}, got {shown(value)}{note}")
    return constraint.convert(value)


def check_params(params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> dict:
    """:func:`check` of every parameter that has a constraint; returns the converted
    values by name (the first bad one raises)."""
    return {name: check(name, params[name], c) for name, c in constraints.items() if name in params}


def check_text(name: str, text: str, interval: Interval) -> Any:
    """``text`` (e.g. a command-line value) parsed as an integer (Integral: ``int``
    syntax, or a whole float's such as ``"2.0"`` with ``whole_floats``) or a real (any
    ``float`` syntax) and checked against ``interval``; ValueError, one line naming
    ``name``, for text that is no such number or lies outside."""
    value: Any = None
    try:
        value = int(text) if interval.kind is Integral else float(text)
    except ValueError:
        if interval.kind is Integral and interval.whole_floats:
            try:
                value = float(text)
            except ValueError:
                pass
    if value is None:
        raise ValueError(f"{name} must be {interval.describe()}, got {text!r}")
    if value not in interval:
        raise ValueError(f"{name} must be {interval.describe()}, got {str(text).strip()}")
    return interval.convert(value)


def arg_type(interval: Interval, flag: str) -> Callable[[str], Any]:
    """An argparse ``type=`` for a command-line option: :func:`check_text` of the option's
    text; a bad value is argparse's one-line usage error (exit status 2)."""

    def parse(text: str) -> Any:
        try:
            return check_text(flag, text, interval)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse
