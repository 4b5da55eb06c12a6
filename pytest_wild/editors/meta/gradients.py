"""The gradient of a loss at a linear layer, taken apart per token (MEND's key observation):
for a layer y = W u, the gradient of a loss over tokens t is Σ_t δ_t u_tᵀ, with u_t the layer's
input at token t and δ_t the loss's gradient with respect to its output there. One backward
pass records both for every chosen module; the rank-one pieces are what MEND's network
transforms, and their sum is the true gradient (a test checks it against autograd)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...model.weights import is_transposed


@dataclass
class TokenPieces:
    """For one module: its inputs u (tokens × d_in) and output gradients δ (tokens × d_out),
    only at the tokens the loss reads (`keep` in `pieces`)."""

    inputs: torch.Tensor
    output_grads: torch.Tensor

    def gradient(self) -> torch.Tensor:
        """Σ_t δ_t u_tᵀ, in the math layout (d_out × d_in)."""
        return self.output_grads.T @ self.inputs


def pieces(model, names: list[str], loss_of: Callable[[], torch.Tensor], keep: torch.Tensor) -> tuple[dict[str, TokenPieces], float]:
    """Run `loss_of()` (a forward pass and its loss) and one backward pass, recording at each
    named module its input and the gradient at its output, for the tokens where `keep`
    (batch × tokens, bool) is true; (the pieces by module name, the loss). The model's weights
    need no gradient: the hooks read the activations' gradients."""
    inputs, grads, hooks = {}, {}, []

    def record(name: str):
        def forward_hook(module, args, output):
            inputs[name] = args[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: grads.__setitem__(name, grad.detach()))
        return forward_hook

    for name in names:
        hooks.append(model.get_submodule(name).register_forward_hook(record(name)))
    try:
        with torch.enable_grad():
            embeddings = model.get_input_embeddings()
            handle = embeddings.register_forward_hook(lambda module, args, output: output.requires_grad_(True))
            try:
                loss = loss_of()
            finally:
                handle.remove()
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    found = {}
    for name in names:
        if name not in grads:
            raise RuntimeError(f"the loss does not depend on {name}")
        found[name] = TokenPieces(inputs[name][keep].float(), grads[name][keep].float())
    return found, loss.item()


def as_weight_layout(module, update: torch.Tensor) -> torch.Tensor:
    """An update in the math layout (d_out × d_in) in the layout of the module's weight."""
    return update.T if is_transposed(module) else update
