"""The decoder blocks above the edit, written out as plain tensor code for the value search.

Every step of the δ search runs the same few blocks again on a few dozen positions. On small
models much of such a step is the Python around the tensor ops (module calls, configuration
look-ups, cache bookkeeping), not the ops: on the bundled model a MEMIT edit takes 6–9% less
time when those blocks run as the bare sequence of ops, on the modules' own weights.

Written out for GPT-2, the Llama family (Llama, Mistral, Qwen2) and GPT-NeoX under SDPA
attention, the same ops in the same order as transformers runs them. GPT-J keeps its modules:
transformers gives it no SDPA attention, only its own eager one.
`written_out` declines (returns None, and the modules run) whenever the written-out code might
not be what the modules do: training mode, another attention implementation, hooks on the
blocks, accelerate dispatch, call arguments it does not read. The value search also compares
its output with the modules' on the clean pass before using it (`fastpath.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F

Past = tuple[torch.Tensor, torch.Tensor]


def _conv1d(layer, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D: x W + b with W stored (in, out)."""
    out = torch.addmm(layer.bias, x.view(-1, x.shape[-1]), layer.weight)
    return out.view(*x.shape[:-1], -1)


def _layer_norm(norm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """Llama's RMSNorm: normalised in float32, scaled in the input's dtype."""
    y = x.to(torch.float32)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * y.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary embedding on the first cos.shape[-1] dimensions of each head (NeoX may leave
    the rest as they are; Llama rotates them all)."""
    turned = cos.shape[-1]
    if turned == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    head, rest = x[..., :turned], x[..., turned:]
    return torch.cat([head * cos + _rotate_half(head) * sin, rest], dim=-1)


def _repeat_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, heads, length, width = x.shape
    return x[:, :, None].expand(batch, heads, groups, length, width).reshape(batch, heads * groups, length, width)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
               past: Past | None, groups: int = 1) -> torch.Tensor:
    """SDPA over the kept prefix's keys and values followed by these columns', heads merged
    back: (batch, columns, heads · head width)."""
    if past is not None:
        k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
    options = {}
    if groups > 1:
        if mask is None:
            options["enable_gqa"] = True
        else:
            k, v = _repeat_heads(k, groups), _repeat_heads(v, groups)
    causal = mask is None and q.shape[2] > 1
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, is_causal=causal, **options)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def gpt2_block(block, hidden: torch.Tensor, mask: torch.Tensor | None, rotary, past: Past | None) -> torch.Tensor:
    """transformers' GPT2Block: pre-norm attention and MLP, each added to the residual stream."""
    attn, mlp = block.attn, block.mlp
    x = _layer_norm(block.ln_1, hidden)
    heads = (*hidden.shape[:-1], -1, attn.head_dim)
    q, k, v = (t.view(heads).transpose(1, 2) for t in _conv1d(attn.c_attn, x).split(attn.split_size, dim=2))
    hidden = hidden + _conv1d(attn.c_proj, _attention(q, k, v, mask, attn.scaling, past))
    x = _layer_norm(block.ln_2, hidden)
    return hidden + _conv1d(mlp.c_proj, mlp.act(_conv1d(mlp.c_fc, x)))


def llama_block(block, hidden: torch.Tensor, mask: torch.Tensor | None, rotary, past: Past | None) -> torch.Tensor:
    """transformers' Llama, Mistral and Qwen2 decoder layer: RMSNorm, attention with the rotary
    embedding the model computed (`rotary` = (cos, sin)) and grouped key/value heads, gated MLP."""
    attn, mlp = block.self_attn, block.mlp
    x = _rms_norm(block.input_layernorm, hidden)
    heads = (*hidden.shape[:-1], -1, attn.head_dim)
    q, k, v = (F.linear(x, p.weight, p.bias).view(heads).transpose(1, 2)
               for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    cos, sin = (t.unsqueeze(1) for t in rotary)
    q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
    out = _attention(q, k, v, mask, attn.scaling, past, attn.num_key_value_groups)
    hidden = hidden + F.linear(out, attn.o_proj.weight, attn.o_proj.bias)
    x = _rms_norm(block.post_attention_layernorm, hidden)
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    inner = mlp.act_fn(F.linear(x, gate.weight, gate.bias)) * F.linear(x, up.weight, up.bias)
    return hidden + F.linear(inner, down.weight, down.bias)


def neox_block(block, hidden: torch.Tensor, mask: torch.Tensor | None, rotary, past: Past | None) -> torch.Tensor:
    """transformers' GPTNeoXLayer (Pythia): fused query-key-value heads, the rotary embedding
    on part of each head, attention and MLP side by side (`use_parallel_residual`) or in turn."""
    attn, mlp = block.attention, block.mlp
    fused = F.linear(_layer_norm(block.input_layernorm, hidden), attn.query_key_value.weight, attn.query_key_value.bias)
    q, k, v = fused.view(*hidden.shape[:-1], -1, 3 * attn.head_size).transpose(1, 2).chunk(3, dim=-1)
    cos, sin = (t.unsqueeze(1) for t in rotary)
    q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
    out = F.linear(_attention(q, k, v, mask, attn.scaling, past), attn.dense.weight, attn.dense.bias)

    def feed_forward(x: torch.Tensor) -> torch.Tensor:
        inner = mlp.act(F.linear(_layer_norm(block.post_attention_layernorm, x), mlp.dense_h_to_4h.weight,
                                 mlp.dense_h_to_4h.bias))
        return F.linear(inner, mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias)

    if block.use_parallel_residual:
        return feed_forward(hidden) + out + hidden
    out = out + hidden
    return feed_forward(out) + out


# family -> (the block as code, the call arguments it reads or may ignore besides the hidden states;
# the KV cache is `cache` from transformers 5.24 on, `past_key_values` before)
FAMILIES = {
    "gpt2": (gpt2_block, {"cache", "past_key_values", "attention_mask", "encoder_hidden_states",
                          "encoder_attention_mask", "use_cache", "position_ids", "cache_position"}),
    "llama": (llama_block, {"attention_mask", "position_ids", "cache", "past_key_values", "use_cache",
                            "cache_position", "position_embeddings"}),
    "gpt_neox": (neox_block, {"attention_mask", "position_ids", "layer_past", "use_cache", "cache_position",
                              "position_embeddings"}),
}


def _untouched(module: torch.nn.Module) -> bool:
    """No hooks and no accelerate dispatch anywhere in the block: the modules do only their math."""
    for sub in module.modules():
        if (sub._forward_hooks or sub._forward_pre_hooks or sub._backward_hooks or sub._backward_pre_hooks
                or hasattr(sub, "_hf_hook")):
            return False
    return True


def written_out(model, family: str, blocks: dict[int, torch.nn.Module], calls: dict[int, tuple[tuple, dict]],
                prefix: dict[int, Past] | None) -> Callable[[torch.Tensor, int, int], torch.Tensor] | None:
    """`run(hidden, start, end)`: blocks `start`..`end` as written-out code, with the arguments
    the clean pass gave them and the prefix's keys and values (None when no prefix is kept);
    None when they cannot stand in for the modules."""
    if family not in FAMILIES or model.training or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return None
    if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
        return None
    code, known = FAMILIES[family]
    prepared = {}
    for index, block in blocks.items():
        if not _untouched(block):
            return None
        args, kwargs = calls[index]
        try:
            bound = inspect.signature(block.forward).bind(*args, **kwargs).arguments
        except TypeError:
            return None
        given = {**bound.pop("kwargs", {}), **bound}
        given.pop("hidden_states", None)
        if set(given) - known or given.get("encoder_hidden_states") is not None:
            return None
        past = prefix.get(index) if prefix is not None else None
        mask = given.get("attention_mask")
        if (prefix is not None and past is None) or (past is not None and mask is None):
            return None  # SDPA's causal flag aligns top-left: a kept prefix needs the explicit mask
        rotary = given.get("position_embeddings")
        if family != "gpt2" and rotary is None:
            return None
        prepared[index] = (block, mask, rotary, past)

    def run(hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        for index in range(start, end + 1):
            block, mask, rotary, past = prepared[index]
            hidden = code(block, hidden, mask, rotary, past)
        return hidden

    return run
