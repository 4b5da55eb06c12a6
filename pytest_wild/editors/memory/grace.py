"""GRACE (Hartvigsen et al., NeurIPS 2023): edits kept in a codebook at one layer, the weights
untouched. One edit, in three steps:

1. **Key**: the layer's input at the prompt's last token.
2. **Codebook**: the published rules decide whether the key is new (added with radius ε₀),
   conflicts with a nearby key of another label (both radii split at half the distance) or
   extends a nearby key of the same label (its radius grows to cover it). The labels are kept
   as EasyEdit keeps them: each new one *prepended* while keys are appended, so from the second
   key on `labels[i]` is not key i's label and "another label" compares with the wrong edit's
   (a bookkeeping slip of the published code, reproduced because it decides split against
   expand); a label is the float32 mean of the edit's label ids, as EasyEdit compares them.
3. **Value**: the key's value, initialised cold (U[0,1)) or warm (the layer's output there),
   trained with Adam on the language-model loss of prompt + target, `n_iter` steps.

How the codebook is read while decoding (`semantics`) is in codebook.py. GRACE edits one
request at a time (EasyEdit's GRACE refuses batches too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...cases.case import Case, WildInputError
from ...model.architectures import architecture_of
from ...model.reading import reading
from ...model.tokens import target_ids
from ...model.weights import in_out
from ..api import EditHandle, Editor, EditorCache, EditorState, StateMismatch, expect_parts, expect_tensor
from .codebook import Codebook


@dataclass
class GraceHparams:
    """EasyEdit's GRACE keys, with the layer given as `layers` (one) and `rewrite_module_tmp`
    instead of `inner_params`. `semantics` is ours: see codebook.py."""

    layers: list[int]
    rewrite_module_tmp: str
    edit_lr: float = 1.0
    n_iter: int = 100
    eps: float = 1.0
    dist_fn: Literal["euc"] = "euc"
    val_init: Literal["cold", "warm"] = "cold"
    eps_expand: Literal["coverage", "moving_average"] = "coverage"
    replacement: Literal["replace_last", "replace_prompt", "replace_all"] = "replace_last"
    semantics: Literal["published", "per-token"] = "published"

    def __post_init__(self) -> None:
        if len(self.layers) != 1:
            raise WildInputError(f"hyperparameters: layers: GRACE edits one layer, got {self.layers}")


# The published layer as a fraction of depth and the published n_iter (EasyEdit / Revisit files):
# Llama-2-7B and Llama-3.2-3B 27 of 32 (down_proj), Qwen2 18 of 28, GPT-J 25 of 28 (fc_out),
# GPT-2 XL 35 of 48 (c_fc: GRACE's original GPT-2 module, the MLP's input projection).
LAYER_FRACTION = {"gpt2": 35 / 48, "gptj": 25 / 28, "qwen2": 18 / 28}
N_ITER = {"gpt2": 200, "gptj": 200}
# Tuned on tinyworld (docs/measured.md, "GRACE and WISE on tinyworld"): the last block's c_fc, and a radius
# that suits its activations' scale (key distances between questions there are 3 to 15).
TINYWORLD = {"layers": [3], "n_iter": 10, "eps": 3.0}
# SmolLM2-135M-Instruct (Llama, 30 layers): EasyEdit's Llama-2-7B file (the one the paper ran).
SMOLLM2 = {
    "layers": [25],  # Llama-2-7B's down_proj 27 of 32 at the same depth: 27/32 of 30 is 25.3
    "n_iter": 50, "edit_lr": 1.0,  # published for Llama
    "eps": 1.0,  # published
}

IGNORED = {
    "inner_params": "the layer is `layers` with `rewrite_module_tmp`, as for every editor here",
    "val_train": "EasyEdit trains values with Adam whatever it says; its 'adv' noise has its first row "
                 "zeroed, which for a one-request edit is all of it",
    "num_pert": "used only by val_train 'adv' (see val_train)",
    "val_reg": "EasyEdit's GRACE never reads it",
    "reg": "EasyEdit's GRACE never reads it",
    "dropout": "EasyEdit's GRACE never reads it",
}


def defaults(config, profile: str) -> dict:
    arch = architecture_of(config)
    depth = config.num_hidden_layers
    layer = min(depth - 1, round(LAYER_FRACTION.get(config.model_type, 27 / 32) * depth))
    module = f"{arch.mlp}.c_fc" if arch.family == "gpt2" else arch.mlp_out
    values = {"layers": [layer], "rewrite_module_tmp": module, "n_iter": N_ITER.get(arch.family, 50)}
    if profile == "tinyworld":
        values.update(TINYWORLD)
    if profile == "smollm2-135m":
        values.update(SMOLLM2)
    return values


def apply(model, tokenizer, cases: list[Case], hp: GraceHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Edit each case into the sequence's codebook; the handle's undo puts the codebook back."""
    module, book = attach(model, hp, state)
    before = book.snapshot()
    handle.on_undo(lambda: book.put(*before))
    for case in cases:
        handle.info.append(edit_one(model, tokenizer, module, book, case, hp))


def attach(model, hp: GraceHparams, state: EditorState) -> tuple[torch.nn.Module, Codebook]:
    """The sequence's codebook, read at the layer's output (also a codebook loaded from a run
    directory, which is why this is the editor's `resume`)."""
    module = model.get_submodule(hp.rewrite_module_tmp.format(hp.layers[0]))
    book = state.part("grace", Codebook)
    book.attach(model, module, hp.semantics, hp.replacement)
    return module, book


def resume(model, hp: GraceHparams, state: EditorState) -> None:
    attach(model, hp, state)


def check_state(model, hp: GraceHparams, parts: dict) -> None:
    """A codebook saved in a run directory fits the layer it is read at: n keys as wide as the
    layer's input, n values as wide as its output, n radii and n labels, nothing else."""
    expect_parts(parts, {"grace"})
    saved = parts.get("grace")
    if not saved:
        return
    d_in, d_out = in_out(model.get_submodule(hp.rewrite_module_tmp.format(hp.layers[0])))
    n = expect_tensor(saved, "grace/keys", (None, d_in)).shape[0]
    for key, shape in (("values", (n, d_out)), ("radii", (n,)), ("labels", (n,))):
        expect_tensor(saved, f"grace/{key}", shape)
    for key in sorted(set(saved) - {"keys", "values", "radii", "labels"}):
        raise StateMismatch(f"grace/{key} is not part of a codebook")


def edit_one(model, tokenizer, module, book: Codebook, case: Case, hp: GraceHparams) -> dict:
    prompt = tokenizer(case.prompt)["input_ids"]
    ids = torch.tensor([prompt + target_ids(tokenizer, case.prompt, case.target)], device=model.device)
    labels = ids.clone()
    labels[:, : len(prompt)] = -100
    key_at = len(prompt) - 1
    key, output = layer_at(model, module, ids, key_at)
    value = output if hp.val_init == "warm" else torch.rand(output.shape, device=output.device)
    # EasyEdit's label of an edit: the float32 mean of its label ids, -100 on the prompt included
    action, slot = update_codebook(book, key, value, labels.float().mean(), hp)
    loss = train_value(model, book, slot, ids, labels, key_at, hp)
    return {"case": case.id, "action": action, "slot": slot, "keys": len(book), "loss": loss}


@torch.no_grad()
def layer_at(model, module, ids: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's input at `position`, and its output there before any codebook replaces it."""
    seen = {}

    def capture(_module, inputs):
        seen["input"] = inputs[0][0, position].detach().float()

    hook = module.register_forward_pre_hook(capture)
    try:
        model(input_ids=ids, use_cache=False)
    finally:
        hook.remove()
    return seen["input"], module.forward(seen["input"][None].to(module.weight.dtype))[0].float()


def update_codebook(book: Codebook, key: torch.Tensor, value: torch.Tensor, label: torch.Tensor,
                    hp: GraceHparams) -> tuple[str, int]:
    """The published insertion rules; returns what was done and the slot whose value is trained.
    `labels[nearest]` is read from labels kept newest first, as EasyEdit's `add_key` keeps them."""
    eps0 = torch.tensor([hp.eps], device=key.device)
    if len(book) == 0:
        book.put(key[None], value[None], eps0, label.view(1).to(key.device))
        return "insert", 0
    nearest, distance = book.nearest(key[None])
    nearest, distance = int(nearest), distance[0]
    keys, values, radii, labels = book.snapshot()
    if distance > hp.eps + radii[nearest]:
        action = "insert"
    elif label.to(labels.device) != labels[nearest]:
        action = "split"
    else:
        radii = radii.clone()
        if distance > radii[nearest]:
            radii[nearest] = distance
            if hp.eps_expand == "moving_average":
                keys = keys.clone()
                keys[nearest] = 0.5 * keys[nearest] + 0.5 * key
            book.put(keys, values, radii, labels)
            return "expand", nearest
        return "covered", nearest
    radii = torch.cat([radii, eps0])
    if action == "split":
        radii[nearest], radii[-1] = distance / 2 - 1e-5, distance / 2
    book.put(torch.cat([keys, key[None]]), torch.cat([values, value[None]]), radii,
             torch.cat([label.view(1).to(labels.device), labels]))
    return action, len(book) - 1


def train_value(model, book: Codebook, slot: int, ids: torch.Tensor, labels: torch.Tensor, key_at: int,
                hp: GraceHparams) -> float:
    """Adam on the values (only the chosen slot gets a gradient), `n_iter` steps, no early stop.
    The values are a new tensor, so the undo's reference to the old ones stays as it was."""
    values = book.values.clone().requires_grad_(True)
    book.values = values
    optimizer = torch.optim.Adam([values], lr=hp.edit_lr)
    loss = torch.tensor(float("nan"))
    with torch.enable_grad(), reading(model, torch.tensor([key_at], device=ids.device)):
        for _ in range(hp.n_iter):
            logits = model(input_ids=ids, use_cache=False).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    book.values = values.detach()
    return loss.item()


GRACE = Editor("grace", "GRACE: a codebook of layer-input keys and trained replacement outputs at one layer",
               GraceHparams, defaults, apply, ignored=IGNORED, batches=False,
               resume=resume, check_state=check_state)
