"""Which layers a locate-then-edit method edits: the published choice per model, scaled to
other depths, and the check of a user's choice against the model."""

from __future__ import annotations

from collections.abc import Sequence

from ...cases.case import WildInputError
from ..depths import scaled_layers

# MEMIT's published layers per (family, depth), which AlphaEdit keeps; other depths scale
# from the family's reference model.
SPREAD_LAYERS = {("gpt2", 48): [13, 14, 15, 16, 17], ("gptj", 28): [3, 4, 5, 6, 7, 8],
                 ("llama", 32): [4, 5, 6, 7, 8], ("llama", 28): [4, 5, 6, 7, 8]}
# NeoX has no published MEMIT setting: GPT-J's (the other parallel-residual model) is scaled (GUESS).
SPREAD_REFERENCE = {"gpt2": (48, [13, 14, 15, 16, 17]), "gptj": (28, [3, 4, 5, 6, 7, 8]),
                    "gpt_neox": (28, [3, 4, 5, 6, 7, 8]), "llama": (32, [4, 5, 6, 7, 8])}


def published_layers(config, published: dict, reference: dict) -> list[int]:
    """The published layers for the model's (family, depth), else the family's reference
    model's scaled to this depth."""
    from ...model.architectures import architecture_of

    family, depth = architecture_of(config).family, config.num_hidden_layers
    layers = published.get((family, depth))
    return list(layers) if layers else scaled_layers(reference[family][1], reference[family][0], depth)


def check_layers(model, layers: Sequence[int], loss_layer: int) -> None:
    depth = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if not layers or bad:
        raise WildInputError(f"layers: {list(layers)} must be non-empty indices below {depth}")
    if not 0 <= loss_layer < depth:
        raise WildInputError(f"v_loss_layer: {loss_layer} is not a layer index below {depth}")
