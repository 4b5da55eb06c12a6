"""The published WILD loop, kept as the yardstick the engine is tested and benchmarked
against: one question at a time, no KV cache, `transformers`' own stop strings."""

from __future__ import annotations

import torch

from .generation import MAX_NEW_TOKENS, Generation
from .stopping import finish_text


@torch.no_grad()
def reference_generate(model, tokenizer, context: str, max_new_tokens: int = MAX_NEW_TOKENS) -> Generation:
    inputs = tokenizer(context, return_tensors="pt").to(next(model.parameters()).device)
    eos = tokenizer.eos_token
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        use_cache=False,
        stop_strings=[".", "\n", eos],
        tokenizer=tokenizer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    return Generation(text=finish_text(tokenizer.decode(tokens), "published", eos), token_ids=tuple(tokens))
