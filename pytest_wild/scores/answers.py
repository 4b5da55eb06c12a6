"""Answer scoring: SQuAD-style exact match and token F1, and the flags for targets the
published stop rule can never match."""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation, in its published order: lowercase, drop ASCII punctuation,
    drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, target: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(target))


def f1(prediction: str, target: str) -> float:
    """SQuAD token F1 over normalised whitespace tokens."""
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(target).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_beside(answers: dict, target: str) -> dict[str, float | None]:
    """Token F1 of one case's answers in one mode, to read beside exact match where a model
    answers in sentences (a real instruct model puts the target inside one): reliability and
    generalization against the target, locality of the first locality answer after the edit
    against the one before (1 where both normalise to the same answer; SQuAD's F1 of two empty
    answers would be 0)."""
    first = (answers.get("locality") or [None])[0]
    if first is None:
        locality = None
    elif normalize_answer(first["after"]) == normalize_answer(first["before"]):
        locality = 1.0
    else:
        locality = f1(first["after"], first["before"])
    return {"reliability_f1": f1(answers["prompt"]["after"], target),
            "generalization_f1": f1(answers["rephrase"]["after"], target) if "rephrase" in answers else None,
            "locality_f1": locality}


# metrics.ANSWER_SCORES, by name. Under `judge` the answers carry exact match until the judge
# grades them all together at the end of the run (pytest_wild.judge.grading).
SCORES = {"em": exact_match, "f1": f1, "judge": exact_match}


def target_flags(target: str, stop_rule: str) -> list[str]:
    """Why a target cannot be matched under a stop rule, or is read oddly by a published
    estimator, so reports surface the published code's flaws instead of counting them as
    editor failures."""
    flags = []
    if target.startswith(" "):
        flags.append("double-space: the target starts with a space, so the published teacher-forced reading "
                     "scores the prompt, two spaces and the target")
    if stop_rule == "published" and "." in target.strip().rstrip("."):
        flags.append("inner-stop: the target contains '.', where the published rule stops")
    if not normalize_answer(target):
        flags.append("empty-normalised: the target normalises to the empty string")
    return flags


def inner_stops(targets: list[str], stop_rule: str) -> int:
    """How many targets the stop rule can never match whole (flagged inner-stop)."""
    return sum(any(flag.startswith("inner-stop") for flag in target_flags(target, stop_rule)) for target in targets)
