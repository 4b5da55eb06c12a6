"""Parameters by module name, and weight updates written in each module's own layout.

Updates are computed in the math layout ΔW (d_v × d_k) and written into `nn.Linear` weights
(d_v, d_k) or GPT-2 `Conv1D` weights, stored transposed (d_k, d_v).
"""

from __future__ import annotations

import torch


def parameters_under(model: torch.nn.Module, prefixes: list[str]) -> list[str]:
    """Names of the parameters named by `prefixes`: a module path gives all of its parameters,
    a parameter name (EasyEdit's FT files name `...down_proj.weight`) that parameter alone."""
    names = [name for name, _ in model.named_parameters()
             if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)]
    if not names:
        raise ValueError(f"no parameters under {prefixes}")
    return names


def is_transposed(module) -> bool:
    """GPT-2's Conv1D stores its weight as (in, out), the transpose of nn.Linear."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def in_out(module) -> tuple[int, int]:
    """(d_in, d_out) of a linear layer, whichever layout its weight is stored in."""
    rows, cols = module.weight.shape
    return (rows, cols) if is_transposed(module) else (cols, rows)


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
