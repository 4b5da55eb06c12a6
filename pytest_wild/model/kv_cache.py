"""The KV cache, passed as the installed transformers wants it.

transformers 5.24 renamed the model's and every block's `past_key_values` argument to `cache`
(the old name still works, with a deprecation warning, until 5.40). The engine and the value
search create the cache themselves and hand it over under the name the model's own `forward`
declares, so they never read a deprecated output field nor pass a deprecated argument.
"""

from __future__ import annotations

import inspect


def cache_keyword(model) -> str:
    """`cache` where the model's forward takes it (transformers >= 5.24), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache(model):
    """An empty dynamic cache laid out for the model's layers (sliding windows included)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def with_cache(model, cache) -> dict:
    """Keyword arguments that make a model call read and extend `cache`."""
    return {cache_keyword(model): cache, "use_cache": True}
