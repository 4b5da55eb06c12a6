"""One row per run, to compare editing methods side by side as a paper or a pull request's
summary would: `pytest-wild table` prints it in Markdown from JSON reports (`--wild-report`) or
from a configuration's golden directory (`golden/<model>/<editor>/<suite>`). Each row names
what identifies the run (editor, model, suite, context, answer metric, where it was read
from); each metric is its mean ± standard error (with the token F1 of the same answers after
it where a report kept it), WILD beside teacher-forced (`synthetic`)
beside `length` wherever a source evaluated them, with the mirage (teacher-forced minus WILD)
beside reliability and generalization. A source that lacks a mode the others have shows "-"
there, and a note under the table says which and why. The table of the bundled suite in docs/measured.md
is this command's output over the committed goldens, and a test holds the two equal. With
`--sequence`, the curves of sequential runs' reports instead: one line per run, checkpoint and
convention (the 1,000-edit table of docs/sequential.md).

A golden keeps each case's scores rounded to 2 decimals; a score that is a share of the
case's locality questions (`locality_all`, `locality_em`) is read back exactly from that
share (k of m questions, m < 50), so the means equal the run's own to the last digit. A
golden directory holds exact match (goldens are always scored so) and does not record the
context, which its row shows as "-"."""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..cases.case import WildInputError
from ..scores.metrics import EDIT_METRICS, F1_BESIDE, MODES, TABLE_METRICS
from .markdown import code, text

COLUMNS = (*TABLE_METRICS, "locality_all")
SHARES = ("locality_all", "locality_em")  # per case: k of the case's m locality questions
MIRAGE = ("reliability", "generalization")  # metrics shown with the teacher-forced minus WILD gap
IDENTITY = ("editor", "model", "suite", "context", "metric", "cases", "source")
CODE = ("editor", "model", "suite", "source")  # shown as code: names and paths


@dataclass(frozen=True)
class Cell:
    """A metric's mean over the cases that have it, its standard error (the sample standard
    deviation over √n, as lm-evaluation-harness reports it; None for one case) and n."""

    value: float
    stderr: float | None
    n: int


@dataclass(frozen=True)
class RunLine:
    identity: dict[str, str]  # IDENTITY's columns but cases: editor, model, suite, context, metric, source
    cases: int
    cells: dict[str, dict[str, Cell]]  # mode -> metric -> cell
    f1_from_answers: bool = False  # F1 computed here from the report's answers (the run did not keep it)

    @property
    def name(self) -> str:
        return self.identity["editor"]

    def means(self, mode: str) -> dict[str, float]:
        """Metric -> mean in `mode` (empty when the source did not evaluate it)."""
        return {metric: cell.value for metric, cell in self.cells.get(mode, {}).items()}


def aggregate(values: list[float]) -> Cell:
    n = len(values)
    mean = math.fsum(values) / n
    stderr = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return Cell(mean, stderr, n)


def from_report(path: Path) -> RunLine:
    from .merge import read_report

    report = read_report(path)
    config = report["config"]
    results = report.get("results")
    if not isinstance(results, dict):
        raise WildInputError(f"{path}: field 'results' is missing or not an object; is this a pytest-wild report?")
    cells: dict[str, dict[str, Cell]] = {}
    for mode, metrics in results.items():
        if not isinstance(metrics, dict):
            raise WildInputError(f"{path}: field 'results.{mode}' is not an object")
        for metric, cell in metrics.items():
            value = cell.get("value") if isinstance(cell, dict) else None
            if metric in EDIT_METRICS + F1_BESIDE and isinstance(value, (int, float)) and not isinstance(value, bool):
                stderr = cell.get("stderr")
                n = cell.get("n")
                cells.setdefault(mode, {})[metric] = Cell(
                    float(value), float(stderr) if isinstance(stderr, (int, float)) else None,
                    n if isinstance(n, int) else len(report["samples"]))
    editor, model, suite = (config.get(key) for key in ("editor", "model", "suite"))
    evaluation = config.get("evaluation") if isinstance(config.get("evaluation"), dict) else {}
    computed = False
    lacking = {mode for mode, found in cells.items() if not any(metric in found for metric in F1_BESIDE)}
    if lacking and evaluation.get("metric") != "f1":  # under F1 the metric itself is F1: none beside it
        for mode, found in f1_of_answers(report["samples"]).items():
            if mode in lacking:
                cells[mode].update(found)
                computed = True
    identity = {"editor": _field(editor, "name", path.stem), "model": _field(model, "spec", "-"),
                "suite": _field(suite, "name", "-"), "context": _text(evaluation.get("context")),
                "metric": _text(evaluation.get("metric")), "source": str(path)}
    return RunLine(identity, len(report["samples"]), cells, computed)


def f1_of_answers(samples: list) -> dict[str, dict[str, Cell]]:
    """Per answering mode, the F1 beside each metric from the answers a report kept, as the
    run computes it (`f1_beside`), for reports written before runs kept F1. A mode counts only
    where every sample's answers were read, so a mean is never over part of the cases."""
    from ..scores.answers import f1_beside

    per_mode: dict[str, list[dict[str, float | None]]] = {}
    for sample in samples:
        modes = sample.get("modes") if isinstance(sample, dict) else None
        for mode, scored in (modes if isinstance(modes, dict) else {}).items():
            answers = scored.get("answers") if isinstance(scored, dict) else None
            if isinstance(answers, dict):
                try:
                    per_mode.setdefault(mode, []).append(f1_beside(answers, sample["target"]))
                except (KeyError, TypeError, AttributeError, IndexError):
                    pass  # answers not in the shape a run writes: this sample has none, so its mode has no F1
    found = {}
    for mode, rows in per_mode.items():
        if len(rows) == len(samples):
            found[mode] = {metric: aggregate(values) for metric in F1_BESIDE
                           if (values := [row[metric] for row in rows if row.get(metric) is not None])}
    return found


def from_goldens(directory: Path) -> RunLine:
    """The means of a golden directory's cases, per mode its goldens hold; model, editor and
    suite are the directory's names (`golden/<model>/<editor>/<suite>`). Goldens arrive in
    pull requests: the directory and its files are read only when they are real directories
    and regular files."""
    from .golden import GoldenRefused, checked_golden_path

    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise WildInputError(f"{directory}: not a directory (a golden directory or a JSON report)")
    except FileNotFoundError:
        raise WildInputError(f"{directory}: no such file or directory") from None
    values: dict[str, dict[str, list[float]]] = {}
    cases = 0
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(checked_golden_path(path, directory).read_text(encoding="utf-8"))
        except GoldenRefused as exc:
            raise WildInputError(str(exc)) from None
        except OSError as exc:
            raise WildInputError(f"{path}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise WildInputError(f"{path}: not UTF-8; not a golden") from None
        except (json.JSONDecodeError, RecursionError):
            raise WildInputError(f"{path}: not valid JSON; not a golden") from None
        scores = record.get("scores") if isinstance(record, dict) else None
        if not isinstance(scores, dict) or not all(isinstance(v, dict) for v in scores.values()):
            raise WildInputError(f"{path}: no 'scores' object of modes; not a golden")
        generations = record.get("generations")
        locality = generations.get("locality") if isinstance(generations, dict) else None
        questions = len(locality) if isinstance(locality, list) else 0
        cases += 1
        for mode, metrics in scores.items():
            for metric, value in metrics.items():
                if metric in EDIT_METRICS + F1_BESIDE and isinstance(value, (int, float)) and not isinstance(value, bool):
                    if metric in SHARES and questions:
                        value = round(value * questions) / questions
                    values.setdefault(mode, {}).setdefault(metric, []).append(float(value))
    if not cases:
        raise WildInputError(f"{directory}: no golden (*.json) in it")
    identity = {"editor": directory.parent.name, "model": directory.parent.parent.name, "suite": directory.name,
                "context": "-", "metric": "em", "source": str(directory)}
    return RunLine(identity, cases, {mode: {metric: aggregate(v) for metric, v in metrics.items()}
                                     for mode, metrics in values.items()})


def run_line(source: Path) -> RunLine:
    return from_report(source) if source.suffix == ".json" else from_goldens(source)


def modes_of(lines: list[RunLine], wanted: list[str] | None = None) -> list[str]:
    """The modes to show: those asked for, else every mode a source has, WILD first, then
    teacher-forced, then length, then any other (e.g. `wild-sentence`) by name."""
    found = {mode for line in lines for mode in line.cells}
    if wanted:
        missing = [mode for mode in wanted if mode not in found]
        if missing:
            raise WildInputError(f"--mode {missing[0]}: no source has results for it (they have: "
                                 f"{', '.join(sorted(found)) or 'none'})")
        return list(wanted)
    order = {mode: index for index, mode in enumerate(MODES)}
    return sorted(found, key=lambda mode: (order.get(mode, len(MODES)), mode))


def markdown(lines: list[RunLine], wanted_modes: list[str] | None = None) -> list[str]:
    """The table, then a note for every source that lacks a shown mode or metric."""
    modes = modes_of(lines, wanted_modes)
    columns = _columns(lines, modes)
    head = [*IDENTITY] + [_header(column, modes) for column in columns]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for line in lines:
        cells = [str(line.cases) if key == "cases" else code(line.identity[key]) if key in CODE else text(line.identity[key])
                 for key in IDENTITY]
        cells += [_value(line, column) for column in columns]
        out.append("| " + " | ".join(cells) + " |")
        lacking = [mode for mode in modes if mode not in line.cells]
        if lacking:
            notes.append(f"- `-`: {code(line.identity['source'])} has no {' or '.join(lacking)} results "
                         "(the run did not evaluate that mode: `--wild-eval`)")
    if any(column[0] == "gap" for column in columns):
        notes.append("- gap: teacher-forced (synthetic) minus WILD, the share of edits that only teacher "
                     "forcing calls a success")
    if any(f"{column[1]}_f1" in line.cells.get(column[2], {}) for line in lines for column in columns):
        notes.append("- (F1 …): the token F1 of the same answers, where the run kept it (a real instruct model "
                     "answers in sentences, which exact match reads as 0 even where the target is in them)")
    computed = [code(line.identity["source"]) for line in lines if line.f1_from_answers]
    if computed:
        notes.append(f"- F1 of {', '.join(computed)}: computed here from the answers the report kept, as a run "
                     "computes it (the run was made before runs kept F1)")
    return out + ([""] + notes if notes else [])


def _columns(lines: list[RunLine], modes: list[str]) -> list[tuple[str, str, str]]:
    """(kind, metric, mode) per column: each metric's modes side by side, the gap after
    reliability's and generalization's when both WILD and synthetic are shown."""
    present = {metric for line in lines for mode in modes for metric in line.cells.get(mode, {})}
    columns = []
    for metric in COLUMNS:
        if metric not in present:
            continue
        columns += [("mean", metric, mode) for mode in modes]
        if metric in MIRAGE and "wild" in modes and "synthetic" in modes:
            columns.append(("gap", metric, ""))
    return columns


def _header(column: tuple[str, str, str], modes: list[str]) -> str:
    kind, metric, mode = column
    if kind == "gap":
        return f"{metric} gap"
    return metric if len(modes) == 1 and mode == "wild" else f"{metric} ({mode})"


def _value(line: RunLine, column: tuple[str, str, str]) -> str:
    kind, metric, mode = column
    if kind == "gap":
        wild, forced = line.cells.get("wild", {}).get(metric), line.cells.get("synthetic", {}).get(metric)
        return f"{forced.value - wild.value:+.3f}" if wild and forced else "-"
    cell = line.cells.get(mode, {}).get(metric)
    if cell is None:
        return "-" if mode not in line.cells else "n/a"
    beside = line.cells.get(mode, {}).get(f"{metric}_f1")
    return (f"{cell.value:.3f}" + ("" if cell.stderr is None else f" ± {cell.stderr:.3f}")
            + ("" if beside is None else f" (F1 {beside.value:.3f})"))


def _field(value, key: str, default: str) -> str:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, str) and inner else default


def _text(value) -> str:
    return value if isinstance(value, str) and value else "-"


def sequence_markdown(sources: list[Path], mode: str, teacher_forced: str = "synthetic") -> list[str]:
    """The curves of sequential reports: per run, checkpoint and convention, the table's
    metrics in `mode` (with the token F1 of the same answers after a "/" where the runs kept
    it), teacher-forced reliability beside them where the run measured it, and the capability
    at the checkpoint."""
    from ..sequence.sequential import kept_f1
    from .merge import read_report

    curves = []
    for source in sources:
        report = read_report(source)
        points = report.get("sequence", {}).get("curve") if isinstance(report.get("sequence"), dict) else None
        if not points or not isinstance(points, list):
            raise WildInputError(f"{source}: not the report of a sequential run (no sequence curve)")
        editor = report["config"].get("editor", {})
        curves.append((source, editor.get("name") if isinstance(editor, dict) else source.stem, points))
    with_f1 = any(kept_f1(points, mode) for _, _, points in curves)
    named = [f"{metric} / F1" if with_f1 else metric for metric in TABLE_METRICS]
    head = ["editor", "edits", "convention", *named, f"reliability ({teacher_forced})", "capability EM", "perplexity"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(value, digits=3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    def metric_cell(means: dict, metric: str) -> str:
        return f"{cell(means.get(metric))} / {cell(means.get(f'{metric}_f1'))}" if with_f1 else cell(means.get(metric))

    for source, name, points in curves:
        try:
            for point in points:
                for convention in ("final", "immediate"):
                    means = point[convention].get(mode, {})
                    forced = point[convention].get(teacher_forced, {}).get("reliability")
                    capability = point["capability"] if convention == "final" else {}
                    out.append("| " + " | ".join([code(name), text(point["edits"]), convention,
                                                  *[metric_cell(means, m) for m in TABLE_METRICS], cell(forced),
                                                  cell(capability.get("exact_match")),
                                                  cell(capability.get("perplexity"), 2)]) + " |")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WildInputError(f"{source}: field 'sequence.curve' is not a sequence's curve ({type(exc).__name__})") from None
    return out
