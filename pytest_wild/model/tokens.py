"""How an answer is tokenised after its question, and what the model's generation config
says about ending and searching, shared by the engine, the model loader and the editors."""

from __future__ import annotations

from ..cases.case import WildInputError


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


# generation-config fields that turn greedy `generate` into another search, which the engine
# does not run: (field, the value that leaves greedy decoding alone)
_OTHER_SEARCHES = (
    ("num_beams", 1),
    ("num_beam_groups", 1),
    ("penalty_alpha", None),
    ("guidance_scale", None),
    ("dola_layers", None),
    ("watermarking_config", None),
)


def check_greedy(generation_config, where: str) -> None:
    """Refuse a generation config that asks for a search other than greedy decoding."""
    for name, plain in _OTHER_SEARCHES:
        value = getattr(generation_config, name, plain)
        if value not in (plain, None) and not (name == "guidance_scale" and value == 1):
            raise WildInputError(
                f"{where}: generation_config.{name} = {value!r} asks for another search than greedy decoding, "
                f"which WILD's engine does not run; set it to {plain!r} in the model's generation_config.json"
            )
