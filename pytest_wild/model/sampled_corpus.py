"""Text sampled from the model itself, for second-moment statistics where the published
corpus (wikitext, from the dataset hub) cannot be reached: a machine without network, a
closed CI. The statistics only need keys k that resemble the ones the model meets; text the
model writes from its own distribution (ancestral sampling at temperature 1, from its BOS
token) is such text, with no corpus to download and no licence to carry. It is not the
published corpus, so it is used only when named (`mom2_dataset: model-sample`) or, visibly,
when the published one cannot be loaded, and the run says which one it used.

The documents are sampled once per model (seeded, so the same model gives the same text) and
kept as a text file, one document a line, in the statistics cache."""

from __future__ import annotations

import os
from pathlib import Path

import torch

MODEL_SAMPLE = "model-sample"
DOCUMENTS = 256  # 32,768 tokens: 64 documents took 174 s on a loaded 2-core machine (smollm2-135m, 1 thread)
TOKENS = 128
SEED = 1
BATCH = 64


@torch.no_grad()
def sample_documents(model, tokenizer, count: int = DOCUMENTS, length: int = TOKENS, seed: int = SEED) -> list[str]:
    """`count` documents of `length` tokens sampled from the model, each one line of text."""
    from .kv_cache import new_cache, with_cache

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    documents = []
    for first in range(0, count, BATCH):
        rows = min(BATCH, count - first)
        ids = torch.full((rows, 1), start, dtype=torch.long, device=device)
        cache = new_cache(model)
        tokens = []
        for _ in range(length):
            logits = model(input_ids=ids, **with_cache(model, cache)).logits[:, -1].float().cpu()
            ids = torch.multinomial(logits.softmax(-1), 1, generator=generator).to(device)
            tokens.append(ids.cpu())
        for row in torch.cat(tokens, dim=1).tolist():
            text = " ".join(tokenizer.decode(row, skip_special_tokens=True).split())
            documents.append(text)
    return documents


def sampled_corpus_file(model, tokenizer, directory: Path, count: int = DOCUMENTS, length: int = TOKENS) -> Path:
    """The model's sampled documents as a file in `directory` (the model's statistics cache),
    written atomically the first time; the caller holds the statistics lock."""
    path = directory / f"{MODEL_SAMPLE}.{count}x{length}.seed{SEED}.txt"
    if path.is_file() and not path.is_symlink():
        return path
    documents = [text for text in sample_documents(model, tokenizer, count, length) if text]
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text("".join(f"{text}\n" for text in documents), encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
