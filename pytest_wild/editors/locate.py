"""Shared machinery of the locate-then-edit editors (ROME, R-ROME, MEMIT, AlphaEdit).

- Requests: every prompt is tokenised once, the fact token (the subject's last token) is found
  on exactly the ids fed to the model through the fast tokenizer's character offsets (BOS
  included), and the rewriting inputs are built by concatenating ids (prompt ids ++ target
  ids[:-1]), never by re-tokenising decoded text. Positions and masks come from the padding
  actually used, never from an assumed side.
- Context templates: short texts sampled from the model (top-k 5, fixed seed), cached per model
  object, so runs and workers are deterministic.
- Hooks: `register_forward_hook(..., with_kwargs=True)`, decoder-layer outputs read as a tensor
  or a tuple, the forward stopped once everything needed has been seen.
- The value search shared by ROME (δ added to the MLP output of layer L) and MEMIT/AlphaEdit
  (δ added to the block output, the residual stream, of the top layer): NLL of the target over
  the context templates + KL on "{subject} is a" at the subject's last token + weight decay,
  Adam, the norm clamp and early stop of the published code. One clean pass records the hidden
  state entering the first block δ can change and the arguments every later block was called
  with; each step then runs only those blocks, only on the columns at or after the earliest
  fact token (the keys and values of the columns before are kept from the clean pass), and
  the final norm and LM head only at the positions the loss reads. Those blocks run as
  written-out tensor code where pytest_wild.editors.blocks has it for the family and it gives
  the modules' output, else as the modules. Several requests are optimised together, one δ
  row each, with the per-request trajectory of separate runs.
- Statistics: C per layer from `pytest_wild.stats`, with its Cholesky factor cached in memory.
- Weight updates in the math layout (d_v × d_k), written into `nn.Linear` or GPT-2 `Conv1D`
  weights in their own layout.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..architectures import Architecture
from ..batching import left_pad, right_pad
from ..cases import Case, WildInputError
from ..kv_cache import new_cache, with_cache
from ..tokens import target_ids
from ..weights import Restore
from .blocks import written_out

KL_PROMPT = "{} is a"
EARLY_STOP_LOSS = 5e-2
TEMPLATE_PROMPTS = ("The", "Therefore", "Because", "I", "You")
TEMPLATE_SEED = 0
FACT_TOKENS = ("subject_last", "subject_first", "last")


# ---------------------------------------------------------------- results and restore


class EditRestore(Restore):
    """`Restore` plus what the editor computed (`info`: one dict per rank update or layer)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__(model, names)
        self.info: list[dict] = []


# ------------------------------------------------------------------------ hook helpers


class _Stop(Exception):
    """Raised from a hook to end a forward pass once everything needed was recorded."""


def hidden_of(output):
    """The hidden states of a module output that is a tensor or a tuple starting with one."""
    return output if isinstance(output, torch.Tensor) else output[0]


def with_hidden(output, hidden: torch.Tensor):
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


def input_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The first input of a module call, passed positionally or by keyword."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    return next(v for v in kwargs.values() if isinstance(v, torch.Tensor))


@dataclass
class Trace:
    """What one forward pass recorded: module inputs and outputs, and for some blocks the
    arguments they were called with (to call them again on other hidden states)."""

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[int, tuple[tuple, dict]] = field(default_factory=dict)


@torch.no_grad()
def trace(model, arch: Architecture, ids: torch.Tensor, mask: torch.Tensor, *, inputs: Sequence[str] = (),
          outputs: Sequence[str] = (), calls: Sequence[int] = (), **forward) -> Trace:
    """Run the model on a batch, recording what is asked for; stop as soon as all of it is seen.
    `forward` adds keyword arguments of the model call (position ids, a KV cache)."""
    found = Trace()
    wanted = {("in", n) for n in inputs} | {("out", n) for n in outputs} | {("call", i) for i in calls}
    seen: set = set()
    handles = []

    def mark(item) -> None:
        seen.add(item)
        if seen >= wanted:
            raise _Stop

    def on_output(name):
        def hook(module, args, kwargs, output):
            if name in inputs:
                found.inputs[name] = input_of(args, kwargs).detach()
            if name in outputs:
                found.outputs[name] = hidden_of(output).detach()
            for kind in ("in", "out"):
                if (kind, name) in wanted:
                    mark((kind, name))
        return hook

    def on_call(index):
        def hook(module, args, kwargs):
            found.calls[index] = (args, dict(kwargs))
            mark(("call", index))
        return hook

    try:
        for name in dict.fromkeys([*inputs, *outputs]):
            handles.append(model.get_submodule(name).register_forward_hook(on_output(name), with_kwargs=True))
        for index in calls:
            block = model.get_submodule(arch.block.format(index))
            handles.append(block.register_forward_pre_hook(on_call(index), with_kwargs=True))
        try:
            model(input_ids=ids, attention_mask=mask, **({"use_cache": False} | forward))
        except _Stop:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = wanted - seen
    if missing:
        raise RuntimeError(f"the forward pass never reached {sorted(missing)}")
    return found


def run_blocks(model, arch: Architecture, recorded: Trace, hidden: torch.Tensor, start: int, end: int,
               swap: tuple[object, object] | None = None) -> torch.Tensor:
    """Blocks `start`..`end` on `hidden`, each called with the arguments the clean pass gave it
    (attention mask, position ids or rotary embeddings, KV cache), whatever the architecture.
    `swap = (old, new)` passes `new` wherever the clean pass passed the object `old`."""
    for index in range(start, end + 1):
        args, kwargs = recorded.calls[index]
        if swap is not None:
            args = tuple(swap[1] if a is swap[0] else a for a in args)
            kwargs = {k: swap[1] if v is swap[0] else v for k, v in kwargs.items()}
        block = model.get_submodule(arch.block.format(index))
        if args:
            out = block(hidden, *args[1:], **kwargs)
        else:
            out = block(**{**kwargs, "hidden_states": hidden})
        hidden = hidden_of(out)
    return hidden


# ------------------------------------------------------------------ tokens and requests


@dataclass(frozen=True)
class Row:
    """A prompt as fed to the model and the index of its fact token."""

    ids: tuple[int, ...]
    lookup: int


@dataclass(frozen=True)
class Request:
    """One edit, tokenised: `rows[0]` is the bare prompt, the others the prompt behind each
    context template; keys are averaged within each of `groups`, then over the groups."""

    case: Case
    target: tuple[int, ...]
    rows: tuple[Row, ...]
    groups: tuple[tuple[int, ...], ...]
    kl: Row


def _subject_span(text: str, subject: str, where: str) -> tuple[int, int]:
    start = text.find(subject) if subject else -1
    if start < 0:
        raise WildInputError(f"{where}: the subject {subject!r} does not occur in the prompt {text!r}")
    return start, start + len(subject)


def locate(tokenizer, text: str, span: tuple[int, int], strategy: str) -> Row:
    """Tokenise `text` and find the fact token: the last (or first) token overlapping the subject's
    characters `span`, read off the offsets of the very ids the model gets (BOS included)."""
    if strategy not in FACT_TOKENS:
        raise WildInputError(f"fact_token: {strategy!r} is not one of {', '.join(FACT_TOKENS)}")
    try:
        encoded = tokenizer(text, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError):
        encoded, offsets = tokenizer(text), None
    ids = tuple(encoded["input_ids"])
    if strategy == "last":
        return Row(ids, len(ids) - 1)
    start, end = span
    if offsets is None:  # slow tokenizer: count the tokens of the text up to the subject's end
        before = len(tokenizer(text[:end])["input_ids"])
        index = before - 1 if strategy == "subject_last" else len(tokenizer(text[:start])["input_ids"])
        return Row(ids, min(index, len(ids) - 1))
    overlapping = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not overlapping:
        raise WildInputError(f"cannot find the subject's tokens in {text!r}")
    return Row(ids, overlapping[-1] if strategy == "subject_last" else overlapping[0])


def prepare(tokenizer, case: Case, templates: Sequence[str], groups: Sequence[Sequence[int]],
            strategy: str = "subject_last") -> Request:
    """Tokenise a case behind every context template ("{}" marks where the prompt goes)."""
    where = f"case {case.id}"
    subject_start, subject_end = _subject_span(case.prompt, case.subject, where)
    rows = []
    for template in templates:
        prefix = template[: template.index("{}")]
        text = template.replace("{}", case.prompt, 1)
        rows.append(locate(tokenizer, text, (len(prefix) + subject_start, len(prefix) + subject_end), strategy))
    target = tuple(target_ids(tokenizer, case.prompt, case.target))
    if not target:
        raise WildInputError(f"{where}: the target {case.target!r} has no tokens")
    kl_text = KL_PROMPT.format(case.subject)
    kl = locate(tokenizer, kl_text, (0, len(case.subject)), strategy)
    return Request(case, target, tuple(rows), tuple(tuple(g) for g in groups), kl)


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


# ------------------------------------------------------------------- context templates

_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def context_templates(model, tokenizer, length_params: Sequence[Sequence[int]]) -> list[str]:
    """["{}"] plus, for each [length, n] in `length_params`, n texts of `length` tokens (the
    prompt word included) sampled top-k 5 from the model after "The", "Therefore", "Because",
    "I" and "You" in turn, braces blanked, followed by ". {}". Sampled once per model object and
    parameters with a fixed seed, so every run and worker gets the same templates."""
    key = tuple(tuple(int(x) for x in pair) for pair in length_params)
    per_model = _TEMPLATES.setdefault(model, {})
    if key not in per_model:
        templates = ["{}"]
        for length, count in key:
            texts = _sample_texts(model, tokenizer, length, count)
            templates += [t.replace("{", " ").replace("}", " ") + ". {}" for t in texts]
        per_model[key] = templates
    return list(per_model[key])


def template_prefix(model, tokenizer, hp) -> int:
    """The most tokens a context template puts before the prompt (one more for the seam
    where the template's text and the prompt are tokenised together)."""
    templates = context_templates(model, tokenizer, hp.context_template_length_params)
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


# --------------------------------------------------------------------- the value search


@dataclass
class Values:
    """The optimised vectors of a batch of requests at one place of one layer."""

    init: torch.Tensor  # (n, d) the clean vector at each request's bare-prompt fact token
    delta: torch.Tensor  # (n, d) the optimised shift
    keys: torch.Tensor | None  # (rows, d_k) clean rewrite-module inputs at each row's fact token
    outs: torch.Tensor | None  # (rows, d_v) clean rewrite-module outputs there
    steps: list[int]  # optimiser steps taken per request
    loss: list[float]  # final loss per request
    nll: list[float]  # final NLL per request

    @property
    def target(self) -> torch.Tensor:
        return self.init + self.delta


# per model object: (first block, last block, no prefix kept) -> whether the written-out blocks
# gave the modules' output there
WRITTEN_OUT_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ValueProblem:
    """Requests batched for the δ search at layer `layer`, with δ added to the MLP output
    (`at="mlp"`, ROME) or to the block output (`at="block"`, MEMIT) at every row's fact token.

    Rows are left-padded so that every row's fact token falls at or after one common column
    `split` (each row's text after the subject has the same length within a request). Nothing
    before a fact token depends on δ, so with `reuse_prefix` the columns before `split` run
    once, and each step runs the blocks from `start` on the remaining columns only, against
    the keys and values of the prefix kept from that clean pass.

    As published, the NLL reads the target through the final norm and the LM head applied to
    the output of `loss_layer`, the KL term the model's own output (the same block unless
    `loss_layer` is below the last)."""

    def __init__(self, model, arch: Architecture, requests: Sequence[Request], layer: int, at: str,
                 loss_layer: int, pad: int, rewrite_module: str | None = None, reuse_prefix: bool = True) -> None:
        if at not in ("mlp", "block"):
            raise ValueError(at)
        self.model, self.arch, self.layer, self.at = model, arch, layer, at
        self.loss_layer = max(loss_layer, layer)
        self.last = model.config.num_hidden_layers - 1
        self.start = start = layer if at == "mlp" else layer + 1
        device = next(model.parameters()).device
        sequences, owners, lookups, kl_rows = [], [], [], []
        target_rows, target_pos, target_ids_ = [], [], []
        for r, request in enumerate(requests):
            for row in request.rows:
                index = len(sequences)
                sequences.append(list(row.ids) + list(request.target[:-1]))
                owners.append(r)
                lookups.append(row.lookup)
                for j, token in enumerate(request.target):
                    target_rows.append(index)
                    target_pos.append(len(row.ids) - 1 + j)
                    target_ids_.append(token)
        for r, request in enumerate(requests):
            kl_rows.append(len(sequences))
            sequences.append(list(request.kl.ids))
            owners.append(r)
            lookups.append(request.kl.lookup)
        self.n = len(requests)
        ids, mask, positions = left_pad(sequences, pad, device)
        shifts = [ids.shape[1] - len(seq) for seq in sequences]
        columns = [shift + lookup for shift, lookup in zip(shifts, lookups)]

        self.cache = self.prefix = self._work = None
        split = min(columns) if reuse_prefix else 0
        if split > 0:
            self.cache, self.prefix = _prefix_cache(model, ids[:, :split], mask[:, :split], positions[:, :split],
                                                    range(start, self.last + 1))
            if self.cache is None:
                split = 0
        self.split = split
        forward = {"position_ids": positions[:, split:]}
        if self.cache is not None:
            forward |= with_cache(model, self.cache)

        def local(values):
            return torch.tensor([v - split for v in values], device=device)

        self.rows = torch.arange(len(sequences), device=device)
        self.lookups = local(columns)
        self.owners = torch.tensor(owners, device=device)
        self.first_rows = torch.tensor([owners.index(r) for r in range(self.n)], device=device)
        self.kl_rows = torch.tensor(kl_rows, device=device)
        self.target_rows = torch.tensor(target_rows, device=device)
        self.target_pos = local([shifts[r] + p for r, p in zip(target_rows, target_pos)])
        self.target_ids = torch.tensor(target_ids_, device=device)
        self.template_rows = [i for i in range(len(sequences)) if i not in kl_rows]
        # the (row, column) pairs the loss reads, target tokens first, and each target token's
        # request and weight in the NLL (the mean over the request's rows of the target's mean
        # negative log-likelihood)
        self.n_target = len(target_rows)
        self.read_target = (self.target_rows, self.target_pos)
        self.read_kl = (self.kl_rows, self.lookups[self.kl_rows])
        self.read = tuple(torch.cat(pair) for pair in zip(self.read_target, self.read_kl))
        self.token_index = torch.arange(self.n_target, device=device)
        token_owner = [owners[row] for row in target_rows]
        self.token_owner = torch.tensor(token_owner, device=device)
        self.token_weight = torch.tensor([-1 / (len(requests[r].target) * len(requests[r].rows)) for r in token_owner],
                                         device=device)

        self.place = place = (arch.mlp if at == "mlp" else arch.block).format(layer)
        block = arch.block.format(layer)
        inputs, outputs = [], list(dict.fromkeys([place, block]))
        if rewrite_module is not None:
            inputs.append(rewrite_module)
            outputs.append(rewrite_module)
        calls = list(range(start, self.last + 1))
        self.recorded = trace(model, arch, ids[:, split:], mask, inputs=inputs, outputs=outputs, calls=calls,
                              **forward)
        clean = self.recorded.outputs[place]
        self.init = pick(clean, (self.first_rows, self.lookups[self.first_rows])).float()
        self.init_sq = self.init.norm(dim=-1) ** 2
        # the hidden state entering the first block δ changes: recorded once, never recomputed
        self.entry = input_of(*self.recorded.calls[start]).detach() if at == "mlp" else clean
        self.residual = at == "block"
        if at == "mlp" and self._mlp_output_adds_to_residual(self.recorded.outputs[block]):
            # δ on the MLP output is δ on the block output: start one block later
            self.start, self.entry, self.residual = layer + 1, self.recorded.outputs[block], True
        self.keys = self.outs = None
        if rewrite_module is not None:
            template_rows = torch.tensor(self.template_rows, device=device)
            at_lookup = (template_rows, self.lookups[template_rows])
            self.keys = pick(self.recorded.inputs[rewrite_module], at_lookup).float()
            self.outs = pick(self.recorded.outputs[rewrite_module], at_lookup).float()
        self.final_norm = model.get_submodule(arch.ln_f)
        self.head = model.get_output_embeddings()
        self.written_out = self._written_out_blocks()

    def _swap(self):
        """A cache holding only the clean prefix, for one run of the blocks: built once, then
        pointed back at the prefix before each run (building one per step took 6% of a MEMIT
        search on the bundled model)."""
        if self.cache is None:
            return None
        if self._work is None or not _rewind(self._work, self.prefix):
            self._work = _refill(self.model, self.prefix)
        return self.cache, self._work

    def _written_out_blocks(self):
        """The blocks from `start` on as written-out code (pytest_wild.editors.blocks), when δ
        enters through the residual stream (no hook needed) and the code gave the modules'
        output on a clean pass of this model and block range (checked once, the answer kept
        per model object); else None, and the modules run."""
        if not self.residual:
            return None
        blocks = {i: self.model.get_submodule(self.arch.block.format(i)) for i in range(self.start, self.last + 1)}
        run = written_out(self.model, self.arch.family, blocks, self.recorded.calls, self.prefix)
        if run is None:
            return None
        checked = WRITTEN_OUT_CHECKED.setdefault(self.model, {})
        key = (self.start, self.last, self.prefix is None)
        if key not in checked:
            checked[key] = self._gives_module_output(run)
        return run if checked[key] else None

    def _gives_module_output(self, run) -> bool:
        """Both ways on the clean pass: the same ops in the same order agree to rounding, while a
        missed bias, scale or norm moves the output by a fair part of its size."""
        with torch.no_grad():
            expected = run_blocks(self.model, self.arch, self.recorded, self.entry, self.start, self.last, self._swap())
            try:
                found = run(self.entry, self.start, self.last)
            except (AttributeError, RuntimeError, TypeError, ValueError):
                return False
        return found.shape == expected.shape and _agrees(found, expected)

    def _run(self, hidden: torch.Tensor, start: int, end: int, swap) -> torch.Tensor:
        if self.written_out is not None:
            return self.written_out(hidden, start, end)
        return run_blocks(self.model, self.arch, self.recorded, hidden, start, end, swap)

    @torch.no_grad()
    def _mlp_output_adds_to_residual(self, block_out: torch.Tensor) -> bool:
        """Whether the block adds its MLP output to the residual stream unchanged (GPT-2, GPT-J,
        NeoX, Llama, Mistral, Qwen2 do; a post-MLP norm would not): checked once with a probe
        shift, so that the ROME search may skip re-running the edited block itself."""
        generator = torch.Generator().manual_seed(0)
        scale = float(self.init.norm(dim=-1).mean()) + 1e-6
        width = block_out.shape[-1]
        probe = torch.randn(len(self.rows), width, generator=generator) * scale / width ** 0.5
        probe = probe.to(device=block_out.device, dtype=block_out.dtype)
        where = (self.rows, self.lookups)

        handle = self.model.get_submodule(self.place).register_forward_hook(_adder(where, probe))
        try:
            shifted = run_blocks(self.model, self.arch, self.recorded, self.entry, self.layer, self.layer, self._swap())
        finally:
            handle.remove()
        expected = _shifted(block_out, where, probe)
        return _agrees(shifted, expected)

    def log_probs(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p of each target token, log-distribution at each KL prompt's fact token) with δ
        (one row per request) added at the fact token of every row of its request."""
        shift = delta[self.owners.to(delta.device)].to(self.entry.dtype)
        where = (self.rows, self.lookups)
        if self.residual:
            hidden = _shifted(self.entry, where, shift)
            handle = None
        else:
            hidden = self.entry
            handle = self.model.get_submodule(self.place).register_forward_hook(_adder(where, shift))
        swap = self._swap() if self.written_out is None else None
        try:
            hidden = self._run(hidden, self.start, self.loss_layer, swap)
        finally:
            if handle is not None:
                handle.remove()
        if self.loss_layer == self.last:
            picked = pick(hidden, self.read)
        else:
            final = self._run(hidden, self.loss_layer + 1, self.last, swap)
            picked = torch.cat([pick(hidden, self.read_target), pick(final, self.read_kl)])
        logp = self.head(self.final_norm(picked)).float().log_softmax(-1).to(delta.device)
        token_logp = logp[self.token_index.to(delta.device), self.target_ids.to(delta.device)]
        return token_logp, logp[self.n_target:]

    def losses(self, delta: torch.Tensor, kl_init: torch.Tensor | None, kl_factor: float, weight_decay: float):
        """Per request: NLL + KL + weight decay, the NLL alone, and the KL reference (the first
        call's distribution, δ = 0)."""
        token_logp, kl_logp = self.log_probs(delta)
        device = delta.device
        nll = torch.zeros(self.n, device=device).index_add(
            0, self.token_owner.to(device), token_logp * self.token_weight.to(device))
        if kl_init is None:
            kl_init = kl_logp.detach()
        kl = kl_factor * (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)
        decay = delta.norm(dim=-1) * (weight_decay / self.init_sq)
        return nll + kl + decay, nll, kl_init


def _agrees(found: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to 16 units of rounding of the largest expected entry."""
    tolerance = 16 * torch.finfo(expected.dtype).eps * float(expected.abs().max())
    return bool((found - expected).abs().max() <= tolerance)


def pick(tensor: torch.Tensor, index: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """tensor[index], the index moved to the tensor's device (layers may sit on several GPUs)."""
    return tensor[tuple(i.to(tensor.device) for i in index)]


def _shifted(hidden: torch.Tensor, where: tuple[torch.Tensor, ...], shift: torch.Tensor) -> torch.Tensor:
    """hidden with `shift` added at the (row, position) pairs `where` (out of place)."""
    return hidden.index_put(tuple(i.to(hidden.device) for i in where), shift.to(hidden.device), accumulate=True)


def _adder(where, shift):
    """A forward hook adding `shift` to a module's output at `where`."""
    def add(module, args, output):
        return with_hidden(output, _shifted(hidden_of(output), where, shift))
    return add


@torch.no_grad()
def _prefix_cache(model, ids, mask, positions, layers) -> tuple[object, dict | None]:
    """Run the prefix columns once with a KV cache; keep each needed layer's keys and values.
    (None, None) when the model's cache does not expose them (then nothing is reused). The
    decoder alone runs (`base_model`): the LM head's logits of the prefix are never read."""
    try:
        cache = new_cache(model)
        model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, **with_cache(model.base_model, cache))
        return cache, {i: (cache.layers[i].keys, cache.layers[i].values) for i in layers}
    except (AttributeError, IndexError, TypeError, ValueError):
        return None, None


def _rewind(cache, prefix: dict) -> bool:
    """Point each layer of a plain dynamic cache back at the prefix's keys and values; a run
    concatenates into new tensors, so the prefix is never written. False for other layer
    kinds (sliding windows keep more state), which get a fresh cache instead."""
    from transformers.cache_utils import DynamicLayer

    layers = {index: cache.layers[index] for index in prefix}
    if any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers.values()):
        return False
    for index, (keys, values) in prefix.items():
        layers[index].keys, layers[index].values = keys, values
    return True


def _refill(model, prefix: dict) -> object:
    cache = new_cache(model)
    for index, (keys, values) in prefix.items():
        cache.update(keys, values, index)
    return cache


def optimise_values(problem: ValueProblem, *, lr: float, steps: int, kl_factor: float, weight_decay: float,
                    clamp_norm_factor: float) -> Values:
    """Adam on δ (one row per request) as in the published code: stop a request once its loss
    is below 5e-2, never step on the last iteration, project δ into the ball of radius
    `clamp_norm_factor`·‖v_init‖ after each step."""
    init = problem.init
    delta = torch.zeros_like(init, requires_grad=True)
    # the fused kernel: the same Adam arithmetic in one call per step instead of a dozen
    optimizer = torch.optim.Adam([delta], lr=lr, fused=delta.device.type in ("cpu", "cuda"))
    active = [True] * problem.n
    taken = [0] * problem.n
    final_loss = [0.0] * problem.n
    final_nll = [0.0] * problem.n
    max_norm = clamp_norm_factor * init.norm(dim=-1)
    kl_init = None
    frozen = [p for p in problem.model.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    try:
        with torch.enable_grad():
            for iteration in range(max(steps, 1)):
                loss, nll, kl_init = problem.losses(delta, kl_init, kl_factor, weight_decay)
                losses, nlls = loss.tolist(), nll.tolist()
                for r in range(problem.n):
                    if active[r]:
                        final_loss[r], final_nll[r] = losses[r], nlls[r]
                active = [a and value >= EARLY_STOP_LOSS for a, value in zip(active, losses)]
                if not any(active) or iteration == steps - 1:
                    break
                optimizer.zero_grad()
                if all(active):
                    loss.sum().backward()
                    kept = None
                else:  # a finished request gets no gradient, and its δ no longer moves
                    mask = torch.tensor(active, device=delta.device)
                    (loss * mask).sum().backward()
                    kept = delta.detach().clone()
                optimizer.step()
                with torch.no_grad():
                    if kept is not None:
                        delta.copy_(torch.where(mask[:, None], delta, kept))
                    norms = delta.norm(dim=-1)
                    delta.mul_(torch.where(norms > max_norm, max_norm / norms, 1.0)[:, None])
                taken = [t + a for t, a in zip(taken, active)]
    finally:
        for param in frozen:
            param.requires_grad_(True)
    return Values(init.detach(), delta.detach(), problem.keys, problem.outs, taken, final_loss, final_nll)


# ------------------------------------------------------------------------ key gathering


def mean_keys(keys: torch.Tensor, request: Request, offset: int = 0) -> torch.Tensor:
    """A request's key: the mean over its groups of the mean over each group's rows."""
    means = [keys[[offset + i for i in group]].mean(0) for group in request.groups]
    return torch.stack(means).mean(0)


def grouped_keys(keys: torch.Tensor, requests: Sequence[Request]) -> torch.Tensor:
    """(n, d_k) float64: each request's key from `keys`, one row per template row, the requests'
    rows one after the other."""
    keys = keys.double()
    means, offset = [], 0
    for request in requests:
        means.append(mean_keys(keys, request, offset))
        offset += len(request.rows)
    return torch.stack(means)


def request_keys(model, arch: Architecture, requests: Sequence[Request], modules: Sequence[str], pad: int,
                 outputs: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward over every template row of every request, stopped after the deepest module
    needed: per module, the (n, d_k) group-averaged keys; per output module, the (n, d) output at
    the bare prompt's fact token. Everything is read at fact tokens, which in a causal model do
    not see the tokens after them: each row runs only up to its fact token."""
    device = next(model.parameters()).device
    rows = [row for request in requests for row in request.rows]
    ids, mask = right_pad([row.ids[: row.lookup + 1] for row in rows], pad, device)
    recorded = trace(model, arch, ids, mask, inputs=modules, outputs=outputs)
    lookups = torch.tensor([row.lookup for row in rows], device=device)
    all_rows = torch.arange(len(rows), device=device)
    keys = {name: grouped_keys(pick(recorded.inputs[name], (all_rows, lookups)), requests) for name in modules}
    # each request's first row is its bare prompt
    bare = torch.tensor([0] + [len(request.rows) for request in requests[:-1]], device=device).cumsum(0)
    outs = {name: pick(recorded.outputs[name], (bare, lookups[bare])).double() for name in outputs}
    return keys, outs


# ------------------------------------------------------------------------- statistics

# In-memory caches, per process: Cholesky factors of C (float64, d_k² × 8 bytes per layer on
# the model's device) and AlphaEdit's projections (d_k² in the statistics' dtype).
FACTORS: dict[tuple, torch.Tensor] = {}
PROJECTIONS: dict[tuple, tuple[torch.Tensor, int]] = {}


def moments(model, tokenizer, hp, layers: Sequence[int]) -> dict[int, object]:
    """The second moment C of the rewrite module's input at each layer (see pytest_wild.stats)."""
    from .. import stats

    names = {layer: hp.rewrite_module_tmp.format(layer) for layer in layers}
    found = stats.second_moments(model, tokenizer, list(names.values()), hp.mom2_dataset, hp.mom2_n_samples,
                                 hp.mom2_dtype)
    return {layer: found[name] for layer, name in names.items()}


def cholesky(moment, device) -> torch.Tensor:
    """The float64 Cholesky factor of C, cached per statistic and device. A C that is not
    numerically positive definite (few samples, dead units) gets the smallest ridge
    ε·mean(diag C), ε = 1e-10, 1e-9, ..., that makes it so."""
    key = (moment.key, str(device))
    if key not in FACTORS:
        matrix = moment.matrix.to(device=device, dtype=torch.float64)
        scale = matrix.diagonal().mean().clamp_min(1e-30)
        eye = torch.eye(matrix.shape[0], dtype=torch.float64, device=device)
        ridge = 0.0
        for exponent in range(-10, 1):
            factor, info = torch.linalg.cholesky_ex(matrix + ridge * scale * eye)
            if int(info) == 0:
                break
            ridge = 10.0 ** exponent
        else:
            raise RuntimeError("the second-moment matrix cannot be factorised")
        FACTORS[key] = factor
    return FACTORS[key]


def solve_c(moment, rhs: torch.Tensor) -> torch.Tensor:
    """C⁻¹ rhs (float64) with the cached factor."""
    factor = cholesky(moment, rhs.device)
    squeeze = rhs.ndim == 1
    out = torch.cholesky_solve(rhs.double().reshape(rhs.shape[0], -1), factor)
    return out.squeeze(1) if squeeze else out


def clear_caches() -> None:
    """Forget the factorisations, projections and written-out-block checks (the statistics stay,
    see pytest_wild.stats)."""
    FACTORS.clear()
    PROJECTIONS.clear()
    WRITTEN_OUT_CHECKED.clear()


# ------------------------------------------------------------------------- weight layout


def is_transposed(module) -> bool:
    """GPT-2's Conv1D stores its weight as (in, out), the transpose of nn.Linear."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


@torch.no_grad()
def add_update(module, delta: torch.Tensor) -> None:
    """W += ΔW, with ΔW in the math layout (d_v, d_k), cast to the weight's dtype."""
    weight = module.weight
    update = delta.T if is_transposed(module) else delta
    if update.shape != weight.shape:
        if update.T.shape == weight.shape:
            update = update.T
        else:
            raise ValueError(f"update of shape {tuple(delta.shape)} does not fit weight {tuple(weight.shape)}")
    weight.add_(update.to(device=weight.device, dtype=weight.dtype))


# --------------------------------------------------------------------- default layers


def scaled_layers(layers: Sequence[int], reference_depth: int, depth: int) -> list[int]:
    """Published consecutive layers of a `reference_depth`-layer model mapped onto a `depth`-layer
    one: the top layer at the same relative depth, the number of layers in proportion (at least
    two when the published setting has several, so updates stay spread)."""
    if depth == reference_depth:
        return list(layers)
    top = min(depth - 1, round(max(layers) * (depth - 1) / (reference_depth - 1)))
    count = max(min(2, len(layers)), round(len(layers) * depth / reference_depth))
    first = max(0, top - count + 1)
    return list(range(first, min(depth, first + count)))


def check_layers(model, layers: Sequence[int], loss_layer: int) -> None:
    depth = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if not layers or bad:
        raise WildInputError(f"layers: {list(layers)} must be non-empty indices below {depth}")
    if not 0 <= loss_layer < depth:
        raise WildInputError(f"v_loss_layer: {loss_layer} is not a layer index below {depth}")
