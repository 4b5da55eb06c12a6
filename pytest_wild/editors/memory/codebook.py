"""GRACE's codebook at one layer, and the rule that reads it during a forward pass.

The codebook holds keys (layer inputs), values (replacement layer outputs), a deferral radius
per key and a label per key. During a forward pass the layer's input at the last prompt token
(see pytest_wild.model.reading) is looked up; when its nearest key is within that key's radius the
layer's output is replaced by the key's value: at that token (`replace_last`), at the tokens
before it (`replace_prompt`) or at every token (`replace_all`).

What happens at the tokens the model generates is the *decoding semantics*:

- `published`: the prompt's decision holds for the whole answer. This is what the paper's
  evaluation did (EasyEdit fixes the query position at the first forward call and WILD
  decoded without a KV cache, so every step looked up the last prompt token again and got the
  same answer): generated tokens are replaced only under `replace_all`, by the prompt's value.
- `per-token`: each generated token is looked up by its own input, as a KV-cached decoder that
  hands the hook one new token per step naturally does; under `replace_last` and `replace_all`
  a generated token in a key's radius gets that key's value.

Both are stated per position, so a cached step (one new token) and an uncached pass (the
whole sequence again) replace exactly the same outputs (tests/unit/test_memory_editors.py).
"""

from __future__ import annotations

import torch

from ...model.reading import add_reader, remove_reader

SEMANTICS = ("published", "per-token")
REPLACEMENTS = ("replace_last", "replace_prompt", "replace_all")


class Codebook:
    """GRACE's part of a sequence's state: the codebook and, while it holds keys, the hook on
    its layer. Tensors are replaced, never changed in place, so an edit's undo only has to put
    the previous ones back."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # (n, d_in), float32
        self.values: torch.Tensor | None = None  # (n, d_out), float32
        self.radii: torch.Tensor | None = None  # (n,)
        self.labels: torch.Tensor | None = None  # (n,) float32: EasyEdit's edit labels, newest first (grace.py)
        self.semantics, self.replacement = "published", "replace_last"
        self._model = self._module = self._hook = None
        self._last: torch.Tensor | None = None  # each row's last prompt position, while a batch is read
        self._fresh = False  # the next call is the batch's first (its prompt pass)
        self._prompt_hit: torch.Tensor | None = None  # per row: the prompt's key index, -1 when none

    def __len__(self) -> int:
        return 0 if self.keys is None else len(self.keys)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.keys is None:
            return {}
        return {"keys": self.keys, "values": self.values, "radii": self.radii, "labels": self.labels}

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        if saved:
            self.put(saved["keys"], saved["values"], saved["radii"], saved["labels"])

    def put(self, keys, values, radii, labels) -> None:
        """Replace the whole codebook (an undo puts back what an edit replaced); an empty one
        is taken off the model, which is then the unedited model again."""
        device = self._module.weight.device if self._module is not None else None
        moved = [t if t is None or device is None else t.to(device) for t in (keys, values, radii, labels)]
        self.keys, self.values, self.radii, self.labels = moved
        if self.keys is None:
            self.detach()

    def snapshot(self) -> tuple:
        return self.keys, self.values, self.radii, self.labels

    # --- attached to a model ---------------------------------------------------------------

    def attach(self, model, module: torch.nn.Module, semantics: str, replacement: str) -> None:
        """Read the codebook at `module`'s output from now on (once; a sequence keeps its layer)."""
        self.semantics, self.replacement = semantics, replacement
        if self._module is module:
            return
        if self._module is not None:
            raise ValueError("a GRACE codebook of this sequence is attached at another layer")
        self._model, self._module = model, module
        self._hook = module.register_forward_hook(self._forward)
        add_reader(model, self)
        if self.keys is not None:  # loaded from a run directory: onto the model's device
            self.put(*self.snapshot())

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            remove_reader(self._model, self)
        self._model = self._module = self._hook = None

    close = detach  # the sequence ended (EditorState.clear)

    def begin(self, last: torch.Tensor, first: torch.Tensor) -> None:
        self._last, self._fresh, self._prompt_hit = last, True, None

    def keep(self, rows: torch.Tensor) -> None:
        self._last = self._last[rows] if self._last is not None else None
        self._prompt_hit = self._prompt_hit[rows] if self._prompt_hit is not None else None

    def end(self) -> None:
        self._last, self._fresh, self._prompt_hit = None, False, None

    # --- the forward rule ------------------------------------------------------------------

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each query (…, d_in): the index of its nearest key and that key's distance."""
        flat = queries.reshape(-1, queries.shape[-1]).float()
        distance, index = torch.cdist(flat, self.keys).min(-1)
        return index.view(queries.shape[:-1]), distance.view(queries.shape[:-1])

    def lookup(self, queries: torch.Tensor) -> torch.Tensor:
        """The key index each query falls in, -1 where it is outside every radius."""
        index, distance = self.nearest(queries)
        return torch.where(distance <= self.radii[index], index, -1)

    def _forward(self, module, inputs, output):
        if self.keys is None:
            return None
        hidden = inputs[0]
        batch, length = hidden.shape[:2]
        if length == 1 and self._last is not None and not self._fresh:
            return self._generated(hidden, output, torch.ones(batch, 1, dtype=torch.bool, device=hidden.device))
        self._fresh = False
        last = self._last if self._last is not None else torch.full((batch,), length - 1)
        last = last.to(hidden.device)
        hit = self.lookup(hidden[torch.arange(batch, device=hidden.device), last])
        self._prompt_hit = hit
        positions = torch.arange(length, device=hidden.device)[None]
        scope = {"replace_last": positions == last[:, None], "replace_prompt": positions < last[:, None],
                 "replace_all": positions <= last[:, None]}[self.replacement]
        output = self._replace(output, scope & (hit[:, None] >= 0), hit[:, None].expand(batch, length))
        return self._generated(hidden, output, positions > last[:, None])

    def _generated(self, hidden: torch.Tensor, output: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """Replace the outputs at generated positions (a mask over the call's positions)."""
        if not generated.any() or self.replacement == "replace_prompt":
            return output
        if self.semantics == "published":
            if self.replacement != "replace_all" or self._prompt_hit is None:
                return output
            hit = self._prompt_hit[:, None].expand(generated.shape)
        else:
            hit = self.lookup(hidden)
        return self._replace(output, generated & (hit >= 0), hit)

    def _replace(self, output: torch.Tensor, where: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if not where.any():
            return output
        values = self.values[index.clamp(min=0)].to(output.dtype)
        return torch.where(where[..., None], values, output)
