"""One model against another (:class:`Comparison`): the comparison rule of the verdict,
with the words that go with its numbers.

Challenger b against baseline a, each at its best learning rate, by three measures, each
a sign (+1: b better, -1: b worse, 0: within a factor ``SAME_FACTOR`` = 1.1 either way,
or not measurable):

- *speed*: iterations to the smallest gap threshold both reached (a's / b's);
- *reach*: one reached a threshold the other never did;
- *final*: the final gaps (a's / b's; gaps at or below the round-off floor are "the
  optimum reached", equal to each other, never a ratio).

b is *better* when no measure is negative and one is positive, *worse* in the mirror
case, *mixed* when they disagree, *about the same* when all are 0. Every comparative word
("fewer", "more", "lower", "higher") is derived from the numbers printed beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from depthaccel.compare.select import ModelBest

__all__ = ["SAME_FACTOR", "Comparison", "compare_models", "fmt"]

#: Ratios within this factor of 1 count as "no clear difference".
SAME_FACTOR = 1.1


def fmt(x: float) -> str:
    return f"{x:.3g}"


#: The wording of the two ratio measures (speed: iterations to a threshold; final: the
#: final gap): (terse, full) when about the same, (terse, full) for a lead or lag of
#: ``{x}`` times, and the word for b ahead / behind (``{more}``).
_RATIO_WORDS = {
    "speed": (
        (
            "about as many iterations to {name}",
            "{b} and {a} need about as many iterations to reach {name}{nums}",
        ),
        (
            "{x} {more} iterations to {name}",
            "{b} needs {x} {more} iterations than {a} to reach {name}{nums}",
        ),
        ("fewer", "more"),
    ),
    "final": (
        ("about the same final {word}", "{b} and {a} end at about the same {word}{nums}"),
        ("{x} {more} final {word}", "{b} ends at a {x} {more} {word} than {a}{nums}"),
        ("lower", "higher"),
    ),
}


def _band(ratio: float | None) -> int:
    """+1 above ``SAME_FACTOR``, -1 below its inverse, 0 in between (or None)."""
    if ratio is None or math.isnan(ratio):
        return 0
    if ratio >= SAME_FACTOR:
        return 1
    if ratio <= 1 / SAME_FACTOR:
        return -1
    return 0


def _times(ratio: float) -> str:
    """``3x`` for a ratio >= 1 (callers pass the ratio oriented so that it is >= 1)."""
    return f"{fmt(ratio)}x"


# ----------------------------------------------------------------------- one comparison


@dataclass(frozen=True)
class Comparison:
    """Challenger ``b`` against baseline ``a`` (both with a best run), by the rule of the
    module docstring. ``thresholds``: those above ``floor``, easiest (largest) first."""

    a: ModelBest
    b: ModelBest
    thresholds: tuple[float, ...]
    floor: float
    names: Mapping[float, str] = field(default_factory=dict)
    word: str = "gap"  # what is compared: the gap L - L*, or the loss (no minimiser)

    # -- the numbers
    def hits(self, t: float) -> tuple[int | None, int | None]:
        """(b's, a's) first iteration below threshold ``t`` (None: never)."""
        return self.b.best.first_hit.get(t), self.a.best.first_hit.get(t)

    @property
    def common(self) -> tuple[float, int, int] | None:
        """(t, b's iterations, a's) at the smallest threshold both reached."""
        both = [t for t in self.thresholds if None not in self.hits(t)]
        if not both:
            return None
        t = min(both)
        ib, ia = self.hits(t)
        return t, ib, ia

    @property
    def speedup(self) -> float | None:
        """a's iterations / b's at :attr:`common` (> 1: b faster); None when there is no
        common threshold or either reached it at iteration 0 (no ratio of a start)."""
        c = self.common
        if c is None or c[1] <= 0 or c[2] <= 0:
            return None
        return c[2] / c[1]

    @property
    def only_b(self) -> float | None:
        """The largest (easiest) threshold only b reached."""
        ts = [t for t in self.thresholds if self.hits(t)[0] is not None and self.hits(t)[1] is None]
        return max(ts) if ts else None

    @property
    def only_a(self) -> float | None:
        """The largest (easiest) threshold only a reached."""
        ts = [t for t in self.thresholds if self.hits(t)[0] is None and self.hits(t)[1] is not None]
        return max(ts) if ts else None

    @property
    def a_at_floor(self) -> bool:
        return self.a.best.final_gap <= self.floor

    @property
    def b_at_floor(self) -> bool:
        return self.b.best.final_gap <= self.floor

    @property
    def final_ratio(self) -> float:
        """a's final gap / b's (> 1: b ends lower), both floored at the round-off floor."""
        return max(self.a.best.final_gap, self.floor) / max(self.b.best.final_gap, self.floor)

    # -- the three signs and the outcome
    @property
    def speed_sign(self) -> int:
        return _band(self.speedup)

    @property
    def reach_sign(self) -> int:
        """+1: b reached a threshold a never did (and not the reverse); -1: the mirror."""
        b, a = self.only_b is not None, self.only_a is not None
        return int(b) - int(a) if b != a else 0

    @property
    def final_sign(self) -> int:
        if self.a_at_floor and self.b_at_floor:
            return 0
        return _band(self.final_ratio)

    @property
    def signs(self) -> tuple[int, int, int]:
        return self.speed_sign, self.reach_sign, self.final_sign

    @property
    def outcome(self) -> str:
        """``better``, ``worse``, ``mixed`` or ``same`` (b against a)."""
        s = set(self.signs) - {0}
        if not s:
            return "same"
        if s == {1}:
            return "better"
        if s == {-1}:
            return "worse"
        return "mixed"

    @property
    def factor(self) -> float:
        """The size of the lead, from the measure the headline quotes (:meth:`key`):
        the speedup, the final-gap ratio, or inf for a threshold only one reached;
        oriented so that >= 1 (1 when there is no lead)."""
        kind = self._key_kind(1 if self.outcome == "better" else -1)
        if kind == "speed":
            r = self.speedup
        elif kind == "final":
            r = self.final_ratio
        elif kind == "reach":
            return math.inf
        else:
            return 1.0
        return r if r >= 1 else 1 / r

    # -- words
    def name(self, t: float) -> str:
        return self.names.get(t) or f"a {self.word} of {fmt(t)}"

    def _key_kind(self, sign: int) -> str | None:
        """Which measure shows the sign ``sign`` (speed first, then reach, then final)."""
        for kind, s in zip(("speed", "reach", "final"), self.signs, strict=True):
            if s == sign:
                return kind
        return None

    def clause(self, kind: str, *, numbers: bool = True, terse: bool = False) -> str:
        """One measure as a clause with b as its subject: its word (fewer/more,
        lower/higher, never) comes from the numbers it quotes (``numbers=False``: the
        numbers in parentheses are left out, the word stays; ``terse``: the predicate
        only, without the models' names and numbers)."""
        short, full = self._clause_forms(kind, numbers)
        return short if terse else full

    def _clause_forms(self, kind: str, numbers: bool) -> tuple[str, str]:
        """(terse, full) forms of :meth:`clause`: each case says both at once."""
        a, b = self.a.label, self.b.label
        if kind == "speed":
            t, ib, ia = self.common
            nums = f" ({ib} vs {ia})" if numbers else ""
            return self._ratio_forms("speed", self.speedup, name=self.name(t), nums=nums)
        if kind == "reach":
            if self.only_b is not None and (self.reach_sign > 0 or self.only_a is None):
                t = self.only_b
                nums = f" (in {self.hits(t)[0]} iterations)" if numbers else ""
                return (
                    f"reaches {self.name(t)}, {a} never",
                    f"{b} reaches {self.name(t)}{nums}, which {a} never does",
                )
            t = self.only_a
            nums = f" in {self.hits(t)[1]} iterations" if numbers else ""
            return (
                f"never reaches {self.name(t)}",
                f"{b} never reaches {self.name(t)}, which {a} does{nums}",
            )
        # final
        fb, fa = self.b.best.final_gap, self.a.best.final_gap
        if self.a_at_floor and self.b_at_floor:
            return "both end at the optimum", f"{b} and {a} both end at the optimum to round-off"
        if self.b_at_floor:
            nums = f" ({fmt(fa)})" if numbers else ""
            return (
                "ends at the optimum, the other above it",
                f"{b} ends at the optimum to round-off, {a} above it{nums}",
            )
        if self.a_at_floor:
            nums = f" ({fmt(fb)})" if numbers else ""
            return (
                "ends above the optimum, the other at it",
                f"{b} ends above the optimum{nums}, {a} at it to round-off",
            )
        nums = f" ({fmt(fb)} vs {fmt(fa)})" if numbers else ""
        return self._ratio_forms("final", self.final_ratio, nums=nums)

    def _ratio_forms(self, kind: str, r: float | None, **fields: str) -> tuple[str, str]:
        """(terse, full) wording of a ratio measure (``_RATIO_WORDS``): about the same
        within ``SAME_FACTOR``, else b's lead or lag by ``x`` = r or 1/r (>= 1)."""
        same, lead, (ahead, behind) = _RATIO_WORDS[kind]
        values = {"a": self.a.label, "b": self.b.label, "word": self.word, **fields}
        if _band(r) == 0:
            forms = same
        else:
            assert r is not None
            more, x = (ahead, r) if _band(r) > 0 else (behind, 1 / r)
            forms, values = lead, {**values, "more": more, "x": _times(x)}
        return forms[0].format(**values), forms[1].format(**values)

    def key(self, *, numbers: bool = True, terse: bool = False) -> str:
        """The clause the headline quotes: for a better/worse outcome the first measure
        with that sign (speed, then reach, then final); for ``same`` the speed (or the
        final gaps); for ``mixed`` one measure each way, joined by "but"."""
        out = self.outcome
        kw = {"numbers": numbers, "terse": terse}
        if out == "mixed":
            good = self.clause(self._key_kind(1), **kw)
            bad = self.clause(self._key_kind(-1), **kw)
            return f"{good}, but {bad}"
        if out in ("better", "worse"):
            return self.clause(self._key_kind(1 if out == "better" else -1), **kw)
        return self.clause("speed" if self.common is not None else "final", **kw)

    def details(self) -> str:
        """Every number behind the outcome, b's first: iterations to each threshold
        (with their own fewer/more), then the final gaps."""
        parts = []
        shown_never = False
        for t in self.thresholds:
            ib, ia = self.hits(t)
            if ib is None and ia is None:
                if not shown_never:
                    parts.append(f"{self._short(t)}: neither")
                    shown_never = True
                continue
            if ib is None or ia is None:
                parts.append(f"{self._short(t)}: {_it(ib)} vs {_it(ia)}")
                continue
            r = ia / ib if ib > 0 and ia > 0 else None
            word = ""
            if _band(r) > 0:
                word = f" ({_times(r)} fewer)"
            elif _band(r) < 0:
                word = f" ({_times(1 / r)} more)"
            parts.append(f"{self._short(t)}: {ib} vs {ia}{word}")
        text = ""
        if parts:
            text = f"iterations to reach {self._unit()} " + ", ".join(parts) + "; "
        fb, fa = self.b.best.final_gap, self.a.best.final_gap
        if self.a_at_floor and self.b_at_floor:
            final = "final gaps both at the optimum to round-off"
        elif self.b_at_floor:
            final = f"final {self.word} at the optimum to round-off vs {fmt(fa)}"
        elif self.a_at_floor:
            final = f"final {self.word} {fmt(fb)} vs the optimum to round-off"
        else:
            r = self.final_ratio
            word = {1: f"{_times(r)} lower", -1: f"{_times(1 / r)} higher", 0: "about the same"}
            final = f"final {self.word} {fmt(fb)} vs {fmt(fa)} ({word[_band(r)]})"
        return text + final

    def _unit(self) -> str:
        names = [self.name(t) for t in self.thresholds]
        if names and all(n.endswith(f" of the initial {self.word}") for n in names):
            return f"each fraction of the initial {self.word},"
        return f"each {self.word},"

    def _short(self, t: float) -> str:
        n = self.name(t)
        return n.removesuffix(f" of the initial {self.word}").removeprefix(f"a {self.word} of ")


def _it(i: int | None) -> str:
    return "never" if i is None else str(i)


def compare_models(
    a: ModelBest,
    b: ModelBest,
    thresholds: Sequence[float],
    floor: float,
    names: Mapping[float, str] | None = None,
    word: str = "gap",
) -> Comparison:
    """``b`` against ``a`` (both must have a best run): thresholds at or below the floor
    are dropped, the rest ordered easiest first."""
    ts = tuple(sorted((t for t in thresholds if t > floor), reverse=True))
    return Comparison(a=a, b=b, thresholds=ts, floor=floor, names=dict(names or {}), word=word)
