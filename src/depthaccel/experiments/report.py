"""``OUT/REPORT.md`` as a scorecard, rebuilt from every ``OUT/<name>/result.json`` in
registry order (re-running an experiment replaces its section, running a new one adds a
section).

Layout: a note on the unstated setup (the feature and loss scales the Ethanol
experiments ran at, and the rule behind the default), one table at the top (experiment | claims PASS/assessed | the key claim beside
our number | mode | time), the experiments not in the report (why, and the command that
gets them), then per experiment: what was run (2-3 lines), the figure, the claims table
(claim | paper | measured | verdict) and a collapsed block with the details behind each
verdict, the notes and where it ran. Settings stay in ``OUT/<name>/settings.json``
(linked, never inlined). Every table cell is short: :data:`MAX_CELL_WORDS` words.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from depthaccel.experiments import registry
from depthaccel.experiments.results import RESULT_NAME, SETTINGS_NAME, Claim, ExperimentResult
from depthaccel.experiments.setup_sensitivity import NAME as SETUP_NAME
from depthaccel.outdir import OutputFolder
from depthaccel.reporting import format_seconds

__all__ = [
    "MAX_CELL_WORDS",
    "REPORT_NAME",
    "check_report",
    "claims_cell",
    "load_results",
    "report_section",
    "scorecard",
    "setup_text",
    "setups_ran",
    "write_report",
]

REPORT_NAME = "REPORT.md"
#: The most words a table cell of the report may hold (a test enforces it).
MAX_CELL_WORDS = 40

TITLE = "# Reproduction report: Arora, Cohen & Hazan (ICML 2018)"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _ran_on_text(settings: Mapping[str, Any]) -> str:
    """``executor ..., N job(s), T torch thread(s), dtype, C CPUs (machine)``."""
    ran = settings.get("ran_on")
    if not ran:
        return ""
    ex = settings.get("executor") or {}
    parts = []
    if ex.get("executor") == "ray":
        parts.append(f"Ray ({ex.get('cluster', '?')}, {ex.get('cluster_cpus', '?')} CPUs)")
    else:
        parts.append("in this process")
    if ran.get("jobs"):
        parts.append(f"{ran['jobs']} job(s)")
    parts.append(f"{ran.get('torch_threads', '?')} torch thread(s)")
    parts.append(f"dtype {ran.get('dtype', '?')}")
    parts.append(f"{ran.get('cpus', '?')} CPUs ({ran.get('machine', '?')})")
    return ", ".join(parts)


def _store_text(settings: Mapping[str, Any]) -> str:
    store = settings.get("results_store") or {}
    parts = []
    if store.get("runs_reused") or store.get("runs_trained"):
        parts.append(
            f"{store.get('runs_reused', 0)} runs read from the results store, "
            f"{store.get('runs_trained', 0)} trained now (training time of all the runs "
            f"used: {format_seconds(store.get('training_seconds', 0.0))})"
        )
    if store.get("tasks_reused") or store.get("tasks_run"):
        parts.append(
            f"{store.get('tasks_reused', 0)} task results (e.g. trained nets) read from the "
            f"store, {store.get('tasks_run', 0)} computed now"
        )
    return "; ".join(parts)


def setup_text(setup: Mapping[str, Any]) -> str:
    """The setup axes of an Ethanol experiment (``settings["setup"]``) in words, e.g.
    ``feature scale zscore-unit-row (k = 0.0884: unit mean squared row norm), paper loss
    scale (1/p)|r|^p (the default)``."""
    from depthaccel.data.scaling import FEATURE_SCALE_MEANING

    fs = setup.get("feature_scale")
    k = setup.get("feature_scale_k")
    name = fs if isinstance(fs, str) else f"k = {fs:g}" if isinstance(fs, (int, float)) else "?"
    k_text = f"k = {k:.3g}" if isinstance(k, (int, float)) else "k unknown"
    meaning = FEATURE_SCALE_MEANING.get(fs) if isinstance(fs, str) else None
    ls = setup.get("loss_scale", "?")
    loss = {"paper": "(1/p)|r|^p", "plain": "|r|^p"}.get(ls, "")
    text = (
        f"feature scale {name} ({k_text}{': ' + meaning if meaning else ''}), "
        f"{ls} loss scale{' ' + loss if loss else ''}"
    )
    default = (setup.get("default") or {}).get("setup")
    if default:
        same = (default.get("feature_scale"), default.get("loss_scale")) == (fs, ls)
        text += " (the default)" if same else " (NOT the default)"
    return text


def setups_ran(results: list[ExperimentResult]) -> tuple[str, str]:
    """``(ran, rule)``: the setups the finished Ethanol experiments ran at, each with its
    experiments (``fig2, fig3: feature scale ...``; empty when there is none), and the
    rule that chose the default."""
    by_setup: dict[str, list[str]] = {}
    rule = ""
    for r in results:
        setup = r.settings.get("setup")
        if r.status == "ok" and isinstance(setup, Mapping) and r.name != SETUP_NAME:
            by_setup.setdefault(setup_text(setup), []).append(r.name)
            rule = rule or str((setup.get("default") or {}).get("rule", ""))
    ran = "; ".join(f"{', '.join(names)}: {text}" for text, names in by_setup.items())
    return ran, rule


def _setup_opening(results: list[ExperimentResult]) -> list[str]:
    """The report's opening note on the setup the paper leaves unstated: the axes the
    Ethanol experiments ran at (each distinct setup, with its experiments) and the rule
    that chose the default."""
    ran, rule = setups_ran(results)
    if not ran:
        return []
    lines = [
        "> **Setup the paper leaves unstated.** The Ethanol experiments standardise "
        "features and target per column, then scale the features by a global k and use "
        f"the loss (1/m) sum l_p. Here: {ran}. "
        + (f"How the default was chosen: {rule} " if rule else "")
        + (
            f"The [{SETUP_NAME}](#{SETUP_NAME}) section shows the fixed-rate claims at other k "
            "and without the 1/p."
            if any(r.name == SETUP_NAME for r in results)
            else f"`depthaccel reproduce {SETUP_NAME}` measures the fixed-rate claims at "
            "other k and without the 1/p."
        ),
        "",
    ]
    return lines


def _fmt_value(v: Any) -> str:
    """A detail value on one line: numbers to 4 significant digits, lists joined."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items())
    return str(v)


def _details_lines(claim: Claim) -> list[str]:
    lines = [f"- **{claim.statement}** ({claim.verdict})"]
    if claim.why:
        lines.append(f"  - why it fails: {claim.why}")
    for key, value in claim.details.items():
        lines.append(f"  - {key}: {_fmt_value(value)}")
    return lines


def report_section(result: ExperimentResult, root: Path) -> str:
    """The markdown section of one experiment (paths relative to ``root``)."""
    data = result.to_json(root)
    lines = [f"## {result.name}", "", f"**{result.title}**", ""]
    if result.status != "ok":
        lines += [
            f"*Mode: {result.mode}; took {format_seconds(result.wall_time)}.*",
            "",
            "**ERROR**: the experiment did not finish:",
            "",
            "```",
            result.error,
            "```",
            "",
        ]
        return "\n".join(lines)
    settings_link = f"{result.name}/{SETTINGS_NAME}"
    what = result.summary or str(result.settings.get("what_was_run", ""))
    setup = result.settings.get("setup")
    at_one = isinstance(setup, Mapping) and result.name != SETUP_NAME  # setup spans many
    setup_part = f"; {setup_text(setup)}" if at_one else ""
    lines += [
        (what + " " if what else "")
        + f"*Mode: {result.mode}{setup_part}; took {format_seconds(result.wall_time)}; "
        f"settings: [{SETTINGS_NAME}]({settings_link}).*",
        "",
    ]
    for fig in data["figures"]:
        lines += [f"![{result.name}]({fig})", ""]
    if result.claims:
        lines += ["| claim | paper | measured | verdict |", "|---|---|---|---|"]
        for c in result.claims:
            lines.append(
                f"| {_md_cell(c.statement)} | {_md_cell(c.paper)} | {_md_cell(c.measured)} "
                f"| **{c.verdict}** |"
            )
        lines.append("")
    body: list[str] = []
    for c in result.claims:
        if c.why or c.details:
            body += _details_lines(c)
    if result.notes:
        body += ["", "Notes:", ""] + [f"- {n}" for n in result.notes]
    where = [t for t in (_ran_on_text(result.settings), _store_text(result.settings)) if t]
    if result.started or result.device:
        where.insert(0, f"started {result.started or '?'} on device {result.device or '?'}")
    if where:
        body += ["", "Ran: " + "; ".join(where) + "."]
    if data["curves"]:
        body += ["", "Curves: " + ", ".join(f"[{c}]({c})" for c in data["curves"]) + "."]
    if body:
        lines += ["<details><summary>Details and notes</summary>", "", *body, "", "</details>", ""]
    return "\n".join(lines)


def load_results(out_root: str | os.PathLike) -> list[ExperimentResult]:
    """All ``OUT/<name>/result.json`` of registered experiments, in registry order."""
    root = Path(out_root)
    found = []
    for name in registry.EXPERIMENTS:
        path = root / name / RESULT_NAME
        if path.is_file():
            found.append(ExperimentResult.from_json(json.loads(path.read_text()), root))
    return found


def claims_cell(r: ExperimentResult) -> str:
    """ "passed/assessed", or words when nothing was assessed (never "0/0")."""
    if r.status != "ok":
        return "**ERROR**"
    if not r.claims:
        return "no claims"
    if r.n_assessed == 0:
        return f"none assessed ({len(r.claims)} claims)"
    cell = f"{r.n_passed}/{r.n_assessed}"
    if r.n_failed:
        cell += f" ({r.n_failed} FAIL)"
    return cell


def key_claim(r: ExperimentResult) -> Claim | None:
    """The claim the scorecard shows: the first FAIL, else the first assessed claim,
    else the first claim (None without claims)."""
    for pick in (
        lambda c: c.verdict == "FAIL",
        lambda c: c.verdict != "NOT ASSESSED",
        lambda c: True,
    ):
        found = [c for c in r.claims if pick(c)]
        if found:
            return found[0]
    return None


def _key_cell(r: ExperimentResult) -> str:
    """The experiment's key claim (:func:`key_claim`) beside our number."""
    if r.status != "ok":
        return _md_cell(r.error.splitlines()[-1] if r.error else "did not finish")
    c = key_claim(r)
    if c is None:
        return ""
    return f"{_md_cell(c.statement)}: {_md_cell(c.measured)} ({c.verdict})"


def scorecard(results: list[ExperimentResult]) -> list[str]:
    """The table at the top of the report."""
    lines = [
        "| experiment | claims PASS / assessed | key claim: measured | mode | time |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        took = format_seconds(r.wall_time)
        store = r.settings.get("results_store") or {}
        if store.get("runs_reused") and not store.get("runs_trained"):
            took += " (stored runs)"
        lines.append(
            f"| [{r.name}](#{r.name}) | {claims_cell(r)} | {_key_cell(r)} | {r.mode} | {took} |"
        )
    return lines


def _totals(results: list[ExperimentResult]) -> str:
    passed = sum(r.n_passed for r in results)
    assessed = sum(r.n_assessed for r in results)
    claims = sum(len(r.claims) for r in results)
    if not results:
        return "No experiment has run into this folder yet."
    if assessed == 0:
        return f"{len(results)} experiment(s) ran; none of their {claims} claims was assessed."
    text = f"**{passed} of {assessed} assessed claims pass**"
    if claims > assessed:
        text += f" ({claims - assessed} of {claims} claims not assessed)"
    return text + f", over {len(results)} experiment(s)."


def _not_run(
    results: list[ExperimentResult], skipped: Mapping[str, tuple[str, str]], quick: bool
) -> list[str]:
    have = {r.name for r in results}
    missing = [n for n in registry.EXPERIMENTS if n not in have]
    if not missing:
        return []
    flag = " --quick" if quick else ""
    lines = [
        "## Not in this report",
        "",
        "| experiment | why | to get it |",
        "|---|---|---|",
    ]
    for n in missing:
        why, command = skipped.get(n, ("not run into this folder", ""))
        command = command or f"depthaccel reproduce {n}{flag}"
        lines.append(f"| {n} | {_md_cell(why)} | `{command}` |")
    return lines + [""]


def write_report(
    out_root: str | os.PathLike, skipped: Mapping[str, tuple[str, str]] | None = None
) -> Path:
    """(Re)build ``OUT/REPORT.md`` from every ``OUT/<name>/result.json``.

    ``skipped`` maps experiments this call skipped to (why, the command that gets their
    data and runs them); every registered experiment without a result is listed."""
    root = Path(out_root)
    results = load_results(root)
    quick = any(r.mode == "quick" for r in results)
    lines = [TITLE, ""]
    if quick:
        lines += [
            "> **Quick mode**: CI-sized runs (short, small grids), not the paper's setup. "
            "Claims that need the paper's setup are NOT ASSESSED; figures say so in their "
            "titles.",
            "",
        ]
    lines += _setup_opening(results)
    lines += [
        f"{_totals(results)} Each experiment's section below says what was run, shows the "
        "figure and its claims (the paper's words beside our number); the numbers behind "
        "each verdict are in its *Details* block, every setting in its settings.json.",
        "",
        *(scorecard(results) if results else []),
        "",
    ]
    lines += _not_run(results, skipped or {}, quick)
    for r in results:
        lines.append(report_section(r, root))
    root.mkdir(parents=True, exist_ok=True)
    return OutputFolder(root).write(REPORT_NAME, "\n".join(lines))


def check_report(text: str, max_words: int = MAX_CELL_WORDS) -> list[str]:
    """What breaks the report's limits: table cells over ``max_words`` words and inline
    JSON (a fenced json block or a line that opens a JSON object). Empty when none."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```json") or stripped in ("{", "[") or stripped.startswith('{"'):
            problems.append(f"line {n}: inline JSON")
        if stripped.startswith("|") and not set(stripped) <= set("|-: "):
            cells = [c for c in stripped.replace("\\|", "/").strip("|").split("|")]
            for cell in cells:
                words = len(cell.split())
                if words > max_words:
                    problems.append(f"line {n}: a cell of {words} words: {cell.strip()[:60]}...")
    return problems
