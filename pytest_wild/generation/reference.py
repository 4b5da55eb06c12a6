"""The paper's code, kept as the yardstick the engine is tested and benchmarked against: the
published WILD loop (one question at a time, no KV cache, `transformers`' own stop strings)
and its two synthetic readings (teacher-forced, and GRACE's free generation)."""

from __future__ import annotations

import torch

from .engine import MAX_NEW_TOKENS, Generation
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


@torch.no_grad()
def reference_teacher_forced(model, tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """The published teacher-forced reading, written as the paper's code (EasyEdit's
    `test_prediction_acc`) computes it for one record: `prompt + ' ' + target` tokenised with
    left padding, the prompt's length counted as its non-pad tokens plus the padding, labels
    after it and the argmax one position earlier. Returns (labels, predicted)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        joint = tokenizer([prompt + " " + target], padding=True, return_tensors="pt").to(next(model.parameters()).device)
        alone = tokenizer([prompt], padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    pad = tokenizer.pad_token_id
    prompt_len = int((alone["input_ids"][0] != pad).sum()) + int((joint["input_ids"][0].cpu() == pad).sum())
    answers = model(**joint).logits.argmax(-1)[0].tolist()
    labels = joint["input_ids"][0].tolist()
    return labels[prompt_len:], answers[prompt_len - 1 : -1]


@torch.no_grad()
def reference_generated(model, tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """The published free-generation reading, written as the paper's code (EasyEdit's
    `test_prediction_acc` with `vanilla_generation=True`, its reading of GRACE) computes it for
    one record: the target encoded alone without special tokens, `generate` greedy and uncached
    for that many new tokens with no stop string, the output's last that-many tokens. Returns
    (target ids, those tokens)."""
    wanted = tokenizer.encode(target, add_special_tokens=False)
    inputs = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    output = model.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=len(wanted),
        pad_token_id=tokenizer.eos_token_id,
        do_sample=False,
        use_cache=False,
    )
    return wanted, output[0].tolist()[-len(wanted):]
