"""Reading a model's activations with forward hooks: what one pass saw at named modules, and
the decoder blocks called again with the arguments that pass gave them.

Shared by the statistics (pytest_wild.model.stats) and the locate-then-edit editors, so neither
imports the other for it. Hooks use `register_forward_hook(..., with_kwargs=True)`; a module's
output is read as a tensor or a tuple starting with one; the forward pass is stopped once
everything asked for has been seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .architectures import Architecture


class StopForward(Exception):
    """Raised from a hook to end a forward pass once everything needed was recorded."""


def hidden_of(output):
    """The hidden states of a module output that is a tensor or a tuple starting with one."""
    return output if isinstance(output, torch.Tensor) else output[0]


def with_hidden(output, hidden: torch.Tensor):
    """`output` with its hidden states replaced, in the same form (tensor or tuple)."""
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


def input_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The first input of a module call, passed positionally or by keyword."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    return next(v for v in kwargs.values() if isinstance(v, torch.Tensor))


@dataclass
class Trace:
    """What one forward pass recorded: module inputs and outputs, and for some blocks the
    arguments they were called with (to call them again on other hidden states)."""

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[int, tuple[tuple, dict]] = field(default_factory=dict)


@torch.no_grad()
def trace(model, arch: Architecture, ids: torch.Tensor, mask: torch.Tensor, *, inputs: Sequence[str] = (),
          outputs: Sequence[str] = (), calls: Sequence[int] = (), **forward) -> Trace:
    """Run the model on a batch, recording what is asked for; stop as soon as all of it is seen.
    `forward` adds keyword arguments of the model call (position ids, a KV cache)."""
    found = Trace()
    wanted = {("in", n) for n in inputs} | {("out", n) for n in outputs} | {("call", i) for i in calls}
    seen: set = set()
    handles = []

    def mark(item) -> None:
        seen.add(item)
        if seen >= wanted:
            raise StopForward

    def on_output(name):
        def hook(module, args, kwargs, output):
            if name in inputs:
                found.inputs[name] = input_of(args, kwargs).detach()
            if name in outputs:
                found.outputs[name] = hidden_of(output).detach()
            for kind in ("in", "out"):
                if (kind, name) in wanted:
                    mark((kind, name))
        return hook

    def on_call(index):
        def hook(module, args, kwargs):
            found.calls[index] = (args, dict(kwargs))
            mark(("call", index))
        return hook

    try:
        for name in dict.fromkeys([*inputs, *outputs]):
            handles.append(model.get_submodule(name).register_forward_hook(on_output(name), with_kwargs=True))
        for index in calls:
            block = model.get_submodule(arch.block.format(index))
            handles.append(block.register_forward_pre_hook(on_call(index), with_kwargs=True))
        try:
            model(input_ids=ids, attention_mask=mask, **({"use_cache": False} | forward))
        except StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = wanted - seen
    if missing:
        raise RuntimeError(f"the forward pass never reached {sorted(missing)}")
    return found


def run_blocks(model, arch: Architecture, recorded: Trace, hidden: torch.Tensor, start: int, end: int,
               swap: tuple[object, object] | None = None) -> torch.Tensor:
    """Blocks `start`..`end` on `hidden`, each called with the arguments the traced pass gave it
    (attention mask, position ids or rotary embeddings, KV cache), whatever the architecture.
    `swap = (old, new)` passes `new` wherever the traced pass passed the object `old`."""
    for index in range(start, end + 1):
        args, kwargs = recorded.calls[index]
        if swap is not None:
            args = tuple(swap[1] if a is swap[0] else a for a in args)
            kwargs = {k: swap[1] if v is swap[0] else v for k, v in kwargs.items()}
        block = model.get_submodule(arch.block.format(index))
        if args:
            out = block(hidden, *args[1:], **kwargs)
        else:
            out = block(**{**kwargs, "hidden_states": hidden})
        hidden = hidden_of(out)
    return hidden


def pick(tensor: torch.Tensor, index: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """tensor[index], the index moved to the tensor's device (layers may sit on several GPUs)."""
    return tensor[tuple(i.to(tensor.device) for i in index)]
