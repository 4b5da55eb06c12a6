"""MEMIT's update spread over several layers, shared by MEMIT and AlphaEdit (which differ only
in how each layer's update is solved): the values z at the top edit layer, then layer by layer
in ascending order the keys, the residual still missing at the top shared by the layers left,
and the solve.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...cases.case import Case
from ...model.architectures import architecture_of
from ...model.weights import add_update
from ..api import EditHandle, EditorCache
from .keys import grouped_keys, request_keys
from .requests import Request, pad_id, prepare
from .templates import context_templates
from .values import ValueProblem, Values, optimise_values


def compute_targets(model, tokenizer, arch, requests: list[Request], hp,
                    cache: EditorCache) -> tuple[Values, torch.Tensor]:
    """The values: z = block output at the top layer + δ, for every request at once; and
    the keys of the lowest edit layer (n, d_k), which the search's clean pass reads on its way."""
    layers = sorted(set(hp.layers))
    first = hp.rewrite_module_tmp.format(layers[0])
    problem = ValueProblem(model, arch, requests, layers[-1], "block", hp.v_loss_layer, pad_id(tokenizer),
                           cache=cache, keys_at=first)
    values = optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps, kl_factor=hp.kl_factor,
                             weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor)
    return values, grouped_keys(problem.keys, requests)


def spread_update(model, tokenizer, cases: list[Case], hp, handle: EditHandle, cache: EditorCache,
                  solve: Callable[[int, str, torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """MEMIT's steps (pytest_wild.editors.locate.memit) with `solve(layer, module, K, R) -> ΔW`;
    returns each module's keys K (d_k × n, float64). They are also the keys of the edited model: a module's input
    depends neither on its own weight nor on the layers above it, the only ones edited after
    its keys were read."""
    arch = architecture_of(model.config)
    layers = sorted(set(hp.layers))
    templates = context_templates(model, tokenizer, hp.context_template_length_params, cache)
    groups = [[0], list(range(1, len(templates)))] if len(templates) > 1 else [[0]]
    requests = [prepare(tokenizer, case, templates, groups, hp.fact_token) for case in cases]

    # 1. values: z at the top layer
    values, first_keys = compute_targets(model, tokenizer, arch, requests, hp, cache)
    z = values.target.double()  # (n, d)
    top_block = arch.block.format(layers[-1])
    edited = {}
    for i, layer in enumerate(layers):
        name = hp.rewrite_module_tmp.format(layer)
        # 2. keys at this layer, and the residual still missing at the top, shared by the layers left
        if i == 0:  # nothing edited yet: the search's clean pass gave the keys, and z − δ is the output
            keys, current = first_keys, values.init.double()
        else:
            found, outs = request_keys(model, arch, requests, [name], pad_id(tokenizer), outputs=[top_block])
            keys, current = found[name], outs[top_block]
        resid = (z - current.to(z.device)).T / (len(layers) - i)  # (d_v, n)
        edited[name] = keys.T  # (d_k, n)
        # 3. update
        delta = solve(layer, name, edited[name], resid.to(keys.device))
        add_update(model.get_submodule(name), delta)
        handle.info.append({"layer": layer, "module": name, "keys": keys.float(), "resid": resid.float(),
                            "update_norm": float(delta.norm()), "steps": values.steps, "loss": values.loss,
                            "nll": values.nll, "targets": values.target.float()})
    return edited
