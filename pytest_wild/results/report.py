"""Aggregates, the terminal table and the JSON report, in the shape lm-evaluation-harness
users know: `results` per mode and metric, per-case `samples`, and the `config` that
produced them."""

from __future__ import annotations

import math
import statistics

from ..scores.metrics import BESIDE, REPORTED_METRICS, TABLE_METRICS
from ..scores.record import CaseResult
from . import markdown

# The report's shape, as schemas/report.schema.json describes it: raised when a key changes meaning
# or goes away, so a reader can tell which shape it holds (reports before version 1 have no such key).
SCHEMA_VERSION = 1


def aggregate(rows: list[CaseResult]) -> dict[str, dict[str, dict]]:
    """mode -> metric -> cell, over the cases that have the metric. A cell is the mean over
    cases of the case's score ("value"), its standard error ("stderr": the sample standard
    deviation over sqrt(n), as lm-evaluation-harness reports it; null for one case), the
    number of cases ("n") and how many of them score 1 ("successes", the cases fully
    passing: for locality, every locality question unchanged). Sums are exact (fsum), so
    the cells do not depend on the order cases finished in."""
    modes: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for mode, scores in row.modes.items():
            for metric in REPORTED_METRICS:
                value = scores.get(metric)
                if value is not None:
                    modes.setdefault(mode, {}).setdefault(metric, []).append(value)
    return {mode: {metric: _cell(values) for metric, values in sorted(metrics.items())}
            for mode, metrics in modes.items()}


def aggregate_by_source(rows: list[CaseResult]) -> dict[str, dict[str, dict[str, dict]]]:
    """source -> the aggregates of its cases (NQ / TriviaQA / SimpleQA in QAEdit; held-out
    and counterfactual facts in tinyworld)."""
    sources: dict[str, list[dict]] = {}
    for row in rows:
        sources.setdefault(str(row.source or "unknown"), []).append(row)
    return {source: aggregate(found) for source, found in sorted(sources.items())}


def _cell(values: list[float]) -> dict:
    n = len(values)
    mean = math.fsum(values) / n
    stderr = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"value": mean, "stderr": stderr, "n": n, "successes": sum(1 for v in values if v >= 1.0)}


def flagged(rows: list[CaseResult]) -> dict[str, list[str]]:
    """Case ids by flag name (the part of the flag before ':')."""
    found: dict[str, list[str]] = {}
    for row in rows:
        for flag in row.flags:
            found.setdefault(flag.split(":")[0], []).append(row.id)
    return found


def timing_by_case(rows: list[CaseResult]) -> dict[str, dict]:
    """Case id -> its `timing` (seconds of its edit, of answering on the edited model, and
    the questions answered). Kept out of the samples: it is the one part of a report that
    differs between two runs of the same cases."""
    return {row.id: row.timing for row in sorted(rows, key=lambda row: row.id) if row.timing is not None}


def timing_summary(by_case: dict[str, dict]) -> dict:
    """What a method costs, as wall-clock seconds on this run's machine: per case edited
    (mean, and the median, which the first edit's one-off work such as MEMIT's statistics
    does not move), and per question answered on the edited model. Under xdist the workers
    overlap, so these are per process, not the run's wall time divided out."""
    if not by_case:
        return {"cases": 0}
    edits = [t["edit_seconds"] for t in by_case.values()]
    questions = sum(t["questions"] for t in by_case.values())
    answering = math.fsum(t["evaluate_seconds"] for t in by_case.values())
    return {"cases": len(edits), "edit_seconds_mean": math.fsum(edits) / len(edits),
            "edit_seconds_median": statistics.median(edits), "questions": questions,
            "seconds_per_question": answering / questions if questions else None}


def timing_line(summary: dict) -> str:
    if not summary.get("cases"):
        return "time: no case was edited"
    per_question = summary["seconds_per_question"]
    return (f"time: {summary['edit_seconds_mean']:.3f} s per edit (median {summary['edit_seconds_median']:.3f}), "
            + (f"{per_question:.4f} s per question ({summary['questions']} questions)"
               if per_question is not None else "no question answered"))


def unevaluable(rows: list[CaseResult]) -> dict[str, str]:
    """Case id -> why the case does not fit the model window (its row has no scores)."""
    return {row.id: row.not_evaluable for row in rows if row.not_evaluable}


TABLE_COLUMNS = ("mode", "metric", "mean", "± stderr", "cases", "cases passing")


def table_rows(results: dict, order: list[str]) -> list[tuple[str, ...]]:
    """One row per mode and metric of the paper's table, every number with what it is: the
    mean over cases with its standard error, the number of cases, and the cases fully passing
    (for locality the mean counts each question, the last column whole cases)."""
    rows = []
    for mode in order:
        for metric in TABLE_METRICS:
            cell = results.get(mode, {}).get(metric)
            rows.append((mode, metric, *_cells(cell)))
            for beside in (m for m in BESIDE if m.startswith(metric + "_")):  # F1, a judge run's EM: indented
                if results.get(mode, {}).get(beside) is not None:
                    label = "LLM judge" if beside == "locality_judge" else beside[len(metric) + 1:]
                    rows.append((mode, "  " + label, *_cells(results[mode][beside])))
    return rows


def _cells(cell: dict | None) -> tuple[str, ...]:
    if cell is None:
        return ("-", "", "", "")
    stderr = "" if cell.get("stderr") is None else f"± {cell['stderr']:.3f}"
    return (f"{cell['value']:.3f}", stderr, str(cell["n"]), f"{cell['successes']}/{cell['n']}")


def table(results: dict, order: list[str]) -> list[str]:
    """The results table for the terminal, at most 80 columns wide."""
    widths = (16, 15, 7, 9, 7, 14)
    def line(cells) -> str:
        return "".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    header = line(TABLE_COLUMNS)
    return [header, "-" * len(header)] + [line(cells) for cells in table_rows(results, order)]


def markdown_table(results: dict, order: list[str], title: str) -> list[str]:
    """The same table in Markdown, for a CI job summary."""
    lines = [f"### {markdown.text(title)}", "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|---|---|" + "---:|" * 4]
    lines += ["| " + " | ".join((mode, "↳ " + metric.strip() if metric.startswith(" ") else metric, *rest)) + " |"
              for mode, metric, *rest in table_rows(results, order)]
    return lines


def gates_verdict(gates: list[dict]) -> str:
    """The run's last word on its gates, the same in the terminal and in Markdown."""
    failed = [gate for gate in gates if not gate["passed"]]
    if not gates:
        return "WILD gates: none set (--wild-gate); the per-case tests decide the exit status"
    if failed:
        return f"WILD gates: {len(failed)} of {len(gates)} FAILED ({', '.join(g['rule'] for g in failed)}): the run fails"
    return f"WILD gates: all {len(gates)} passed"


def markdown_gates(gates: list[dict]) -> list[str]:
    """Each gate with what was observed, and the verdict last."""
    lines = ["| gate | mode | observed | verdict |", "|---|---|---:|---|"]
    for gate in gates:
        observed = "n/a" if gate["observed"] is None else f"{gate['observed']:.3f}"
        lines.append(f"| {markdown.code(gate['rule'])} | {gate['mode']} | {observed} | {'passed' if gate['passed'] else '**FAILED**'} |")
    return lines + ["", f"**{gates_verdict(gates)}**"]
