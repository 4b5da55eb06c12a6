"""Edit requests, tokenised: every prompt tokenised once, the fact token found on exactly the
ids fed to the model.

The fact token (the subject's last token, as published) is read off the fast tokenizer's
character offsets of those very ids (BOS included); the rewriting inputs are built later by
concatenating ids (prompt ids ++ target ids[:-1]), never by re-tokenising decoded text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...cases.case import Case, WildInputError
from ...model.tokens import target_ids

KL_PROMPT = "{} is a"
FACT_TOKENS = ("subject_last", "subject_first", "last")


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt as fed to the model and `lookup`, the index of its fact token."""

    ids: tuple[int, ...]
    lookup: int


@dataclass(frozen=True)
class Request:
    """One edit, tokenised: `prompts[0]` is the bare prompt, the others the prompt behind each
    context template; keys are averaged within each of `groups` (indices into `prompts`), then
    over the groups. `kl` is "{subject} is a", where the KL term holds the model's output."""

    case: Case
    target: tuple[int, ...]
    prompts: tuple[TokenizedPrompt, ...]
    groups: tuple[tuple[int, ...], ...]
    kl: TokenizedPrompt


def _subject_span(text: str, subject: str, where: str) -> tuple[int, int]:
    start = text.find(subject) if subject else -1
    if start < 0:
        raise WildInputError(f"{where}: the subject {subject!r} does not occur in the prompt {text!r}")
    return start, start + len(subject)


def locate(tokenizer, text: str, span: tuple[int, int], strategy: str) -> TokenizedPrompt:
    """Tokenise `text` and find the fact token: the last (or first) token overlapping the subject's
    characters `span`, read off the offsets of the very ids the model gets (BOS included)."""
    if strategy not in FACT_TOKENS:
        raise WildInputError(f"fact_token: {strategy!r} is not one of {', '.join(FACT_TOKENS)}")
    try:
        encoded = tokenizer(text, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError):
        encoded, offsets = tokenizer(text), None
    ids = tuple(encoded["input_ids"])
    if strategy == "last":
        return TokenizedPrompt(ids, len(ids) - 1)
    start, end = span
    if offsets is None:  # slow tokenizer: count the tokens of the text up to the subject's end
        before = len(tokenizer(text[:end])["input_ids"])
        index = before - 1 if strategy == "subject_last" else len(tokenizer(text[:start])["input_ids"])
        return TokenizedPrompt(ids, min(index, len(ids) - 1))
    overlapping = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not overlapping:
        raise WildInputError(f"cannot find the subject's tokens in {text!r}")
    return TokenizedPrompt(ids, overlapping[-1] if strategy == "subject_last" else overlapping[0])


def prepare(tokenizer, case: Case, templates: Sequence[str], groups: Sequence[Sequence[int]],
            strategy: str = "subject_last") -> Request:
    """Tokenise a case behind every context template ("{}" marks where the prompt goes)."""
    where = f"case {case.id}"
    subject_start, subject_end = _subject_span(case.prompt, case.subject, where)
    prompts = []
    for template in templates:
        prefix = template[: template.index("{}")]
        text = template.replace("{}", case.prompt, 1)
        prompts.append(locate(tokenizer, text, (len(prefix) + subject_start, len(prefix) + subject_end), strategy))
    target = tuple(target_ids(tokenizer, case.prompt, case.target))
    if not target:
        raise WildInputError(f"{where}: the target {case.target!r} has no tokens")
    kl_text = KL_PROMPT.format(case.subject)
    kl = locate(tokenizer, kl_text, (0, len(case.subject)), strategy)
    return Request(case, target, tuple(prompts), tuple(tuple(g) for g in groups), kl)


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0
