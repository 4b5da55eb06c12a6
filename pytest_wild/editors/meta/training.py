"""One MEND training step (Mitchell et al., 2022), as the original trains it:

1. the locality text's logits on the model as it is;
2. the edit: the gradient of the target's loss on prompt + target, taken apart per token
   (gradients.py) and turned into weight updates by the editor network (network.py);
3. on the edited weights (a functional call: the model itself is never written), the
   rephrase's target loss (generalisation, as the original; EasyEdit uses the edit prompt
   again) and the KL from the locality logits before to after;
4. loss = c_edit · edit loss + c_loc · KL, whose gradient reaches the network and the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from ...model.batching import left_pad
from ...model.tokens import target_ids
from .gradients import as_weight_layout, pieces
from .network import EditorNetwork
from .training_data import TrainingCase


@dataclass
class StepLosses:
    """The step's loss to backpropagate, and what it is made of: the rephrase's target loss
    after the edit and before it, the locality KL, and the share of rephrases whose every
    target token is the edited model's top prediction (teacher-forced, as MEND reports it)."""

    total: torch.Tensor
    edit: float
    locality: float
    edit_before: float
    edit_accuracy: float


def target_batch(model, tokenizer, pairs: list[tuple[str, str]]):
    """Left-padded prompt + target rows with labels on the target tokens."""
    rows, labels = [], []
    for prompt, target in pairs:
        p, t = tokenizer(prompt)["input_ids"], target_ids(tokenizer, prompt, target)
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
    ids, mask, positions = left_pad(rows, tokenizer.pad_token_id, model.device)
    padded = torch.full_like(ids, -100)
    for row, label in enumerate(labels):
        padded[row, ids.shape[1] - len(label):] = torch.tensor(label, device=model.device)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}, padded


def target_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                             ignore_index=-100)


def training_step(model, tokenizer, network: EditorNetwork, cases: list[TrainingCase], c_edit: float = 0.1,
                  c_loc: float = 1.0) -> StepLosses:
    """The losses of one step on `cases` (one edit of all of them); the caller backpropagates."""
    names = network.names
    edit_inputs, edit_labels = target_batch(model, tokenizer, [(c.prompt, c.target) for c in cases])
    outer_inputs, outer_labels = target_batch(model, tokenizer, [(c.rephrase, c.target) for c in cases])
    unrelated = left_pad([tokenizer(c.unrelated)["input_ids"] for c in cases], tokenizer.pad_token_id, model.device)
    loc_inputs = dict(zip(("input_ids", "attention_mask", "position_ids"), unrelated))
    with torch.no_grad():
        before = model(**loc_inputs).logits.float().log_softmax(-1)
        edit_before = target_loss(model(**outer_inputs).logits, outer_labels).item()

    found, _ = pieces(model, names, lambda: target_loss(model(**edit_inputs).logits, edit_labels),
                      edit_inputs["attention_mask"].bool())
    updates = network.updates(found)
    edited = {f"{name}.weight": model.get_submodule(name).weight + as_weight_layout(model.get_submodule(name), update)
              for name, update in updates.items()}
    outer_logits = functional_call(model, edited, args=(), kwargs=outer_inputs).logits
    edit_loss = target_loss(outer_logits, outer_labels)
    after = functional_call(model, edited, args=(), kwargs=loc_inputs).logits.float().log_softmax(-1)
    mask = loc_inputs["attention_mask"].bool()
    kl = (before.exp() * (before - after)).sum(-1)[mask].mean()
    total = c_edit * edit_loss + c_loc * kl
    return StepLosses(total, edit_loss.item(), kl.item(), edit_before, accuracy(outer_logits, outer_labels))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose every labelled token is the top prediction."""
    predicted, wanted = logits[:, :-1].argmax(-1), labels[:, 1:]
    scored = wanted != -100
    return ((predicted == wanted) | ~scored).all(-1).float().mean().item()
