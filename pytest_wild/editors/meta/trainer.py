"""Training MEND for a model (`pytest-wild train-mend`): the published loop, resumable.

- Each step edits a batch of training cases and backpropagates the step's loss
  (training.py); the optimiser steps every `accumulate` steps, after clipping the gradient.
- Adam, with the published rates: `lr` on the editor network, `lr_lr` on the learned
  per-weight step sizes.
- Every `val_every` steps the network (frozen normalisation) is scored on the held-out split;
  the best validation loss so far is the network written to `mend.safetensors` / `mend.json`,
  and a checkpoint of the whole training state is written (checkpoint.py).
- Training stops after `steps`, or `patience` steps past the best validation.
- The data order is a seeded permutation per epoch, a function of the step: a resumed
  training sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ...cases.case import Case, WildInputError
from ...model.architectures import architecture_of
from . import checkpoint, stored
from .network import EditorNetwork
from .settings import TrainSettings, option
from .training import training_step
from .training_data import TrainingCase, fingerprint, prompt_hash, texts, training_case


def inner_modules(model, blocks: int) -> dict[str, tuple[int, int]]:
    """The weights MEND edits, as the original configurations choose them: every MLP weight of
    the last `blocks` blocks (GPT-2 c_fc and c_proj, Llama gate/up/down), with their shapes."""
    arch = architecture_of(model.config)
    layers = model.config.num_hidden_layers
    if not 0 < blocks <= layers:
        raise WildInputError(f"--blocks: {blocks} blocks of a {layers}-block model")
    found = {}
    for layer in range(layers - blocks, layers):
        mlp = arch.mlp.format(layer)
        for child, module in model.get_submodule(mlp).named_children():
            if getattr(module, "weight", None) is not None and module.weight.dim() == 2:
                found[f"{mlp}.{child}"] = stored.math_shape(module)
    return found


class TrainingDiverged(Exception):
    """The loss stopped being a number: said in one line, the last checkpoint kept."""


class Order:
    """Which training cases step `step` edits: a seeded permutation per epoch."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._epochs: dict[int, list[int]] = {}

    def batch(self, step: int) -> list[int]:
        return [self._position(step * self.batch_size + i) for i in range(self.batch_size)]

    def _position(self, position: int) -> int:
        epoch = position // self.size
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epochs = {epoch: torch.randperm(self.size, generator=generator).tolist()}
        return self._epochs[epoch][position % self.size]


def validate(model, tokenizer, network: EditorNetwork, cases: list[TrainingCase], settings: TrainSettings) -> dict:
    """Mean losses over the validation cases, edited `batch_size` at a time, normalisation frozen."""
    network.eval()
    totals = {"edit": 0.0, "edit_before": 0.0, "locality": 0.0, "edit_accuracy": 0.0, "total": 0.0}
    with torch.no_grad():
        for start in range(0, len(cases), settings.batch_size):
            batch = cases[start:start + settings.batch_size]
            losses = training_step(model, tokenizer, network, batch, settings.c_edit, settings.c_loc)
            for key in ("edit", "edit_before", "locality", "edit_accuracy"):
                totals[key] += getattr(losses, key) * len(batch)
            totals["total"] += losses.total.item() * len(batch)
    network.train()
    return {key: value / len(cases) for key, value in totals.items()}


def train(model, tokenizer, training: list[Case], validation: list[Case], settings: TrainSettings, out: Path, *,
          record: dict, resume: bool = False, bar: bool = True) -> dict:
    """Train MEND for `model` into `out`; the record written beside the weights (`mend.json`'s
    "training"). `record` says where the data came from and what it was checked against."""
    from tqdm.auto import tqdm

    shapes = inner_modules(model, settings.blocks)
    torch.manual_seed(settings.seed)
    network = EditorNetwork(shapes, rank=settings.rank, hidden=settings.hidden, edit_lr=settings.edit_lr)
    network.to(model.device).train()
    steps = [p for name, p in network.named_parameters() if name.startswith("steps.")]
    others = [p for name, p in network.named_parameters() if not name.startswith("steps.")]
    optimizer = torch.optim.Adam([{"params": others, "lr": settings.lr}, {"params": steps, "lr": settings.lr_lr}])
    train_cases, val_cases = [training_case(c) for c in training], [training_case(c) for c in validation]
    data = {"fingerprint": fingerprint(training + validation), "training_cases": len(training),
            "validation_cases": len(validation)}
    progress = {"step": 0, "seconds": 0.0, "history": [], "best": None, "settings": asdict(settings), "data": data}
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        progress = _resumed(out, network, optimizer, progress)
    best_state = ({k: v.to(model.device) for k, v in stored.load(out, model)[0].state_dict().items()}
                  if progress["best"] is not None else None)
    info = dict(record, settings=asdict(settings), **data,
                prompt_hashes=sorted({prompt_hash(text) for case in training + validation for text in texts(case)}))
    order = Order(len(train_cases), settings.batch_size, settings.seed)
    running: dict[str, float] = {}
    started, already = time.perf_counter(), progress["seconds"]
    with tqdm(total=settings.steps, initial=progress["step"], desc="train-mend", unit="step", file=sys.stderr,
              disable=not bar, dynamic_ncols=True) as shown:
        while progress["step"] < settings.steps:
            batch = [train_cases[i] for i in order.batch(progress["step"])]
            losses = training_step(model, tokenizer, network, batch, settings.c_edit, settings.c_loc)
            if not math.isfinite(losses.total.item()):
                raise TrainingDiverged(f"train-mend: the loss is {losses.total.item()} at step {progress['step'] + 1}; "
                                       "a smaller --lr or --edit-lr keeps it finite")
            (losses.total / settings.accumulate).backward()
            progress["step"] += 1
            for key in ("edit", "locality", "edit_before"):  # the bar's running means, over about 10 steps
                running[key] = 0.9 * running.get(key, getattr(losses, key)) + 0.1 * getattr(losses, key)
            if progress["step"] % settings.accumulate == 0:
                torch.nn.utils.clip_grad_norm_(network.parameters(), settings.grad_clip)
                optimizer.step()
                optimizer.zero_grad()
            shown.update(1)
            shown.set_postfix(edit=f"{running['edit']:.3f}", before=f"{running['edit_before']:.3f}",
                              kl=f"{running['locality']:.4f}", refresh=False)
            if progress["step"] % settings.val_every == 0 or progress["step"] == settings.steps:
                result = dict(step=progress["step"], **validate(model, tokenizer, network, val_cases, settings))
                progress["history"].append(result)
                if progress["best"] is None or result["total"] < progress["best"]["total"]:
                    progress["best"] = result
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                progress["seconds"] = already + time.perf_counter() - started
                _write_best(network, best_state, out, model, settings, dict(info, **_summary(progress)))
                checkpoint.save(out / checkpoint.NAME, network, optimizer, progress)
                shown.write(f"step {result['step']}: validation edit loss {result['edit']:.4f} (before "
                            f"{result['edit_before']:.4f}), KL {result['locality']:.5f}, edit accuracy "
                            f"{result['edit_accuracy']:.3f}; best at step {progress['best']['step']}")
                if progress["step"] - progress["best"]["step"] >= settings.patience:
                    break
    return _summary(progress)


def _summary(progress: dict) -> dict:
    steps = progress["step"]
    return {"steps": steps, "seconds": round(progress["seconds"], 1),
            "steps_per_second": round(steps / progress["seconds"], 2) if progress["seconds"] else None,
            "best": progress["best"], "history": progress["history"]}


def _write_best(network: EditorNetwork, best_state: dict, out: Path, model, settings: TrainSettings, info: dict) -> None:
    best = EditorNetwork(network.shapes, rank=settings.rank, hidden=settings.hidden, edit_lr=settings.edit_lr)
    best.load_state_dict(best_state)
    stored.save(best, out, model.config.model_type, info, rank=settings.rank, hidden=settings.hidden,
                edit_lr=settings.edit_lr)


def _resumed(out: Path, network: EditorNetwork, optimizer, fresh: dict) -> dict:
    """The checkpoint's progress, refused when it was written by another training."""
    progress = checkpoint.progress(out / checkpoint.NAME)
    if progress.get("data") != fresh["data"]:
        raise WildInputError(f"--resume: {out / checkpoint.NAME} was trained on other data (its fingerprint differs)")
    mine = {k: v for k, v in fresh["settings"].items() if k != "steps"}
    theirs = {k: v for k, v in progress.get("settings", {}).items() if k != "steps"}
    changed = [f"{option(k)} {theirs.get(k)}" for k in sorted(mine) if theirs.get(k) != mine[k]]
    if changed:
        raise WildInputError(f"--resume: {out / checkpoint.NAME} was trained with other settings ({', '.join(changed)})")
    progress = checkpoint.load(out / checkpoint.NAME, network, optimizer)
    progress["settings"] = fresh["settings"]
    return progress

