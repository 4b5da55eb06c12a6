"""The end of a run on the controller: aggregates, gates, the JSON report and the lines of
the terminal summary."""

from __future__ import annotations

from pathlib import Path

from .report import aggregate, markdown_table, table, write_json_atomic, write_text_atomic


def finish_run(run) -> bool:
    """Aggregate, decide the gates, write the report. True when a gate failed."""
    results = aggregate(run.rows)
    run.results = results
    run.gate_results = []
    for rule in run.options.gates:
        mode = rule.mode or run.options.primary_mode
        cell = results.get(mode, {}).get(rule.metric)
        observed = None if cell is None else cell["value"]
        run.gate_results.append({"rule": rule.text, "mode": mode, "observed": observed,
                                 "passed": observed is not None and rule.holds(observed)})
    if run.options.report is not None and run.suite_info is not None:
        run.written["report"] = _write(run.options.report, run.complete,
                                       lambda path: write_json_atomic(path, report_data(run, results)))
    if run.options.markdown is not None:
        title = f"WILD results: {run.options.editor} on {run.model_info.get('spec', run.options.model or 'tinyworld')}"
        if not run.complete:
            title += f" (partial: {_progress(run)})"
        lines = markdown_table(results, list(run.options.mode_labels), title)
        if run.not_evaluable:
            lines += ["", f"{_cases(len(run.not_evaluable))} not evaluable (too long for the model window), left out."]
        text = "\n".join(lines) + "\n"
        run.written["markdown table"] = _write(run.options.markdown, run.complete,
                                               lambda path: write_text_atomic(path, text))
    return any(not gate["passed"] for gate in run.gate_results)


def partial_path(path: Path) -> Path:
    """`out.json` -> `out.partial.json`: where an incomplete run writes, beside the complete
    report and never in its place."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _write(path: Path, complete: bool, write) -> Path:
    """A complete run writes `path` and then removes a stale partial file beside it (so a
    glob over the reports cannot pick it up); an incomplete one writes only the partial file,
    leaving an earlier complete report as it was."""
    if not complete:
        write(partial_path(path))
        return partial_path(path)
    write(path)
    partial_path(path).unlink(missing_ok=True)
    return path


def _cases(n: int) -> str:
    return f"{n} case" + ("" if n == 1 else "s")


def _progress(run) -> str:
    selected = "?" if run.selected is None else run.selected
    stopped = f" ({run.stop_reason})" if run.stop_reason else ""
    return f"{run.cases_run} of {selected} selected cases run{stopped}"


def report_data(run, results: dict) -> dict:
    o = run.options
    rows = sorted(run.rows, key=lambda row: row["id"])
    return {
        "complete": run.complete,
        "interrupted": run.stop_reason is not None,
        "stop_reason": run.stop_reason,
        "cases": {"selected": run.selected, "run": run.cases_run,
                  "selected_before_sharding": run.selected_before_sharding,
                  "not_evaluable": len(run.not_evaluable)},
        "not_evaluable": run.not_evaluable,
        "results": results,
        "samples": rows,
        "gates": run.gate_results,
        "flags": flagged(rows),
        "lost": sorted(run.lost),
        "config": {
            "model": run.model_info or {"spec": o.model or "tinyworld"},
            "editor": {"name": o.editor, "hparams": run.resolve_hparams()},
            "suite": run.suite_info,
            "evaluation": {"modes": list(o.mode_labels), "metric": o.metric, "context": run.context,
                           "stop_rule": o.stop_rule, "max_new_tokens": 50, "decoding": "greedy"},
            "only_failed": {"enabled": o.only_failed, "dropped": run.dropped},
            "batch_size": o.batch_size,
            "shard": list(o.shard) if o.shard else None,
            "seed": o.seed,
            "device": o.device,
            "dtype": o.dtype,
        },
        "versions": run.versions(),
    }


def flagged(rows: list[dict]) -> dict[str, list[str]]:
    """Case ids by flag name (the part of the flag before ':')."""
    found: dict[str, list[str]] = {}
    for row in rows:
        for flag in row["flags"]:
            found.setdefault(flag.split(":")[0], []).append(row["id"])
    return found


def summary_lines(run) -> list[str]:
    o = run.options
    results = getattr(run, "results", None) or aggregate(run.rows)
    suite = (run.suite_info or {}).get("name", o.suite)
    unfit = run.not_evaluable
    lines = [f"editor {o.editor} on {run.model_info.get('spec', o.model or 'tinyworld')}, suite {suite}: "
             f"{len(run.rows) - len(unfit)} cases evaluated, metric {o.metric}, context {run.context}, stop rule {o.stop_rule}"]
    if unfit:
        ids = sorted(unfit)
        lines.append(f"not evaluable (too long for the model window), left out of the results: {_cases(len(ids))} "
                     f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); first: {ids[0]}: {unfit[ids[0]]}")
    if run.dropped is not None:
        lines.append(f"--wild-only-failed dropped {run.dropped} cases the unedited model already answered correctly")
    lines.append("")
    lines.extend(table(results, list(o.mode_labels)))
    flags = flagged(run.rows)
    for name, ids in sorted(flags.items()):
        lines.append(f"flagged {name}: {len(ids)} cases ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})")
    if run.lost:
        lines.append(f"no result for {len(run.lost)} cases (errors or crashed workers): {', '.join(run.lost[:5])}")
    for gate in run.gate_results:
        observed = "n/a" if gate["observed"] is None else f"{gate['observed']:.3f}"
        lines.append(f"gate {gate['rule']} ({gate['mode']}): {'passed' if gate['passed'] else 'FAILED'} (observed {observed})")
    if not run.complete:
        lines.append(f"partial run: {_progress(run)}; results go to *.partial files, earlier complete reports are left as they were")
    for what, path in run.written.items():
        lines.append(f"{what} written to {path}")
    return lines
