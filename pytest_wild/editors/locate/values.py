"""Step 2 of every locate-then-edit method: the value, a vector that makes the model say the
target when it replaces the clean one at the fact token (ROME's compute_v, MEMIT's compute_z).

δ is added to the MLP output of layer L (`at="mlp"`, ROME) or to the block output, the
residual stream, of the top edit layer (`at="block"`, MEMIT, AlphaEdit) at the fact token of
every prompt of a request, and optimised with Adam on

    NLL of the target over the context templates
    + KL of "{subject} is a" at the subject's last token against the unedited model
    + weight decay ‖δ‖ / ‖v‖²,

with the published norm clamp and early stop. Several requests are optimised together, one
δ row each, with the per-request trajectory of separate runs.

One clean pass (no δ) records the hidden state entering the first block δ changes and the
arguments every later block was called with; each step then runs only those blocks, from the
earliest fact token on (`fastpath.py`), and the final norm and LM head only at the positions
the loss reads. The clean pass also reads the rewrite module's input and output at every
fact token: the keys of step 1 (`keys.template_keys`), so ROME needs no pass of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...model.architectures import Architecture
from ...model.batching import left_pad
from ...model.tracing import hidden_of, input_of, pick, run_blocks, trace, with_hidden
from ..api import EditorCache
from .fastpath import PrefixReuse, agrees, checked_written_out
from .requests import Request

EARLY_STOP_LOSS = 5e-2


@dataclass
class Values:
    """The optimised vectors of a batch of requests at one place of one layer."""

    init: torch.Tensor  # (n, d) the clean vector at each request's bare-prompt fact token
    delta: torch.Tensor  # (n, d) the optimised shift
    steps: list[int]  # optimiser steps taken per request
    loss: list[float]  # final loss per request
    nll: list[float]  # final NLL per request

    @property
    def target(self) -> torch.Tensor:
        return self.init + self.delta


class ValueProblem:
    """Requests batched for the δ search at `layer`, δ added at `at` ("mlp" or "block").

    Rows of the batch: every prompt of every request with the target's tokens but the last
    appended (the NLL reads each target token after its prefix), then each request's KL prompt.
    They are left-padded so every fact token falls at or after one common column `split`;
    with `reuse_prefix` the columns before it run once (`fastpath.PrefixReuse`).

    As published, the NLL reads the target through the final norm and the LM head applied to
    the output of `loss_layer`, the KL term the model's own output (the same block unless
    `loss_layer` is below the last). With `keys_at` (a module name) the clean pass also
    records that module's input and output at every template row's fact token."""

    def __init__(self, model, arch: Architecture, requests: Sequence[Request], layer: int, at: str,
                 loss_layer: int, pad: int, *, cache: EditorCache | None = None, keys_at: str | None = None,
                 reuse_prefix: bool = True) -> None:
        if at not in ("mlp", "block"):
            raise ValueError(at)
        self.model, self.arch, self.layer, self.at = model, arch, layer, at
        self.loss_layer = max(loss_layer, layer)
        self.last = model.config.num_hidden_layers - 1
        self.start = layer if at == "mlp" else layer + 1  # the first block δ changes
        self.n = len(requests)
        device = next(model.parameters()).device
        ids, mask, positions, columns = self._lay_out(requests, pad, device)

        split = min(columns) if reuse_prefix else 0
        self.prefix = PrefixReuse.build(model, ids[:, :split], mask[:, :split], positions[:, :split],
                                        range(self.start, self.last + 1)) if split > 0 else None
        self.split = split if self.prefix is not None else 0
        self._index(columns, device)
        self._clean_pass(ids, mask, positions, keys_at)
        self.final_norm = model.get_submodule(arch.ln_f)
        self.head = model.get_output_embeddings()
        self.kl_reference: torch.Tensor | None = None  # set by the first call of `losses`
        self.written_out = None
        if self.residual:  # δ enters through the residual stream: no hook needed, blocks may be written out
            self.written_out = checked_written_out(model, arch, self.recorded, self.entry, self.start, self.last,
                                                   self.prefix, cache)

    def _lay_out(self, requests: Sequence[Request], pad: int, device):
        """The batch's token rows, left-padded; per row its request (`owners`) and fact-token
        column; per target token its row, position and id; each token's weight in the NLL (the
        mean over the request's prompts of the target's mean negative log-likelihood, negated)."""
        sequences, owners, lookups, self._kl_rows = [], [], [], []
        target_rows, target_pos, target_ids = [], [], []
        for r, request in enumerate(requests):
            for prompt in request.prompts:
                index = len(sequences)
                sequences.append(list(prompt.ids) + list(request.target[:-1]))
                owners.append(r)
                lookups.append(prompt.lookup)
                for j, token in enumerate(request.target):
                    target_rows.append(index)
                    target_pos.append(len(prompt.ids) - 1 + j)
                    target_ids.append(token)
        for r, request in enumerate(requests):
            self._kl_rows.append(len(sequences))
            sequences.append(list(request.kl.ids))
            owners.append(r)
            lookups.append(request.kl.lookup)
        ids, mask, positions = left_pad(sequences, pad, device)
        self._shifts = [ids.shape[1] - len(seq) for seq in sequences]
        self._owners, self._targets = owners, (target_rows, target_pos, target_ids)
        token_owner = [owners[row] for row in target_rows]
        self.token_owner = torch.tensor(token_owner, device=device)
        self.token_weight = torch.tensor(
            [-1 / (len(requests[r].target) * len(requests[r].prompts)) for r in token_owner], device=device)
        return ids, mask, positions, [shift + lookup for shift, lookup in zip(self._shifts, lookups)]

    def _index(self, columns: list[int], device) -> None:
        """Index tensors in the columns the steps run (those from `split` on)."""
        split, owners = self.split, self._owners
        target_rows, target_pos, target_ids = self._targets

        def local(values):
            return torch.tensor([v - split for v in values], device=device)

        self.rows = torch.arange(len(columns), device=device)
        self.lookups = local(columns)
        self.owners = torch.tensor(owners, device=device)
        self.first_rows = torch.tensor([owners.index(r) for r in range(self.n)], device=device)
        self.kl_rows = torch.tensor(self._kl_rows, device=device)
        self.template_rows = [i for i in range(len(columns)) if i not in self._kl_rows]
        self.target_ids = torch.tensor(target_ids, device=device)
        self.n_target = len(target_rows)
        # the (row, column) pairs the loss reads: target tokens first, then each KL fact token
        self.read_target = (torch.tensor(target_rows, device=device),
                            local([self._shifts[r] + p for r, p in zip(target_rows, target_pos)]))
        self.read_kl = (self.kl_rows, self.lookups[self.kl_rows])
        self.read = tuple(torch.cat(pair) for pair in zip(self.read_target, self.read_kl))
        self.token_index = torch.arange(self.n_target, device=device)

    def _clean_pass(self, ids, mask, positions, keys_at: str | None) -> None:
        """One pass without δ: the clean vectors, the hidden state entering block `start`, every
        later block's call arguments and, with `keys_at`, that module's input and output."""
        arch, layer, split = self.arch, self.layer, self.split
        self.place = place = (arch.mlp if self.at == "mlp" else arch.block).format(layer)
        block = arch.block.format(layer)
        inputs, outputs = [], list(dict.fromkeys([place, block]))
        if keys_at is not None:
            inputs.append(keys_at)
            outputs.append(keys_at)
        forward = {"position_ids": positions[:, split:]}
        if self.prefix is not None:
            forward |= self.prefix.forward_arguments()
        self.recorded = trace(self.model, arch, ids[:, split:], mask, inputs=inputs, outputs=outputs,
                              calls=range(self.start, self.last + 1), **forward)
        clean = self.recorded.outputs[place]
        self.init = pick(clean, (self.first_rows, self.lookups[self.first_rows])).float()
        self.init_sq = self.init.norm(dim=-1) ** 2
        self.entry = input_of(*self.recorded.calls[self.start]).detach() if self.at == "mlp" else clean
        self.residual = self.at == "block"
        if self.at == "mlp" and self._mlp_output_adds_to_residual(self.recorded.outputs[block]):
            # δ on the MLP output is δ on the block output: start one block later
            self.start, self.entry, self.residual = layer + 1, self.recorded.outputs[block], True
        self.keys = self.outs = None
        if keys_at is not None:
            template_rows = torch.tensor(self.template_rows, device=clean.device)
            at_lookup = (template_rows, self.lookups[template_rows])
            self.keys = pick(self.recorded.inputs[keys_at], at_lookup).float()
            self.outs = pick(self.recorded.outputs[keys_at], at_lookup).float()

    def _swap(self):
        return self.prefix.swap() if self.prefix is not None else None

    def _run(self, hidden: torch.Tensor, start: int, end: int, swap) -> torch.Tensor:
        if self.written_out is not None:
            return self.written_out(hidden, start, end)
        return run_blocks(self.model, self.arch, self.recorded, hidden, start, end, swap)

    @torch.no_grad()
    def _mlp_output_adds_to_residual(self, block_out: torch.Tensor) -> bool:
        """Whether the block adds its MLP output to the residual stream unchanged (GPT-2, GPT-J,
        NeoX, Llama, Mistral, Qwen2 do; a post-MLP norm would not): checked once with a probe
        shift, so that the ROME search may skip re-running the edited block itself."""
        generator = torch.Generator().manual_seed(0)
        scale = float(self.init.norm(dim=-1).mean()) + 1e-6
        width = block_out.shape[-1]
        probe = torch.randn(len(self.rows), width, generator=generator) * scale / width ** 0.5
        probe = probe.to(device=block_out.device, dtype=block_out.dtype)
        where = (self.rows, self.lookups)

        handle = self.model.get_submodule(self.place).register_forward_hook(_adder(where, probe))
        try:
            shifted = run_blocks(self.model, self.arch, self.recorded, self.entry, self.layer, self.layer, self._swap())
        finally:
            handle.remove()
        return agrees(shifted, _shifted(block_out, where, probe))

    def log_probs(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p of each target token, log-distribution at each KL prompt's fact token) with δ
        (one row per request) added at the fact token of every row of its request."""
        shift = delta[self.owners.to(delta.device)].to(self.entry.dtype)
        where = (self.rows, self.lookups)
        if self.residual:
            hidden = _shifted(self.entry, where, shift)
            handle = None
        else:
            hidden = self.entry
            handle = self.model.get_submodule(self.place).register_forward_hook(_adder(where, shift))
        swap = self._swap() if self.written_out is None else None
        try:
            hidden = self._run(hidden, self.start, self.loss_layer, swap)
        finally:
            if handle is not None:
                handle.remove()
        if self.loss_layer == self.last:
            picked = pick(hidden, self.read)
        else:
            final = self._run(hidden, self.loss_layer + 1, self.last, swap)
            picked = torch.cat([pick(hidden, self.read_target), pick(final, self.read_kl)])
        logp = self.head(self.final_norm(picked)).float().log_softmax(-1).to(delta.device)
        token_logp = logp[self.token_index.to(delta.device), self.target_ids.to(delta.device)]
        return token_logp, logp[self.n_target:]

    def losses(self, delta: torch.Tensor, kl_factor: float, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per request: NLL + KL + weight decay, and the NLL alone. The KL term compares with
        the distribution of the first call, which the optimiser makes at δ = 0."""
        token_logp, kl_logp = self.log_probs(delta)
        device = delta.device
        nll = torch.zeros(self.n, device=device).index_add(
            0, self.token_owner.to(device), token_logp * self.token_weight.to(device))
        if self.kl_reference is None:
            self.kl_reference = kl_logp.detach()
        kl = kl_factor * (kl_logp.exp() * (kl_logp - self.kl_reference)).sum(-1)
        decay = delta.norm(dim=-1) * (weight_decay / self.init_sq)
        return nll + kl + decay, nll


def _shifted(hidden: torch.Tensor, where: tuple[torch.Tensor, ...], shift: torch.Tensor) -> torch.Tensor:
    """hidden with `shift` added at the (row, position) pairs `where` (out of place)."""
    return hidden.index_put(tuple(i.to(hidden.device) for i in where), shift.to(hidden.device), accumulate=True)


def _adder(where, shift):
    """A forward hook adding `shift` to a module's output at `where`."""
    def add(module, args, output):
        return with_hidden(output, _shifted(hidden_of(output), where, shift))
    return add


def optimise_values(problem: ValueProblem, *, lr: float, steps: int, kl_factor: float, weight_decay: float,
                    clamp_norm_factor: float) -> Values:
    """Adam on δ (one row per request) as in the published code: stop a request once its loss
    is below 5e-2, never step on the last iteration, project δ into the ball of radius
    `clamp_norm_factor`·‖v_init‖ after each step."""
    init = problem.init
    delta = torch.zeros_like(init, requires_grad=True)
    # the fused kernel: the same Adam arithmetic in one call per step instead of a dozen
    optimizer = torch.optim.Adam([delta], lr=lr, fused=delta.device.type in ("cpu", "cuda"))
    active = [True] * problem.n
    taken = [0] * problem.n
    final_loss = [0.0] * problem.n
    final_nll = [0.0] * problem.n
    max_norm = clamp_norm_factor * init.norm(dim=-1)
    frozen = [p for p in problem.model.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    try:
        with torch.enable_grad():
            for iteration in range(max(steps, 1)):
                loss, nll = problem.losses(delta, kl_factor, weight_decay)
                losses, nlls = loss.tolist(), nll.tolist()
                for r in range(problem.n):
                    if active[r]:
                        final_loss[r], final_nll[r] = losses[r], nlls[r]
                active = [a and value >= EARLY_STOP_LOSS for a, value in zip(active, losses)]
                if not any(active) or iteration == steps - 1:
                    break
                optimizer.zero_grad()
                if all(active):
                    loss.sum().backward()
                    kept = None
                else:  # a finished request gets no gradient, and its δ no longer moves
                    mask = torch.tensor(active, device=delta.device)
                    (loss * mask).sum().backward()
                    kept = delta.detach().clone()
                optimizer.step()
                with torch.no_grad():
                    if kept is not None:
                        delta.copy_(torch.where(mask[:, None], delta, kept))
                    norms = delta.norm(dim=-1)
                    delta.mul_(torch.where(norms > max_norm, max_norm / norms, 1.0)[:, None])
                taken = [t + a for t, a in zip(taken, active)]
    finally:
        for param in frozen:
            param.requires_grad_(True)
    return Values(init.detach(), delta.detach(), taken, final_loss, final_nll)
