"""The one case type every loader produces and every later step consumes."""

from __future__ import annotations

import hashlib
import re
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


PLAIN_CASE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                              *(f"lpt{i}" for i in range(10))})


def case_key(case_id: str) -> str:
    """The golden's file name (without .json) for a case id: the id itself when it is a plain
    name on every file system (lower-case ASCII letters, digits, ".", "_", "-", at most 100
    characters, not a reserved Windows name, no trailing dot); otherwise a readable part of
    it, "+" (which no plain name contains) and 16 hex digits of its SHA-256. So distinct ids
    never share a file, not even on case-insensitive file systems, and any id can be
    recorded."""
    text = str(case_id)
    if PLAIN_CASE_ID.fullmatch(text) and not text.endswith(".") and text.split(".")[0] not in WINDOWS_RESERVED:
        return text
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "case"
    return f"{readable}+{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


NOT_IN_A_NODE_ID = re.compile(r"\[|\]|::|\s|^$")


def item_name(case_id: str) -> str:
    """The case's test name: its id as it is (`tinyworld.yaml::tw-0042`, the form pytest's
    own example of a YAML collector uses), so `-v` prints it, `--lf` finds it again and it
    can be pasted back on the command line; an id holding what a node id cannot carry
    (brackets, which pytest 9.2 reads as parameters, "::", white space) gets its golden's
    file key instead, which is unique too."""
    return case_key(case_id) if NOT_IN_A_NODE_ID.search(case_id) else case_id
