"""The generation engine: batched greedy decoding with a KV cache and left padding, under
WILD's stop rules, plus the teacher-forced and length-only readings the paper compares
against.

Batching is the point: the published loop answers one question at a time without a cache;
this engine answers a whole batch at once, drops rows from the batch as they stop, and must
still produce exactly the same tokens (a test and `bench/` check it). What `generate` takes
from the model's generation config (every end-of-sequence id, the logits processors of a
greedy search) comes from pytest_wild.generation.greedy.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ..model.batching import left_pad
from ..model.kv_cache import new_cache, with_cache
from ..model.reading import keep_rows, reading
from ..model.tokens import check_greedy, config_eos_ids
from .greedy import Processors, eos_ids
from .stopping import ends_after, find_stop, finish_text

MAX_NEW_TOKENS = 50

# Where a decoding loop stops, besides its token limit: under the run's stop rule (a WILD
# answer), at an end-of-sequence id of the generation config only (what a plain `generate`
# call without stop strings does), or nowhere.
RULE, EOS, NOWHERE = "rule", "eos", "nowhere"


@dataclass(frozen=True)
class Generation:
    """One answer: the text as scored and the raw generated token ids (locality compares ids)."""

    text: str
    token_ids: tuple[int, ...]


class Engine:
    """Answers questions with a model; holds no edit state, so it is shared by all cases."""

    def __init__(self, model, tokenizer, stop_rule: str = "published", batch_size: int = 64,
                 max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop_rule = stop_rule
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        check_greedy(model.generation_config, "--wild-model")
        self.eos_ids = eos_ids(model.generation_config, tokenizer)
        self.config_eos_ids = frozenset(config_eos_ids(model.generation_config))
        self.processors = Processors(model.generation_config, max_new_tokens, self.device)
        eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
        self._stop_tokens: tuple[set[int], set[int]] | None = None
        accepted = inspect.signature(model.forward).parameters
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        config = model.config
        self.max_positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: list[str]) -> list[list[int]]:
        """One tokenizer call for all texts (a fast tokenizer encodes the list in parallel)."""
        return self.tokenizer(list(texts))["input_ids"] if texts else []

    def generate(self, contexts: list[str]) -> list[Generation]:
        """Greedy answers under the stop rule, in input order."""
        return self._batched(self.encode(contexts), [self.max_new_tokens] * len(contexts), RULE)

    def generate_until_eos(self, contexts: list[str]) -> list[Generation]:
        """Greedy answers that stop only at an end-of-sequence id or the token limit, read as a
        chat server returns a completion asked without stop strings: special tokens left out."""
        return self._batched(self.encode(contexts), [self.max_new_tokens] * len(contexts), EOS)

    def generate_fixed(self, contexts: list[str], lengths: list[int]) -> list[Generation]:
        """Exactly `lengths[i]` greedy tokens, no stop rule: the length-only leakage mode."""
        return self._batched(self.encode(contexts), lengths, NOWHERE)

    def generated_tokens(self, prompts: list[str], targets: list[str]) -> list[tuple[list[int], list[int]]]:
        """The published free-generation reading (EasyEdit's `test_prediction_acc` with
        `vanilla_generation=True`, which the paper's code runs for GRACE): the target tokenised
        alone, without special tokens (so with no leading space); greedy `generate` on the bare
        prompt for as many new tokens as that, stopping only at an end-of-sequence id; the last
        that-many tokens of prompt + generation. For each pair (the target's ids, those tokens).
        An answer that ends early at EOS is read with the prompt's last tokens before it, as
        published."""
        encoded = self.encode(prompts)
        wanted = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in targets]
        generated = self._batched(encoded, [len(ids) for ids in wanted], EOS)
        return [(ids, (list(prompt) + list(gen.token_ids))[-len(ids):] if ids else [])
                for ids, prompt, gen in zip(wanted, encoded, generated)]

    def generated_accuracy(self, prompts: list[str], targets: list[str]) -> list[float | None]:
        """Share of the target's tokens that the last generated tokens match, position by
        position (the published `np.mean(np.equal(...))`); None for an empty target."""
        return [sum(p == t for p, t in zip(found, ids)) / len(ids) if ids else None
                for ids, found in self.generated_tokens(prompts, targets)]

    @torch.no_grad()
    def teacher_forced(self, prompts: list[str], targets: list[str]) -> list[tuple[list[int], list[int]]]:
        """The published teacher-forced reading (EasyEdit's `test_prediction_acc`, as the paper's
        code runs it): `prompt + " " + target` tokenised as one text, cut at the length of the
        prompt tokenised alone; for each pair (the label ids after the cut, the argmax predicted
        at each of those positions given the gold prefix). A target that starts with a space
        gets a second one, as published (such targets are flagged)."""
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            joint = self.encode([p + " " + t for p, t in zip(prompts[chunk], targets[chunk])])
            cuts = [len(ids) for ids in self.encode(prompts[chunk])]
            ids, mask, positions = left_pad(joint, self.pad_id, self.device)
            width = ids.shape[1]
            first = torch.tensor([width - len(s) for s in joint], device=self.device)
            last = first + torch.tensor(cuts, device=self.device) - 1
            with reading(self.model, last, first):
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
            for row, (sequence, cut) in enumerate(zip(joint, cuts)):
                shift = width - len(sequence)
                predicted = logits[row, shift + cut - 1 : width - 1].argmax(-1).tolist()
                out.append((list(sequence[cut:]), predicted))
        return out

    def teacher_forced_accuracy(self, prompts: list[str], targets: list[str]) -> list[float | None]:
        """Fraction of label tokens that are the argmax given the gold prefix (the synthetic
        metric that leaks the answer's content and length); None when the cut leaves no label."""
        return [sum(p == t for p, t in zip(predicted, labels)) / len(labels) if labels else None
                for labels, predicted in self.teacher_forced(prompts, targets)]

    def _batched(self, prompts: list[list[int]], limits: list[int], stop: str) -> list[Generation]:
        """Batches of similar prompt length; a question that leaves no room in the model's
        context window gets an empty answer instead of an index error."""
        if self.max_positions:
            limits = [max(0, min(limit, self.max_positions - len(p))) for p, limit in zip(prompts, limits)]
        results: list[Generation | None] = [Generation("", ())] * len(prompts)
        order = sorted((i for i in range(len(prompts)) if limits[i] > 0), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            for i, gen in zip(rows, self._decode([prompts[i] for i in rows], [limits[i] for i in rows], stop)):
                results[i] = gen
        return results

    def _decode(self, prompts: list[list[int]], limits: list[int], stop: str) -> list[Generation]:
        ids, mask, positions = left_pad(prompts, self.pad_id, self.device)
        width = ids.shape[1]
        first = torch.tensor([width - len(p) for p in prompts], device=self.device)
        with torch.inference_mode(), reading(self.model, torch.full_like(first, width - 1), first):
            return self._decode_batch(ids, mask, positions, prompts, limits, stop)

    def _decode_batch(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                      prompts: list[list[int]], limits: list[int], stop: str) -> list[Generation]:
        """The prompt pass, then one cached step per token; rows leave the batch as they stop."""
        generated: list[list[int]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        cache = new_cache(self.model)
        cached = with_cache(self.model, cache)  # once per batch, not per step
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **cached, **self._last_logits)
        while active:
            next_tokens = self._pick(out.logits[:, -1], active, prompts, generated)
            keep = []
            for slot, row in enumerate(active):
                generated[row].append(next_tokens[slot])
                if not self._done(prompts[row], generated[row], limits[row], stop):
                    keep.append(slot)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                keep_rows(self.model, index)
                mask, positions = mask[index], positions[index]
                next_tokens = [next_tokens[k] for k in keep]
                active = [active[k] for k in keep]
            step = torch.tensor(next_tokens, device=self.device)[:, None]
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(input_ids=step, attention_mask=mask, position_ids=positions, **cached)
        return [self._finish(tokens, stop) for tokens in generated]

    def _pick(self, logits: torch.Tensor, active: list[int], prompts: list[list[int]],
              generated: list[list[int]]) -> list[int]:
        """The greedy next token of each active row: the argmax, after the generation config's
        logits processors where it has any, each run on its row's own unpadded ids in float32
        (as `generate` runs them on a batch of one)."""
        if not self.processors.any:
            return logits.argmax(-1).tolist()
        scores = logits.float()
        for slot, row in enumerate(active):
            processors = self.processors.for_prompt(len(prompts[row]))
            seen = torch.tensor([prompts[row] + generated[row]], device=scores.device)
            scores[slot : slot + 1] = processors(seen, scores[slot : slot + 1])
        return scores.argmax(-1).tolist()

    def _done(self, prompt: list[int], tokens: list[int], limit: int, stop: str) -> bool:
        if len(tokens) >= limit:
            return True
        if stop == NOWHERE:
            return False
        if stop == EOS:
            return tokens[-1] in self.config_eos_ids
        if tokens[-1] in self.eos_ids or self._spells_eos(prompt, tokens):
            return True
        if self.stop_rule == "published":
            return tokens[-1] in self.stop_tokens
        text = self.tokenizer.decode(tokens)
        return find_stop(text, self.stop_rule, final=False) is not None

    def _spells_eos(self, prompt: list[int], tokens: list[int]) -> bool:
        """The EOS string written out in ordinary tokens, ending in the newest one (a stop
        string of the published loop, which transformers' stop strings find across token
        boundaries and into the prompt). Decoded only when the newest token holds the string's
        last character; a window of twice its length in tokens covers tokens of one character."""
        eos = self.tokenizer.eos_token
        if not eos or tokens[-1] not in self.stop_tokens_sets[1]:
            return False
        window = (prompt + tokens)[-2 * len(eos):]
        before = len(self.tokenizer.decode(window[:-1]))
        return ends_after(self.tokenizer.decode(window), before, eos)

    @property
    def stop_tokens(self) -> set[int]:
        """Ids whose text contains "." or "\n". The published stops are single ASCII
        characters, so whether a step stops depends on the newest token alone: one lookup
        per step instead of decoding the whole answer again."""
        return self.stop_tokens_sets[0]

    @property
    def stop_tokens_sets(self) -> tuple[set[int], set[int]]:
        """(ids whose text holds "." or "\n", ids whose text holds the EOS string's last
        character), from one pass over the vocabulary."""
        if self._stop_tokens is None:
            eos = self.tokenizer.eos_token
            stops, ends = set(), set()
            for token_id in range(len(self.tokenizer)):
                text = self.tokenizer.decode([token_id])
                if find_stop(text, "published", final=False) is not None:
                    stops.add(token_id)
                if eos and eos[-1] in text:
                    ends.add(token_id)
            self._stop_tokens = (stops, ends)
        return self._stop_tokens

    def _finish(self, tokens: list[int], stop: str) -> Generation:
        """The answer's text, read as each published reading reads it. Under the stop rule: the
        tokens decoded as they are, then the EOS string stripped (the published loop's
        `finish_text(decode(tokens))`; generation ends at an end-of-sequence id, so nothing of a
        chat template's next turn follows). At a fixed length: the tokens up to the first
        end-of-sequence id, decoded without special tokens; a chat model's turn ends with one
        (`<|im_end|>`), and what it writes after it, when a fixed length makes it go on, is the
        template's next turn, not its answer (the published length reading, `generate` with
        max_new_tokens, stops there too). Read until EOS (a judge's completion, the
        free-generation reading): everything generated, special tokens left out, as a chat
        server returns it. The token ids are kept whole: locality compares them."""
        if stop == RULE:
            text = finish_text(self.tokenizer.decode(tokens), self.stop_rule, self.tokenizer.eos_token)
        elif stop == EOS:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        else:
            end = next((i for i, token in enumerate(tokens) if token in self.eos_ids), len(tokens))
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
        return Generation(text=text, token_ids=tuple(tokens))

