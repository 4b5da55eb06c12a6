"""MEND's editor network against EasyEdit's (trainer/algs/local_nn.py in the paper's code),
written out below from its source: `IDMLP` with `n_hidden` builds n_hidden + 1 residual
low-rank layers, each `x + clamp(u v x + b) * scale[mode] + shift[mode], min=0)` (the clamp,
not a relu, "so gradient at 0 isn't 0"). Ours with `hidden: 2` is its `n_hidden: 1`: the same
function and, from the identity start, the same gradients."""

import pytest
import torch
from torch import nn

from pytest_wild.editors.meta.network import ShapeEditor


class LRLinear(nn.Module):
    """EasyEdit's LRLinear with init 'id' and modes."""

    def __init__(self, inf, outf, rank, n_modes):
        super().__init__()
        mid_dim = min(rank, inf)
        self.u = nn.Parameter(torch.zeros(outf, mid_dim))
        self.v = nn.Parameter(torch.randn(mid_dim, inf))
        self.mode_shift = nn.Embedding(n_modes, outf)
        self.mode_shift.weight.data.zero_()
        self.mode_scale = nn.Embedding(n_modes, outf)
        self.mode_scale.weight.data.fill_(1)
        self.bias = nn.Parameter(torch.zeros(outf))

    def forward(self, x, mode):
        pre_act = (self.u @ (self.v @ x.T)).T
        pre_act += self.bias
        mode = torch.tensor(mode)
        pre_act = pre_act * self.mode_scale(mode) + self.mode_shift(mode)
        acts = pre_act.clamp(min=0)
        return acts + x


class IDMLP(nn.Module):
    def __init__(self, indim, n_hidden, rank, n_modes):
        super().__init__()
        self.layers = nn.ModuleList([LRLinear(indim, indim, rank, n_modes) for _ in range(n_hidden + 1)])

    def forward(self, x, mode):
        for layer in self.layers:
            x = layer(x, mode)
        return x


def copied(published: IDMLP, d_in: int, d_out: int, rank: int, modes: int) -> ShapeEditor:
    ours = ShapeEditor(d_in, d_out, rank, len(published.layers), modes)
    with torch.no_grad():
        for mine, theirs in zip(ours.layers, published.layers):
            mine.u.copy_(theirs.u)
            mine.v.copy_(theirs.v)
            mine.bias.copy_(theirs.bias)
            mine.scale.copy_(theirs.mode_scale.weight - 1)  # ours multiplies by 1 + scale
            mine.shift.copy_(theirs.mode_shift.weight)
    return ours


def ours_forward(editor: ShapeEditor, x: torch.Tensor, mode: int) -> torch.Tensor:
    for layer in editor.layers:
        x = layer(x, mode)
    return x


@pytest.mark.parametrize("trained", [False, True])
def test_two_layers_are_easyedits_n_hidden_1_in_value_and_gradient(trained):
    torch.manual_seed(0)
    d_in, d_out, rank, modes = 6, 4, 3, 2
    published = IDMLP(d_in + d_out, n_hidden=1, rank=rank, n_modes=modes)
    if trained:  # away from the identity start, where the clamp cuts
        with torch.no_grad():
            for layer in published.layers:
                layer.u.normal_()
                layer.bias.normal_()
                layer.mode_scale.weight.uniform_(0.5, 1.5)
                layer.mode_shift.weight.normal_()
    ours = copied(published, d_in, d_out, rank, modes)
    x = torch.randn(5, d_in + d_out)
    for mode in range(modes):
        assert torch.allclose(ours_forward(ours, x, mode), published(x, mode), atol=1e-6)
    (ours_forward(ours, x, 1) ** 2).sum().backward()
    (published(x, 1) ** 2).sum().backward()
    for mine, theirs in zip(ours.layers, published.layers):
        assert torch.allclose(mine.u.grad, theirs.u.grad, atol=1e-5)
        assert torch.allclose(mine.bias.grad, theirs.bias.grad, atol=1e-5)
        assert torch.allclose(mine.shift.grad, theirs.mode_shift.weight.grad, atol=1e-5)
    # from the identity start the network's own weights learn (with a relu they never would)
    assert all(layer.u.grad.abs().sum() > 0 for layer in ours.layers)
