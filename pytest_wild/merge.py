"""Merge the JSON reports of sharded runs into the report of the whole run."""

from __future__ import annotations

import json
from pathlib import Path

from .cases import WildInputError
from .finish import flagged
from .report import aggregate

# Configuration that must agree between shards for their union to be one run.
MUST_AGREE = ("model", "editor", "suite", "evaluation", "only_failed", "batch_size", "seed", "dtype")


def merge_reports(paths: list[Path]) -> dict:
    reports = [_read(path) for path in paths]
    first = reports[0]["config"]
    for path, report in zip(paths[1:], reports[1:]):
        for key in MUST_AGREE:
            if _comparable(report["config"].get(key)) != _comparable(first.get(key)):
                raise WildInputError(f"{path}: config.{key} differs from {paths[0]}'s; these are not shards of one run")
    samples: dict[str, dict] = {}
    for path, report in zip(paths, reports):
        for row in report["samples"]:
            if row["id"] in samples:
                raise WildInputError(f"{path}: case {row['id']!r} is also in an earlier report")
            samples[row["id"]] = row
    rows = [samples[key] for key in sorted(samples)]
    config = {**first, "shard": None, "merged_from": [str(p) for p in paths]}
    return {
        "results": aggregate(rows),
        "samples": rows,
        "gates": [],
        "flags": flagged(rows),
        "lost": sorted(lost for report in reports for lost in report.get("lost", [])),
        "config": config,
        "versions": reports[0].get("versions", {}),
    }


def _comparable(value):
    """Shards may run on different devices and machines (so different checkout paths)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("device", "source")}
    return value


def _read(path: Path) -> dict:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WildInputError(f"{path}: cannot read report ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise WildInputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    for key in ("samples", "config"):
        if key not in report:
            raise WildInputError(f"{path}: field {key!r} is missing; is this a pytest-wild report?")
    return report
