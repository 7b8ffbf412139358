"""Two reproduction folders side by side: each experiment's claims passed before and
after, and every claim whose verdict changed (a re-run at another setup, another
version, another machine).

    python -m depthaccel.experiments.report_diff OLD_OUT NEW_OUT

prints a markdown table. Claims are matched by their statement (up to the first ``;``,
case and spacing ignored); when an experiment's statements changed wording but it has
as many claims as before, by position.
"""

from __future__ import annotations

import os
import sys

from depthaccel.experiments import registry
from depthaccel.experiments.report import load_results
from depthaccel.experiments.results import Claim, ExperimentResult

__all__ = ["claim_changes", "diff_table"]


def _key(statement: str) -> str:
    return " ".join(statement.split(";")[0].lower().split())


def claim_changes(old: list[Claim], new: list[Claim]) -> list[tuple[str, str, str]]:
    """``(statement, old verdict, new verdict)`` of each claim of ``new`` whose verdict
    differs from its match in ``old`` (``"-"``: no match, a new claim), and of each
    claim of ``old`` with no match in ``new`` (new verdict ``"-"``)."""
    by_key = {_key(c.statement): c for c in old}
    positional = len(old) == len(new)
    matched, out = set(), []
    for i, c in enumerate(new):
        prev = by_key.get(_key(c.statement))
        if prev is None and positional:
            prev = old[i]
        if prev is None:
            out.append((c.statement, "-", c.verdict))
            continue
        matched.add(id(prev))
        if prev.verdict != c.verdict:
            out.append((c.statement, prev.verdict, c.verdict))
    out += [(c.statement, c.verdict, "-") for c in old if id(c) not in matched]
    return out


def _score(r: ExperimentResult | None) -> str:
    if r is None:
        return "not run"
    if r.status != "ok":
        return "ERROR"
    return f"{r.n_passed}/{r.n_assessed}"


def diff_table(old_root: str | os.PathLike, new_root: str | os.PathLike) -> str:
    """The markdown table: experiment | before (PASS/assessed) | after | changed claims,
    in registry order, then the totals over the experiments present in both."""
    old = {r.name: r for r in load_results(old_root)}
    new = {r.name: r for r in load_results(new_root)}
    names = [n for n in registry.EXPERIMENTS if n in old or n in new]
    lines = [
        "| experiment | before | after | claims whose verdict changed |",
        "|---|---|---|---|",
    ]
    both = [0, 0, 0, 0]
    for n in names:
        a, b = old.get(n), new.get(n)
        changed = ""
        if a is not None and b is not None and a.status == b.status == "ok":
            changed = "; ".join(
                f"{s}: {v0} -> {v1}" for s, v0, v1 in claim_changes(a.claims, b.claims)
            )
            both = [both[0] + a.n_passed, both[1] + a.n_assessed,
                    both[2] + b.n_passed, both[3] + b.n_assessed]  # fmt: skip
        lines.append(f"| {n} | {_score(a)} | {_score(b)} | {changed} |")
    lines.append(f"| in both | {both[0]}/{both[1]} | {both[2]}/{both[3]} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: python -m depthaccel.experiments.report_diff OLD_OUT NEW_OUT", file=sys.stderr
        )
        return 2
    for a in args:
        if not os.path.isdir(a):
            print(f"report_diff: error: {a} is not a folder", file=sys.stderr)
            return 2
    print(diff_table(*args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
