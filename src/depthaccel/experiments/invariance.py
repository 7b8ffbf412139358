"""Grid-searched GD at two feature scales: the check that keeps the setup axis honest.

For a depth-N linear net trained by GD on features ``k X``, rescaling every layer by
``k^(1/N)`` maps the run onto GD on ``X`` at rate ``eta k^(2/N)`` (the end-to-end matrix
absorbs k, each layer's gradient picks up ``k^(1/N)``). Grid-searched GD should then be
indifferent to k: going from scale ``k_a`` to ``k_b`` the chosen rates move by

    eta_b / eta_a = (k_a / k_b)^(2/N),

and the final gaps agree. Only approximately: the initialisation is not rescaled (a
near-zero start is the same absolute scale at every k, so its distance to the optimum
differs), and the chosen rate is only known to the grid's resolution. A final gap
therefore counts as agreeing when the two scales' gaps differ by no more than one grid
step changes it (the chosen rate's stable neighbours at scale b) or than the gaps
spread across seeds (same loss and depth, at either scale).

:func:`compare_searched` reads two ``settings.json`` of a grid-searched figure (fig3's:
``chosen_lr``, ``final_gaps`` keyed ``loss/depthN/seedS``, ``grid_search`` with the
spacing at the chosen rate; ``setup.feature_scale_k``, 1 when absent: runs made before
the axis existed used z-scores) and lists, per loss, depth and seed, the observed and the
predicted rate ratio, the final gaps and whether they agree. Command line::

    python -m depthaccel.experiments.invariance OLD/fig3/settings.json NEW/fig3/settings.json
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthaccel.experiments.lr_curves import grid_step_change

__all__ = ["RateRow", "compare_searched", "feature_scale_k", "markdown_table", "summary"]

_KEY = re.compile(r"^(?P<loss>[^/]+)/depth(?P<depth>\d+)/seed(?P<seed>\d+)$")


@dataclass(frozen=True)
class RateRow:
    """One (loss, depth, seed): chosen rates and final gaps at scales a and b."""

    loss: str
    depth: int
    seed: int
    lr_a: float
    lr_b: float
    predicted_ratio: float  # (k_a / k_b)^(2/N)
    spacing: float  # the grid's ratio between neighbouring rates at the chosen rate (b)
    gap_a: float
    gap_b: float
    gap_step: float = math.nan  # largest factor one grid step changes the gap by (b), >= 1
    seed_spread: float = math.nan  # max / min gap over seeds (same loss, depth), a or b

    @property
    def resolution(self) -> float:
        """The factor within which two final gaps count as the same: the larger of
        ``gap_step`` and ``seed_spread`` (NaN when neither is known)."""
        known = [v for v in (self.gap_step, self.seed_spread) if math.isfinite(v)]
        return max(known) if known else math.nan

    @property
    def gap_agrees(self) -> bool:
        """The final gaps differ by no more than :attr:`resolution`."""
        res = self.resolution
        return math.isfinite(res) and abs(math.log(self.gap_ratio)) <= math.log(res) * (1 + 1e-9)

    @property
    def ratio(self) -> float:
        """Observed ``lr_b / lr_a``."""
        return self.lr_b / self.lr_a

    @property
    def off_by(self) -> float:
        """Observed over predicted ratio (1 = exactly as predicted)."""
        return self.ratio / self.predicted_ratio

    @property
    def within_grid(self) -> bool:
        """The observed ratio is the predicted one to within one grid step."""
        return abs(math.log(self.off_by)) <= math.log(self.spacing) * (1 + 1e-9)

    @property
    def gap_ratio(self) -> float:
        """``gap_b / gap_a``."""
        return self.gap_b / self.gap_a


def feature_scale_k(settings: Mapping[str, Any]) -> float:
    """The global feature scale k a result was run at (1 when not recorded)."""
    return float((settings.get("setup") or {}).get("feature_scale_k", 1.0))


def _searched(settings: Mapping[str, Any]) -> Iterator[tuple[tuple[str, int, int], Any]]:
    """Every grid-search record of the settings, keyed (loss, depth, seed)."""
    for loss, record in (settings.get("grid_search") or {}).items():
        for entry in record.get("search", []):
            m = re.search(r"depth-(\d+)", entry.get("model", ""))
            if m:
                yield (loss, int(m.group(1)), int(entry["seed"])), entry


def _spacings(settings: Mapping[str, Any]) -> dict[tuple[str, int, int], float]:
    return {
        key: float(entry["spacing_at_best"])
        for key, entry in _searched(settings)
        if entry.get("spacing_at_best")
    }


def _gap_steps(settings: Mapping[str, Any]) -> dict[tuple[str, int, int], float]:
    """Per (loss, depth, seed): the largest factor by which the final gap changes from
    the chosen rate to a stable neighbouring rate on its searched grid."""
    out: dict[tuple[str, int, int], float] = {}
    for key, entry in _searched(settings):
        grid, gaps = entry.get("grid"), entry.get("final_gap")
        if grid and gaps is not None:
            one = grid_step_change(grid, gaps, entry.get("chosen_lr"))
            if one is not None:
                out[key] = one[0]
    return out


def _seed_spreads(*settings: Mapping[str, Any]) -> dict[tuple[str, int], float]:
    """Per (loss, depth): the largest max/min ratio of final gaps over seeds, over the
    given settings."""
    out: dict[tuple[str, int], float] = {}
    for s in settings:
        groups: dict[tuple[str, int], list[float]] = {}
        for key, gap in s.get("final_gaps", {}).items():
            m = _KEY.match(key)
            if m and gap is not None and math.isfinite(gap) and gap > 0:
                groups.setdefault((m.group("loss"), int(m.group("depth"))), []).append(gap)
        for key, gaps in groups.items():
            out[key] = max(out.get(key, 1.0), max(gaps) / min(gaps))
    return out


def compare_searched(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[RateRow]:
    """The rows for every (loss, depth, seed) that both settings chose a rate for."""
    ka, kb = feature_scale_k(a), feature_scale_k(b)
    spacing, steps, spreads = _spacings(b), _gap_steps(b), _seed_spreads(a, b)
    rows = []
    for key, lr_b in b["chosen_lr"].items():
        m = _KEY.match(key)
        if not m or key not in a["chosen_lr"] or lr_b is None or a["chosen_lr"][key] is None:
            continue
        loss, depth, seed = m.group("loss"), int(m.group("depth")), int(m.group("seed"))
        rows.append(
            RateRow(
                loss,
                depth,
                seed,
                float(a["chosen_lr"][key]),
                float(lr_b),
                (ka / kb) ** (2.0 / depth),
                spacing.get((loss, depth, seed), math.nan),
                float(a["final_gaps"][key]),
                float(b["final_gaps"][key]),
                steps.get((loss, depth, seed), math.nan),
                spreads.get((loss, depth), math.nan),
            )
        )
    return sorted(rows, key=lambda r: (r.loss, r.depth, r.seed))


def markdown_table(rows: list[RateRow], ka: float, kb: float) -> str:
    """The rows as a Markdown table (scale a = ``ka``, scale b = ``kb``)."""
    head = (
        f"| loss | N | seed | lr at k={ka:.3g} | lr at k={kb:.3g} | ratio | predicted "
        "(k_a/k_b)^(2/N) | observed / predicted | within one grid step | final gap a | "
        "final gap b | gap b / a | one step / seed spread moves the gap by | gaps agree |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r.loss} | {r.depth} | {r.seed} | {r.lr_a:.4g} | {r.lr_b:.4g} | "
            f"{r.ratio:.3g} | {r.predicted_ratio:.3g} | {r.off_by:.3g} | "
            f"{'yes' if r.within_grid else 'no'} | {r.gap_a:.4g} | {r.gap_b:.4g} | "
            f"{r.gap_ratio:.3g} | x{r.gap_step:.3g} / x{r.seed_spread:.3g} | "
            f"{'yes' if r.gap_agrees else 'no'} |"
        )
    return "\n".join(lines)


def summary(rows: list[RateRow]) -> str:
    """One paragraph: how many rates moved as predicted and how many gaps agree, naming
    the rows that do not."""

    def name(r: RateRow) -> str:
        return f"{r.loss} depth {r.depth} seed {r.seed}"

    rate_off = [name(r) for r in rows if not r.within_grid]
    gap_off = [name(r) for r in rows if not r.gap_agrees]
    n = len(rows)
    text = (
        f"{n - len(rate_off)} of {n} chosen rates moved by the predicted (k_a/k_b)^(2/N) to "
        f"within one grid step"
        + (f" (not: {', '.join(rate_off)})" if rate_off else "")
        + f"; {n - len(gap_off)} of {n} final gaps agree within one grid step's change or "
        "the spread across seeds" + (f" (not: {', '.join(gap_off)})" if gap_off else "") + "."
    )
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    a, b = (json.loads(Path(p).read_text()) for p in args)
    rows = compare_searched(a, b)
    print(markdown_table(rows, feature_scale_k(a), feature_scale_k(b)))
    print()
    print(summary(rows))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
