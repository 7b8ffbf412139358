"""Results of an experiment: checked claims, the result record and its JSON form."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthaccel.atomic import write_atomic
from depthaccel.experiments.seeds import seed_title
from depthaccel.reporting import Curve, gap_ylabel, plot_gap_panels, write_curves_csv

__all__ = [
    "RESULT_NAME",
    "VERDICTS",
    "SETTINGS_NAME",
    "Claim",
    "ExperimentResult",
    "SearchedGaps",
    "searched_figure",
    "searched_settings",
    "to_jsonable",
    "write_json",
]

RESULT_NAME = "result.json"
SETTINGS_NAME = "settings.json"


#: The three verdicts a claim can get.
VERDICTS = ("PASS", "FAIL", "NOT ASSESSED")
LEGACY_WHY = "see the measured values in full"  # the why of an older-form FAIL without a note


@dataclass
class Claim:
    """One claim of the paper, judged against measured numbers (no training here).

    Attributes:
        statement: the paper's claim in a few words (at most ~20).
        paper: what the paper says or shows, in words from its text.
        measured: the one key number or comparison we measured (at most ~15 words).
        verdict: ``"PASS"``, ``"FAIL"`` or ``"NOT ASSESSED"`` (the run is too short to
            test it, e.g. quick mode; the measurement is still shown).
        why: one sentence saying why it failed (FAIL only; empty otherwise).
        details: structured numbers behind the verdict (per seed, per rate, divergence
            iterations, notes): JSON-able, rendered in a collapsed block of the report.
    """

    statement: str
    paper: str
    measured: str
    verdict: str
    why: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == "FAIL" and not self.why.strip():
            raise ValueError(f"a FAIL claim needs a why: {self.statement!r}")
        if self.verdict != "FAIL":
            self.why = ""

    @classmethod
    def judged(
        cls,
        statement: str,
        paper: str,
        measured: str,
        ok: bool | None,
        *,
        why: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> Claim:
        """The claim with verdict PASS (``ok``), FAIL (``not ok``; ``why`` required) or
        NOT ASSESSED (``ok is None``)."""
        verdict = "NOT ASSESSED" if ok is None else ("PASS" if ok else "FAIL")
        return cls(statement, paper, measured, verdict, why, dict(details or {}))

    @classmethod
    def legacy(cls, text: str, measured: str, passed: bool | None, note: str = "") -> Claim:
        """A claim in the older form (claim text, measured text, passed, note) of an
        experiment not yet split into measure/judge/render: the statement and measured
        cells are shortened mechanically (parentheses dropped, the first clause kept, at
        most 20 and 15 words) and the full texts kept in ``details``; the note goes to
        ``details`` (and is the ``why`` of a FAIL)."""
        details = {"note": note} if note else {}
        why = (note or LEGACY_WHY) if passed is False else ""
        claim = cls.judged(text, "", measured, passed, why=why, details=details)
        short_text, short_measured = _shorten(text, 20), _shorten(measured, 15)
        if short_text != text:
            claim.details["claim in full"] = text
        if short_measured != measured:
            claim.details["measured in full"] = measured
        claim.statement, claim.measured = short_text, short_measured
        return claim

    @property
    def text(self) -> str:
        """The claim in full (the older name): ``details["claim in full"]`` when the
        statement was shortened, else the statement."""
        return str(self.details.get("claim in full", self.statement))

    @property
    def measured_full(self) -> str:
        """``details["measured in full"]`` when ``measured`` was shortened, else it."""
        return str(self.details.get("measured in full", self.measured))

    @property
    def note(self) -> str:
        """``details["note"]`` (the older form's note), or ""."""
        return str(self.details.get("note", ""))

    @property
    def passed(self) -> bool | None:
        """True (PASS), False (FAIL) or None (NOT ASSESSED)."""
        return {"PASS": True, "FAIL": False, "NOT ASSESSED": None}[self.verdict]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        """The claim from :meth:`to_json`; also reads the older form (text, measured,
        passed, note), keeping its note in ``details``."""
        if "statement" in data:
            return cls(
                data["statement"],
                data.get("paper", ""),
                data.get("measured", ""),
                data.get("verdict", "NOT ASSESSED"),
                data.get("why", ""),
                dict(data.get("details") or {}),
            )
        return cls.legacy(
            data.get("text", ""), data.get("measured", ""), data.get("passed"), data.get("note", "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "statement": self.statement,
            "paper": self.paper,
            "measured": self.measured,
            "verdict": self.verdict,
            "why": self.why,
            "details": to_jsonable(self.details),
        }


@dataclass
class ExperimentResult:
    """What one experiment produced.

    ``name``, ``title`` and ``mode`` may be left empty: :func:`run_experiment` fills them
    from the registry and the run. ``settings`` is JSON-able and holds every choice made
    (grids, chosen learning rates, iterations, data preprocessing). ``figures``/``curves`` are paths of the PNG and CSV
    files written. ``notes`` list choices where the paper is silent and differences from
    the paper. ``wall_time`` is seconds; :func:`run_experiment` fills it when 0.
    """

    name: str = ""
    title: str = ""
    mode: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    curves: list[Path] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    wall_time: float = 0.0
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" or "error"
    error: str = ""
    started: str = ""
    device: str = ""
    summary: str = ""  # what was run, in 2-3 lines

    @property
    def n_passed(self) -> int:
        return sum(c.passed is True for c in self.claims)

    @property
    def n_failed(self) -> int:
        return sum(c.passed is False for c in self.claims)

    @property
    def n_assessed(self) -> int:
        return sum(c.passed is not None for c in self.claims)

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """JSON form; paths are made relative to ``root`` when given."""

        def rel(p: Path) -> str:
            p = Path(p)
            if root is not None:
                try:
                    return str(p.resolve().relative_to(Path(root).resolve()))
                except ValueError:
                    pass
            return str(p)

        return {
            "name": self.name,
            "title": self.title,
            "mode": self.mode,
            "status": self.status,
            "error": self.error,
            "started": self.started,
            "device": self.device,
            "summary": self.summary,
            "wall_time": self.wall_time,
            "settings": to_jsonable(self.settings),
            "figures": [rel(p) for p in self.figures],
            "curves": [rel(p) for p in self.curves],
            "claims": [c.to_json() for c in self.claims],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], root: Path | None = None) -> ExperimentResult:
        def ab(p: str) -> Path:
            return Path(root) / p if root is not None and not os.path.isabs(p) else Path(p)

        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            mode=data.get("mode", "?"),
            settings=dict(data.get("settings", {})),
            figures=[ab(p) for p in data.get("figures", [])],
            curves=[ab(p) for p in data.get("curves", [])],
            claims=[Claim.from_json(c) for c in data.get("claims", [])],
            wall_time=float(data.get("wall_time", 0.0)),
            notes=list(data.get("notes", [])),
            status=data.get("status", "ok"),
            error=data.get("error", ""),
            started=data.get("started", ""),
            device=data.get("device", ""),
            summary=data.get("summary") or str(data.get("settings", {}).get("what_was_run", "")),
        )


@dataclass
class SearchedGaps:
    """The common part of what a figure whose rates come from the search
    (:mod:`depthaccel.experiments.search`) measured at one loss ``p``, keyed per model and
    seed: the chosen run's final gap (``finals``: NaN when every rate diverged), its
    initial gap (``inits``), its rate (``chosen``) and its gap curve (``curves``: (key,
    curve) pairs). Figures subclass it with their own fields (a ``search`` record among
    them)."""

    quick: bool
    p: float
    iters: int
    seeds: tuple[int, ...]
    data_source: str
    loss_scale: str
    finals: dict[Any, float]
    inits: dict[Any, float]
    chosen: dict[Any, float]
    curves: list[tuple[Any, Curve]]


def searched_settings(
    m: Any,
    keyed: Callable[[dict], dict],
    *,
    chosen: dict[Any, float] | None = None,
    p_of: Callable[[Any], float] | None = None,
) -> dict[str, Any]:
    """The settings such a figure records (a :class:`SearchedGaps` with a ``search``
    record), its per-model dicts keyed by ``keyed``; the final gaps also in the plain
    scale (``p`` times the paper's). A figure of several losses gives each model's rate
    (``chosen``, default ``m.chosen``) and its loss (``p_of(key)``, default ``m.p``)."""
    chosen = m.chosen if chosen is None else chosen
    plain = {k: (m.p if p_of is None else p_of(k)) * v for k, v in m.finals.items()}
    return {
        "data_source": m.data_source,
        "loss_scale_of_figure": m.loss_scale,
        "grid_search": m.search,
        "final_gaps": keyed(m.finals),
        "final_gaps_plain": keyed(plain),
        "initial_gaps": keyed(m.inits),
        "chosen_lr": keyed(chosen),
    }


def searched_figure(
    m: SearchedGaps,
    outdir: Path,
    figure: str,
    title: str,
    style: Callable[[Any], dict[str, Any]],
) -> list[Path]:
    """Such a figure's gap curves: the first seed's in one l_p panel (``outdir/figure``,
    titled ``title`` and the seed, each curve drawn with ``style(key)``) and every seed's
    in ``outdir/curves.csv``; returns both paths."""
    plotted = [
        Curve(c.label, c.iters, np.asarray(c.values, dtype=np.float64), c.panel, style(key))
        for key, c in m.curves
        if key[-1] == m.seeds[0]  # a key's last element is its seed
    ]
    fig = plot_gap_panels(
        outdir / figure,
        [(f"l{m.p:g} loss", plotted)],
        suptitle=seed_title(title, m.seeds),
        ylabel=gap_ylabel(m.loss_scale),
        panel_size=(7.0, 4.6),
        quick=m.quick,
    )
    return [fig, write_curves_csv(outdir / "curves.csv", [c for _, c in m.curves])]


def _drop_remarks(text: str) -> str:
    """``text`` without its parenthetical remarks: a parenthesis opened after a space, up
    to its matching close (nested ones included); math such as ``K(s_r, s_r')`` or
    ``y1^(p-2)``, whose parenthesis follows a character, stays."""
    out, depth = [], 0
    for i, ch in enumerate(text):
        if depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif ch == "(" and i > 0 and text[i - 1] == " ":
            depth = 1
            if out and out[-1] == " ":
                out.pop()
        else:
            out.append(ch)
    return "".join(out)


def _shorten(text: str, words: int) -> str:
    """``text`` without parenthetical remarks, cut at its first ';' and to ``words``
    words (an ellipsis marks a cut)."""
    short = _drop_remarks(text).split(";")[0].strip()
    parts = short.split()
    if len(parts) > words:
        short = " ".join(parts[:words]) + " ..."
    return short or text


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, numpy scalars/arrays, paths, tuples and non-finite floats
    into plain JSON values (non-finite floats become the strings "inf", "-inf", "nan")."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def write_json(path: Path, obj: Any) -> None:
    """Write ``to_jsonable(obj)`` as indented JSON (atomically: a reader never sees half)."""
    write_atomic(Path(path), json.dumps(to_jsonable(obj), indent=2) + "\n")
