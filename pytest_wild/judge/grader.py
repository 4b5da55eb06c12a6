"""The grader prompt and how its reply is read.

The prompt is our own text, versioned: a verdict is cached under the prompt's version, so a
changed prompt never reuses verdicts given to another. `--wild-judge-prompt FILE` replaces it;
its version is then its text's SHA-256.

Parsing is strict. The reply's first non-blank line, with surrounding whitespace, Markdown
emphasis (`*`, `_`, backticks) and one final period removed, must be exactly CORRECT or
INCORRECT, in any letter case. Anything else ("Correct, because...", "The answer is CORRECT",
an empty reply) is no verdict: the answer is reported unjudged, never guessed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..cases import WildInputError

PROMPT_VERSION = "wild-grader-1"
FIELDS = ("{question}", "{gold}", "{prediction}")
DEFAULT_PROMPT = """You are grading an answer to a question against the reference answer.

Question: {question}
Reference answer: {gold}
Answer to grade: {prediction}

The answer is CORRECT if it states the same fact as the reference answer, even in other words,
in another order, with extra words around it or with a different but equivalent name. It is
INCORRECT if it states another fact, is empty, hedges between several answers, or only
partially matches a reference answer that names several things.

Reply with exactly one word: CORRECT or INCORRECT."""

VERDICTS = ("CORRECT", "INCORRECT")
UNJUDGED = "unjudged"  # an answer's verdict in a report when the judge gave none
_DECORATION = re.compile(r"^[\s*_`]+|[\s*_`]+$")
_FIELD = re.compile(r"\{question\}|\{gold\}|\{prediction\}")


@dataclass(frozen=True)
class Answer:
    """What the judge grades: a question, its reference answer, the model's answer."""

    question: str
    gold: str
    prediction: str


@dataclass(frozen=True)
class Verdict:
    """CORRECT / INCORRECT, or None with why it could not be graded (`unjudged`)."""

    verdict: str | None
    reason: str = ""
    cached: bool = False

    @property
    def unjudged(self) -> bool:
        return self.verdict is None


@dataclass(frozen=True)
class Grader:
    """A prompt template and its version (what a cached verdict is keyed by)."""

    template: str = DEFAULT_PROMPT
    version: str = PROMPT_VERSION

    def prompt(self, question: str, gold: str, prediction: str) -> str:
        """The template with its fields filled in one pass: an answer's own braces stay text."""
        values = {"{question}": question, "{gold}": gold, "{prediction}": prediction}
        return _FIELD.sub(lambda match: values[match.group(0)], self.template)


def grader_from_text(text: str, origin: str) -> Grader:
    """A user's prompt; one line naming `origin` when it lacks a field the judge must see."""
    missing = [field for field in FIELDS if field not in text]
    if missing:
        raise WildInputError(f"{origin}: the grader prompt must contain {', '.join(missing)}")
    return Grader(text, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])


def parse_verdict(reply: str) -> str | None:
    """CORRECT, INCORRECT, or None when the reply is not exactly one of them (module docstring)."""
    for line in reply.splitlines():
        if line.strip():
            word = _DECORATION.sub("", line)
            word = word[:-1] if word.endswith(".") else word
            word = _DECORATION.sub("", word).upper()
            return word if word in VERDICTS else None
    return None
