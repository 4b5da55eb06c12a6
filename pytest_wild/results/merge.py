"""Merge the JSON reports of sharded runs into the report of the whole run, refusing any set
of reports whose union is not that whole run (a shard missing or given twice, a shard that
was interrupted), so the merged aggregates never quietly cover part of the cases."""

from __future__ import annotations

import json
from pathlib import Path

from ..cases.case import WildInputError
from ..judge.grading import judge_section
from ..scores.record import CaseResult, NotACaseResult
from .report import SCHEMA_VERSION, aggregate, aggregate_by_source, flagged, timing_summary, unevaluable

# Configuration that must agree between shards for their union to be one run.
MUST_AGREE = ("model", "editor", "suite", "evaluation", "only_failed", "batch_size", "seed", "dtype")


def merge_reports(paths: list[Path], allow_partial: bool = False) -> dict:
    """The merged report. Refusals are WildInputErrors of one line per problem: every
    malformed report, then (unless `allow_partial`) the missing shards and every partial report."""
    reports, malformed = [], []
    for path in paths:
        try:
            reports.append(read_report(path))
        except WildInputError as exc:
            malformed.append(str(exc))
    if malformed:
        raise WildInputError("\n".join(malformed))
    first = reports[0]["config"]
    for path, report in zip(paths[1:], reports[1:]):
        for key in MUST_AGREE:
            if _comparable(report["config"].get(key)) != _comparable(first.get(key)):
                raise WildInputError(f"{path}: config.{key} differs from {paths[0]}'s; these are not shards of one run")
    whole = _whole_run_selection(paths, reports)
    missing = _missing_shards(paths, reports)
    incomplete = [f"{path}: partial report ({_why_partial(report)}); rerun its shard, or pass --allow-partial"
                  for path, report in zip(paths, reports) if report.get("complete") is not True]
    if missing:
        incomplete.insert(0, f"shard{'s' if len(missing) > 1 else ''} {_and(missing)} "
                             f"{'are' if len(missing) > 1 else 'is'} missing; merge every shard's report, or pass --allow-partial")
    if incomplete and not allow_partial:
        raise WildInputError("\n".join(incomplete))
    samples: dict[str, CaseResult] = {}
    for path, report in zip(paths, reports):
        for index, sample in enumerate(report["samples"]):
            row = _case_result(path, index, sample)
            if row.id in samples:
                raise WildInputError(f"{path}: case {row.id!r} is also in an earlier report")
            samples[row.id] = row
    rows = [samples[key] for key in sorted(samples)]
    timing = {case: found for report in reports for case, found in report.get("timing", {}).get("cases", {}).items()}
    timing = {case: timing[case] for case in sorted(timing) if case in samples}
    lost = sorted(lost for report in reports for lost in report.get("lost", []))
    config = {**first, "shard": None, "merged_from": [str(p) for p in paths], "missing_shards": missing}
    judge = first.get("evaluation", {}).get("judge") if isinstance(first.get("evaluation"), dict) else None
    judged = {"judge": judge_section(rows, None, judge)} if isinstance(judge, dict) else {}
    return judged | {
        "schema_version": SCHEMA_VERSION,
        "complete": not incomplete,
        "interrupted": any(report.get("interrupted") is True for report in reports),
        "cases": {"selected": whole, "run": len(rows) + len(lost), "selected_before_sharding": whole,
                  "not_evaluable": len(unevaluable(rows))},
        "not_evaluable": unevaluable(rows),
        "results": aggregate(rows),
        "results_by_source": aggregate_by_source(rows),
        "samples": [row.to_json() for row in rows],
        "timing": {"summary": timing_summary(timing), "cases": timing},
        "gates": [],
        "flags": flagged(rows),
        "lost": lost,
        "config": config,
        "versions": reports[0].get("versions", {}),
    }


def _case_result(path: Path, index: int, sample: dict) -> CaseResult:
    try:
        return CaseResult.from_json(sample)
    except NotACaseResult as exc:
        raise WildInputError(f"{path}: field 'samples[{index}].{exc.field}' {exc.problem}") from None


def _missing_shards(paths: list[Path], reports: list[dict]) -> list[str]:
    """The K/N of each shard no report covers. Reports of different splits, or two reports
    of one shard, are refused outright: no flag makes their union one run."""
    shards = [tuple(report["config"].get("shard") or (1, 1)) for report in reports]
    count = shards[0][1]
    seen: dict[int, Path] = {}
    for path, (k, n) in zip(paths, shards):
        if n != count:
            raise WildInputError(f"{path}: shard {k}/{n} is not one of the {count} shards of {paths[0]}")
        if k in seen:
            raise WildInputError(f"{path}: shard {k}/{n} is given twice (also {seen[k]})")
        seen[k] = path
    return [f"{k}/{count}" for k in range(1, count + 1) if k not in seen]


def _whole_run_selection(paths: list[Path], reports: list[dict]) -> int | None:
    """How many cases the whole run selected before sharding, where the reports say; shards
    of one run all say the same (a different -k or --wild-limit says otherwise)."""
    known = [(path, report["cases"]["selected_before_sharding"]) for path, report in zip(paths, reports)
             if report.get("cases", {}).get("selected_before_sharding") is not None]
    for path, count in known[1:]:
        if count != known[0][1]:
            raise WildInputError(f"{path}: its run selected {count} cases before sharding, {known[0][0]}'s "
                                 f"{known[0][1]}; these are not shards of one run")
    return known[0][1] if known else None


def _why_partial(report: dict) -> str:
    if "complete" not in report:
        return "it does not say it is complete: written by an older pytest-wild"
    cases = report.get("cases", {})
    reason = report.get("stop_reason") or "cases missing"
    return f"{reason}, {cases.get('run', '?')} of {cases.get('selected', '?')} selected cases run"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _comparable(value):
    """Shards may run on different devices and machines (so different checkout paths)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("device", "source")}
    return value


def read_report(path: Path) -> dict:
    """The report at `path`, checked as far as merging reads it, or one line naming the file
    and the field that is wrong."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WildInputError(f"{path}: cannot read report ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise WildInputError(f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise WildInputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise WildInputError(f"{path}: JSON nested too deeply to be a pytest-wild report") from None
    if not isinstance(report, dict):
        raise WildInputError(f"{path}: {_kind(report)}, not an object; is this a pytest-wild report?")
    for key, kind in (("samples", list), ("config", dict)):
        if key not in report:
            raise WildInputError(f"{path}: field {key!r} is missing; is this a pytest-wild report?")
        _expect(path, key, report[key], kind)
    for index, row in enumerate(report["samples"]):
        _expect(path, f"samples[{index}]", row, dict)
        for key, kind in (("id", str), ("modes", dict)):
            if key not in row:
                raise WildInputError(f"{path}: field 'samples[{index}].{key}' is missing")
            _expect(path, f"samples[{index}].{key}", row[key], kind)
    for key, kind in (("lost", list), ("cases", dict), ("complete", bool), ("interrupted", bool)):
        if key in report:
            _expect(path, key, report[key], kind)
    for index, lost in enumerate(report.get("lost", [])):
        _expect(path, f"lost[{index}]", lost, str)
    if "cases" in report:
        count = report["cases"].get("selected_before_sharding")
        if count is not None:
            _expect(path, "cases.selected_before_sharding", count, int)
    if "timing" in report:  # older reports have none
        _expect(path, "timing", report["timing"], dict)
        _expect(path, "timing.cases", report["timing"].get("cases", {}), dict)
        for case, found in report["timing"].get("cases", {}).items():
            _expect(path, f"timing.cases.{case}", found, dict)
            for key, kinds in (("edit_seconds", (int, float)), ("evaluate_seconds", (int, float)), ("questions", int)):
                value = found.get(key)
                if isinstance(value, bool) or not isinstance(value, kinds):
                    raise WildInputError(f"{path}: field 'timing.cases.{case}.{key}' must be a number, not {_kind(value)}")
    shard = report["config"].get("shard")
    if shard is not None and not (isinstance(shard, list) and len(shard) == 2
                                  and all(type(part) is int for part in shard) and 1 <= shard[0] <= shard[1]):
        raise WildInputError(f"{path}: field 'config.shard' must be null or [K, N] with 1 <= K <= N, not {json.dumps(shard)[:40]}")
    return report


def _expect(path: Path, field: str, value, kind: type) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WildInputError(f"{path}: field {field!r} must be {_kind(kind())}, not {_kind(value)}")


def _kind(value) -> str:
    """JSON's name for the type of `value`, with its article."""
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"
