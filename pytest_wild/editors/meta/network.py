"""MEND's editor network: it maps each token's (input, output gradient) pair of an edited
layer to a transformed pair whose rank-one sum is the weight update.

- One network per weight *shape*, shared by the layers of that shape; each layer is a "mode"
  with its own learned scale and shift.
- Inputs and output gradients are normalised by running means and variances learnt online
  while the network trains (Welford), then frozen.
- The network is residual and low-rank, x + max(U V x + b, 0), with U = 0 at the start: an
  untrained network returns its input, so an untrained MEND is one gradient step. The max is
  `clamp(min=0)`, as in EasyEdit's `LRLinear` ("clamp instead of relu so gradient at 0 isn't
  0"): at the start every pre-activation is exactly 0, where `relu`'s gradient is 0 and
  `clamp`'s is 1, so with `relu` U, b and the mode scales never receive a gradient and only
  the step sizes train.
- `hidden` counts these layers. EasyEdit's `n_hidden: 1` builds two of them (`IDMLP`: one
  per hidden layer plus the output layer, each with the clamp); ours is `hidden: 2`.
- Each edited weight has a learned step size (initialised to `edit_lr`); the update is
  W − η (Σ_t δ̃_t ũ_tᵀ), a gradient *descent* step (the original code adds it and lets the
  learned step carry the sign; descent from the first step is the paper's equation).
"""

from __future__ import annotations

import torch
from torch import nn

from .gradients import TokenPieces


class RunningNorm(nn.Module):
    """Mean and variance of a stream of vectors, updated in training (Welford), used after."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    def update(self, batch: torch.Tensor) -> None:
        batch = batch.detach().double()
        n, mean = batch.shape[0], batch.mean(0)
        m2 = ((batch - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count.fill_(float(total))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.count < 2:  # a variance needs two samples: until then, centre only
            return (x - self.mean.to(x.dtype))
        std = (self.m2 / (self.count - 1)).sqrt().clamp(min=1e-6)
        return (x - self.mean.to(x.dtype)) / std.to(x.dtype)


class LowRankResidual(nn.Module):
    """x + max((U V x + b) · (1 + scale[mode]) + shift[mode], 0), with U = 0 at the start."""

    def __init__(self, dim: int, rank: int, modes: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.empty(rank, dim))
        nn.init.xavier_uniform_(self.v)
        self.u = nn.Parameter(torch.zeros(dim, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.zeros(modes, dim))
        self.shift = nn.Parameter(torch.zeros(modes, dim))

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        hidden = (x @ self.v.T) @ self.u.T + self.bias
        return x + (hidden * (1 + self.scale[mode]) + self.shift[mode]).clamp(min=0)


class ShapeEditor(nn.Module):
    """The network shared by the layers of one weight shape (d_out × d_in)."""

    def __init__(self, d_in: int, d_out: int, rank: int, hidden: int, modes: int) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.norm_in, self.norm_grad = RunningNorm(d_in), RunningNorm(d_out)
        self.layers = nn.ModuleList(LowRankResidual(d_in + d_out, rank, modes) for _ in range(hidden))

    def forward(self, inputs: torch.Tensor, grads: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            self.norm_in.update(inputs)
            self.norm_grad.update(grads)
        x = torch.cat([self.norm_in(inputs), self.norm_grad(grads)], dim=-1)
        for layer in self.layers:
            x = layer(x, mode)
        return x[:, : self.d_in], x[:, self.d_in :]


class EditorNetwork(nn.Module):
    """MEND for a set of weights: a `ShapeEditor` per shape, a mode per weight, a step per weight."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int = 1920, hidden: int = 1, edit_lr: float = 1e-4) -> None:
        super().__init__()
        self.names = list(shapes)
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        by_shape: dict[tuple[int, int], list[str]] = {}
        for name, shape in shapes.items():
            by_shape.setdefault(tuple(shape), []).append(name)
        self.shape_of = {name: f"{shape[0]}x{shape[1]}" for name, shape in shapes.items()}
        self.mode_of = {name: names.index(name) for names in by_shape.values() for name in names}
        self.editors = nn.ModuleDict({
            f"{d_out}x{d_in}": ShapeEditor(d_in, d_out, min(rank, d_in + d_out), hidden, len(names))
            for (d_out, d_in), names in by_shape.items()})
        self.steps = nn.ParameterDict({name.replace(".", "/"): nn.Parameter(torch.tensor(edit_lr)) for name in shapes})

    def updates(self, found: dict[str, TokenPieces]) -> dict[str, torch.Tensor]:
        """Each weight's update −η Σ_t δ̃_t ũ_tᵀ in the math layout (d_out × d_in)."""
        out = {}
        for name in self.names:
            piece = found[name]
            editor = self.editors[self.shape_of[name]]
            inputs, grads = editor(piece.inputs, piece.output_grads, self.mode_of[name])
            out[name] = -self.steps[name.replace(".", "/")] * (grads.T @ inputs)
        return out
