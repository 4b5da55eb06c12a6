"""Which cases fit the model's context window.

A question longer than the window cannot be answered, taught or read teacher-forced: the
position embeddings run out (an IndexError on CPU, a device-side assert that kills the CUDA
context on a GPU). Such a case is not a failure of the editor either, so it is reported as
not evaluable, with the token counts, and left out of the aggregates, before anything feeds
it to the model.

What must fit, for each question asked: the question as the run puts it (the context)
followed by its expected answer, so the model has room to give that answer; for the edit
prompt also the tokens the editor's own prompts put before it (context templates).

A case is skipped only for what the published estimators ask: the edit prompt, the rephrase
and the first locality question (the paper's `locality` reads no other). A later locality
question that does not fit is left out of the case instead, and the metrics that ask every
locality question (`locality_all`, `locality_em`, the judge's `locality_judge`) are not
evaluable for that case.
"""

from __future__ import annotations

from collections.abc import Callable

from .case import Case


def model_window(config) -> int | None:
    """The number of positions the model can read, where its config says so."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def why_not_evaluable(case: Case, tokenizer, window: int | None, context: Callable[[str], str],
                      edit_prefix: int = 0, every_locality: bool = False, note: str = "") -> str | None:
    """None when every question the published estimators ask fits with its answer; else one
    line with the counts, e.g. "prompt of 137 tokens (141 with its answer), model window 128".
    `every_locality`: every locality question must fit, not only the first (an in-context
    editor's prefix goes before each, and none may overflow); `note` says how they were asked."""
    asked = [("prompt", case.prompt, case.target, edit_prefix)]
    if case.rephrase is not None:
        asked.append(("rephrase", case.rephrase, case.target, 0))
    locality = case.locality if every_locality else case.locality[:1]
    asked += [(f"locality question {i + 1}", loc.question, loc.answer, 0) for i, loc in enumerate(locality)]
    why = next((why for why in (_unfit(tokenizer, window, context, *item) for item in asked) if why), None)
    return f"{why} ({note})" if why and note else why


def locality_left_out(case: Case, tokenizer, window: int | None, context: Callable[[str], str]) -> dict[int, str]:
    """The locality questions after the first that do not fit with their answers, by index,
    each with its line: they are left out of the case (only our all-questions metrics ask them)."""
    found = {}
    for i, loc in enumerate(case.locality[1:], start=1):
        why = _unfit(tokenizer, window, context, f"locality question {i + 1}", loc.question, loc.answer, 0)
        if why:
            found[i] = why
    return found


def _unfit(tokenizer, window: int | None, context: Callable[[str], str], field: str, question: str, answer: str,
           prefix: int) -> str | None:
    if window is None:
        return None
    longest = max(context(question), question, key=lambda text: len(_ids(tokenizer, text)))
    alone = len(_ids(tokenizer, longest))
    needed = len(_ids(tokenizer, longest + " " + answer.lstrip(" "))) + prefix
    if needed <= window:
        return None
    extra = " and the editor's prefix" if prefix else ""
    return f"{field} of {alone} tokens ({needed} with its answer{extra}), model window {window}"


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, verbose=False)["input_ids"]  # no "longer than the maximum" warning: measured here
