"""The one case type every loader produces and every later step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


class WildInputError(Exception):
    """Bad user input (data, suite, hyperparameter file or option): shown as one line."""


@dataclass(frozen=True)
class Locality:
    """An unrelated question whose answer an edit must leave alone."""

    question: str
    answer: str


@dataclass(frozen=True)
class Case:
    """One edit request in the QAEdit shape."""

    id: str
    prompt: str
    target: str
    subject: str
    rephrase: str | None
    locality: tuple[Locality, ...]
    source: str = ""
    ground_truth: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def as_record(self) -> dict:
        """The case in the QAEdit JSON layout (for reports and goldens)."""
        record = {
            "id": self.id,
            "source": self.source,
            "prompt": self.prompt,
            "target": self.target,
            "subject": self.subject,
            "rephrase": self.rephrase,
            "locality": [{"loc": loc.question, "loc_ans": loc.answer} for loc in self.locality],
        }
        if self.ground_truth is not None:
            record["ground_truth"] = self.ground_truth
        return record
