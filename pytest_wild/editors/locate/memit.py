"""MEMIT: many edits in one update, spread over several MLP output projections.

1. For each case a target z for the residual stream at the top edit layer: the block output
   at the subject's last token plus a δ optimised like ROME's (NLL over the context templates,
   KL on "{subject} is a", weight decay, norm clamp), all cases optimised together.
2. For each edit layer l in ascending order: the keys K_l (rewrite-module inputs at the subject's
   last token, averaged over the bare prompt and over the sampled prefixes, with the layers
   below already edited), the residual still missing at the top layer split evenly over the
   layers left, R_l = (Z − current) / (layers left), and the least-squares update

       ΔW_l = R_l K_lᵀ (λ C_l + K_l K_lᵀ)⁻¹,   λ = `mom2_update_weight`,

   solved in float64 (with C_l's Cholesky factor, through the Woodbury identity).

The same steps with another solve give AlphaEdit (pytest_wild.editors.locate.alphaedit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...cases.case import Case
from ...model.architectures import architecture_of
from ..api import EditHandle, Editor, EditorCache, EditorState
from .layers import SPREAD_LAYERS, SPREAD_REFERENCE, check_layers, published_layers
from .solves import memit_solve, moments, moments_of_layers
from .spread import spread_update
from .templates import template_prefix


@dataclass
class MEMITHparams:
    """EasyEdit's MEMIT keys. `mom2_adjustment` is accepted and ignored, as in the published
    code: MEMIT always uses C."""

    layers: list[int]
    rewrite_module_tmp: str
    v_loss_layer: int
    fact_token: Literal["subject_last", "subject_first", "last"] = "subject_last"
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    mom2_update_weight: float = 15000.0
    mom2_adjustment: bool = True
    mom2_dataset: str = "wikitext"
    mom2_n_samples: int = 100_000
    mom2_dtype: Literal["float32", "float64"] = "float32"
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[10, 5]])
    layer_selection: Literal["all"] = "all"


# (steps, weight decay, clamp, λ): MEMIT repo for GPT-2 XL / GPT-J, EasyEdit for Llama/Mistral/Qwen2.
FAMILY_VALUES = {"gpt2": (20, 0.5, 0.75, 20000.0), "gptj": (25, 0.5, 0.75, 15000.0),
                 "gpt_neox": (25, 0.5, 0.75, 15000.0), "llama": (25, 1e-3, 4.0, 15000.0)}

# Tuned on the bundled tinyworld model: λ scales with the key width (d_k 512 here against
# 6400-14336 in the published models), a larger clamp and more steps let z reach the target
# at the top layer (1).
TINYWORLD = {"layers": [0, 1], "v_num_grad_steps": 30, "v_lr": 0.5, "v_weight_decay": 0.5,
             "clamp_norm_factor": 8.0, "mom2_update_weight": 200.0, "mom2_dataset": "tinyworld",
             "mom2_n_samples": 100_000, "mom2_dtype": "float64", "context_template_length_params": [[10, 5]]}
# SmolLM2-135M-Instruct (Llama, 30 layers): EasyEdit's Llama-2-7B file, λ scaled to the key width.
SMOLLM2 = {
    "layers": [3, 4, 5, 6, 7],  # Llama's [4-8] of 32: the top at 8 * 29/31 = 7.5 -> 7, five layers (5 * 30/32)
    "v_loss_layer": 29,  # the last layer, as published
    "v_num_grad_steps": 25, "v_lr": 0.5, "v_weight_decay": 1e-3, "clamp_norm_factor": 4.0,  # published for Llama
    # λ: a layer writes a/(1+a) of its residual for a typical key, a = kᵀ(λC)⁻¹k ≈ d_k/λ (E[kᵀC⁻¹k]
    # = d_k), so the published 15000 at Llama-2's d_k 11008 is 15000 * 1536/11008 ≈ 2100 here
    "mom2_update_weight": 2100.0,
}


def defaults(config, profile: str) -> dict:
    arch = architecture_of(config)
    steps, decay, clamp, weight = FAMILY_VALUES[arch.family]
    values = {"layers": published_layers(config, SPREAD_LAYERS, SPREAD_REFERENCE), "rewrite_module_tmp": arch.mlp_out,
              "v_loss_layer": config.num_hidden_layers - 1, "v_num_grad_steps": steps, "v_weight_decay": decay,
              "clamp_norm_factor": clamp, "mom2_update_weight": weight}
    if profile == "tinyworld":
        values.update(TINYWORLD)
    if profile == "smollm2-135m":
        values.update(SMOLLM2)
    return values


def apply(model, tokenizer, cases: list[Case], hp: MEMITHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Edit all the cases in one update."""
    layers = sorted(set(hp.layers))
    check_layers(model, layers, hp.v_loss_layer)
    handle.save([f"{hp.rewrite_module_tmp.format(layer)}.weight" for layer in layers])
    stats = moments(model, tokenizer, hp, layers, cache)

    def solve(layer, name, keys, resid):
        return memit_solve(stats[layer], keys, resid, hp.mom2_update_weight, cache)

    spread_update(model, tokenizer, cases, hp, handle, cache, solve)


MEMIT = Editor("memit", "MEMIT: batched least-squares updates spread over several MLP layers (Meng et al. 2023)",
               MEMITHparams, defaults, apply, template_prefix, moments_of_layers)
