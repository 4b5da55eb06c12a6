"""The grader prompt and how its reply is read.

Two prompts are built in. Ours (the default, version `wild-grader-1`) asks for one word,
CORRECT or INCORRECT. The paper's (`--wild-judge-prompt published`, the published estimator:
the prompt of the paper's code, `llm_judge` in its `evaluate_utils.py`, which sends it to
gpt-4o-mini after an empty system turn) asks for a letter, A for CORRECT and B for INCORRECT;
it is reproduced word for word, only its three fields renamed to ours. `--wild-judge-prompt
FILE` replaces either with the user's text, which must ask for CORRECT or INCORRECT; its version
is then its text's SHA-256. A verdict is cached under its prompt's version, so a changed prompt
never reuses verdicts given to another.

Our prompt's reply is read strictly: its first non-blank line, with surrounding whitespace,
Markdown emphasis (`*`, `_`, backticks) and one final period removed, must be exactly one of
its two words (CORRECT or INCORRECT, or a prompt file's), in any letter case. It is read by a
hand-written scan, linear in the reply's length: a reply is untrusted, and a regular expression
anchored at the end of a line of spaces backtracks quadratically (20,000 spaces took 49 s). Anything else
("Correct, because...", "The answer is CORRECT", an empty reply) is no verdict: the answer is
reported unjudged, never guessed.

The paper's prompt is read and asked as the paper's code does (`llm_ans == "A"` on the
message content, nothing stripped; a request of model, temperature 0 and messages, no token
limit): CORRECT only when the reply is exactly "A", INCORRECT when it is exactly "B". The paper
counts every other reply incorrect; here it is unjudged (never correct), so "a", "A.", "**A**",
" A", "A\n" or "A\nB" never count as CORRECT."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..cases.case import WildInputError

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

PUBLISHED_VERSION = "published-llm-judge-1"
PUBLISHED_PROMPT = """Your job is to look at a question, a gold target, and a predicted answer, and then assign a grade of either ["CORRECT", "INCORRECT"].

The following are examples of CORRECT predicted answers.
```
Question: What are the names of Barack Obama's children?
Gold target: Malia Obama and Sasha Obama
Predicted answer 1: sasha and malia obama
Predicted answer 2: Malia and Sasha Obama are the names of Barack Obama's children.
```
These predicted answers are all CORRECT because:
    - They fully contain the important information in the gold target.
    - They do not contain any information that contradicts the gold target.

The following are examples of INCORRECT predicted answers.
```
Question: What are the names of Barack Obama's children?
Gold target: Malia and Sasha
Predicted answer 1: Malia.
Predicted answer 2: Malia, Sasha, and Susan.
Predicted answer 3: Malia and Sasha, Malia and Sasha, Malia and Sasha, Malia and Sasha (repeated answer)
```
These predicted answers are all INCORRECT because:
    - A factual statement in the answer contradicts the gold target or contain repeated answer.


Here is a sample. Simply reply with either CORRECT or INCORRECT.

```
Question: {question}
Gold target: {gold}
Predicted answer: {prediction}
```

According to the gold target, please grade the predicted answer of this question as one of:
A: CORRECT
B: INCORRECT

Just return the letters "A" or "B", with no text around it."""

VERDICTS = ("CORRECT", "INCORRECT")
REPLY_TOKENS = 8  # what a judge may write: one word (or letter) and a stop
UNJUDGED = "unjudged"  # an answer's verdict in a report when the judge gave none
_DECORATION = "*_`"  # Markdown emphasis around a verdict
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
    words: tuple[str, str] = VERDICTS  # what the reply says for CORRECT, and for INCORRECT
    system: str | None = None  # a system turn before the prompt (the paper's code sends an empty one)
    exact: bool = False  # the reply must be one of the words, byte for byte (the paper's reading)
    max_tokens: int | None = REPLY_TOKENS  # the request's token limit; None sends none (the paper's request)

    def prompt(self, question: str, gold: str, prediction: str) -> str:
        """The template with its fields filled in one pass: an answer's own braces stay text."""
        values = {"{question}": question, "{gold}": gold, "{prediction}": prediction}
        return _FIELD.sub(lambda match: values[match.group(0)], self.template)

    def messages(self, answer: Answer) -> list[dict[str, str]]:
        """The chat turns the judge is given for one answer."""
        turns = [{"role": "system", "content": self.system}] if self.system is not None else []
        return turns + [{"role": "user", "content": self.prompt(answer.question, answer.gold, answer.prediction)}]

    def read(self, reply: str) -> str | None:
        """CORRECT, INCORRECT, or None when the reply is not exactly one of this prompt's words."""
        word = (reply if reply in self.words else None) if self.exact else parse_verdict(reply, self.words)
        return None if word is None else VERDICTS[self.words.index(word)]

    def verdict(self, reply: str) -> Verdict:
        """The reply as a verdict: unjudged, with why, when it is not one of this prompt's words."""
        found = self.read(reply)
        return Verdict(found, "" if found else f"no verdict in the reply (not {' or '.join(self.words)})")


PUBLISHED = Grader(PUBLISHED_PROMPT, PUBLISHED_VERSION, ("A", "B"), "", exact=True, max_tokens=None)


def grader_from_text(text: str, origin: str) -> Grader:
    """A user's prompt; one line naming `origin` when it lacks a field the judge must see."""
    missing = [field for field in FIELDS if field not in text]
    if missing:
        raise WildInputError(f"{origin}: the grader prompt must contain {', '.join(missing)}")
    return Grader(text, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])


def parse_verdict(reply: str, words: tuple[str, ...] = VERDICTS) -> str | None:
    """The one of `words` the reply's first non-blank line is, or None (module docstring)."""
    for line in reply.splitlines():
        if line and not line.isspace():
            start, end = _undecorated(line, 0, len(line))
            if start < end and line[end - 1] == ".":
                start, end = _undecorated(line, start, end - 1)
            word = line[start:end].upper()
            return word if word in words else None
    return None


def _undecorated(line: str, start: int, end: int) -> tuple[int, int]:
    """`line[start:end]` without whitespace and emphasis at either end, as (start, end): each
    character is looked at once."""
    while start < end and (line[start].isspace() or line[start] in _DECORATION):
        start += 1
    while end > start and (line[end - 1].isspace() or line[end - 1] in _DECORATION):
        end -= 1
    return start, end
