"""MEND (Mitchell et al., ICLR 2022) as an editor: the gradient of the edit's loss, taken apart
per token at the weights a trained network edits, transformed by that network into a weight
update, written with the handle saving each weight first. Training is training.py; a trained
network is a directory (stored.py). Not yet registered: it needs the network for the bundled
model that issue 17 ships."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...cases import Case
from ...weights import add_update
from ..api import EditHandle, Editor, EditorCache, EditorState, cached
from . import stored
from .gradients import pieces
from .training import target_batch, target_loss


@dataclass
class MendHparams:
    """`directory`: a trained MEND for this model (mend.json + mend.safetensors)."""

    directory: str


def defaults(config, profile: str) -> dict:
    return {}


def apply(model, tokenizer, cases: list[Case], hp: MendHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """One update for all the cases: one backward pass, one pass of the network."""
    network = cached(cache, ("mend network", hp.directory), lambda: stored.load(Path(hp.directory), model)[0])
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
              defaults, apply)
