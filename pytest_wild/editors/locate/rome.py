"""ROME and R-ROME: a rank-one update of one MLP output projection per edit and layer.

Both find a key k* (the rewrite module's input at the subject's last token, averaged over the
context templates) and a value v* (the MLP output there, shifted by a δ optimised so that the
model then says the target), and write

    ΔW = r uᵀ,   u = C⁻¹k* / ‖C⁻¹k*‖ (u = k*/‖k*‖ without `mom2_adjustment`).

They differ in r:

- ROME (`original_implementation`): r = (v* − W k − b) / (kᵀu) with k the key of the bare
  prompt only, so the update maps the bare prompt's key to v* while u was built from k*.
- R-ROME (Gupta et al. 2024): k and W k + b averaged over the same templates as k*, so the
  update maps k* itself to v* (`enable_prompt_keys`: use the bare prompt's key everywhere).

Several cases are edited one after the other, each update written before the next is
computed. Several layers are edited in ascending order the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...cases.case import Case
from ...model.architectures import architecture_of
from ...model.weights import add_update
from ..api import EditHandle, Editor, EditorCache, EditorState
from .keys import template_keys
from .layers import check_layers, published_layers
from .requests import Request, pad_id, prepare
from .solves import moments, moments_of_layers, rank_one_update, solve_c
from .templates import context_templates, template_prefix
from .values import ValueProblem, optimise_values


@dataclass
class ROMEHparams:
    """EasyEdit's ROME / R-ROME keys. `mom2_dataset` is tinyworld, wikitext, wikipedia, a
    text file (one document a line), a dataset directory or a hub dataset name."""

    layers: list[int]
    rewrite_module_tmp: str
    v_loss_layer: int
    fact_token: Literal["subject_last", "subject_first", "last"] = "subject_last"
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    mom2_adjustment: bool = False
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])
    mom2_dataset: str = "wikitext"
    mom2_n_samples: int = 100_000
    mom2_dtype: Literal["float32", "float64"] = "float32"
    original_implementation: bool = True
    enable_prompt_keys: bool = False
    enable_random_prefix_keys: bool = True


# Published layers per (family, depth); other depths scale from the family's reference model.
PUBLISHED_LAYERS = {("gpt2", 48): [17], ("gpt2", 36): [12], ("gpt2", 24): [8], ("gptj", 28): [5],
                    ("gpt_neox", 44): [15], ("llama", 32): [5], ("llama", 28): [5]}
REFERENCE = {"gpt2": (48, [17]), "gptj": (28, [5]), "gpt_neox": (44, [15]), "llama": (32, [5])}
# (steps, weight decay, clamp, mom2_adjustment): GPT-2 XL and NeoX-20B from the original ROME
# and MEMIT repositories, GPT-J / Llama / Mistral / Qwen2 from EasyEdit (which runs them
# without C, the setting the Revisit paper used).
FAMILY_VALUES = {"gpt2": (20, 0.5, 4.0, True), "gptj": (20, 0.5, 4.0, False),
                 "gpt_neox": (20, 0.5, 4.0, True), "llama": (25, 1e-3, 4.0, False)}

# Tuned on the bundled tinyworld model (GPT-2 layout, 4 layers, d 128; see bench/editors.py):
# its facts are recalled from layer 0's MLP, later layers cannot be pushed to a new answer by
# one vector at the subject. The published optimiser settings work as they are.
TINYWORLD = {"layers": [0], "v_num_grad_steps": 20, "v_lr": 0.5, "v_weight_decay": 0.5, "clamp_norm_factor": 4.0,
             "mom2_adjustment": True, "mom2_dataset": "tinyworld", "mom2_n_samples": 100_000,
             "mom2_dtype": "float64", "context_template_length_params": [[5, 10], [10, 10]]}
# SmolLM2-135M-Instruct (Llama, 30 layers): EasyEdit's Llama-2-7B file, the setting the paper ran.
SMOLLM2 = {
    "layers": [5],  # Llama-2-7B's 5 of 31 at the same relative depth: 5 * 29/31 = 4.7
    "v_loss_layer": 29,  # the last layer, as published: the NLL is the model's own logits
    "v_num_grad_steps": 25, "v_lr": 0.5,  # published for Llama
    "v_weight_decay": 1e-3, "clamp_norm_factor": 4.0,  # published for Llama
    "mom2_adjustment": False,  # as EasyEdit and the paper run ROME on Llama: C = I, no corpus needed
}


def _defaults(original: bool):
    def defaults(config, profile: str) -> dict:
        arch = architecture_of(config)
        depth = config.num_hidden_layers
        steps, decay, clamp, adjustment = FAMILY_VALUES[arch.family]
        if arch.family == "gpt2" and depth == 24:  # gpt2-medium
            clamp = 3.0
        values = {"layers": published_layers(config, PUBLISHED_LAYERS, REFERENCE), "rewrite_module_tmp": arch.mlp_out,
                  "v_loss_layer": depth - 1, "v_num_grad_steps": steps, "v_weight_decay": decay,
                  "clamp_norm_factor": clamp, "mom2_adjustment": adjustment, "original_implementation": original}
        if profile == "tinyworld":
            values.update(TINYWORLD)
        if profile == "smollm2-135m":
            values.update(SMOLLM2)
        return values

    return defaults


def apply(model, tokenizer, cases: list[Case], hp: ROMEHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Edit the cases one after the other, each layer in ascending order."""
    arch = architecture_of(model.config)
    layers = sorted(set(hp.layers))
    check_layers(model, layers, hp.v_loss_layer)
    names = {layer: hp.rewrite_module_tmp.format(layer) for layer in layers}
    handle.save([f"{name}.weight" for name in names.values()])
    templates = context_templates(model, tokenizer, hp.context_template_length_params, cache)
    stats = moments(model, tokenizer, hp, layers, cache) if hp.mom2_adjustment else None
    for case in cases:
        request = prepare(tokenizer, case, templates, [range(len(templates))], hp.fact_token)
        for layer in layers:
            handle.info.append(edit_layer(model, tokenizer, arch, request, layer, names[layer], hp,
                                          stats[layer] if stats else None, cache))


def edit_layer(model, tokenizer, arch, request: Request, layer: int, name: str, hp: ROMEHparams, moment,
               cache: EditorCache) -> dict:
    """One rank-one edit: key, value, update (ROME's compute_u, compute_v, the update)."""
    # the value search's clean pass reads the keys on its way: one pass serves steps 1 and 2
    problem = ValueProblem(model, arch, [request], layer, "mlp", hp.v_loss_layer, pad_id(tokenizer),
                           cache=cache, keys_at=name)

    # 1. keys: k* (what u is built from), k and W k + b (what the update maps from)
    k_star, key, current = template_keys(problem, original=hp.original_implementation,
                                         bare=hp.enable_prompt_keys or not hp.enable_random_prefix_keys)
    u = solve_c(moment, k_star, cache) if moment is not None else k_star
    u = u / u.norm()

    # 2. value: v* = W k + b + δ at the bare prompt's fact token
    values = optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps, kl_factor=hp.kl_factor,
                             weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor)
    target = values.target[0].double()

    # 3. update: ΔW = r uᵀ
    add_update(model.get_submodule(name), rank_one_update(u, key, current, target))
    return {"case": request.case.id, "layer": layer, "module": name, "key": key.float(), "target": target.float(),
            "steps": values.steps[0], "loss": values.loss[0], "nll": values.nll[0],
            "delta_norm": float(values.delta[0].norm()), "init_norm": float(values.init[0].norm())}


def before_edits(model, tokenizer, hp, cache: EditorCache) -> None:
    """The second moments every edit reads (with `mom2_adjustment`), before the first case."""
    if hp.mom2_adjustment:
        moments_of_layers(model, tokenizer, hp, cache)


ROME = Editor("rome", "ROME: rank-one update of one MLP output projection (Meng et al. 2022)", ROMEHparams,
              _defaults(original=True), apply, template_prefix, before_edits)
R_ROME = Editor("r-rome", "R-ROME: ROME with consistent keys in the update (Gupta et al. 2024)", ROMEHparams,
                _defaults(original=False), apply, template_prefix, before_edits)
