"""What MEND is trained on: edit cases in the QAEdit / CounterFact layout (any file or hub
dataset `--wild-suite` reads), split into training and validation, kept apart from the suites
it will be evaluated on, and fingerprinted so the trained network records what it saw.

A network trained on the cases it is later asked to edit would report generalisation it does
not have; the overlap we can detect (a shared case id, or a shared prompt or rephrase) refuses
the training, and the edit warns when a network's recorded prompts meet the run's cases."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass

from ...cases.case import Case, WildInputError


@dataclass(frozen=True)
class TrainingCase:
    """An edit to learn from: prompt and target, a rephrase of the prompt, an unrelated text."""

    prompt: str
    target: str
    rephrase: str
    unrelated: str


def training_case(case: Case) -> TrainingCase:
    """A case as MEND trains on it: the rephrase is the generalisation target, the first
    locality question with its answer the unrelated text (the original pairs each edit with one
    Natural Questions question and answer)."""
    if not case.rephrase:
        raise WildInputError(f"case {case.id}: MEND trains on the rephrase, and this case has none")
    if not case.locality:
        raise WildInputError(f"case {case.id}: MEND's locality loss needs a locality question, and this case has none")
    loc = case.locality[0]
    return TrainingCase(case.prompt, case.target, case.rephrase, f"{loc.question} {loc.answer}")


def split(cases: list[Case], validation: int, seed: int) -> tuple[list[Case], list[Case]]:
    """(training, validation): a seeded sample of `validation` cases held out, both kept in file order."""
    if not 0 < validation < len(cases):
        raise WildInputError(f"--val-cases: {validation} of {len(cases)} cases leaves no training or no validation")
    held = set(random.Random(seed).sample(range(len(cases)), validation))
    return ([c for i, c in enumerate(cases) if i not in held], [c for i, c in enumerate(cases) if i in held])


def normalised(text: str) -> str:
    """Case and whitespace do not make two prompts different questions."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def prompt_hash(text: str) -> str:
    """A short hash of a normalised prompt: what a trained network records of its data."""
    return hashlib.sha256(normalised(text).encode("utf-8")).hexdigest()[:16]


def texts(case: Case) -> list[str]:
    return [case.prompt] + ([case.rephrase] if case.rephrase else [])


def check_disjoint(training: list[Case], suite_name: str, suite_cases: list[Case]) -> None:
    """Refuse training data that shares a case id, or a prompt or rephrase, with a suite."""
    ids = {case.id for case in suite_cases}
    shared_ids = [case.id for case in training if case.id in ids]
    if shared_ids:
        raise WildInputError(f"--data: {len(shared_ids)} training cases have the id of a case of suite {suite_name} "
                             f"(first: {shared_ids[0]}); train on cases the suite does not evaluate")
    asked = {normalised(text) for case in suite_cases for text in texts(case)}
    shared = [case.id for case in training if any(normalised(text) in asked for text in texts(case))]
    if shared:
        raise WildInputError(f"--data: {len(shared)} training cases ask a prompt or rephrase of suite {suite_name} "
                             f"(first: {shared[0]}); train on cases the suite does not evaluate")


def fingerprint(cases: list[Case]) -> str:
    """SHA-256 of the cases as records, in order: two trainings on the same data agree on it."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(json.dumps(case.as_record(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
