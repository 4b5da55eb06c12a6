"""The end of a run on the controller: aggregates, gates, the JSON report and the lines of
the terminal summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..cases.case import WildInputError
from ..judge.grading import grade, grade_unavailable, judge_section, judged_modes, unjudged_behind
from ..judge.grading import summary_lines as judge_lines
from ..results import markdown
from ..results.gathered import Outcome, Results
from ..results.report import (SCHEMA_VERSION, aggregate, aggregate_by_source, flagged, gates_verdict, markdown_gates, markdown_table,
                              table, timing_by_case, timing_line, timing_summary)
from ..scores.metrics import JUDGED_METRICS, TABLE_METRICS
from ..scores.record import CaseResult
from ..storage import write_json_atomic, write_text_atomic
from ..sequence.sequential import curve, curve_lines, curves_by_order, recount_lost


def finish_run(run) -> Outcome:
    """Aggregate, decide the gates, write the report and the Markdown table."""
    o, results = run.options, run.results
    judged = judge_run(run) if o.judge is not None else None
    aggregates = aggregate(results.rows)
    points = curve(results.rows)
    by_case = timing_by_case(results.rows)
    timing = timing_summary(by_case)
    gates = []
    judged_now = judged_modes(results.rows) if judged else set()
    for rule in o.gates:
        mode = rule.mode or o.primary_mode
        cell = aggregates.get(mode, {}).get(rule.metric)
        observed = None if cell is None else cell["value"]
        gate = {"rule": rule.text, "mode": mode, "observed": observed,
                "passed": observed is not None and rule.holds(observed)}
        if rule.metric in JUDGED_METRICS and mode in judged_now:
            gate["unjudged"] = unjudged_behind(results.rows, mode, rule.metric)
            if gate["unjudged"] and not o.judge.allow_unjudged:
                gate["passed"] = False
        gates.append(gate)
    written: dict[str, Path] = {}
    unwritten: list[str] = []

    def put(what: str, path: Path, write) -> None:
        found = _write(path, results.complete, write, what, unwritten)
        if found is not None:
            written[what] = found

    if o.report is not None and results.suite_info is not None:
        data = report_data(run, aggregates, gates, points, by_case, timing) | ({"judge": judged} if judged else {})
        put("report", o.report, lambda path: write_json_atomic(path, data))
    if o.markdown is not None:
        title = f"WILD results: {o.editor} on {results.model_info.get('spec', o.model or 'tinyworld')}"
        if not results.complete:
            title += f" (partial: {_progress(results)})"
        lines = markdown_table(aggregates, list(o.mode_labels), title)
        if results.not_evaluable:
            lines += ["", f"{_cases(len(results.not_evaluable))} not evaluable (too long for the model window), left out."]
        lines += ["", timing_line(timing)]
        if judged:
            lines += ["", *(f"{markdown.text(line)}  " for line in judge_lines(judged))]  # quotes the model's answers
        if points:
            lines += ["", "```text", *curve_lines(points, o.primary_mode), "```"]
        if gates:
            lines += ["", *markdown_gates(gates)]
        text = "\n".join(lines) + "\n"
        put("markdown table", o.markdown, lambda path: write_text_atomic(path, text))
    if o.plot is not None and points:
        from ..sequence.plot import plot_curve

        put("plot", o.plot, lambda path: plot_curve(points, curves_by_order(results.rows), list(o.mode_labels), path,
                                                    f"{o.editor} on {results.model_info.get('spec', o.model or 'tinyworld')}"))
    return Outcome(aggregates, gates, written, points, timing, judged, unwritten)


def judge_run(run) -> dict:
    """Grade every answer with the run's judge (pytest_wild.judge.grading) and return the
    report's `judge` section. A judge that cannot be opened leaves every answer unjudged,
    with why: the run's results are kept, and gates on the verdicts fail."""
    import sqlite3

    o, rows = run.options, run.results.rows
    what = f"judging the answers with {o.judge.name}"
    stopped = run.results.terminated()
    if stopped:  # a CI that cancelled the run kills it seconds later: the results go out now
        asked = grade_unavailable(rows, f"run stopped ({stopped})")
    else:
        try:
            with run.progress.step(f"{what}: loading the judge" if o.judge.local else f"{what}: opening its cache"):
                judge = o.judge.open(o.device, o.dtype, o.trust_remote_code)
        except (WildInputError, OSError, sqlite3.Error) as exc:
            asked = grade_unavailable(rows, f"the judge could not be opened: {exc}")
        else:
            judge.stop = run.results.terminated  # SIGTERM while judging: what is judged is kept, the rest unjudged
            try:
                with run.progress.step(what):
                    asked = grade(rows, judge)
            finally:
                judge.close()
                judge.cache.close()
    recount_lost(rows, o.primary_mode)
    return judge_section(rows, asked, o.judge.described())


def partial_path(path: Path) -> Path:
    """`out.json` -> `out.partial.json`: where an incomplete run writes, beside the complete
    report and never in its place."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _write(path: Path, complete: bool, write, what: str, unwritten: list[str]) -> Path | None:
    """A complete run writes `path` and then removes a stale partial file beside it (so a
    glob over the reports cannot pick it up); an incomplete one writes only the partial file,
    leaving an earlier complete report as it was. A file that cannot be written (a full disk,
    a read-only directory) is said in `unwritten`, and the earlier one is left whole (each
    is written to a temporary file and renamed)."""
    target = path if complete else partial_path(path)
    try:
        write(target)
        if complete:
            partial_path(path).unlink(missing_ok=True)
    except OSError as exc:
        unwritten.append(f"the {what} could not be written to {target} ({exc.strerror or type(exc).__name__}); "
                         "an earlier file there is left as it was")
        return None
    return target


def _cases(n: int) -> str:
    return f"{n} case" + ("" if n == 1 else "s")


def _progress(results: Results) -> str:
    selected = "?" if results.selected is None else results.selected
    stopped = f" ({results.stop_reason})" if results.stop_reason else ""
    return f"{results.cases_run} of {selected} selected cases run{stopped}"


def report_data(run, aggregates: dict, gates: list[dict], points: list[dict], by_case: dict, timing: dict) -> dict:
    from .runtime import versions

    o, results = run.options, run.results
    rows = sorted(results.rows, key=lambda row: row.id)
    sequence = ({"sequence": {"edits": o.sequential, "batch_size": o.batch_size, "checkpoints": list(o.checkpoints),
                              "orders": o.orders, "curve": points, "stopped": results.sequences_stopped}}
                if o.sequential else {})
    if o.orders:
        sequence["sequence"]["curves_by_order"] = curves_by_order(rows)
    return sequence | {
        "schema_version": SCHEMA_VERSION,
        "complete": results.complete,
        "interrupted": results.stop_reason is not None,
        "stop_reason": results.stop_reason,
        "cases": {"selected": results.selected, "run": results.cases_run,
                  "selected_before_sharding": results.selected_before_sharding,
                  "not_evaluable": len(results.not_evaluable)},
        "not_evaluable": results.not_evaluable,
        "results": aggregates,
        "results_by_source": aggregate_by_source(rows),
        "samples": [row.to_json(timing=False) for row in rows],
        "timing": {"summary": timing, "cases": by_case},
        "gates": gates,
        "flags": flagged(rows),
        "lost": sorted(results.lost),
        "config": {
            "model": results.model_info or {"spec": o.model or "tinyworld"},
            "editor": {"name": o.editor, "hparams": run.runtime.resolved_hparams()},
            "suite": results.suite_info,
            "evaluation": {"modes": list(o.mode_labels), "metric": o.metric, "context": run.context,
                           "stop_rule": o.stop_rule, "max_new_tokens": 50, "decoding": "greedy"}
            | ({"system_prompt": o.system_prompt} if o.system_prompt is not None else {})
            | ({"judge": o.judge.described()} if o.judge else {}),
            "only_failed": {"enabled": o.only_failed, "dropped": results.dropped},
            "batch_size": o.batch_size,
            "shard": list(o.shard) if o.shard else None,
            "seed": o.seed,
            "device": o.device,
            "dtype": o.dtype,
        },
        "versions": versions(),
    }


def summary_lines(run) -> list[str]:
    o, results = run.options, run.results
    outcome = results.outcome
    aggregates = outcome.aggregates if outcome else aggregate(results.rows)
    suite = (results.suite_info or {}).get("name", o.suite)
    unfit = results.not_evaluable
    lines = [f"editor {o.editor} on {results.model_info.get('spec', o.model or 'tinyworld')}, suite {suite}: "
             f"{len(results.rows) - len(unfit)} cases evaluated, metric {o.metric}, context {run.context}, "
             f"stop rule {o.stop_rule}"]
    if unfit:
        ids = sorted(unfit)
        lines.append(f"not evaluable (too long for the model window), left out of the results: {_cases(len(ids))} "
                     f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); first: {ids[0]}: {unfit[ids[0]]}")
    partial = {row.id: row.locality_not_evaluable for row in results.rows if row.locality_not_evaluable}
    if partial:
        ids = sorted(partial)
        lines.append(f"locality questions too long for the model window, left out (locality_all and locality_em "
                     f"not evaluable there): {_cases(len(ids))} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); "
                     f"first: {ids[0]}: {partial[ids[0]][0]}")
    if results.dropped is not None:
        lines.append(f"--wild-only-failed dropped {results.dropped} cases the unedited model already answered correctly")
    lines.append("")
    lines.extend(table(aggregates, list(o.mode_labels)))
    lines.extend(source_lines(results.rows, o.primary_mode))
    lines.append(timing_line(outcome.timing if outcome else timing_summary(timing_by_case(results.rows))))
    if outcome and outcome.judge:
        lines.extend(judge_lines(outcome.judge))
    points = outcome.curve if outcome else curve(results.rows)
    if points:
        lines += ["", *curve_lines(points, o.primary_mode)]
    flags = flagged(results.rows)
    for name, ids in sorted(flags.items()):
        lines.append(f"flagged {name}: {len(ids)} cases ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})")
    if results.lost:
        lines.append(f"no result for {len(results.lost)} cases (errors or crashed workers): {', '.join(results.lost[:5])}")
    for gate in outcome.gates if outcome else []:
        observed = "n/a" if gate["observed"] is None else f"{gate['observed']:.3f}"
        unjudged = gate.get("unjudged")
        note = (f"; {unjudged} answers unjudged" + ("" if run.options.judge.allow_unjudged else
                                                     ": it fails until they are judged, or pass --wild-judge-allow-unjudged")
                if unjudged else "")
        lines.append(f"gate {gate['rule']} ({gate['mode']}): {'passed' if gate['passed'] else 'FAILED'} "
                     f"(observed {observed}{note})")
    lines += [f"sequence stopped: {where}" for where in results.sequences_stopped]
    if not results.complete:
        lines.append(f"partial run: {_progress(results)}; results go to *.partial files, earlier complete reports are left as they were")
    for what, path in (outcome.written if outcome else {}).items():
        lines.append(f"{what} written to {path}")
    lines += [f"ERROR: {line}" for line in (outcome.unwritten if outcome else [])]
    return lines


def source_lines(rows: list[CaseResult], mode: str) -> list[str]:
    """The primary mode's table metrics per source, when the suite has more than one."""
    by_source = aggregate_by_source(rows)
    if len(by_source) < 2:
        return []
    lines = ["", f"{'by source (' + mode + ')':<28}{'cases':>6}" + "".join(f"{m[:14]:>15}" for m in TABLE_METRICS)]
    for source, aggregates in by_source.items():
        cells = aggregates.get(mode, {})
        n = max((cell["n"] for cell in cells.values()), default=0)
        values = ["-" if cells.get(m) is None else f"{cells[m]['value']:.3f}" for m in TABLE_METRICS]
        lines.append(f"{source[:27]:<28}{n:>6}" + "".join(f"{v:>15}" for v in values))
    return lines


class EndOfRun:
    """The WILD results, printed after pytest's own summary and its "N passed" line, so that
    how the run ended (the gates' verdicts, a model that could not be loaded) is the last
    thing a reader sees."""

    def __init__(self, run) -> None:
        self.run = run

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session):
        result = yield
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            self._write(reporter)
        return result

    def _write(self, reporter) -> None:
        results = self.run.results
        if results.fatal:
            reporter.write_line(f"ERROR: {results.fatal}", red=True)
            return
        if not results.rows and not results.lost:
            return
        reporter.write_sep("=", "WILD results")
        for line in summary_lines(self.run):
            reporter.write_line(line, red=(line.startswith("gate ") and "FAILED" in line) or line.startswith("ERROR: "))
        gates = results.outcome.gates if results.outcome else []
        failed = any(not gate["passed"] for gate in gates)
        reporter.write_sep("=", gates_verdict(gates), red=failed, green=bool(gates) and not failed)
