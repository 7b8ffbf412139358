"""The README's "What the reproduction found" section, generated from a results folder
(``docs/reproduction``), so that it cannot go stale: a test compares the README with
:func:`findings_section` of the committed results.

Update the README after regenerating the results::

    python -m depthaccel.experiments.findings docs/reproduction README.md
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from depthaccel.experiments.report import key_claim, load_results, setups_ran
from depthaccel.experiments.results import LEGACY_WHY

__all__ = ["BEGIN", "END", "findings_section", "update_readme"]

BEGIN = "<!-- findings: generated from docs/reproduction; do not edit by hand -->"
END = "<!-- end of findings -->"


def findings_section(out_root: str | os.PathLike, link: str = "docs/reproduction/REPORT.md") -> str:
    """The section's body: the totals, one line per experiment (claims passed and its
    key claim), then every FAIL with its measured number."""
    results = load_results(out_root)
    passed = sum(r.n_passed for r in results)
    assessed = sum(r.n_assessed for r in results)
    modes = sorted({r.mode for r in results})
    lines = [
        f"**{passed} of {assessed} assessed claims pass** over {len(results)} experiments "
        f"({', '.join(modes)} mode; the full report: [{link}]({link})).",
        "",
    ]
    ran, _ = setups_ran(results)
    if ran:
        lines += [
            f"Setup the paper does not state (the report says how the default was chosen): {ran}.",
            "",
        ]
    for r in results:
        if r.status != "ok":
            lines.append(
                f"- `{r.name}`: did not finish ({r.error.splitlines()[-1] if r.error else 'error'})"
            )
            continue
        key = key_claim(r)
        what = f"{key.statement}: {key.measured}" if key else "no claims"
        lines.append(f"- `{r.name}` {r.n_passed}/{r.n_assessed} pass. {what}")
    fails = [(r.name, c) for r in results for c in r.claims if c.verdict == "FAIL"]
    if fails:
        lines += ["", "Where the paper's claims did not hold here:", ""]
        for name, c in fails:
            why = c.why.rstrip(".") if c.why and c.why != LEGACY_WHY else ""
            why = f" {why[:1].upper()}{why[1:]}." if why else ""
            said = c.statement if c.statement.endswith("...") else c.statement.rstrip(".") + "."
            lines.append(f"- `{name}`: {said} Measured: {c.measured}.{why}")
    return "\n".join(lines)


def update_readme(out_root: str | os.PathLike, readme: str | os.PathLike) -> bool:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``readme`` by
    :func:`findings_section`; True when it changed."""
    path = Path(readme)
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{findings_section(out_root)}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    changed = update_readme(sys.argv[1], sys.argv[2])
    print(f"{sys.argv[2]}: {'updated' if changed else 'already current'}")
