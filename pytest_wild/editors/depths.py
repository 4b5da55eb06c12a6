"""Published layer choices placed on a model of another depth, for every family of editors
whose published settings name layers of one reference model."""

from __future__ import annotations

from collections.abc import Sequence


def scaled_layers(layers: Sequence[int], reference_depth: int, depth: int) -> list[int]:
    """Published consecutive layers of a `reference_depth`-layer model mapped onto a `depth`-layer
    one: the top layer at the same relative depth, the number of layers in proportion (at least
    two when the published setting has several, so updates stay spread)."""
    if depth == reference_depth:
        return list(layers)
    top = min(depth - 1, round(max(layers) * (depth - 1) / (reference_depth - 1)))
    count = max(min(2, len(layers)), round(len(layers) * depth / reference_depth))
    first = max(0, top - count + 1)
    return list(range(first, min(depth, first + count)))
