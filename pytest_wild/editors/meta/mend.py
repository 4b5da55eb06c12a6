"""MEND (Mitchell et al., ICLR 2022) as an editor: the gradient of the edit's loss, taken apart
per token at the weights a trained network edits, transformed by that network into a weight
update, written with the handle saving each weight first. Training is training.py; a trained
network is a directory (stored.py), made by `pytest-wild train-mend` (trainer.py). The networks of
the bundled model and of the named model smollm2-135m ship in the package (how each was trained:
its mend.json, and docs/measured.md); any other model needs one trained for it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ...cases.case import Case, WildInputError
from ...model.load import TINYWORLD_DIR
from ...model.weights import add_update
from ..api import EditHandle, Editor, EditorCache, EditorState, cached
from . import stored
from .gradients import pieces
from .training import target_batch, target_loss
from .training_data import prompt_hash

# profile -> the network shipped for it
SHIPPED = {"tinyworld": TINYWORLD_DIR / "mend", "smollm2-135m": TINYWORLD_DIR.parent / "smollm2-135m" / "mend"}


class TrainedOnTheSuite(UserWarning):
    """The network was trained on a prompt that the run edits: its scores flatter it."""


@dataclass
class MendHparams:
    """`directory`: a MEND trained for this model (mend.json + mend.safetensors), relative to
    the current directory; the bundled model's and smollm2-135m's are shipped and are their default."""

    directory: str = ""


def defaults(config, profile: str) -> dict:
    return {"directory": str(SHIPPED[profile])} if profile in SHIPPED else {}


def trained(model, hp: MendHparams, cache: EditorCache) -> tuple:
    """(network, the prompt hashes it was trained on), loaded once per run."""
    if not hp.directory:
        raise WildInputError("MEND needs a network trained for this model: `pytest-wild train-mend --model M --data D "
                             "--out DIR`, then --wild-hparams=FILE with `directory: DIR`")

    def load():
        network, config = stored.load(Path(hp.directory), model)
        hashes = config.get("training", {}).get("prompt_hashes", [])
        return network, frozenset(hashes) if isinstance(hashes, list) else frozenset()
    return cached(cache, ("mend network", hp.directory), load)


def prepare(model, tokenizer, hp: MendHparams, cache: EditorCache) -> None:
    """Load and check the network before the first case, so a wrong directory is one line."""
    trained(model, hp, cache)


def apply(model, tokenizer, cases: list[Case], hp: MendHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """One update for all the cases: one backward pass, one pass of the network."""
    network, seen = trained(model, hp, cache)
    for case in cases:
        if prompt_hash(case.prompt) in seen:
            warnings.warn(TrainedOnTheSuite(f"MEND in {hp.directory} was trained on the prompt of case {case.id}: "
                                            "its scores on that case do not measure an unseen edit"), stacklevel=1)
    inputs, labels = target_batch(model, tokenizer, [(case.prompt, case.target) for case in cases])
    found, loss = pieces(model, network.names, lambda: target_loss(model(**inputs).logits, labels),
                         inputs["attention_mask"].bool())
    with torch.no_grad():
        updates = network.updates(found)
    handle.save([f"{name}.weight" for name in network.names])
    for name, update in updates.items():
        add_update(model.get_submodule(name), update)
    handle.info.append({"loss_before": loss, "update_norms": {name: float(u.norm()) for name, u in updates.items()}})


MEND = Editor("mend", "MEND: a trained network turns the edit's gradient into a weight update", MendHparams,
              defaults, apply, prepare=prepare)
