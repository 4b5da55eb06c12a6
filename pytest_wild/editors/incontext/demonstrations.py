"""IKE's demonstrations: the pool built from training edits, kept apart from the evaluated
suite, and the k nearest to an edit.

The pool is EasyEdit's (`encode_ike_facts`): each training edit gives up to three texts under
its new fact, "New Fact: {prompt} {target}\\nPrompt: ...\\n\\n", one of each published kind:
copy (the prompt with the target), update (the rephrase with the target) and retain (its first
locality question with that question's own answer).

Retrieval is a variant, named as such: EasyEdit embeds the pool and the query with the
sentence-transformers model all-MiniLM-L6-v2 (from the hub) and takes the k best dot products;
no hub is reachable here, so the same query is scored against the same texts with BM25 (the
maintained `bm25s` package), the k best first, ties broken by pool order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...cases.case import Case, WildInputError

KINDS = ("copy", "update", "retain")


def fact(case: Case) -> str:
    return f"{case.prompt} {case.target}"


def query(case: Case) -> str:
    """What the pool is searched with (EasyEdit's query sentence)."""
    return f"New Fact: {fact(case)}\nPrompt: {case.prompt}\n\n"


def lead(case: Case) -> str:
    """The in-context text after the demonstrations: the new fact, then the question follows."""
    return f"New Fact: {fact(case)}\nPrompt: "


def pool_texts(cases: list[Case]) -> list[str]:
    """Every demonstration of the training cases, in order (copy, update, retain per case)."""
    texts = []
    for case in cases:
        head = f"New Fact: {fact(case)}\nPrompt: "
        texts.append(f"{head}{fact(case)}\n\n")
        if case.rephrase:
            texts.append(f"{head}{case.rephrase} {case.target}\n\n")
        if case.locality:
            texts.append(f"{head}{case.locality[0].question} {case.locality[0].answer}\n\n")
    return texts


def read_cases(spec: str) -> list[Case]:
    """The training edits of `demonstrations: FILE` (a QAEdit or CounterFact .json/.jsonl);
    a link is refused: hyperparameter files arrive in pull requests."""
    from ...cases.loaders import load_file

    path = Path(spec)
    if path.is_symlink():
        raise WildInputError(f"demonstrations: {spec}: a link, refused")
    if path.suffix not in (".json", ".jsonl"):
        raise WildInputError(f"demonstrations: {spec}: expected a .json or .jsonl file of edit cases")
    if not path.is_file():
        raise WildInputError(f"demonstrations: {spec}: not found")
    cases = load_file(path)
    if not cases:
        raise WildInputError(f"demonstrations: {spec}: holds no case")
    return cases


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def check_disjoint(training: list[Case], spec: str, suite_cases: list[Case]) -> None:
    """Refuse demonstrations that share a case id, or a prompt or rephrase, with the suite:
    a demonstration of the very edit would be the answer written out."""
    ids = {case.id for case in suite_cases}
    asked = {normalised(text) for case in suite_cases for text in (case.prompt, case.rephrase) if text}
    for case in training:
        if case.id in ids or any(normalised(text) in asked for text in (case.prompt, case.rephrase) if text):
            shared = "the id" if case.id in ids else "a prompt or rephrase"
            raise WildInputError(f"demonstrations: {spec}: case {case.id} shares {shared} with a case of the evaluated "
                                 "suite; demonstrations must come from edits the suite does not evaluate")


@dataclass
class Retriever:
    """BM25 over the pool's texts."""

    texts: list[str]
    index: object

    @classmethod
    def over(cls, texts: list[str]) -> Retriever:
        import bm25s

        index = bm25s.BM25()
        index.index(_tokens(texts), show_progress=False)
        return cls(texts, index)

    def nearest(self, text: str, k: int) -> list[str]:
        """The k texts scored highest for `text`, best first (ties: pool order)."""
        if k == 0:
            return []
        scores = self.index.get_scores(_tokens([text])[0])
        order = sorted(range(len(self.texts)), key=lambda i: (-float(scores[i]), i))
        return [self.texts[i] for i in order[:k]]


def _tokens(texts: list[str]) -> list[list[str]]:
    """Lower-cased words, no stopword list (the pool's "New Fact" and "Prompt" are in every text
    and weigh nothing under BM25 anyway)."""
    import bm25s

    return bm25s.tokenize(texts, stopwords=None, return_ids=False, show_progress=False)
