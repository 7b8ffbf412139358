"""Robustness across initialisation seeds: spreads and "holds for every seed" verdicts.

The headline claims of fig3, fig4 and fig5-left are re-run with several initialisation
seeds (a config field ``seeds``); a claim passes only if it holds for every seed, and the
claims table gives the spread of each measured number over the seeds (min..max and
mean +- sample sd) and names the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from depthaccel.experiments.loss_scale import gap_text

__all__ = [
    "Spread",
    "check_seeds",
    "every_seed",
    "failing_seeds",
    "gap_range_text",
    "range_text",
    "spread",
    "seed_title",
    "seeds_text",
]


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """The seeds as a tuple of distinct ints (ValueError if empty, repeated or not ints)."""
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"seeds must be integers, got {s!r}")
        out.append(int(s))
    if not out:
        raise ValueError("seeds must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {tuple(seeds)}")
    return tuple(out)


@dataclass(frozen=True)
class Spread:
    """Summary of one number over seeds: ``n``, ``min``, ``max``, ``mean`` and the sample
    standard deviation ``sd`` (0 for one seed). Non-finite values make every field NaN
    except ``n`` and ``n_finite``."""

    n: int
    n_finite: int
    min: float
    max: float
    mean: float
    sd: float

    def text(self, fmt: str = ".3g") -> str:
        """``"a..b (mean m +- s)"``; one value alone; ``"n/a"`` with a non-finite one."""
        if self.n_finite < self.n:
            return f"n/a ({self.n - self.n_finite} of {self.n} seeds non-finite)"
        if self.n == 1:
            return f"{self.min:{fmt}}"
        return f"{self.min:{fmt}}..{self.max:{fmt}} (mean {self.mean:{fmt}} +- {self.sd:{fmt}})"


def spread(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (at least one)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("spread of no values")
    fin = [v for v in vals if math.isfinite(v)]
    nan = float("nan")
    if len(fin) < len(vals):
        return Spread(len(vals), len(fin), nan, nan, nan, nan)
    mean = math.fsum(vals) / len(vals)
    sd = (
        math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        if len(vals) > 1
        else 0.0
    )
    return Spread(len(vals), len(fin), min(vals), max(vals), mean, sd)


def range_text(sp: Spread) -> str:
    """``min..max`` of a :class:`Spread` to 3 significant digits, trailing zeros kept so
    the two ends read alike (``"1.00..1.01"``, not ``"1..1.01"``); one number when they
    agree there; its ``"n/a ..."`` text when a value is not finite."""
    if sp.n_finite < sp.n:
        return sp.text()
    if f"{sp.min:.3g}" == f"{sp.max:.3g}":
        return f"{sp.min:.3g}"
    return f"{sp.min:#.3g}..{sp.max:#.3g}"


def gap_range_text(sp: Spread, p: float) -> str:
    """``min .. max`` of a :class:`Spread` of loss gaps at loss ``p``, each as
    :func:`~depthaccel.experiments.loss_scale.gap_text` writes it (one gap when they are
    equal); its ``"n/a ..."`` text when a value is not finite."""
    if sp.n_finite < sp.n:
        return sp.text()
    lo = gap_text(sp.min, p)
    return lo if sp.min == sp.max else f"{lo} .. {gap_text(sp.max, p)}"


def every_seed(holds: Mapping[int, bool | None]) -> bool | None:
    """A claim's verdict over seeds: True only if it holds for every seed; None (not
    assessed) if any seed is None and none is False; False if any seed fails."""
    if not holds:
        raise ValueError("no seeds")
    vals = list(holds.values())
    if any(v is False for v in vals):
        return False
    if any(v is None for v in vals):
        return None
    return True


def failing_seeds(holds: Mapping[int, bool | None]) -> list[int]:
    """The seeds for which the claim does not hold (False)."""
    return [s for s, v in holds.items() if v is False]


def seeds_text(holds: Mapping[int, bool | None]) -> str:
    """``"holds for seeds 0, 1, 2"`` or ``"fails for seed(s) 1 of 0, 1, 2"``."""
    names = ", ".join(map(str, holds))
    bad = failing_seeds(holds)
    if bad:
        return f"fails for seed(s) {', '.join(map(str, bad))} of {names}"
    if any(v is None for v in holds.values()):
        return f"not assessed (seeds {names})"
    return f"holds for every seed ({names})"


def seed_title(title: str, seeds: Sequence[int]) -> str:
    """A figure's title for a figure of the first seed: it says which seed when there are
    several."""
    return title + (f" (seed {seeds[0]})" if len(seeds) > 1 else "")
