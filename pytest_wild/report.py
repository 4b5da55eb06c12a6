"""Aggregates, the terminal table and the JSON report, in the shape lm-evaluation-harness
users know: `results` per mode and metric, per-case `samples`, and the `config` that
produced them."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from .metrics import EDIT_METRICS, TABLE_METRICS


def aggregate(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """mode -> metric -> {"value", "n", "successes"} over the cases that have the metric."""
    modes: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for mode, scores in row["modes"].items():
            for metric in EDIT_METRICS:
                value = scores.get(metric)
                if value is not None:
                    modes.setdefault(mode, {}).setdefault(metric, []).append(value)
    return {
        mode: {
            metric: {"value": sum(values) / len(values), "n": len(values),
                     "successes": sum(1 for v in values if v >= 1.0)}
            for metric, values in sorted(metrics.items())
        }
        for mode, metrics in modes.items()
    }


def unevaluable(rows: list[dict]) -> dict[str, str]:
    """Case id -> why the case does not fit the model window (its row has no scores)."""
    return {row["id"]: row["not_evaluable"] for row in rows if row.get("not_evaluable")}


def table(results: dict, order: list[str]) -> list[str]:
    """The paper's main table: one line per evaluation mode, metrics side by side."""
    header = f"{'mode':<16}" + "".join(f"{m:>24}" for m in TABLE_METRICS)
    lines = [header, "-" * len(header)]
    for mode in order:
        metrics = results.get(mode, {})
        cells = []
        for metric in TABLE_METRICS:
            cell = metrics.get(metric)
            text = "-" if cell is None else f"{cell['value']:.3f} ({cell['successes']}/{cell['n']})"
            cells.append(f"{text:>24}")
        lines.append(f"{mode:<16}" + "".join(cells))
    return lines


def markdown_table(results: dict, order: list[str], title: str) -> list[str]:
    """The same table in Markdown, for a CI job summary."""
    lines = [f"### {title}", "", "| mode | " + " | ".join(TABLE_METRICS) + " |",
             "|---|" + "---:|" * len(TABLE_METRICS)]
    for mode in order:
        cells = []
        for metric in TABLE_METRICS:
            cell = results.get(mode, {}).get(metric)
            cells.append("-" if cell is None else f"{cell['value']:.3f} ({cell['successes']}/{cell['n']})")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write to a uniquely named temporary file beside `path`, flush it to disk, then rename:
    a crash (or a concurrent reader) never sees half a file where a whole one was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
