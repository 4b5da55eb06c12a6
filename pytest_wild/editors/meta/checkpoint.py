"""A MEND training's state in one file, written whole (a rename), so a training killed at any
moment resumes from its last checkpoint and ends with the weights of an uninterrupted one.

Everything that decides later steps is in it: the network (with its running normalisation),
Adam's moments and step counts, the step reached, the validation history and the best
validation so far. The data order is a function of the seed and the step, so it needs no
random state. Tensors go in a safetensors file and the rest in its JSON metadata: nothing is
pickled, so a checkpoint that arrives from elsewhere cannot run code when loaded."""

from __future__ import annotations

import json
from pathlib import Path

from ...cases.case import WildInputError
from ...storage import write_bytes_atomic

NAME = "checkpoint.safetensors"


def save(path: Path, network, optimizer, progress: dict) -> None:
    """Write the state whole. (torch is imported here, not above: the command line reads NAME before it loads a model.)"""
    import safetensors.torch
    import torch

    tensors = {f"network/{key}": value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict[str, dict[str, float]] = {}
    for index, moments in state["state"].items():
        for key, value in moments.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = float(value)
    metadata = {"progress": json.dumps(progress), "param_groups": json.dumps(state["param_groups"]),
                "scalars": json.dumps(scalars)}
    write_bytes_atomic(path, safetensors.torch.save(tensors, metadata=metadata))


def _check(path: Path) -> None:
    if path.is_symlink() or not path.is_file():
        raise WildInputError(f"--resume: {path}: {'a link, refused' if path.is_symlink() else 'no checkpoint here'}")


def progress(path: Path) -> dict:
    """The checkpoint's progress record alone (its step, settings and data), tensors unread."""
    import safetensors

    _check(path)
    try:
        with safetensors.safe_open(path, "pt") as opened:
            return json.loads((opened.metadata() or {})["progress"])
    except (safetensors.SafetensorError, OSError, KeyError, ValueError) as exc:
        raise WildInputError(f"--resume: {path}: not a checkpoint of a MEND training ({type(exc).__name__})") from None


def load(path: Path, network, optimizer) -> dict:
    """Put the checkpoint's state into `network` and `optimizer`; its progress record."""
    import safetensors
    import torch

    _check(path)
    device = next(network.parameters()).device
    try:
        with safetensors.safe_open(path, "pt", device=str(device)) as opened:
            metadata = opened.metadata() or {}
            tensors = {key: opened.get_tensor(key) for key in opened.keys()}
        record = json.loads(metadata["progress"])
        groups, scalars = json.loads(metadata["param_groups"]), json.loads(metadata["scalars"])
        network.load_state_dict({key[len("network/"):]: value for key, value in tensors.items()
                                 if key.startswith("network/")})
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, values in scalars.items():
            for name, value in values.items():
                state.setdefault(int(index), {})[name] = torch.tensor(value, dtype=torch.float32)
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (safetensors.SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WildInputError(f"--resume: {path}: not a checkpoint of this training ({type(exc).__name__}: {reason})") from None
    return record
