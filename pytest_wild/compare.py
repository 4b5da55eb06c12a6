"""One line per run, to compare editing methods side by side: `pytest-wild table` prints it
in Markdown from JSON reports (`--wild-report`) or from a configuration's golden directory
(`golden/<model>/<editor>/<suite>`). The README's table of the bundled suite is this
command's output over the committed goldens, and a test holds the two equal. With
`--sequence`, the curves of sequential runs' reports instead: one line per run, checkpoint
and convention (the README's 1,000-edit table).

A golden keeps each case's scores rounded to 2 decimals; a score that is a share of the
case's locality questions (`locality_all`, `locality_em`) is read back exactly from that
share (k of m questions, m < 50), so the means equal the run's own to the last digit."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .cases import WildInputError
from .markdown import code, text
from .metrics import EDIT_METRICS, TABLE_METRICS

COLUMNS = (*TABLE_METRICS, "locality_all")
SHARES = ("locality_all", "locality_em")  # per case: k of the case's m locality questions


@dataclass(frozen=True)
class RunLine:
    name: str  # the editor
    cases: int
    means: dict[str, float]  # metric -> mean over the cases that have it


def from_report(path: Path, mode: str) -> RunLine:
    from .merge import read_report

    report = read_report(path)
    results = report.get("results", {}).get(mode)
    if not isinstance(results, dict):
        raise WildInputError(f"{path}: no results for mode {mode!r}")
    editor = report["config"].get("editor", {})
    name = editor.get("name") if isinstance(editor, dict) else None
    means = {metric: cell["value"] for metric, cell in results.items()
             if metric in EDIT_METRICS and isinstance(cell, dict) and isinstance(cell.get("value"), (int, float))}
    return RunLine(str(name or path.stem), len(report["samples"]), means)


def from_goldens(directory: Path, mode: str) -> RunLine:
    """The means of a golden directory's cases; the editor is the directory's parent's name
    (`golden/<model>/<editor>/<suite>`). Goldens arrive in pull requests: the directory and
    its files are read only when they are real directories and regular files."""
    from .golden import GoldenRefused, checked_golden_path

    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise WildInputError(f"{directory}: not a directory (a golden directory or a JSON report)")
    except FileNotFoundError:
        raise WildInputError(f"{directory}: no such file or directory") from None
    values: dict[str, list[float]] = {}
    cases = 0
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(checked_golden_path(path, directory).read_text(encoding="utf-8"))
            scores = record["scores"][mode]
            questions = len(record.get("generations", {}).get("locality", []))
        except GoldenRefused as exc:
            raise WildInputError(str(exc)) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WildInputError(f"{path}: not a golden with scores for mode {mode!r} ({type(exc).__name__})") from None
        cases += 1
        for metric, value in scores.items():
            if metric in EDIT_METRICS and isinstance(value, (int, float)):
                if metric in SHARES and questions:
                    value = round(value * questions) / questions
                values.setdefault(metric, []).append(float(value))
    if not cases:
        raise WildInputError(f"{directory}: no golden (*.json) in it")
    return RunLine(directory.parent.name, cases, {metric: sum(v) / len(v) for metric, v in values.items()})


def run_line(source: Path, mode: str) -> RunLine:
    return from_report(source, mode) if source.suffix == ".json" else from_goldens(source, mode)


def markdown(lines: list[RunLine]) -> list[str]:
    head = ["editor", "cases", *COLUMNS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        cells = [code(line.name), str(line.cases)]
        cells += [f"{line.means[metric]:.3f}" if metric in line.means else "n/a" for metric in COLUMNS]
        out.append("| " + " | ".join(cells) + " |")
    return out


def sequence_markdown(sources: list[Path], mode: str, teacher_forced: str = "synthetic") -> list[str]:
    """The curves of sequential reports: per run, checkpoint and convention, the table's
    metrics in `mode`, teacher-forced reliability beside them where the run measured it,
    and the capability at the checkpoint."""
    from .merge import read_report

    head = ["editor", "edits", "convention", *TABLE_METRICS, f"reliability ({teacher_forced})", "capability EM",
            "perplexity"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(value, digits=3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for source in sources:
        report = read_report(source)
        points = report.get("sequence", {}).get("curve") if isinstance(report.get("sequence"), dict) else None
        if not points:
            raise WildInputError(f"{source}: not the report of a sequential run (no sequence curve)")
        editor = report["config"].get("editor", {})
        name = editor.get("name") if isinstance(editor, dict) else source.stem
        try:
            for point in points:
                for convention in ("final", "immediate"):
                    means = point[convention].get(mode, {})
                    forced = point[convention].get(teacher_forced, {}).get("reliability")
                    capability = point["capability"] if convention == "final" else {}
                    out.append("| " + " | ".join([code(name), text(point["edits"]), convention,
                                                  *[cell(means.get(m)) for m in TABLE_METRICS], cell(forced),
                                                  cell(capability.get("exact_match")),
                                                  cell(capability.get("perplexity"), 2)]) + " |")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WildInputError(f"{source}: field 'sequence.curve' is not a sequence's curve ({type(exc).__name__})") from None
    return out
