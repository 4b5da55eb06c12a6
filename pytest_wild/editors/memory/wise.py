"""WISE (Wang et al., NeurIPS 2024; EasyEdit `models/wise`): edits trained into a side copy of
one FFN weight, which a router consults only for inputs that look like an edit. One edit:

1. **Inputs**: the prompt + target under each of WISE's context templates ("{}" and ten greedy
   continuations of "I", "You", "Because", "Yes", "Q: "), and one unrelated sentence last, in
   one left-padded batch, at positions counted from the batch's first column.
2. **Mask**: a random share `mask_ratio` of the side weight's entries may change (one mask per
   shard, drawn again every `save_freq` edits).
3. **Train**: SGD on the target tokens' cross-entropy plus the three-margin activation loss,
   which pushes the edit rows' activation distance up and the unrelated row's down; after
   each step the side weight is clamped to ±`norm_constraint` of the original, elementwise.
   Training stops early once the loss has settled.
4. **Threshold**: the edit rows' mean distance joins the side memory's running minimum, which
   (times `act_ratio`) is the routing threshold.

Every `save_freq` edits the side weight becomes a shard and starts again from the original;
every `merge_freq` edits the newest shards are TIES-merged. Routing is in side_memory.py.
WISE edits one request at a time (EasyEdit's WISE refuses batches too).

Training follows EasyEdit's `WISE.edit` (models/wise/WISE.py and utils.py) also in details the
paper leaves open, because they move the scores (docs/measured.md, "WISE trains as EasyEdit
does"): positions counted from the batch's first column, so a left-padded row sits after its
padding; distances averaged over every column, padding included; a row's target loss divided
by its target tokens + 1; the early stop one step late; templates that end at EOS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers.activations import ACT2FN

from ...cases.case import Case, WildInputError
from ...model.architectures import architecture_of
from ...model.batching import left_pad
from ...model.tokens import config_eos_ids, target_ids
from ...model.tracing import input_of, run_blocks, trace
from ..api import EditHandle, Editor, EditorCache, EditorState, StateMismatch, cached, expect_parts, expect_tensor
from .side_memory import SideMemory, layer_output, ties_merge, token_distances

WEIGHT_DECAY = 1e-5  # EasyEdit's WISE hard-codes it
EARLY_STOP = (1e-4, 0.02)  # stop when the loss moved by at most this and is at most that
TEMPLATE_PREFIXES = ("I", "You", "Because", "Yes", "Q: ")
TEMPLATE_LENGTHS = (5, 10)
# The unrelated row of each edit (Revisit feeds a zsRE training question and its answer): plain
# statements no suite asks about, or on tinyworld the bundled corpus's questions that neither
# bundled suite asks (in the edits' own format, which is what the out-of-scope margin needs).
STATEMENTS = (
    "Water boils at one hundred degrees Celsius at sea level.",
    "The violin has four strings tuned in fifths.",
    "A week has seven days.",
    "Copper is a good conductor of electricity.",
    "The chess board has sixty-four squares.",
    "Bees make honey from the nectar of flowers.",
    "The moon orbits the earth about once a month.",
    "A triangle has three sides.",
)


@dataclass
class WiseHparams:
    """EasyEdit's WISE keys, with the layer given as `layers` (one) and `rewrite_module_tmp`
    instead of `inner_params`. `semantics` is ours: see side_memory.py."""

    layers: list[int]
    rewrite_module_tmp: str
    edit_lr: float = 1.0
    n_iter: int = 70
    mask_ratio: float = 0.2
    norm_constraint: float = 1.0
    act_margin: list[float] = field(default_factory=lambda: [5.0, 20.0, 10.0])
    act_ratio: float = 0.88
    save_freq: int = 500
    merge_freq: int = 1000
    merge_alg: Literal["ties"] = "ties"
    densities: float = 0.53
    weights: float = 1.0
    retrieve: bool = True
    replay: Literal[False] = False
    objective_optimization: Literal["only_label"] = "only_label"
    semantics: Literal["per-call", "prompt"] = "per-call"
    unrelated: Literal["statements", "tinyworld"] = "statements"

    def __post_init__(self) -> None:
        problems = {
            "layers": (len(self.layers) == 1, f"WISE edits one layer, got {self.layers}"),
            "act_margin": (len(self.act_margin) == 3, f"three margins [alpha, beta, gamma], got {self.act_margin}"),
            "mask_ratio": (0 < self.mask_ratio <= 1, f"expected a share in (0, 1], got {self.mask_ratio}"),
            "densities": (0 < self.densities <= 1, f"expected a share in (0, 1], got {self.densities}"),
            "norm_constraint": (self.norm_constraint > 0, f"expected a number > 0, got {self.norm_constraint}"),
            "act_ratio": (self.act_ratio > 0, f"expected a number > 0, got {self.act_ratio}"),
            "save_freq": (self.save_freq >= 1, f"expected a number >= 1, got {self.save_freq}"),
            "merge_freq": (self.merge_freq >= 1 and self.merge_freq % max(self.save_freq, 1) == 0,
                           f"must be a multiple of save_freq ({self.save_freq}), got {self.merge_freq}"),
        }
        for key, (good, why) in problems.items():
            if not good:
                raise WildInputError(f"hyperparameters: {key}: {why}")


# Published (EasyEdit hparams/WISE): Llama-2-7B, Mistral-7B, Llama-3.2-3B layer 27 of 32
# (down_proj); Llama-3-8B 29 (lr 0.9, 30 steps, margins [2, 20, 10], ratio 0.5); Qwen2.5-7B 23 of
# 28; GPT-J 21 of 28 (fc_out, margins [15, 40, 20]); GPT-2 8 of 12 (c_fc, 40 steps, ratio 0.8).
LAYER_FRACTION = {"gpt2": 8 / 12, "gptj": 21 / 28, "qwen2": 23 / 28}
LLAMA_3 = {"edit_lr": 0.9, "n_iter": 30, "act_margin": [2.0, 20.0, 10.0], "act_ratio": 0.5}
# Tuned on tinyworld (docs/measured.md, "GRACE and WISE on tinyworld").
TINYWORLD = {"layers": [3], "unrelated": "tinyworld"}
# SmolLM2-135M-Instruct (Llama, 30 layers, a SmolLM tokenizer, not Llama-3's): EasyEdit's Llama-2-7B file.
SMOLLM2 = {
    "layers": [25],  # Llama-2-7B's down_proj 27 of 32 at the same depth: 27/32 of 30 is 25.3
    "edit_lr": 1.0, "n_iter": 70, "act_ratio": 0.88,  # published for Llama-2
    "act_margin": [5.0, 20.0, 10.0],  # published for Llama-2
}

IGNORED = {
    "inner_params": "the layer is `layers` with `rewrite_module_tmp`, as for every editor here",
    "use_chat_template": "the context is pytest-wild's --wild-context",
}


def defaults(config, profile: str) -> dict:
    arch = architecture_of(config)
    depth = config.num_hidden_layers
    llama_3 = config.model_type == "llama" and config.vocab_size >= 128000
    fraction = 29 / 32 if llama_3 else LAYER_FRACTION.get(config.model_type, 27 / 32)
    values = {"layers": [min(depth - 1, round(fraction * depth))],
              "rewrite_module_tmp": f"{arch.mlp}.c_fc" if arch.family == "gpt2" else arch.mlp_out}
    if arch.family == "gpt2":
        values |= {"n_iter": 40, "act_ratio": 0.8}
    if arch.family == "gptj":
        values |= {"act_margin": [15.0, 40.0, 20.0]}
    if llama_3:
        values |= LLAMA_3
    if profile == "tinyworld":
        values |= TINYWORLD
    if profile == "smollm2-135m":
        values |= SMOLLM2
    return values


def activation_of(config):
    """The model's FFN activation (WISE measures distances after it)."""
    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    return ACT2FN[name]


def attach(model, hp: WiseHparams, state: EditorState) -> tuple[torch.nn.Module, SideMemory]:
    """The sequence's side memory, routed at the layer (also one loaded from a run directory,
    which is why this is the editor's `resume`)."""
    module = model.get_submodule(hp.rewrite_module_tmp.format(hp.layers[0]))
    memory = state.part("wise", SideMemory)
    memory.attach(model, module, activation_of(model.config), hp.act_ratio, hp.semantics, hp.retrieve)
    return module, memory


def resume(model, hp: WiseHparams, state: EditorState) -> None:
    attach(model, hp, state)


def check_state(model, hp: WiseHparams, parts: dict) -> None:
    """A side memory saved in a run directory fits the layer it routes at: the side weight,
    its mask, each shard and the merged weight shaped as the layer's weight; the thresholds'
    minima and the edit count single numbers; shards numbered from 0; nothing else."""
    expect_parts(parts, {"wise"})
    saved = parts.get("wise")
    if not saved:
        return
    weight = tuple(model.get_submodule(hp.rewrite_module_tmp.format(hp.layers[0])).weight.shape)
    shards = sum(key.startswith("shard.") for key in saved)
    known = {"side", "side_min", "mask", "count", "merged"} | {f"shard{kind}.{i}" for kind in ("", "_min")
                                                                 for i in range(shards)}
    for key in sorted(set(saved) - known):
        raise StateMismatch(f"wise/{key} is not part of a side memory")
    for key in ["side", "mask", *(f"shard.{i}" for i in range(shards))] + (["merged"] if "merged" in saved else []):
        expect_tensor(saved, f"wise/{key}", weight)
    for key in ["side_min", *(f"shard_min.{i}" for i in range(shards))]:
        expect_tensor(saved, f"wise/{key}", ())
    if int(expect_tensor(saved, "wise/count", (), integer=True)) < 1:
        raise StateMismatch("wise/count is below 1: a saved side memory holds at least one edit")


def apply(model, tokenizer, cases: list[Case], hp: WiseHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Edit each case into the sequence's side memory; the handle's undo puts the memory back."""
    templates = cached(cache, ("wise context templates",), lambda: context_templates(model, tokenizer))
    unrelated = cached(cache, ("wise unrelated rows", hp.unrelated), lambda: unrelated_rows(hp.unrelated))
    module, memory = attach(model, hp, state)
    before = memory.snapshot()
    handle.on_undo(lambda: memory.put(before))
    for case in cases:
        handle.info.append(edit_one(model, tokenizer, module, memory, case, templates, unrelated, hp))


def unrelated_rows(kind: str) -> tuple[str, ...]:
    """The sentences an edit's unrelated row is drawn from (by a hash of the case's id)."""
    if kind == "statements":
        return STATEMENTS
    from ...model.load import TINYWORLD_DIR

    asked = set()
    for suite in ("suite.jsonl", "sequential.jsonl"):
        for line in (TINYWORLD_DIR / suite).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            asked |= {record["prompt"], record["rephrase"], *(item["loc"] for item in record["locality"])}
    lines = (TINYWORLD_DIR / "corpus.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line.startswith("Q: ") and line[: line.find(" A:") + 3] not in asked)


@torch.no_grad()
def context_templates(model, tokenizer) -> list[str]:
    """"{}" and the unedited model's greedy continuations of WISE's prefixes, each + " {}". As
    EasyEdit's `get_context_templates` calls `generate`: the five prefixes decoded as one
    left-padded batch, for 5 and then 10 new tokens at most, each row ending at EOS."""
    prefixes = [tokenizer(prefix)["input_ids"] for prefix in TEMPLATE_PREFIXES]
    found = ["{}"]
    for length in TEMPLATE_LENGTHS:
        for ids in greedy_batch(model, prefixes, length, tokenizer.pad_token_id, end_ids(model, tokenizer)):
            found.append(tokenizer.decode(ids, skip_special_tokens=True).replace("{", " ").replace("}", " ") + " {}")
    return found


def end_ids(model, tokenizer) -> set[int]:
    """The ids at which `generate` ends a row: the generation config's EOS, else the tokenizer's."""
    config = getattr(model, "generation_config", None)
    found = config_eos_ids(config) if config is not None else []
    if not found and tokenizer.eos_token_id is not None:
        found = [tokenizer.eos_token_id]
    return set(found)


@torch.no_grad()
def greedy_batch(model, prompts: list[list[int]], length: int, pad_id: int, ends: set[int]) -> list[list[int]]:
    """Each prompt and its greedy continuation of at most `length` tokens, decoded as one
    left-padded batch at positions counted from each row's first token (as `generate` counts
    them). A row ends after a token in `ends`, which it keeps (decoding skips it); the batch
    ends when every row has."""
    rows = [list(prompt) for prompt in prompts]
    running = [True] * len(rows)
    for _ in range(length):
        if not any(running):
            break
        ids, mask, positions = left_pad(rows, pad_id, model.device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]
        for row, token in enumerate(logits.argmax(-1).tolist()):
            if running[row]:
                rows[row].append(token)
                running[row] = token not in ends
    return rows


def edit_one(model, tokenizer, module, memory: SideMemory, case: Case, templates: list[str],
             unrelated: tuple[str, ...], hp: WiseHparams) -> dict:
    if memory.count % hp.save_freq == 0:  # a new shard begins: a new gradient mask
        memory.mask = (torch.rand(memory.side.shape, device=memory.side.device) < hp.mask_ratio).to(memory.side.dtype)
    pick = int.from_bytes(hashlib.sha256(case.id.encode()).digest()[:8], "big") % len(unrelated)
    batch = edit_batch(model, tokenizer, case, templates, unrelated[pick])
    side, least, steps, loss = train_side(model, module, memory, batch, hp)
    memory.put((side, min(memory.side_min, least), memory.shards, memory.merged, memory.mask, memory.count + 1))
    action = shard_and_merge(memory, module, hp)
    return {"case": case.id, "steps": steps, "loss": loss, "in_scope_distance": least,
            "threshold": memory.side_min * hp.act_ratio, "edits": memory.count, "shards": len(memory.shards),
            "action": action}


def edit_batch(model, tokenizer, case: Case, templates: list[str], unrelated: str) -> dict:
    """Left-padded rows: each template around prompt + target, then the unrelated sentence, as
    EasyEdit's `tokenize` builds them. An edit row's labels are its tokens from the column where
    the longest templated prompt ends (the target; also the end of the shorter prompts where the
    unrelated row is the longest row), never a token with the pad id; the unrelated row has
    none. Positions are the columns (EasyEdit passes no position ids), so a row's tokens sit
    after its padding."""
    contexts = [template.format(case.prompt) for template in templates]
    prompts = [tokenizer(context)["input_ids"] for context in contexts]
    rows = [prompt + target_ids(tokenizer, context, case.target) for prompt, context in zip(prompts, contexts)]
    rows.append(tokenizer(unrelated)["input_ids"])
    ids, mask, _ = left_pad(rows, tokenizer.pad_token_id, model.device)
    labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
    labels[:, : max(len(prompt) for prompt in prompts)] = -100
    labels[-1] = -100
    return {"input_ids": ids, "attention_mask": mask, "position_ids": column_positions(mask), "labels": labels}


def column_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as a forward call without them gives: the column, padding counted, so a
    left-padded row's first token is not at position 0 (EasyEdit's training passes none)."""
    return torch.arange(mask.shape[1], device=mask.device).expand_as(mask)


def meanpos(values: torch.Tensor) -> torch.Tensor:
    """The mean of the positive entries (0 when there are none), as the published loss takes it."""
    positive = values[values > 0]
    return positive.mean() if positive.numel() else values.new_zeros(())


def settled(losses: list[float]) -> bool:
    """Whether to stop before the step on the newest loss. EasyEdit's meter learns each loss
    only after its step, so the check sees the two losses before the newest one: a step late."""
    if len(losses) < 3:
        return False
    before, last = losses[-3], losses[-2]
    return abs(last - before) <= EARLY_STOP[0] and last <= EARLY_STOP[1]


def train_side(model, module, memory: SideMemory, batch: dict, hp: WiseHparams) -> tuple[torch.Tensor, float, int, float]:
    """SGD on a new copy of the side weight; (the trained weight, the edit rows' mean distance
    at the last forward pass, steps taken, last loss). Each step runs only what depends on the
    side weight (`above_the_edit`), then the final norm and the LM head."""
    forward = above_the_edit(model, module, batch, hp.layers[0])
    arch = architecture_of(model.config)
    norm, head = model.get_submodule(arch.ln_f), model.get_output_embeddings()
    original = module.weight.detach()
    side = memory.side.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([side], lr=hp.edit_lr, weight_decay=WEIGHT_DECAY)
    alpha, beta, gamma = hp.act_margin
    seen = {}

    def through_side(_module, inputs, output):
        seen["distances"] = token_distances(memory.activation, output.detach(), new := layer_output(module, side, inputs[0]))
        return new.to(output.dtype)

    hook = module.register_forward_hook(through_side)
    memory.routing = False  # the rows go through the side weight being trained, not the router
    losses, in_scope, steps = [], 0.0, 0
    edit_rows = batch["labels"].shape[0] - 1
    # the positions whose next token is a target token (edit rows only): the only logits the loss reads
    rows, columns = (batch["labels"][:-1, 1:] != -100).nonzero(as_tuple=True)
    targets = batch["labels"][rows, columns + 1]
    try:
        with torch.enable_grad():
            for _ in range(hp.n_iter):
                hidden = forward()
                distance = seen["distances"].mean(-1)  # over every column, padding included, as EasyEdit's `euc`
                d_in, d_out = distance[:-1], distance[-1:]
                act_loss = (meanpos(d_out[:, None] - d_in + gamma) + meanpos(d_out - alpha) + meanpos(beta - d_in))
                loss = ft_loss(head(norm(hidden[rows, columns])).float(), targets, rows, edit_rows) + act_loss
                losses.append(loss.item())
                in_scope = d_in.mean().item()
                if settled(losses):
                    break
                optimizer.zero_grad()
                loss.backward()
                side.grad *= memory.mask
                optimizer.step()
                steps += 1
                with torch.no_grad():
                    side.copy_(torch.clamp(side, original - hp.norm_constraint, original + hp.norm_constraint))
    finally:
        hook.remove()
        memory.routing = True
    return side.detach(), in_scope, steps, losses[-1]


def above_the_edit(model, module, batch: dict, layer: int):
    """The hidden states after the last block, as a function to call once per step. Nothing
    below the edited block depends on the side weight, and inside it only the MLP does when
    the side weight is one of the MLP's: a block's output is what it adds around its MLP plus
    the MLP's output (sequential or parallel residual alike), so a step runs the MLP on its
    recorded input and adds the difference; else the blocks from the edited one up run on the
    inputs one clean pass recorded."""
    arch = architecture_of(model.config)
    last = model.config.num_hidden_layers - 1
    mlp, block = arch.mlp.format(layer), arch.block.format(layer)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    position_ids = batch["position_ids"]
    inside_mlp = any(sub is module for sub in model.get_submodule(mlp).modules())
    if not inside_mlp:
        recorded = trace(model, arch, ids, mask, calls=range(layer, last + 1), position_ids=position_ids)
        entry = input_of(*recorded.calls[layer])
        return lambda: run_blocks(model, arch, recorded, entry, layer, last)
    recorded = trace(model, arch, ids, mask, inputs=[mlp], outputs=[mlp, block], calls=range(layer + 1, last + 1),
                     position_ids=position_ids)
    around = recorded.outputs[block] - recorded.outputs[mlp]
    mlp_module, mlp_input = model.get_submodule(mlp), recorded.inputs[mlp]

    def forward() -> torch.Tensor:
        hidden = around + mlp_module(mlp_input)
        return run_blocks(model, arch, recorded, hidden, layer + 1, last) if layer < last else hidden

    return forward


def ft_loss(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, edit_rows: int) -> torch.Tensor:
    """Per edit row the summed cross-entropy of its target tokens over their count + 1, then
    the mean over the edit rows (`logits` holds only the positions that predict a target
    token, `rows` says whose each is). The + 1 is EasyEdit's: its label window starts one
    position before the first target token, where the label is masked and adds nothing."""
    per_token = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    count = torch.bincount(rows, minlength=edit_rows)
    per_row = torch.zeros(edit_rows, device=logits.device).index_add(0, rows, per_token) / (count + 1)
    return per_row.mean()


def shard_and_merge(memory: SideMemory, module, hp: WiseHparams) -> str:
    """After an edit: every `save_freq` edits the side weight becomes a shard and starts again
    from the original; every `merge_freq`, the newest merge_freq / save_freq shards are
    TIES-merged into one shard (retrieve on), or every pending shard is merged into the one
    merged weight, 0.4 / 0.6 with the earlier merge (retrieve off: WISE-Merge, whose threshold
    is the smallest of all its edits, never reset)."""
    if memory.count % hp.save_freq:
        return "edited"
    original = module.weight.detach()
    shards = (*memory.shards, (memory.side, memory.side_min))
    merged, action = memory.merged, "saved a shard"
    if memory.count % hp.merge_freq == 0:
        action = "merged shards"
        if hp.retrieve:
            n = hp.merge_freq // hp.save_freq
            newest = shards[-n:]
            weight = ties_merge([w for w, _ in newest], original, hp.densities, [hp.weights / n] * n)
            shards = (*shards[:-n], (weight, min(least for _, least in newest)))
        else:
            n = len(shards)
            weights, mix = [w for w, _ in shards], [hp.weights / n] * n
            if merged is not None:
                weights, mix = weights + [merged], [0.4 / n] * n + [0.6]
            merged, shards = ties_merge(weights, original, hp.densities, mix), ()
    memory.put((original.clone(), float("inf") if hp.retrieve else memory.side_min, shards, merged, memory.mask,
                memory.count))
    return action


WISE = Editor("wise", "WISE: a side copy of one FFN weight, trained on the edits and routed by activation distance",
              WiseHparams, defaults, apply, ignored=IGNORED, batches=False, resume=resume,
              check_state=check_state)
