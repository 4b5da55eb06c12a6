"""The end of a run on the controller: aggregates, gates, the JSON report and the lines of
the terminal summary."""

from __future__ import annotations

from .report import aggregate, markdown_table, table, write_json_atomic, write_text_atomic


def finish_run(run, config) -> bool:
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
        write_json_atomic(run.options.report, report_data(run, results))
    if run.options.markdown is not None:
        title = f"WILD results: {run.options.editor} on {run.model_info.get('spec', run.options.model or 'tinyworld')}"
        write_text_atomic(run.options.markdown, "\n".join(markdown_table(results, list(run.options.mode_labels), title)) + "\n")
    return any(not gate["passed"] for gate in run.gate_results)


def report_data(run, results: dict) -> dict:
    o = run.options
    rows = sorted(run.rows, key=lambda row: row["id"])
    return {
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
    lines = [f"editor {o.editor} on {run.model_info.get('spec', o.model or 'tinyworld')}, suite {suite}: "
             f"{len(run.rows)} cases evaluated, metric {o.metric}, context {run.context}, stop rule {o.stop_rule}"]
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
    if o.report is not None:
        lines.append(f"report written to {o.report}")
    if o.markdown is not None:
        lines.append(f"markdown table written to {o.markdown}")
    return lines
