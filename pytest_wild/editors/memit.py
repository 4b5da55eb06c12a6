"""MEMIT: many edits in one update, spread over several MLP output projections.

1. For each case a target z for the residual stream at the top edit layer: the block output
   at the subject's last token plus a δ optimised like ROME's (NLL over the context templates,
   KL on "{subject} is a", weight decay, norm clamp), all cases optimised together.
2. For each edit layer l in ascending order: the keys K_l (rewrite-module inputs at the subject's
   last token, averaged over the bare prompt and over the sampled prefixes, with the layers
   below already edited), the residual still missing at the top layer split evenly over the
   layers left, R_l = (Z − current) / (layers left), and the least-squares update

       ΔW_l = R_l K_lᵀ (λ C_l + K_l K_lᵀ)⁻¹,   λ = `mom2_update_weight`,

   solved in float64 (with C_l's Cholesky factor cached, through the Woodbury identity).

The same steps with another solve give AlphaEdit (pytest_wild.editors.alphaedit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..architectures import architecture_of
from ..cases import Case
from . import Editor
from .locate import (
    EditRestore,
    ValueProblem,
    Values,
    add_update,
    check_layers,
    context_templates,
    grouped_keys,
    moments,
    optimise_values,
    pad_id,
    prepare,
    request_keys,
    scaled_layers,
    solve_c,
    template_prefix,
)


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


PUBLISHED_LAYERS = {("gpt2", 48): [13, 14, 15, 16, 17], ("gptj", 28): [3, 4, 5, 6, 7, 8],
                    ("llama", 32): [4, 5, 6, 7, 8], ("llama", 28): [4, 5, 6, 7, 8]}
# NeoX has no published MEMIT setting: GPT-J's (the other parallel-residual model) is scaled (GUESS).
REFERENCE = {"gpt2": (48, [13, 14, 15, 16, 17]), "gptj": (28, [3, 4, 5, 6, 7, 8]),
             "gpt_neox": (28, [3, 4, 5, 6, 7, 8]), "llama": (32, [4, 5, 6, 7, 8])}
# (steps, weight decay, clamp, λ): MEMIT repo for GPT-2 XL / GPT-J, EasyEdit for Llama/Mistral/Qwen2.
FAMILY_VALUES = {"gpt2": (20, 0.5, 0.75, 20000.0), "gptj": (25, 0.5, 0.75, 15000.0),
                 "gpt_neox": (25, 0.5, 0.75, 15000.0), "llama": (25, 1e-3, 4.0, 15000.0)}

# Tuned on the bundled tinyworld model: λ scales with the key width (d_k 512 here against
# 6400-14336 in the published models), a larger clamp and more steps let z reach the target
# at the top layer (1).
TINYWORLD = {"layers": [0, 1], "v_num_grad_steps": 30, "v_lr": 0.5, "v_weight_decay": 0.5,
             "clamp_norm_factor": 8.0, "mom2_update_weight": 200.0, "mom2_dataset": "tinyworld",
             "mom2_n_samples": 100_000, "mom2_dtype": "float64", "context_template_length_params": [[10, 5]]}


def default_layers(config) -> list[int]:
    arch = architecture_of(config)
    depth = config.num_hidden_layers
    layers = PUBLISHED_LAYERS.get((arch.family, depth))
    return list(layers) if layers else scaled_layers(REFERENCE[arch.family][1], REFERENCE[arch.family][0], depth)


def defaults(config, profile: str) -> dict:
    arch = architecture_of(config)
    steps, decay, clamp, weight = FAMILY_VALUES[arch.family]
    values = {"layers": default_layers(config), "rewrite_module_tmp": arch.mlp_out,
              "v_loss_layer": config.num_hidden_layers - 1, "v_num_grad_steps": steps, "v_weight_decay": decay,
              "clamp_norm_factor": clamp, "mom2_update_weight": weight}
    if profile == "tinyworld":
        values.update(TINYWORLD)
    return values


# ------------------------------------------------------------------------------ solve


def memit_solve(moment, keys: torch.Tensor, resid: torch.Tensor, weight: float) -> torch.Tensor:
    """ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ in float64, for keys K (d_k × n) and residuals R (d_v × n).

    With A = C⁻¹K (cached Cholesky factor of C) the Woodbury identity gives
    (λC + KKᵀ)⁻¹K = A (λI + KᵀA)⁻¹, so each edit costs an n × n solve, not a d_k × d_k one."""
    keys, resid = keys.double(), resid.double()
    if weight <= 0:  # no preservation term: the minimum-norm solution
        return resid @ torch.linalg.pinv(keys)
    a = solve_c(moment, keys)
    gram = keys.T @ a
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    return resid @ torch.linalg.solve(weight * eye + gram, a.T)


def memit_solve_dense(matrix: torch.Tensor, keys: torch.Tensor, resid: torch.Tensor, weight: float) -> torch.Tensor:
    """The published form: adj = solve(λC + KKᵀ, K), ΔW = R adjᵀ (float64). For checks."""
    keys, resid = keys.double(), resid.double()
    adj = torch.linalg.solve(weight * matrix.double().to(keys.device) + keys @ keys.T, keys)
    return resid @ adj.T


# ------------------------------------------------------------------------------ apply


def compute_targets(model, tokenizer, arch, requests, hp) -> Values:
    """z = block output at the top layer + δ, for every request at once; with the keys of the
    lowest edit layer, which the search's clean pass reads on the way."""
    layers = sorted(set(hp.layers))
    problem = ValueProblem(model, arch, requests, layers[-1], "block", hp.v_loss_layer, pad_id(tokenizer),
                           rewrite_module=hp.rewrite_module_tmp.format(layers[0]))
    return optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps, kl_factor=hp.kl_factor,
                           weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor)


def edit_layers(model, tokenizer, cases: list[Case], hp, handle: EditRestore,
                solve: Callable[[int, str, torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Steps 1 and 2 above with `solve(layer, module name, K, R) -> ΔW`; returns each module's
    keys K (d_k × n, float64). They are also the keys of the edited model: a module's input
    depends neither on its own weight nor on the layers above it, the only ones edited after
    its keys were read."""
    arch = architecture_of(model.config)
    layers = sorted(set(hp.layers))
    top = layers[-1]
    templates = context_templates(model, tokenizer, hp.context_template_length_params)
    groups = [[0], list(range(1, len(templates)))] if len(templates) > 1 else [[0]]
    requests = [prepare(tokenizer, case, templates, groups, hp.fact_token) for case in cases]
    values = compute_targets(model, tokenizer, arch, requests, hp)
    z = values.target.double()  # (n, d)
    top_block = arch.block.format(top)
    pad = pad_id(tokenizer)
    edited = {}
    for i, layer in enumerate(layers):
        name = hp.rewrite_module_tmp.format(layer)
        if i == 0:  # nothing edited yet: the search's clean pass gave the keys, and z − δ is the output
            keys, current = grouped_keys(values.keys, requests), values.init.double()
        else:
            found, outs = request_keys(model, arch, requests, [name], pad, outputs=[top_block])
            keys, current = found[name], outs[top_block]
        resid = (z - current.to(z.device)).T / (len(layers) - i)  # (d_v, n)
        edited[name] = keys.T  # (d_k, n)
        delta = solve(layer, name, edited[name], resid.to(keys.device))
        add_update(model.get_submodule(name), delta)
        handle.info.append({"layer": layer, "module": name, "keys": keys.float(), "resid": resid.float(),
                            "update_norm": float(delta.norm()), "steps": values.steps, "loss": values.loss,
                            "nll": values.nll, "targets": values.target.float()})
    return edited


def apply(model, tokenizer, cases: list[Case], hp: MEMITHparams) -> EditRestore:
    """Edit all the cases in one update; return the handle that restores the weights."""
    layers = sorted(set(hp.layers))
    check_layers(model, layers, hp.v_loss_layer)
    names = [hp.rewrite_module_tmp.format(layer) for layer in layers]
    handle = EditRestore(model, [f"{name}.weight" for name in names])
    try:
        stats = moments(model, tokenizer, hp, layers)

        def solve(layer, name, keys, resid):
            return memit_solve(stats[layer], keys, resid, hp.mom2_update_weight)

        edit_layers(model, tokenizer, cases, hp, handle, solve)
    except BaseException:
        handle.restore()
        raise
    return handle


MEMIT = Editor("memit", "MEMIT: batched least-squares updates spread over several MLP layers (Meng et al. 2023)",
               MEMITHparams, defaults, apply, template_prefix)
