"""Two ways the value search runs fewer operations, each used only where it gives the same
numbers as the plain way.

- Prefix reuse: nothing before a fact token depends on δ, so the columns before the earliest
  fact token run once with a KV cache, and each optimisation step runs only the columns after,
  against that cache's keys and values.
- Written-out blocks (`blocks.py`): the blocks above the edit as plain tensor code, used only
  after they gave the modules' output on the clean pass of this model and block range (the
  verdict is kept in the model's `EditorCache`, when one is given).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...model.architectures import Architecture
from ...model.kv_cache import new_cache, with_cache
from ...model.tracing import Trace, run_blocks
from ..api import EditorCache, cached
from .blocks import written_out


class PrefixReuse:
    """The prefix columns' keys and values per layer, and a work cache holding only them for
    one run of the blocks: built once, then pointed back at the prefix before each run
    (building one per step took 6% of a MEMIT search on the bundled model)."""

    def __init__(self, model, kv_cache, kept: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.model, self.kv_cache, self.kept = model, kv_cache, kept
        self._work = None

    @classmethod
    @torch.no_grad()
    def build(cls, model, ids, mask, positions, layers) -> PrefixReuse | None:
        """Run the prefix columns once with a KV cache; None when the model's cache does not
        expose its keys and values (then nothing is reused). The decoder alone runs
        (`base_model`): the LM head's logits of the prefix are never read."""
        try:
            kv = new_cache(model)
            model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             **with_cache(model.base_model, kv))
            return cls(model, kv, {i: (kv.layers[i].keys, kv.layers[i].values) for i in layers})
        except (AttributeError, IndexError, TypeError, ValueError):
            return None

    def forward_arguments(self) -> dict:
        """The model-call keyword that passes the prefix's cache."""
        return with_cache(self.model, self.kv_cache)

    def swap(self) -> tuple[object, object]:
        """(the clean pass's cache, a cache holding only the prefix) for `run_blocks`."""
        if self._work is None or not _rewind(self._work, self.kept):
            self._work = _refill(self.model, self.kept)
        return self.kv_cache, self._work


def _rewind(kv, kept: dict) -> bool:
    """Point each layer of a plain dynamic cache back at the prefix's keys and values; a run
    concatenates into new tensors, so the prefix is never written. False for other layer
    kinds (sliding windows keep more state), which get a fresh cache instead."""
    from transformers.cache_utils import DynamicLayer

    layers = {index: kv.layers[index] for index in kept}
    if any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers.values()):
        return False
    for index, (keys, values) in kept.items():
        layers[index].keys, layers[index].values = keys, values
    return True


def _refill(model, kept: dict) -> object:
    kv = new_cache(model)
    for index, (keys, values) in kept.items():
        kv.update(keys, values, index)
    return kv


def checked_written_out(model, arch: Architecture, recorded: Trace, entry: torch.Tensor, start: int, last: int,
                        prefix: PrefixReuse | None, cache: EditorCache | None) -> Callable | None:
    """Blocks `start`..`last` as written-out code, if `blocks.py` has them for the family and
    they gave the modules' output on the clean pass (checked once per model, block range and
    prefix use); else None, and the modules run."""
    blocks = {i: model.get_submodule(arch.block.format(i)) for i in range(start, last + 1)}
    run = written_out(model, arch.family, blocks, recorded.calls, prefix.kept if prefix else None)
    if run is None:
        return None

    def verdict() -> bool:
        """Both ways on the clean pass: the same ops in the same order agree to rounding, while
        a missed bias, scale or norm moves the output by a fair part of its size."""
        with torch.no_grad():
            expected = run_blocks(model, arch, recorded, entry, start, last, prefix.swap() if prefix else None)
            try:
                found = run(entry, start, last)
            except (AttributeError, RuntimeError, TypeError, ValueError):
                return False
        return found.shape == expected.shape and agrees(found, expected)

    return run if cached(cache, ("written-out blocks agree", start, last, prefix is None), verdict) else None


def agrees(found: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to 16 units of rounding of the largest expected entry."""
    tolerance = 16 * torch.finfo(expected.dtype).eps * float(expected.abs().max())
    return bool((found - expected).abs().max() <= tolerance)
