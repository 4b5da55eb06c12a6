"""What greedy `model.generate` applies besides the argmax: the model's generation config.

The published loop calls `model.generate(..., do_sample=False)`, so the model's
`generation_config` decides which ids end an answer (Llama-3-Instruct lists two) and which
logits processors run before the argmax (a repetition penalty, banned words, a minimum
length, ...). The engine reads both from here: the processors are transformers' own public
classes, built from the config in the order `generate` builds them, and applied to each
answer's own unpadded ids, as the published one-question-at-a-time loop sees them. A setting
that greedy decoding under WILD cannot honour is refused with one line, never ignored, when
the model is loaded (`model.tokens.check_greedy`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.tokens import config_eos_ids

def eos_ids(generation_config, tokenizer) -> frozenset[int]:
    """Every id that ends an answer: the generation config's end-of-sequence ids, and the
    tokenizer's EOS, whose text is one of the published stop strings."""
    ids = set(config_eos_ids(generation_config))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


class Processors:
    """The logits processors greedy `generate` would run for this generation config, per
    prompt length (a minimum number of new tokens, a forced last token and suppression at
    the first step are counted from the prompt's end). `any` is false when the config asks
    for none, so the plain argmax stays the fast path."""

    def __init__(self, generation_config, max_new_tokens: int, device) -> None:
        self.config = generation_config
        eos = config_eos_ids(generation_config)  # what `generate` gives its processors
        self.eos = torch.tensor(eos, device=device) if eos else None
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._built: dict[int, Callable | None] = {}
        self.any = self.for_prompt(1) is not None

    def for_prompt(self, length: int):
        if length not in self._built:
            self._built[length] = self._build(length)
        return self._built[length]

    def _build(self, prompt_length: int):
        from transformers import generation as g

        c, eos, device = self.config, self.eos, self.device
        found = []
        if c.sequence_bias is not None:
            found.append(g.SequenceBiasLogitsProcessor(sequence_bias=c.sequence_bias))
        if c.repetition_penalty is not None and c.repetition_penalty != 1.0:
            found.append(g.RepetitionPenaltyLogitsProcessor(c.repetition_penalty))
        if c.no_repeat_ngram_size:
            found.append(g.NoRepeatNGramLogitsProcessor(c.no_repeat_ngram_size))
        if c.bad_words_ids is not None:
            found.append(g.NoBadWordsLogitsProcessor(c.bad_words_ids, eos))
        if c.min_length and eos is not None:
            found.append(g.MinLengthLogitsProcessor(c.min_length, eos, device=device))
        if c.min_new_tokens and eos is not None:
            found.append(g.MinNewTokensLengthLogitsProcessor(prompt_length, c.min_new_tokens, eos, device=device))
        if c.forced_bos_token_id is not None:
            found.append(g.ForcedBOSTokenLogitsProcessor(c.forced_bos_token_id))
        if c.forced_eos_token_id is not None:
            found.append(g.ForcedEOSTokenLogitsProcessor(prompt_length + self.max_new_tokens, c.forced_eos_token_id,
                                                         device=device))
        if c.remove_invalid_values is True:
            found.append(g.InfNanRemoveLogitsProcessor())
        if c.exponential_decay_length_penalty is not None:
            found.append(g.ExponentialDecayLengthPenalty(c.exponential_decay_length_penalty, eos, prompt_length))
        if c.suppress_tokens is not None:
            found.append(g.SuppressTokensLogitsProcessor(c.suppress_tokens, device=device))
        if c.begin_suppress_tokens is not None:
            begin = prompt_length if prompt_length > 1 or c.forced_bos_token_id is None else prompt_length + 1
            found.append(g.SuppressTokensAtBeginLogitsProcessor(c.begin_suppress_tokens, begin, device=device))
        if c.renormalize_logits is True:
            found.append(g.LogitNormalization())
        return g.LogitsProcessorList(found) if found else None
