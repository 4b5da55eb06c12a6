"""Context templates: short texts sampled from the model that the edit's prompt is put behind,
so the key and value generalise beyond the bare prompt (ROME's `get_context_templates`).

Sampled top-k 5 with a fixed seed and kept in the model's `EditorCache`, so every run, worker
and edit of one model gets the same templates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..api import EditorCache, cached

TEMPLATE_PROMPTS = ("The", "Therefore", "Because", "I", "You")
TEMPLATE_SEED = 0


def context_templates(model, tokenizer, length_params: Sequence[Sequence[int]],
                      cache: EditorCache | None = None) -> list[str]:
    """["{}"] plus, for each [length, n] in `length_params`, n texts of `length` tokens (the
    prompt word included) sampled top-k 5 from the model after "The", "Therefore", "Because",
    "I" and "You" in turn, braces blanked, followed by ". {}". Kept in `cache` (None: sampled
    again)."""
    params = tuple(tuple(int(x) for x in pair) for pair in length_params)

    def sample() -> list[str]:
        templates = ["{}"]
        for length, count in params:
            texts = _sample_texts(model, tokenizer, length, count)
            templates += [t.replace("{", " ").replace("}", " ") + ". {}" for t in texts]
        return templates

    return list(cached(cache, ("context templates", params), sample))


def template_prefix(model, tokenizer, hp, cache: EditorCache | None = None) -> int:
    """The most tokens a context template puts before the prompt (one more for the seam
    where the template's text and the prompt are tokenised together)."""
    templates = context_templates(model, tokenizer, hp.context_template_length_params, cache)
    bare = len(tokenizer("")["input_ids"])
    return max(len(tokenizer(t.replace("{}", ""))["input_ids"]) - bare for t in templates) + 1


@torch.no_grad()
def _sample_texts(model, tokenizer, length: int, count: int, top_k: int = 5) -> list[str]:
    device = next(model.parameters()).device
    texts = []
    for p, prompt in enumerate(TEMPLATE_PROMPTS):
        n = count // len(TEMPLATE_PROMPTS) + (1 if p < count % len(TEMPLATE_PROMPTS) else 0)
        if n == 0:
            continue
        generator = torch.Generator(device="cpu").manual_seed(TEMPLATE_SEED * 1000 + length * 10 + p)
        ids = torch.tensor([tokenizer(prompt)["input_ids"]] * n, device=device)
        while ids.shape[1] < length:
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, -1]
            logits = logits.float().cpu()
            top = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
            choice = torch.multinomial(top.values.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, top.indices.gather(1, choice).to(device)], dim=1)
        texts += tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)
    return texts
