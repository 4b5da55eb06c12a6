"""How an answer is tokenised after its question, shared by the engine and the editors."""

from __future__ import annotations


def target_ids(tokenizer, context: str, target: str) -> list[int]:
    """Token ids of " target" as they follow `context`.

    Read off the concatenated ids (never by re-tokenising the pieces alone), so byte-level
    BPE and SentencePiece tokenizers both give the first answer token the model would see.
    A target that already starts with a space gets no second one.
    """
    answer = " " + target.lstrip(" ")
    ctx = tokenizer(context)["input_ids"]
    full = tokenizer(context + answer)["input_ids"]
    if full[: len(ctx)] == ctx and len(full) > len(ctx):
        return full[len(ctx) :]
    return tokenizer(answer, add_special_tokens=False)["input_ids"]


def config_eos_ids(generation_config) -> list[int]:
    """The generation config's end-of-sequence ids (it may give one or a list)."""
    found = generation_config.eos_token_id
    return [int(i) for i in (found if isinstance(found, (list, tuple)) else [] if found is None else [found])]
