"""What a local model directory must hold before anything is loaded from it: no link out of
the directory, safetensors weights whose headers are whole, tensors that match the config,
and a tokenizer that can encode text with ids the model has.

Model directories arrive in pull requests, and transformers forgives a great deal: a
missing tokenizer file gives an empty tokenizer, a config with more layers than the
weights gives randomly initialised layers, a truncated file a deep traceback in every
case. Each is one line here, naming the file, found on the controller at collection
(headers only, no weights read), so a run under xdist stops as a serial one does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..cases.case import WildInputError

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
PROBE_TEXT = "The capital of France is Paris."


def check_links(directory: Path) -> None:
    """Every file the loader may open is a regular file inside the directory, or a link that
    stays inside it; links of a Hugging Face cache snapshot (into the cache's blobs) too."""
    root = directory.resolve()
    allowed = [root] + ([_hub_cache()] if _hub_cache() in root.parents else [])
    for current, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(current) / name
            if path.is_symlink() and not any(_inside(path.resolve(), place) for place in allowed):
                raise WildInputError(f"--wild-model: {path}: a link out of the model directory; refused")


def weight_headers(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape over every safetensors file of the checkpoint, read from the
    headers; a file that is missing, truncated or not safetensors is one line naming it."""
    from safetensors import SafetensorError, safe_open

    index = directory / WEIGHTS_INDEX
    if index.is_file():
        files = sorted(set(_index_map(index).values()))
    elif (directory / WEIGHTS).exists():
        files = [WEIGHTS]
    else:
        pickled = [name for name in PICKLED if (directory / name).exists()]
        hint = f" (only {pickled[0]}: pickled weights are never loaded)" if pickled else ""
        raise WildInputError(f"--wild-model: {directory}: no {WEIGHTS}{hint}")
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        path = directory / name
        if not path.is_file() or not _inside(path.resolve(), directory.resolve().parent):
            raise WildInputError(f"--wild-model: {path}: named by the checkpoint but not a file in the model directory")
        try:
            with safe_open(str(path), "pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except (SafetensorError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WildInputError(f"--wild-model: {path}: not a whole safetensors file ({reason})") from None
    return shapes


def check_weights_match(directory: Path, expected: Mapping[str, tuple[int, ...]],
                        found: Mapping[str, tuple[int, ...]]) -> None:
    """The checkpoint's tensors against the parameters of the model the config describes
    (tied ones counted once, as the checkpoint stores them). Only when the
    checkpoint names its tensors as the model does (most of them match, allowing for the
    base-model prefix): checkpoints in other layouts are renamed by transformers at load,
    and the load's own check covers them."""
    names = {_strip(name): shape for name, shape in found.items()}
    wanted = {_strip(name): shape for name, shape in expected.items()}
    own = {_strip(name): name for name in expected}
    common = set(names) & set(wanted)
    if not wanted or len(common) < 0.9 * len(names):
        return
    config = directory / "config.json"
    wrong = sorted(name for name in common if tuple(names[name]) != tuple(wanted[name]))
    if wrong:
        name = wrong[0]
        raise WildInputError(f"--wild-model: {config} does not match the weights: {own[name]} has shape "
                             f"{list(names[name])} in the checkpoint, {list(wanted[name])} in the model "
                             f"({len(wrong)} tensors differ)")
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise WildInputError(f"--wild-model: {config} does not match the weights: {len(missing)} tensors of the model "
                             f"are not in the checkpoint ({', '.join(own[name] for name in missing[:3])}{', ...' if len(missing) > 3 else ''}), "
                             "so they would be random")


def check_tokenizer(tokenizer, vocab_size: int | None, where: str) -> None:
    """The tokenizer encodes text into ids the model's embedding has (transformers builds an
    empty tokenizer when its files are missing)."""
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if not ids:
        raise WildInputError(f"--wild-model: {where}: the tokenizer encodes no text (tokenizer files missing or "
                             "empty: tokenizer.json, tokenizer.model or vocab.json and merges.txt)")
    if vocab_size and len(tokenizer) > vocab_size:
        raise WildInputError(f"--wild-model: {where}: the tokenizer has {len(tokenizer)} tokens, the model's "
                             f"embedding only {vocab_size} (config.json vocab_size)")


def _index_map(index: Path) -> dict[str, str]:
    from ..cases.files import read_text

    try:
        data = json.loads(read_text(index, "weights index"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise WildInputError(f"--wild-model: {index}: not a weights index (a JSON object with a weight_map)") from None
    return weight_map


_PREFIX = re.compile(r"^(model|transformer|gpt_neox|base_model)\.")


def _strip(name: str) -> str:
    """The name without the base model's prefix, which checkpoints carry or not."""
    return _PREFIX.sub("", name, count=1)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _hub_cache() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE).resolve()
