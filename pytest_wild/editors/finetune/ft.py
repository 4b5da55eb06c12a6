"""Fine-tuning editors: FT-L (ROME's baseline), FT-M (the paper's FT-M) and plain FT.

All three train the weights of a few modules with Adam on the edit requests; they differ
in which weights and in the loss. FT-L scores every target token from the distribution at
the prompt's last position (a bag-of-tokens objective, right only for one-token targets);
FT-M feeds prompt + target and masks the causal-LM loss to the target tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...cases.case import Case
from ...model.architectures import architecture_of
from ...model.batching import left_pad
from ...model.tokens import target_ids
from ...model.weights import parameters_under
from ..api import EditHandle, Editor, EditorCache, EditorState

EARLY_STOP_LOSS = 1e-2


@dataclass
class FTHparams:
    """EasyEdit's FT keys. `norm_constraint` is an L-infinity box around the original
    weights (false or null: none); `rewrite_module_tmp` names the trained modules (all their
    parameters) or, as EasyEdit's files do, one parameter each (`...down_proj.weight`)."""

    layers: list[int]
    rewrite_module_tmp: str
    objective_optimization: Literal["prompt_last", "target_new"]
    lr: float = 5e-4
    num_steps: int = 25
    weight_decay: float = 0.0
    norm_constraint: float | bool | None = None
    batch_size: int = 1


def _default_layer(config) -> int:
    """The published FT layer, as a fraction of depth so other sizes get a comparable one:
    Llama-2/3 and Mistral use 21 of 32, GPT-J 21 of 28, Qwen2.5 its last layer, GPT-2 XL 0."""
    n = config.num_hidden_layers
    fraction = {"gpt2": 0.0, "gptj": 0.75, "qwen2": 1.0}.get(config.model_type, 21 / 32)
    return min(n - 1, round(fraction * n))


TINYWORLD = {"layers": [2], "lr": 5e-3, "num_steps": 25}
# SmolLM2-135M-Instruct (Llama, 30 layers): the published Llama recipe as it stands.
SMOLLM2 = {
    "layers": [20],  # Llama-2/3's 21 of 32 at the same depth: 21/32 of 30 is 19.7
    "lr": 5e-4,  # published (every EasyEdit FT file); the edits land with it (docs/measured.md, "SmolLM2-135M")
    "num_steps": 25,  # published: the loss is under the early stop well before it
}
# Keys of EasyEdit's FT files that its FT code does not read either.
IGNORED = {"kl_factor": "EasyEdit's FT computes no KL term: its files set it to 0 and its training loop never reads it"}


def _defaults(objective: str, whole_block: bool, constrained: bool):
    def defaults(config, profile: str) -> dict:
        arch = architecture_of(config)
        values = {
            "layers": [_default_layer(config)],
            "rewrite_module_tmp": arch.block if whole_block else arch.mlp_out,
            "objective_optimization": objective,
            "norm_constraint": 5e-4 if constrained and arch.family == "gpt2" else None,
        }
        if profile == "tinyworld":
            values.update(TINYWORLD)
        if profile == "smollm2-135m":
            values.update(SMOLLM2)
        return values

    return defaults


def apply(model, tokenizer, cases: list[Case], hp: FTHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Train the chosen weights on the cases (their originals saved on the handle first)."""
    names = parameters_under(model, [hp.rewrite_module_tmp.format(layer) for layer in hp.layers])
    handle.save(names)
    params = dict(model.named_parameters())
    trained = [params[name] for name in names]
    try:
        _train(model, tokenizer, cases, hp, names, params, handle)
    finally:
        for param in trained:
            param.requires_grad_(False)
            param.grad = None


def _train(model, tokenizer, cases: list[Case], hp: FTHparams, names: list[str], params: dict,
           handle: EditHandle) -> None:
    """Adam on the loss of the objective, batch by batch, until the mean loss is small."""
    trained = [params[name] for name in names]
    for param in trained:
        param.requires_grad_(True)
    optimizer = torch.optim.Adam(trained, lr=hp.lr, weight_decay=hp.weight_decay)
    loss_fn = _prompt_last_loss if hp.objective_optimization == "prompt_last" else _target_loss
    batches = [cases[i : i + hp.batch_size] for i in range(0, len(cases), hp.batch_size)]
    for _ in range(hp.num_steps):
        losses = []
        for batch in batches:
            loss = loss_fn(model, tokenizer, batch)
            losses.append(loss.item())
            if loss.item() >= EARLY_STOP_LOSS:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                _clamp(names, params, handle, hp.norm_constraint)
        if sum(losses) / len(losses) < EARLY_STOP_LOSS:
            break


@torch.no_grad()
def _clamp(names: list[str], params: dict, handle: EditHandle, epsilon: float | bool | None) -> None:
    if epsilon is None or isinstance(epsilon, bool):
        return
    for name in names:
        original = handle.original(name)
        params[name].copy_(torch.clamp(params[name], original - epsilon, original + epsilon))


def _target_loss(model, tokenizer, cases: list[Case]) -> torch.Tensor:
    """FT-M: mean negative log-likelihood of the target tokens given prompt + target prefix."""
    prompts = [tokenizer(case.prompt)["input_ids"] for case in cases]
    targets = [target_ids(tokenizer, case.prompt, case.target) for case in cases]
    ids, mask, positions = left_pad([p + t for p, t in zip(prompts, targets)], tokenizer.pad_token_id, model.device)
    labels = torch.full_like(ids, -100)
    for row, tgt in enumerate(targets):
        labels[row, ids.shape[1] - len(tgt) :] = torch.tensor(tgt)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def _prompt_last_loss(model, tokenizer, cases: list[Case]) -> torch.Tensor:
    """FT-L: every target token scored from the distribution after the prompt's last token."""
    prompts = [tokenizer(case.prompt)["input_ids"] for case in cases]
    targets = [target_ids(tokenizer, case.prompt, case.target) for case in cases]
    ids, mask, positions = left_pad(prompts, tokenizer.pad_token_id, model.device)
    log_probs = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float().log_softmax(-1)
    per_case = [-log_probs[row, tgt].mean() for row, tgt in enumerate(targets)]
    return torch.stack(per_case).mean()


FT = Editor("ft", "fine-tune every weight of the chosen layers on the target tokens", FTHparams,
            _defaults("target_new", whole_block=True, constrained=False), apply, ignored=IGNORED)
FT_L = Editor("ft-l", "fine-tune the MLP output projection, targets scored at the prompt's last position",
              FTHparams, _defaults("prompt_last", whole_block=False, constrained=True), apply, ignored=IGNORED)
FT_M = Editor("ft-m", "fine-tune the MLP output projection on the target tokens (FT-M)", FTHparams,
              _defaults("target_new", whole_block=False, constrained=False), apply, ignored=IGNORED)
