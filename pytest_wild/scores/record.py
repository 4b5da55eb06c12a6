"""One case's result, the record every later step reads: built by the evaluation (a sequence adds
its `sequence` entry), carried to the controller inside the case's test report, aggregated,
written into the report's `samples`, turned into a golden, merged from shards, compared.

Its JSON is written and read here only (`to_json`, `from_json`), so each key is spelt once; the
report's JSON Schema (`schemas/report.schema.json`, `caseResult`) describes the same shape for
readers outside Python. Optional parts are absent from the JSON, not null, as reports have always
had them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ModeScores = dict[str, Any]  # metric -> score (None: not measurable for this case), and "answers": what was read

# The keys every record has, in the order they are written.
REQUIRED = ("id", "source", "prompt", "target", "subject", "rephrase", "flags", "modes", "teacher_forced")
OPTIONAL = ("in_context", "not_evaluable", "locality_not_evaluable", "timing", "sequence")


class NotACaseResult(ValueError):
    """`from_json` met a record it cannot read; `field` names the key, for the caller's one line."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field, self.problem = field, problem


@dataclass
class CaseResult:
    id: str  # the case's id; in a run of several orders, `<id>@order-<n>`
    source: str | None  # where the case comes from (NQ, TriviaQA...; held-out or counterfactual in tinyworld)
    prompt: str
    target: str
    subject: str | None
    rephrase: str | None
    flags: list[str]  # targets the stop rule can never match, as `name: why`
    modes: dict[str, ModeScores] = field(default_factory=dict)  # mode label -> the case's scores under it
    teacher_forced: dict[str, float | None] = field(default_factory=dict)  # "prompt"/"rephrase" -> token accuracy
    in_context: str | None = None  # an in-context editor's (IKE's) prompt, put before every question asked after the edit
    not_evaluable: str | None = None  # why the case never reached the model (too long for its window)
    locality_not_evaluable: list[str] | None = None  # the locality questions left out, and why
    timing: dict | None = None  # seconds of its edit and of its answers; kept out of the report's samples
    sequence: dict | None = None  # in a sequence: its place, its scores right after its edit and at each checkpoint

    def to_json(self, timing: bool = True) -> dict:
        """The record as JSON: every required key, then the optional ones it has; `timing=False`
        for the report's samples, which keep the timings apart (report.timing_by_case)."""
        data = {key: getattr(self, key) for key in REQUIRED}
        for key in OPTIONAL:
            value = getattr(self, key)
            if value is not None and (timing or key != "timing"):
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: dict) -> CaseResult:
        """The record from its JSON (a report's sample, a row that travelled from an xdist worker);
        `NotACaseResult` names the first key missing or unknown."""
        for key in REQUIRED:
            if key not in data:
                raise NotACaseResult(key, "is missing")
        unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise NotACaseResult(unknown[0], "is not part of a case's result")
        return cls(**data)
