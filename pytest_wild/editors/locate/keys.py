"""Step 1 of every locate-then-edit method: the key, the rewrite module's input at the fact
token, averaged over the context templates (ROME's compute_u before C⁻¹, MEMIT's
compute_ks).

Keys are read at fact tokens, which in a causal model do not see the tokens after them, so
each prompt runs only up to its fact token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...model.architectures import Architecture
from ...model.batching import right_pad
from ...model.tracing import pick, trace
from .requests import Request


def mean_keys(keys: torch.Tensor, request: Request, offset: int = 0) -> torch.Tensor:
    """A request's key: the mean over its groups of the mean over each group's prompts."""
    means = [keys[[offset + i for i in group]].mean(0) for group in request.groups]
    return torch.stack(means).mean(0)


def grouped_keys(keys: torch.Tensor, requests: Sequence[Request]) -> torch.Tensor:
    """(n, d_k) float64: each request's key from `keys`, which has one row per prompt, the
    requests' prompts one after the other."""
    keys = keys.double()
    means, offset = [], 0
    for request in requests:
        means.append(mean_keys(keys, request, offset))
        offset += len(request.prompts)
    return torch.stack(means)


def request_keys(model, arch: Architecture, requests: Sequence[Request], modules: Sequence[str], pad: int,
                 outputs: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward over every prompt of every request, stopped after the deepest module needed:
    per module, the (n, d_k) group-averaged keys; per output module, the (n, d) output at the
    bare prompt's fact token."""
    device = next(model.parameters()).device
    prompts = [prompt for request in requests for prompt in request.prompts]
    ids, mask = right_pad([prompt.ids[: prompt.lookup + 1] for prompt in prompts], pad, device)
    recorded = trace(model, arch, ids, mask, inputs=modules, outputs=outputs)
    lookups = torch.tensor([prompt.lookup for prompt in prompts], device=device)
    every = torch.arange(len(prompts), device=device)
    keys = {name: grouped_keys(pick(recorded.inputs[name], (every, lookups)), requests) for name in modules}
    # each request's first prompt is its bare prompt
    bare = torch.tensor([0] + [len(request.prompts) for request in requests[:-1]], device=device).cumsum(0)
    outs = {name: pick(recorded.outputs[name], (bare, lookups[bare])).double() for name in outputs}
    return keys, outs


def template_keys(problem, *, original: bool, bare: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROME's keys from the value search's clean pass (`ValueProblem(..., keys_at=module)`,
    one row per template, row 0 the bare prompt), float64: (k*, k, W k + b).

    - ROME (`original`): k* the template average, k and W k + b the bare prompt's, so the
      update maps the bare prompt's key to v* while u was built from k*;
    - `bare`: the bare prompt's key everywhere;
    - R-ROME: the template average in all three, so that the update maps k* itself to v*."""
    keys, outs = problem.keys.double(), problem.outs.double()
    if original:
        return keys.mean(0), keys[0], outs[0]
    if bare:
        return keys[0], keys[0], outs[0]
    return keys.mean(0), keys.mean(0), outs.mean(0)
