"""LoRA: fine-tune a low-rank adapter on the edit requests, through `peft` (EasyEdit's `LoRA`).

EasyEdit's recipe, read from its `lora_main.py` and `hparams/LoRA/*.yaml`: a peft adapter
(`lora_type` "lora", or "adalora" as most of its files say) on `target_modules` of the
`layers` (all when empty), trained with Adam for `num_steps` passes over the requests on the
causal-LM loss of the target tokens after the prompt, with no early stop. With AdaLoRA the loss
is peft's, so it carries AdaLoRA's orthogonal regularisation (weight 0.5) as EasyEdit's does;
EasyEdit never calls `update_and_allocate`, so no rank is ever pruned, and peft's AdaLoRA starts
from its own `init_r` (12): `rank` is not read by it, in EasyEdit as here. `lora_dropout` acts
on the adapter's input while it trains: peft's new dropout modules are in training mode in a
model loaded in evaluation mode, in EasyEdit as here (the model's own dropouts stay off); its
draws come from torch's seeded generator.

Undo: merge, then restore the originals. The adapter is trained, merged into the base weights
(`merge_and_unload`, which also puts back every wrapped module), and the base weights it
merged into were saved on the handle before the adapter was attached, so `restore()` puts
them back bit for bit. The model leaves `apply` with exactly the modules it came with (checked:
a module peft left in place is an error that undoes the edit), so a sequence of LoRA edits is
a sequence of merged adapters, each trained fresh. EasyEdit's sequential editing instead keeps
training the one adapter it attached first; that difference is stated in docs/editors.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from ...cases.case import Case
from ...model.batching import left_pad
from ...model.tokens import target_ids
from ..api import EditHandle, Editor, EditorCache, EditorState


@dataclass
class LoRAHparams:
    """EasyEdit's LoRA keys. `layers`: the layer indices whose `target_modules` get an adapter
    (empty: every layer, as EasyEdit's files have it); `target_modules`: module names as peft
    matches them (the last part of a module's path)."""

    layers_may_be_empty: ClassVar[bool] = True  # EasyEdit's `layers: []` means every layer

    target_modules: list[str]
    lora_type: Literal["lora", "adalora"] = "lora"
    layers: list[int] = field(default_factory=list)
    rank: int = 8
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    lr: float = 5e-3
    num_steps: int = 70
    weight_decay: float = 0.0
    batch_size: int = 1


# The published files, by architecture: (lora_type, target modules, steps). GPT-2 XL, GPT-J,
# Llama-2/3 and Qwen2.5 have files; Mistral takes Llama's (same modules); GPT-NeoX has none:
# its fused attention projection, as the Llama files adapt attention (GUESS, stated in docs).
PUBLISHED = {
    "gpt2": ("adalora", ["c_attn"], 30),
    "gptj": ("adalora", ["fc_in", "fc_out"], 50),
    "llama": ("adalora", ["q_proj", "v_proj"], 70),
    "mistral": ("adalora", ["q_proj", "v_proj"], 70),
    "qwen2": ("lora", ["q_proj", "v_proj"], 60),
    "gpt_neox": ("adalora", ["query_key_value"], 70),
}
IGNORED = {
    "kl_factor": "EasyEdit's LoRA computes no KL term: its files set it to 0 and its training loop never reads it",
    "norm_constraint": "EasyEdit's LoRA never reads it (its files set it to false)",
}


def defaults(config, profile: str) -> dict:
    """The published file of the model's family. tinyworld (a GPT-2) and smollm2-135m (a Llama)
    take their family's file unchanged, untuned (what it gives on each: docs/editors.md)."""
    from ...model.architectures import architecture_of

    architecture_of(config)  # an unsupported architecture is refused with its one line
    lora_type, modules, steps = PUBLISHED[config.model_type]
    return {"lora_type": lora_type, "target_modules": list(modules), "layers": [], "rank": 8, "lora_alpha": 32.0,
            "lora_dropout": 0.1, "lr": 5e-3, "num_steps": steps, "weight_decay": 0.0, "batch_size": 1}


def prepare(model, tokenizer, hp: LoRAHparams, cache: EditorCache) -> None:
    """peft is an optional extra: its absence is one line before the first case, not an
    ImportError in the middle of the run."""
    import importlib.util

    from ...cases.case import WildInputError

    if importlib.util.find_spec("peft") is None:
        raise WildInputError("--editor lora: needs the peft package (pip install 'pytest-wild[lora]')")


def apply(model, tokenizer, cases: list[Case], hp: LoRAHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Attach an adapter, train it, merge it into the weights saved on the handle first."""
    from peft import get_peft_model

    before = dict(model.named_modules())
    config = _peft_config(hp, model.config.num_hidden_layers, len(cases))
    with warnings.catch_warnings():  # peft's notes on Conv1D layouts and AdaLoRA's unused `r`: said in the docstring
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, config)
    try:
        handle.save(_adapted_weights(peft_model))
        _train(peft_model, tokenizer, cases, hp)
    finally:
        with torch.no_grad():
            restored = peft_model.merge_and_unload()
        model.requires_grad_(False)
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in vars(model):
                delattr(model, attr)
    after = dict(restored.named_modules())
    if restored is not model or after.keys() != before.keys() or any(after[n] is not m for n, m in before.items()):
        raise RuntimeError("peft left a module of the model replaced after merging the LoRA adapter")


def _peft_config(hp: LoRAHparams, num_layers: int, n_cases: int):
    from peft import AdaLoraConfig, LoraConfig, TaskType

    common = dict(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=hp.rank, lora_alpha=hp.lora_alpha,
                  lora_dropout=hp.lora_dropout, target_modules=list(hp.target_modules),
                  layers_to_transform=list(hp.layers) if hp.layers else None)
    if hp.lora_type == "lora":
        return LoraConfig(**common)
    steps = hp.num_steps * -(-n_cases // hp.batch_size)
    return AdaLoraConfig(**common, total_step=max(2, steps))  # the schedule is never stepped (see above)


def _adapted_weights(peft_model) -> list[str]:
    """The base weights the adapter will be merged into, by their names in the unwrapped model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, BaseTunerLayer):
            base = module.get_base_layer()
            names += [f"{name}.{p}" for p, _ in base.named_parameters(recurse=False)]
    if not names:
        raise RuntimeError("peft attached no adapter")
    return names


def _train(peft_model, tokenizer, cases: list[Case], hp: LoRAHparams) -> None:
    """Adam on the adapter, `num_steps` passes over the cases in batches, no early stop."""
    trained = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=hp.lr, weight_decay=hp.weight_decay)
    batches = [cases[i : i + hp.batch_size] for i in range(0, len(cases), hp.batch_size)]
    for _ in range(hp.num_steps):
        for batch in batches:
            optimizer.zero_grad()
            _loss(peft_model, tokenizer, batch).backward()
            optimizer.step()


def _loss(peft_model, tokenizer, cases: list[Case]) -> torch.Tensor:
    """The model's own causal-LM loss on prompt + target with the prompt masked (peft adds
    AdaLoRA's orthogonal regularisation to it)."""
    prompts = [tokenizer(case.prompt)["input_ids"] for case in cases]
    targets = [target_ids(tokenizer, case.prompt, case.target) for case in cases]
    device = peft_model.get_base_model().device
    ids, mask, positions = left_pad([p + t for p, t in zip(prompts, targets)], tokenizer.pad_token_id, device)
    labels = torch.full_like(ids, -100)
    for row, tgt in enumerate(targets):
        labels[row, ids.shape[1] - len(tgt) :] = torch.tensor(tgt)
    return peft_model(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels).loss


LORA = Editor("lora", "LoRA: a low-rank adapter (peft) trained on the target tokens, merged into the weights",
              LoRAHparams, defaults, apply, prepare=prepare, ignored=IGNORED)
