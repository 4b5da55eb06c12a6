"""The edits a run missed, kept in pytest's cache so that `--wild-last-missed` reruns just them.

A missed edit is an expected failure (`x`), not a failed test, so pytest's `--lf` never
selects it: `--lf` reruns the cases whose test failed (a changed golden, a per-case threshold,
an error), and when none did it reruns everything. This module does for missed edits what
`--lf` does for failures, through the same cache (`config.cache`, `.pytest_cache/`), which
pytest's own `cacheprovider` plugin owns and `--cache-clear` empties.

A case is missed when one of the table's metrics (reliability, generalization, locality)
scores below 1 in the run's primary mode: the same test as the `x` its test reports, taken on
the row after the end of the run, so in a judge run it is the judge's verdict.

Misses are kept per configuration (editor, model, suite, context, primary mode, metric): the
edits MEMIT missed are not FT-M's. Like `--lf`, each run updates what it evaluated and keeps
the rest, so a rerun of the missed edits forgets those that now land.
"""

from __future__ import annotations

from ..scores.metrics import TABLE_METRICS
from ..scores.record import CaseResult

CACHE_KEY = "pytest-wild/lastmissed"


def missed_metrics(row: CaseResult, mode: str) -> list[str]:
    """The table's metrics a case's row scored below 1 on in `mode`."""
    scores = row.modes.get(mode, {})
    return [metric for metric in TABLE_METRICS if scores.get(metric) is not None and scores[metric] < 1.0]


def configuration(options) -> str:
    """The key of a configuration's misses: what decides whether an edit lands and how it
    is scored."""
    return " ".join(f"{name}={value}" for name, value in (
        ("editor", options.editor), ("model", options.model or "tinyworld"), ("suite", options.suite or "tinyworld"),
        ("context", options.context or "suite"), ("mode", options.primary_mode), ("metric", options.metric)))


def recall(cache, options) -> list[str] | None:
    """The case ids the last runs of this configuration missed, in the order recorded; None
    when no run of it recorded any outcome."""
    kept = cache.get(CACHE_KEY, {})
    entry = kept.get(configuration(options)) if isinstance(kept, dict) else None
    if not isinstance(entry, list) or not all(isinstance(case_id, str) for case_id in entry):
        return None
    return entry


def remember(cache, options, rows: list[CaseResult]) -> None:
    """Update this configuration's misses with the cases this run evaluated: the missed are
    added, the others (landed, or not evaluable) removed, cases not evaluated kept."""
    evaluated = {row.id for row in rows}
    missed = [row.id for row in rows if not row.not_evaluable and missed_metrics(row, options.primary_mode)]
    earlier = recall(cache, options) or []
    kept = cache.get(CACHE_KEY, {})
    kept = dict(kept) if isinstance(kept, dict) else {}
    kept[configuration(options)] = [case_id for case_id in earlier if case_id not in evaluated] + missed
    cache.set(CACHE_KEY, kept)
