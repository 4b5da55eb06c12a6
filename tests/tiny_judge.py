"""A local judge small enough for CPU tests: a four-layer GPT-2 whose greedy reply to any
grader prompt is one fixed verdict and then end-of-sequence.

Its blocks add nothing to the residual stream and its positions are zero, so the next token
depends only on the current one: every prompt word (all unknown to its word-level tokenizer)
leads to the verdict, the verdict to end-of-sequence. A real model directory (safetensors,
config, tokenizer files), loaded through the same path as any `--wild-judge hf:` model."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

VOCAB = {"[UNK]": 0, "CORRECT": 1, "INCORRECT": 2, "</s>": 3, "A": 4, "B": 5}


def write_judge(directory: Path, verdict: str = "CORRECT") -> Path:
    """A judge model directory that replies `verdict` to every prompt."""
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="</s>", pad_token="</s>")
    config = GPT2Config(vocab_size=len(VOCAB), n_embd=4, n_layer=1, n_head=1, n_positions=512,
                        bos_token_id=3, eos_token_id=3, pad_token_id=3, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    codes = torch.zeros(len(VOCAB), 4)
    codes[VOCAB["[UNK]"]] = torch.tensor([1.0, -1.0, 0.0, 0.0])  # "a prompt word"
    codes[VOCAB[verdict]] = torch.tensor([0.0, 0.0, 1.0, -1.0])  # "the verdict was said"
    with torch.no_grad():
        for parameter in model.transformer.h.parameters():
            parameter.zero_()
        model.transformer.wpe.weight.zero_()
        model.transformer.wte.weight.copy_(codes)
        model.lm_head.weight.zero_()
        model.lm_head.weight[VOCAB[verdict]] = 10 * codes[VOCAB["[UNK]"]]
        model.lm_head.weight[VOCAB["</s>"]] = 10 * codes[VOCAB[verdict]]
    model.generation_config.do_sample = False
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
