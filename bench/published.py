"""ROME, MEMIT, AlphaEdit and UltraEdit (and LoRA and IKE, below) written plainly, step for step
as the papers and the structure of their original code have them: the reference that
pytest-wild's editors are timed against (bench/editors.py) and compared with
(tests/test_published_reference.py).

Nothing here comes from pytest_wild.editors except the edit's input: the prepared requests
(tokenised prompts behind the context templates, fact-token positions, target ids). The second
moments C are the same statistics for both sides. Every forward pass runs the whole model on
the whole right-padded batch and calls it as the published code does, `model(**input_tok)`:
with the model's own `use_cache` default (true in GPT-2 and Llama configurations, so each pass
also fills a KV cache that nothing reads):

- value search (ROME's compute_v, MEMIT's compute_z): every step runs all layers, with δ added
  in place by a hook, and the full-vocabulary log-softmax at every position twice, as the
  published code has it: once of the model's logits (the KL term reads them) and once of the
  traced loss-layer output through the final norm and the LM head again (the NLL reads it);
- keys and current outputs (compute_u / compute_ks / get_module_input_output_at_words): one
  whole-model pass per layer and call;
- solve: MEMIT's and AlphaEdit's dense d_k × d_k solve for every layer of every call; ROME's C⁻¹
  and AlphaEdit's projection are computed once and reused, as the published code caches them.

Updates come back in the math layout ΔW (d_v × d_k) and are added to the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pytest_wild.model.batching import right_pad

EARLY_STOP_LOSS = 5e-2


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _first(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


@torch.no_grad()
def at_tokens(model, module: str, rows: Sequence[Sequence[int]], lookups: Sequence[int], pad: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of `module` at each row's lookup token, float64, from one whole-model pass."""
    seen: dict[str, torch.Tensor] = {}

    def before(_, args, kwargs):
        seen["in"] = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))

    def after(_, args, output):
        seen["out"] = _first(output)

    target = model.get_submodule(module)
    hooks = [target.register_forward_pre_hook(before, with_kwargs=True), target.register_forward_hook(after)]
    ids, mask = right_pad(rows, pad, _device(model))
    try:
        model(input_ids=ids, attention_mask=mask)
    finally:
        for hook in hooks:
            hook.remove()
    where = (torch.arange(len(rows)), torch.tensor(list(lookups)))
    return seen["in"][where].double(), seen["out"][where].double()


def value_search(model, request, place: str, layer: int, hp, arch, pad: int, early_stop: float = EARLY_STOP_LOSS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_init, δ) at the module `place` of layer `layer` for one request: Adam on δ added at
    every rewriting prompt's fact token and the KL prompt's; NLL of the target behind every
    context template, KL of the "{subject} is a" next-token distribution, weight decay, stop when
    the loss is below `early_stop`, no step on the last iteration, δ clamped to
    clamp_norm_factor·‖v_init‖.

    As in the published compute_v / compute_z, each step runs the whole model (its logits at
    every position give the KL term) and traces the output of the loss layer's block, whose
    final norm and LM head, applied again at every position of the rewriting prompts, give the
    NLL. `arch` names the modules (block, final norm), as the published hyperparameters do."""
    device = _device(model)
    rows = [list(row.ids) + list(request.target[:-1]) for row in request.prompts] + [list(request.kl.ids)]
    lookups = [row.lookup for row in request.prompts] + [request.kl.lookup]
    ids, mask = right_pad(rows, pad, device)
    n_rewrite, n_target = len(request.prompts), len(request.target)
    targets = torch.full((n_rewrite, ids.shape[1]), -100, device=device)
    for i, row in enumerate(request.prompts):
        end = len(row.ids) + n_target - 1
        targets[i, end - n_target : end] = torch.tensor(request.target, device=device)
    head = model.get_output_embeddings()
    lm_w = head.weight.T
    lm_b = head.bias if head.bias is not None else lm_w.new_zeros(lm_w.shape[1])
    ln_f = model.get_submodule(arch.ln_f)
    loss_block = model.get_submodule(arch.block.format(max(hp.v_loss_layer, layer)))
    delta = torch.zeros(model.config.hidden_size, requires_grad=True, device=device)
    optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
    state: dict[str, torch.Tensor] = {}

    def add(module, args, output):
        hidden = _first(output)
        if "init" not in state:
            state["init"] = hidden[0, lookups[0]].detach().clone()
        for i, index in enumerate(lookups):  # in place, as published
            hidden[i, index] += delta

    def keep(module, args, output):
        state["loss_layer"] = _first(output)

    kl_init = None
    frozen = [p for p in model.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    handles = [model.get_submodule(place).register_forward_hook(add), loss_block.register_forward_hook(keep)]
    try:
        for iteration in range(hp.v_num_grad_steps):
            optimizer.zero_grad()
            logits = model(input_ids=ids, attention_mask=mask).logits
            kl_logp = torch.log_softmax(logits[n_rewrite, lookups[-1]][None], dim=-1)
            if kl_init is None:
                kl_init = kl_logp.detach().clone()
            full_repr = state["loss_layer"][:n_rewrite]
            log_probs = torch.log_softmax(ln_f(full_repr) @ lm_w + lm_b, dim=2)
            picked = torch.gather(log_probs, 2, torch.where(targets != -100, targets, 0)[:, :, None])[:, :, 0]
            nll = -(picked * (targets != -100).float()).sum(1) / n_target
            kl = hp.kl_factor * torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="batchmean")
            decay = hp.v_weight_decay * delta.norm() / state["init"].norm() ** 2
            loss = nll.mean() + kl + decay
            if loss.item() < early_stop or iteration == hp.v_num_grad_steps - 1:
                break
            loss.backward()
            optimizer.step()
            limit = hp.clamp_norm_factor * state["init"].norm()
            if delta.norm() > limit:
                with torch.no_grad():
                    delta[...] = delta * limit / delta.norm()
    finally:
        for handle in handles:
            handle.remove()
        for param in frozen:
            param.requires_grad_(True)
    return state["init"].double(), delta.detach().double()


def _transposed(model, module: str) -> bool:
    """GPT-2's Conv1D keeps W as (d_k, d_v)."""
    return type(model.get_submodule(module)).__name__ == "Conv1D"


@torch.no_grad()
def add_to_weight(model, module: str, delta: torch.Tensor) -> None:
    """W += ΔW."""
    weight = model.get_submodule(module).weight
    weight.add_((delta.T if _transposed(model, module) else delta).to(weight.dtype))


def save_weights(model, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Copies of the modules' weights, to read updates against and to put back."""
    return {m: model.get_submodule(m).weight.detach().clone() for m in modules}


@torch.no_grad()
def put_back(model, saved: dict[str, torch.Tensor]) -> None:
    for module, weight in saved.items():
        model.get_submodule(module).weight.copy_(weight)


def weight_update(model, module: str, before: torch.Tensor) -> torch.Tensor:
    """ΔW (d_v × d_k, float64) that turned the weight `before` into the current one: how the
    editors' updates are read back for comparison."""
    delta = (model.get_submodule(module).weight.detach() - before).double()
    return delta.T if _transposed(model, module) else delta


# ---------------------------------------------------------------------------------- ROME


def rome_edit(model, request, hp, layer: int, arch, c_inverse: torch.Tensor | None, pad: int,
              consistent_keys: bool = False) -> torch.Tensor:
    """ROME at one layer: u = C⁻¹k (k averaged over the context templates), v* from the value
    search at the MLP output, ΔW = (v* − W k) uᵀ / (kᵀu) with k and W k at the bare prompt,
    or, with `consistent_keys` (R-ROME), averaged over the templates as in u."""
    name = hp.rewrite_module_tmp.format(layer)
    rows = [row.ids for row in request.prompts]
    lookups = [row.lookup for row in request.prompts]
    keys, outs = at_tokens(model, name, rows, lookups, pad)
    u = keys.mean(0)
    if c_inverse is not None:
        u = c_inverse @ u
    u = u / u.norm()
    init, delta = value_search(model, request, arch.mlp.format(layer), layer, hp, arch, pad)
    if consistent_keys:
        key, current = keys.mean(0), outs.mean(0)
    else:
        key, current = (x[0] for x in at_tokens(model, name, rows[:1], lookups[:1], pad))
    update = torch.outer((init + delta - current) / key.dot(u), u)
    add_to_weight(model, name, update)
    return update


# ------------------------------------------------------------------------ MEMIT, AlphaEdit


def group_keys(model, module: str, requests, pad: int) -> torch.Tensor:
    """(d_k, n): each request's keys averaged within each template group, then over groups."""
    columns = []
    for request in requests:
        keys, _ = at_tokens(model, module, [row.ids for row in request.prompts],
                            [row.lookup for row in request.prompts], pad)
        columns.append(torch.stack([keys[list(group)].mean(0) for group in request.groups]).mean(0))
    return torch.stack(columns, dim=1)


def spread(model, requests, hp, arch, pad: int, solve) -> dict[str, torch.Tensor]:
    """The shared MEMIT/AlphaEdit loop: z at the top layer per request, then per layer the keys,
    the residual still missing at the top layer over the layers left, and `solve(i, name, K, R)`."""
    layers = sorted(hp.layers)
    top = arch.block.format(layers[-1])
    zs = []
    for request in requests:
        init, delta = value_search(model, request, top, layers[-1], hp, arch, pad)
        zs.append(init + delta)
    z = torch.stack(zs, dim=1)  # (d, n)
    bare = [request.prompts[0] for request in requests]
    updates = {}
    for i, layer in enumerate(layers):
        name = hp.rewrite_module_tmp.format(layer)
        keys = group_keys(model, name, requests, pad)
        _, current = at_tokens(model, top, [row.ids for row in bare], [row.lookup for row in bare], pad)
        resid = (z - current.T) / (len(layers) - i)
        updates[name] = solve(i, name, keys, resid)
        add_to_weight(model, name, updates[name])
    return updates


def memit_edit(model, requests, hp, arch, covariances: dict[str, torch.Tensor], pad: int
               ) -> dict[str, torch.Tensor]:
    """MEMIT: ΔW_l = R K_lᵀ (λC_l + K_l K_lᵀ)⁻¹ by a dense solve, for each layer in turn."""
    def solve(i, name, keys, resid):
        system = hp.mom2_update_weight * covariances[name].double() + keys @ keys.T
        return resid @ torch.linalg.solve(system, keys).T

    return spread(model, requests, hp, arch, pad, solve)


def nullspace_projection(covariance: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = U Uᵀ over the singular vectors of C whose singular value is below the threshold."""
    u, s, _ = torch.linalg.svd(covariance.double(), full_matrices=False)
    small = u[:, s < threshold]
    return small @ small.T


def alphaedit_edit(model, requests, hp, arch, projections: dict[str, torch.Tensor],
                   cache_c: dict[str, torch.Tensor], pad: int) -> dict[str, torch.Tensor]:
    """AlphaEdit: ΔW_lᵀ = (P (K Kᵀ + C_prev) + α I)⁻¹ P K Rᵀ by a dense solve per layer; then, as
    the published driver does after each batch, C_prev += K Kᵀ with the keys read again on the
    edited model."""
    def solve(i, name, keys, resid):
        p = projections[name]
        eye = torch.eye(p.shape[0], dtype=torch.float64, device=p.device)
        system = p @ (keys @ keys.T + cache_c[name]) + hp.L2 * eye
        return torch.linalg.solve(system, p @ keys @ resid.T).T

    updates = spread(model, requests, hp, arch, pad, solve)
    for name in updates:
        keys = group_keys(model, name, requests, pad)
        cache_c[name] = cache_c[name] + keys @ keys.T
    return updates


# ------------------------------------------------------------------------------ UltraEdit


class RunningMeanStd:
    """The published lifelong normaliser (EasyEdit's malmen `RunningMeanStd`), buffers
    updated in place as there."""

    def __init__(self, size: int, device) -> None:
        self.n = torch.zeros(1, device=device)
        self.mean = torch.zeros(size, device=device)
        self.var = torch.zeros(size, device=device)
        self.std = torch.zeros(size, device=device)

    def update(self, x: torch.Tensor) -> None:
        n = self.n + x.shape[0]
        delta = x.mean(0) - self.mean
        self.mean += x.shape[0] * delta / n
        self.var += x.shape[0] * x.var(0) + self.n * x.shape[0] * delta.pow(2) / n
        self.std = (self.var / (n - 1 + torch.finfo(x.dtype).eps)).sqrt()
        self.n = n

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + torch.finfo(x.dtype).eps)


def ultraedit_shape(model, module: str) -> tuple[int, int]:
    """(d_in, d_out), the published `get_shape`."""
    shape = tuple(model.get_submodule(module).weight.shape)
    return shape if _transposed(model, module) else shape[::-1]


def ultraedit_edit(model, batches, modules: Sequence[str], lr: float, normalizers: dict,
                   editor_batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """UltraEdit as EasyEdit's `ULTRAEDIT.cache` + `predict_param_shifts` run it, for one turn:
    `batches` are the turn's passes, each (inputs, labels, read): the model's keyword inputs (the
    edit's input, tokenised as the editor has it), labels -100 off the target and `read` the
    tokens traced. Per pass: the target's cross-entropy,
    backward through the edited weights (made trainable for it, as published), a forward hook
    and a full backward hook on every module; each module's [keys, gradients] update the
    normaliser of its shape (`normalizers`, kept by the caller across a sequence). Then per
    module: normalise in chunks of `editor_batch_size` rows padded with zeros, v = −lr ‖k̂‖² ĝ,
    ΔW = solve(KᵀK + I, KᵀV) in float32, written at once. Returns ΔW in the math layout."""
    traced: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in modules}
    weights = [model.get_submodule(m).weight for m in modules]
    for weight in weights:
        weight.requires_grad_(True)
    try:
        for inputs, labels, read in batches:
            seen: dict[str, dict[str, torch.Tensor]] = {m: {} for m in modules}
            hooks = []
            for m in modules:
                def forward_hook(_, args, output, m=m):
                    seen[m]["keys"] = args[0][read].detach()

                def backward_hook(_, grad_in, grad_out, m=m):
                    seen[m]["grads"] = grad_out[0][read].detach()
                module = model.get_submodule(m)
                hooks += [module.register_forward_hook(forward_hook), module.register_full_backward_hook(backward_hook)]
            try:
                logits = model(**inputs).logits[:, :-1]
                targets = labels[:, 1:]
                where = torch.where(targets != -100)
                torch.nn.functional.cross_entropy(logits[where].float(), targets[where]).backward()
            finally:
                for hook in hooks:
                    hook.remove()
            for m in modules:
                keys, grads = seen[m]["keys"].float(), seen[m]["grads"].float()
                shape = ultraedit_shape(model, m)
                normalizers.setdefault(shape, RunningMeanStd(sum(shape), keys.device)).update(torch.cat((keys, grads), -1))
                traced[m].append((keys, grads))
    finally:
        for weight in weights:
            weight.requires_grad_(False)
            weight.grad = None
    shifts = {}
    with torch.no_grad():
        for m in modules:
            shape = ultraedit_shape(model, m)
            keys = torch.cat([k for k, _ in traced[m]])
            grads = torch.cat([g for _, g in traced[m]])
            values = []
            for start in range(0, len(keys), editor_batch_size):
                chunk = torch.cat((keys[start:start + editor_batch_size], grads[start:start + editor_batch_size]), -1)
                padded = torch.cat((chunk, chunk.new_zeros(editor_batch_size - len(chunk), chunk.shape[1])))
                k_hat, g_hat = normalizers[shape](padded).split([shape[0], shape[1]], -1)
                values.append(-lr * (k_hat * k_hat).sum(-1).unsqueeze(-1) * g_hat)
            values = torch.cat(values)[: len(keys)]
            mat = keys.T @ keys + torch.eye(shape[0], device=keys.device)
            shifts[m] = torch.linalg.solve(mat, keys.T @ values).T
        for m, delta in shifts.items():
            add_to_weight(model, m, delta)
    return shifts


# ------------------------------------------------------------------------------ LoRA and IKE
# EasyEdit's `execute_lora` (lora_type "lora") and IKE's `icl_lm_eval`, by hand: no peft, no
# pytest-wild evaluation code.


def lora_edit(model, tok, requests, hp, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """A LoRA adapter on each module, trained as EasyEdit trains it. Plain LoRA (`lora_type:
    lora`): A (r × d_in) and B (d_out × r) made as `nn.Linear`s are (consuming the generator as
    peft does), then A drawn again Kaiming-uniform and B zeroed; the module's output gains
    (α/r)·dropout(x) Aᵀ Bᵀ. AdaLoRA (`adalora`, as EasyEdit runs it: never reallocated, so the SVD
    form at peft's initial rank 12): A, E (r × 1) and B drawn as peft draws them, then E zeroed and
    A, B normal with std 0.02; the output gains α/(r + 1e-5)·dropout(x) (A ⊙ E)ᵀ Bᵀ, and the loss
    half the mean ‖A Aᵀ − I‖_F, ‖Bᵀ B − I‖_F over the adapters. The dropout is active (peft's new
    dropout modules are in training mode in a model loaded in evaluation mode, in EasyEdit as
    here; the model's own dropouts are not). Adam on the adapters for `num_steps` passes over the
    requests, one at a time; loss: the model's causal-LM loss on f"{prompt} {target}" with the
    prompt's tokens masked. Returns ΔW per module (math layout), the model left unchanged."""
    import math

    ada = hp.lora_type == "adalora"
    rank = 12 if ada else hp.rank
    scale = hp.lora_alpha / (rank + 1e-5) if ada else hp.lora_alpha / hp.rank
    found = dict(model.named_modules())
    adapters, hooks = {}, []
    for name in [n for n in found if n in set(modules)]:  # peft's order: the model's
        module = found[name]
        d_in, d_out = (module.weight.shape if _transposed(model, name) else module.weight.shape[::-1])
        if ada:
            a, e, b = torch.randn(rank, d_in), torch.randn(rank, 1), torch.randn(d_out, rank)
            torch.randn(1)  # peft's ranknum, drawn and then filled
            e.zero_(), a.normal_(0.0, 0.02), b.normal_(0.0, 0.02)
        else:
            a, b, e = torch.empty(rank, d_in), torch.empty(d_out, rank), torch.ones(rank, 1)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            torch.nn.init.kaiming_uniform_(b, a=math.sqrt(5))
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b.zero_()
        a, e, b = (t.to(_device(model)).requires_grad_() for t in (a, e, b))
        e.requires_grad_(ada)
        adapters[name] = (a, e, b)
        hooks.append(module.register_forward_hook(
            lambda mod, args, out, a=a, e=e, b=b: out + scale * (dropout(args[0], hp.lora_dropout) @ (a * e).T) @ b.T))
    trained = [t for triple in adapters.values() for t in triple if t.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=hp.lr, weight_decay=hp.weight_decay)
    try:
        for _ in range(hp.num_steps):
            for request in requests:
                prompt_len = len(tok(request["prompt"])["input_ids"])
                ids = tok(f"{request['prompt']} {request['target_new']}", return_tensors="pt")["input_ids"]
                ids = ids.to(_device(model))
                labels = ids.clone()
                labels[:, :prompt_len] = -100
                optimizer.zero_grad()
                loss = model(input_ids=ids, labels=labels).loss
                if ada:
                    loss = loss + 0.5 * _orthogonality(adapters)
                loss.backward()
                optimizer.step()
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (scale * b @ (a * e)).detach() for name, (a, e, b) in adapters.items()}


def _orthogonality(adapters: dict) -> torch.Tensor:
    """AdaLoRA's regulariser: the mean Frobenius distance of A Aᵀ and Bᵀ B from the identity."""
    terms = []
    for a, _, b in adapters.values():
        terms += [(a @ a.T - torch.eye(a.shape[0], device=a.device)).norm(),
                  (b.T @ b - torch.eye(b.shape[1], device=b.device)).norm()]
    return torch.stack(terms).mean()


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.nn.functional.dropout(x, p, training=True)


def ike_prompt(demonstrations: Sequence[str], prompt: str, target: str, question: str) -> str:
    """The text EasyEdit asks the model after an IKE edit: the demonstrations joined, then the new
    fact and the question (`''.join(icl_examples) + f'New Fact: {prompt} {target}\\nPrompt: {x}'`)."""
    return "".join(demonstrations) + f"New Fact: {prompt} {target}\nPrompt: {question}"


@torch.no_grad()
def icl_accuracy(model, tok, asked: str, target: str) -> float:
    """EasyEdit's `icl_lm_eval` for a model that is neither T5 nor Llama: the target encoded as
    ' ' + target + '\\n', one pass over f'{asked} {target}', the argmax at the positions before
    each target token compared with it (the newline left out)."""
    target_ids = tok(" " + target + "\n")["input_ids"]
    ids = tok(f"{asked} {target}", return_tensors="pt")["input_ids"].to(_device(model))
    predicted = model(input_ids=ids).logits.argmax(-1)[0, -len(target_ids) : -1]
    expected = torch.tensor(target_ids[:-1], device=predicted.device)
    return (predicted == expected).float().mean().item()
