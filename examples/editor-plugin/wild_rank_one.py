"""rank-one, an example pytest-wild editor: the smallest closed-form knowledge edit, in ROME's
three steps for each case (without its covariance and templates):

1. the key k: what enters the MLP output projection W of one layer at the prompt's last token;
2. the value: the shift δ of that projection's output which makes the model say the target
   (Adam on the target tokens' negative log-likelihood, the model frozen);
3. the solve: the least-norm ΔW = D (KᵀK)⁻¹ Kᵀ with ΔW k_i = δ_i for every case, written into W.

Keys and values of a batch are all computed before the update. Only δ is trained.
"""

from dataclasses import dataclass

import torch

from pytest_wild.api import Editor, add_update, architecture_of, is_transposed, target_ids


@dataclass
class RankOneHparams:
    layer: int  # whose MLP output projection is edited
    steps: int = 25  # Adam steps for δ
    lr: float = 0.5


def defaults(config, profile: str) -> dict:
    """tinyworld recalls its facts in layer 0; other models: a quarter of the depth."""
    return {"layer": 0 if profile == "tinyworld" else config.num_hidden_layers // 4}


def tokens(tokenizer, case, device) -> tuple[torch.Tensor, int]:
    """Prompt + target ids, and the position of the prompt's last token."""
    prompt = tokenizer(case.prompt)["input_ids"]
    ids = prompt + target_ids(tokenizer, case.prompt, case.target)
    return torch.tensor([ids], device=device), len(prompt) - 1


def compute_key(model, module, ids: torch.Tensor, position: int) -> torch.Tensor:
    """Step 1: the projection's input at the prompt's last token."""
    seen = []
    hook = module.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0][0, position].detach()))
    with torch.no_grad():
        model(input_ids=ids)
    hook.remove()
    return seen[0].float()


def compute_value(model, module, ids: torch.Tensor, position: int, hp: RankOneHparams) -> torch.Tensor:
    """Step 2: δ added to the projection's output at that token, trained so the target follows."""
    width = module.weight.shape[1] if is_transposed(module) else module.weight.shape[0]
    delta = torch.zeros(width, device=ids.device, requires_grad=True)

    def shift(m, inputs, output):
        mask = torch.zeros_like(output)
        mask[:, position] = 1
        return output + mask * delta.to(output.dtype)

    hook = module.register_forward_hook(shift)
    optimiser = torch.optim.Adam([delta], lr=hp.lr)
    try:
        for _ in range(hp.steps):
            logits = model(input_ids=ids).logits[0, position:-1].float()
            loss = torch.nn.functional.cross_entropy(logits, ids[0, position + 1 :])
            if loss.item() < 0.05:
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        hook.remove()
    return delta.detach().float()


def solve(keys: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Step 3: ΔW = D (KᵀK)⁻¹ Kᵀ (d_out × d_in), keys and deltas one column per case."""
    return deltas @ torch.linalg.solve(keys.T @ keys, keys.T)


def keys_and_values(model, tokenizer, module, cases, hp: RankOneHparams):
    """Steps 1 and 2 for every case of the update: K (d_in × n) and D (d_out × n)."""
    keys, deltas = [], []
    for case in cases:
        ids, position = tokens(tokenizer, case, model.device)
        keys.append(compute_key(model, module, ids, position))
        deltas.append(compute_value(model, module, ids, position, hp))
    return torch.stack(keys, 1), torch.stack(deltas, 1)


def apply(model, tokenizer, cases, hp: RankOneHparams, *, handle, cache, state) -> None:
    """The protocol's entry: the weight is saved on the handle before it is written."""
    name = architecture_of(model.config).mlp_out.format(hp.layer)
    module = model.get_submodule(name)
    keys, deltas = keys_and_values(model, tokenizer, module, cases, hp)
    handle.save([f"{name}.weight"])
    add_update(module, solve(keys, deltas))


RANK_ONE = Editor("rank-one", "example plugin: a closed-form rank-one edit of one MLP output projection",
                  RankOneHparams, defaults, apply)
