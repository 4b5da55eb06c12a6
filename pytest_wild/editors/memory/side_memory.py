"""WISE's side memory at one FFN weight, and the routing that reads it during a forward pass.

The side memory is a copy of the layer's weight that edits train; earlier copies are kept as
shards (every `save_freq` edits) and TIES-merged (every `merge_freq`). Each forward call is
routed by the *activation distance* between the layer's original output and a memory's
output, d = ‖act(side) − act(original)‖₂ per token (act: the model's own FFN activation),
averaged over the tokens routed together (their maximum when there are more than 100). The
side memory answers when d reaches `act_ratio` times the smallest distance its edits recorded;
a shard answers instead when its distance is larger still and reaches its own threshold.

The published code routes the whole of each forward call by one distance. What a call holds
depends on the decoder, so the routing of generated tokens is the *semantics*:

- `per-call` (the published rule, as EasyEdit's `generate` runs it with a KV cache): the
  prompt pass is routed by the mean over the prompt's tokens, each cached step by its one new
  token. A teacher-forced pass (prompt + target in one call) is routed by all its tokens.
- `prompt`: each row is routed once, by its prompt's tokens, and the answer follows that
  decision, whether it is decoded with a cache or without one.

The paper's own WILD loop decoded without a cache, routing prompt + answer-so-far again at
every step; no KV-cached decoder reproduces that without recomputing the prompt, so neither
option claims to. Rows are routed one by one (the published code takes one batch-wide
decision, and is run one question at a time), with padding left out of each row's mean.

EasyEdit computes the side and shard outputs as x Wᵀ, without the layer's bias. On Llama's
bias-free down_proj that is the same thing; on GPT-2's c_fc an untouched side memory would then
differ from the original by the bias alone, so here every memory keeps the layer's bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...model.reading import add_reader, remove_reader
from ...model.weights import is_transposed

LONG = 100  # more tokens than this in a call: the routing distance is their maximum, not their mean


def layer_output(module: torch.nn.Module, weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The module's output with another weight (in the module's own layout) and its own bias."""
    return F.linear(hidden, weight.T if is_transposed(module) else weight, module.bias)


def token_distances(activation, original: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """‖act(other) − act(original)‖₂ per token, in float32: (batch, tokens)."""
    return (activation(other.float()) - activation(original.float())).norm(dim=-1)


def pooled(distances: torch.Tensor, scope: torch.Tensor) -> torch.Tensor:
    """Each row's routing distance over the tokens in `scope`: their mean, or their maximum
    when there are more than LONG of them."""
    count = scope.sum(-1)
    mean = (distances * scope).sum(-1) / count.clamp(min=1)
    if scope.shape[-1] <= LONG:  # no row can have more than LONG tokens
        return mean
    top = distances.masked_fill(~scope, float("-inf")).max(-1).values
    return torch.where(count > LONG, top, mean)


def ties_merge(weights: list[torch.Tensor], base: torch.Tensor, density: float, mix: list[float]) -> torch.Tensor:
    """TIES merging relative to `base`: each task vector trimmed to its `density` largest
    entries by magnitude and scaled by its mix weight, a sign elected per entry by the sum, and
    the entries that agree with it averaged (divided by their mix weights' sum, at least 1)."""
    vectors = []
    for weight, share in zip(weights, mix):
        delta = (weight - base).flatten().float()
        keep = int(density * delta.numel())
        trimmed = torch.zeros_like(delta)
        if keep > 0:
            index = delta.abs().topk(keep).indices
            trimmed[index] = delta[index]
        vectors.append(share * trimmed)
    stacked = torch.stack(vectors)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = stacked.sign() == elected
    shares = torch.tensor(mix, device=stacked.device)[:, None] * agree
    merged = (stacked * agree).sum(0) / shares.sum(0).clamp(min=1.0)
    return (base.float().flatten() + merged).view_as(base).to(base.dtype)


class SideMemory:
    """WISE's part of a sequence's state: the side weight being edited, its threshold, the
    shards, the gradient mask and the edit count; and, while it holds an edit, the routing
    hook on its layer. Tensors are replaced, never changed in place, so an edit's undo only
    puts the previous ones back."""

    def __init__(self) -> None:
        self.side: torch.Tensor | None = None  # the side weight now being edited, module layout
        self.side_min = math.inf  # the smallest in-scope distance its edits recorded
        self.shards: tuple[tuple[torch.Tensor, float], ...] = ()  # (weight, its threshold's minimum)
        self.merged: torch.Tensor | None = None  # retrieve off: the shards merged into one weight
        self.mask: torch.Tensor | None = None
        self.count = 0
        self.act_ratio, self.semantics, self.retrieve = 0.88, "per-call", True
        self.activation = None
        self.routing = True  # off while an edit trains the side weight
        self._model = self._module = self._hook = None
        self._last = self._first = self._route = None
        self._fresh = False

    # --- saved with a run directory ----------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            return {}
        saved = {"side": self.side, "side_min": torch.tensor(self.side_min, dtype=torch.float64),
                 "mask": self.mask, "count": torch.tensor(self.count)}
        for i, (weight, least) in enumerate(self.shards):
            saved[f"shard.{i}"], saved[f"shard_min.{i}"] = weight, torch.tensor(least, dtype=torch.float64)
        if self.merged is not None:
            saved["merged"] = self.merged
        return saved

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        if not saved:
            return
        shards = tuple((saved[f"shard.{i}"], float(saved[f"shard_min.{i}"]))
                       for i in range(sum(key.startswith("shard.") for key in saved)))
        self.put((saved["side"], float(saved["side_min"]), shards, saved.get("merged"), saved["mask"],
                  int(saved["count"])))

    def snapshot(self) -> tuple:
        return self.side, self.side_min, self.shards, self.merged, self.mask, self.count

    def put(self, snapshot: tuple) -> None:
        """Replace the whole memory (an undo puts back what an edit replaced); a memory with no
        edit is taken off the model, which is then the unedited model again."""
        side, self.side_min, shards, merged, mask, self.count = snapshot
        device = self._module.weight.device if self._module is not None else None

        def moved(tensor):
            return tensor if tensor is None or device is None else tensor.to(device)

        self.side, self.merged, self.mask = moved(side), moved(merged), moved(mask)
        self.shards = tuple((moved(weight), least) for weight, least in shards)
        if self.count == 0:
            self.detach()

    # --- attached to a model -----------------------------------------------------------------

    def attach(self, model, module: torch.nn.Module, activation, act_ratio: float, semantics: str,
               retrieve: bool) -> None:
        self.activation, self.act_ratio, self.semantics, self.retrieve = activation, act_ratio, semantics, retrieve
        if self._module is module:
            return
        if self._module is not None:
            raise ValueError("a WISE side memory of this sequence is attached at another layer")
        self._model, self._module = model, module
        self._hook = module.register_forward_hook(self._forward)
        add_reader(model, self)
        if self.side is None:
            self.side = module.weight.detach().clone()
        elif self.count:  # loaded from a run directory: onto the model's device
            self.put(self.snapshot())

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            remove_reader(self._model, self)
        self._model = self._module = self._hook = None

    close = detach  # the sequence ended (EditorState.clear)

    def begin(self, last: torch.Tensor, first: torch.Tensor) -> None:
        self._last, self._first, self._fresh, self._route = last, first, True, None

    def keep(self, rows: torch.Tensor) -> None:
        for name in ("_last", "_first", "_route"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[rows])

    def end(self) -> None:
        self._last = self._first = self._route = None
        self._fresh = False

    # --- routing -------------------------------------------------------------------------------

    def candidates(self) -> list[tuple[torch.Tensor, float]]:
        """(weight, threshold) of each memory that may answer, the side memory first."""
        if self.retrieve:
            found = [(self.side, self.side_min), *self.shards]
        else:  # WISE-Merge: the merged shards and the side memory, under the smallest threshold of all
            least = min([self.side_min, *(least for _, least in self.shards)])
            found = [(self.side, least)] + ([(self.merged, least)] if self.merged is not None else [])
        return [(weight, least * self.act_ratio) for weight, least in found]

    def route(self, hidden: torch.Tensor, original: torch.Tensor, scope: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Per row: -1 for the original output, else the index of the memory that answers; and
        each memory's output (computed once, for the answer too)."""
        chosen = torch.full(scope.shape[:1], -1, device=hidden.device)
        reference = self.activation(original.float())
        best, outputs = None, []
        for index, (weight, threshold) in enumerate(self.candidates()):
            output = layer_output(self._module, weight, hidden)
            outputs.append(output)
            distance = pooled((self.activation(output.float()) - reference).norm(dim=-1), scope)
            if best is None:  # the side memory: it answers from its threshold on
                wins = distance >= threshold
                best = distance
            else:  # a shard answers where it is farther still than the best so far, and past its own threshold
                wins = (distance > best) & (distance > threshold)
                best = torch.where(wins, distance, best)
            chosen = torch.where(wins, index, chosen)
        return chosen, outputs

    def _forward(self, module, inputs, output):
        if self.count == 0 or not self.routing:
            return None
        hidden = inputs[0]
        batch, length = hidden.shape[:2]
        positions = torch.arange(length, device=hidden.device)[None]
        if length == 1 and self._last is not None and not self._fresh:  # a cached decoding step
            if self.semantics == "prompt":
                return self._answer(output, self._route, [layer_output(module, w, hidden) for w, _ in self.candidates()])
            route, outputs = self.route(hidden, output, torch.ones(batch, 1, dtype=torch.bool, device=hidden.device))
            return self._answer(output, route, outputs)
        self._fresh = False
        first = self._first.to(hidden.device)[:, None] if self._first is not None else 0
        last = self._last.to(hidden.device)[:, None] if self._last is not None else length - 1
        scope = (positions >= first) & (positions <= last if self.semantics == "prompt" else True)
        self._route, outputs = self.route(hidden, output, scope)
        return self._answer(output, self._route, outputs)

    @staticmethod
    def _answer(original: torch.Tensor, route: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        answer = original
        for index, output in enumerate(outputs):
            rows = route == index
            if bool(rows.any()):
                answer = torch.where(rows[:, None, None], output.to(original.dtype), answer)
        return answer
