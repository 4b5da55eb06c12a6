"""A trained MEND on disk: `mend.safetensors` (the network's tensors, never a pickle) and
`mend.json` (the model it was trained for, the weights it edits with their shapes, the
network's size, and whatever the training recorded). Such directories arrive in pull
requests: a link, a missing or malformed file, a network for another model is one line naming
the file and what is wrong, before anything is loaded into the model."""

from __future__ import annotations

import json
from pathlib import Path

from ...cases.case import WildInputError
from ...cases.files import read_text
from ...storage import write_bytes_atomic, write_json_atomic

CONFIG, WEIGHTS = "mend.json", "mend.safetensors"
FORMAT = 1


def save(network, directory: Path, model_type: str, info: dict, *, rank: int, hidden: int,
         edit_lr: float) -> None:
    """Write the network, each file whole (the tensors first, the config that names them last)."""
    import safetensors.torch

    tensors = {key: value.detach().to("cpu").contiguous() for key, value in network.state_dict().items()}
    write_bytes_atomic(directory / WEIGHTS, safetensors.torch.save(tensors))
    config = {"format": FORMAT, "model_type": model_type, "rank": rank, "hidden": hidden, "edit_lr": edit_lr,
              "modules": {name: list(network.shapes[name]) for name in network.names}, "training": info}
    write_json_atomic(directory / CONFIG, config)


def load(directory: Path, model) -> tuple:
    """(the network stored in `directory`, checked against `model`; its config)."""
    import safetensors
    import safetensors.torch

    from .network import EditorNetwork  # torch, imported here: the command line reads CONFIG and WEIGHTS before a model

    for name in (CONFIG, WEIGHTS):
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise WildInputError(f"{path}: {'a link, refused' if path.is_symlink() else 'not found'} (a trained MEND "
                                 f"directory holds {CONFIG} and {WEIGHTS})")
    config_path = directory / CONFIG
    try:
        config = json.loads(read_text(config_path, "MEND configuration"))
        modules = {str(name): (int(shape[0]), int(shape[1])) for name, shape in config["modules"].items()}
        rank, hidden, edit_lr = int(config["rank"]), int(config["hidden"]), float(config["edit_lr"])
        model_type = str(config["model_type"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:  # named, never quoted: untrusted text
        raise WildInputError(f"{config_path}: not a MEND configuration ({type(exc).__name__})") from None
    if model_type != model.config.model_type:
        raise WildInputError(f"{config_path}: trained for a {model_type} model, not this {model.config.model_type} one")
    present = dict(model.named_modules())
    for name, shape in modules.items():
        if name not in present or not hasattr(present[name], "weight"):
            raise WildInputError(f"{config_path}: edits {name!r}, which this model does not have")
        if math_shape(present[name]) != shape:
            raise WildInputError(f"{config_path}: {name} is {list(shape)} there and {list(math_shape(present[name]))} "
                                 "in this model: trained for another model size")
    network = EditorNetwork(modules, rank=rank, hidden=hidden, edit_lr=edit_lr)
    try:
        tensors = safetensors.torch.load_file(directory / WEIGHTS)
        network.load_state_dict(tensors)
    except (safetensors.SafetensorError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise WildInputError(f"{directory / WEIGHTS}: does not hold the network {CONFIG} describes ({reason})") from None
    return network.to(model.device).eval(), config


def math_shape(module) -> tuple[int, int]:
    """(d_out, d_in) of a linear layer, whatever its storage layout."""
    from ...model.weights import is_transposed

    weight = module.weight
    return (weight.shape[1], weight.shape[0]) if is_transposed(module) else (weight.shape[0], weight.shape[1])
