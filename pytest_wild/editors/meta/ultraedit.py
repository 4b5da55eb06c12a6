"""UltraEdit (Gu et al. 2025, "Training-, Subject-, and Memory-Free Lifelong Editing"): MEND's
per-token view of the gradient without MEND's trained network. For each edited linear layer,
one update is three steps:

1. keys and gradients: one forward and backward pass of the target's loss over prompt +
   target (`gradients.pieces`) gives, at every read token, the layer's input k and the loss's
   gradient g at its output;
2. values: [k, g] are normalised by running statistics kept over every edit of the sequence
   so far (`LifelongNormalizer`, the "lifelong" part), and each token's wanted change of the
   layer's output is one gradient step in those units, v = −lr ‖k̂‖² ĝ (the output change a
   step −lr ĝ k̂ᵀ would make at k̂);
3. the solve: the ridge least-squares map of the raw keys onto those values,
   ΔW = Vᵀ K (Kᵀ K + I)⁻¹, in float32 (math layout, d_out × d_in).

Nothing is trained and no edit is remembered but through the statistics, so an update costs a
pass, a backward pass and a d_in × d_in solve per layer. Read from EasyEdit's `ultraedit`
(14cea82) and the authors' repository (XiaojieGu/UltraEdit 0beb222); see `LifelongNormalizer`
for the one place this differs from both. Two slips of EasyEdit's are not reproduced, the
authors' code being right in both: its loss takes the targets' padded ids as labels, so in a
pass of several cases a shorter target's padding is scored as tokens to predict; and its
`token: ans` reads the first positions of each row, as many as the target has tokens, not the
target's (its files use `mask`, which it reads right). The statistics carry from update to
update, as the authors' driver keeps one editor for the whole sequence; EasyEdit's executor
builds a new editor, so new statistics, at every call (its `is_init` is never set):
`carry_statistics: false` runs that way.

Which tokens are read (`token`): `mask`, EasyEdit's published files, every real token of
prompt + target (EasyEdit feeds the whole target, so its last token is read too, with a zero
gradient); `ans`, the authors' repository, the tokens that predict the target's tokens.
Cases of an update are taken `batch_size_once` at a time in each pass (the loss is the mean
over that pass's target tokens, and the statistics take each pass's rows as one batch); the
solve takes all of the update's rows at once. EasyEdit's `editor_batch_size` only splits the
normalisation into chunks of rows, which changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ...cases.case import Case, WildInputError
from ...model.architectures import architecture_of
from ...model.weights import add_update, in_out
from ..api import EditHandle, Editor, EditorCache, EditorState, StateMismatch, expect_parts, expect_tensor
from ..depths import scaled_layers
from .gradients import TokenPieces, pieces
from .training import target_batch, target_loss


@dataclass
class UltraEditHparams:
    """EasyEdit's UltraEdit keys: the linear layers edited (`inner_params`, names as the
    published files give them, with or without `.weight`), the step `lr`, which tokens are
    read, and how many cases share one forward and backward pass."""

    inner_params: list[str]
    lr: float = 1e-6
    token: Literal["mask", "ans"] = "mask"
    batch_size_once: int = 10
    carry_statistics: bool = True  # ours: False restarts the statistics at every update, as EasyEdit's executor


IGNORED = {
    "batch_size": "the cases per update are --wild-batch-size (UltraEdit's edits per turn)",
    "editor_batch_size": "it splits the normalisation into chunks of rows, which changes no value",
    "half": "the model's dtype is pytest-wild's --wild-dtype",
    "dropout": "read by no step of UltraEdit's edit",
    "no_grad_layers": "read by no step of UltraEdit's edit",
    "silent": "progress is pytest-wild's",
    "model_class": "the model is pytest-wild's --wild-model", "class_name": "the model is pytest-wild's --wild-model",
    "tokenizer_class": "the tokenizer is the model's", "tokenizer_name": "the tokenizer is the model's",
}

# The published files (EasyEdit hparams/UltraEdit, the same modules as the authors' configs):
# (projection, layers of the reference depth) per family, and that depth; another depth takes
# each group's top layer at the same relative depth and as many layers in proportion.
PUBLISHED = {
    # GPT-J-6B, 28 layers: fc_out 18-26 (its zsRE / UltraEditBench setting)
    "gptj": (28, [("fc_out", range(18, 27))]),
    # Llama-3-8B-Instruct, 32 layers: gate_proj 11-15 and up_proj 18-24 (the only Llama file:
    # every Llama, Llama-2 included, takes it, placed on its depth)
    "llama": (32, [("gate_proj", range(11, 16)), ("up_proj", range(18, 25))]),
    # Mistral-7B-v0.3, 32 layers: down_proj 29-30
    "mistral": (32, [("down_proj", range(29, 31))]),
    # Qwen2.5-7B-Instruct, 28 layers: gate_proj and up_proj 18-26
    "qwen2": (28, [("gate_proj", range(18, 27)), ("up_proj", range(18, 27))]),
}
# No published GPT-2 or GPT-NeoX setting: GPT-J's MLP output projection at the same relative
# depth (GPT-2's c_proj and NeoX's dense_4h_to_h are GPT-J's fc_out), as for MEMIT (GUESS).
UNPUBLISHED = {"gpt2": "c_proj", "gpt_neox": "dense_4h_to_h"}

# Tuned on the bundled tinyworld model (docs/measured.md, "UltraEdit on tinyworld"): GPT-J's
# setting scaled to 4 layers is c_proj of blocks 2-3; lr 5e-4 (on the bundled suite 3e-4 leaves
# 7 edits undone and 1e-3 changes 14 locality answers; GPT-J's published step lr·d_in, 1e-6 ·
# 16384 / 512 = 3.2e-5 here, makes 16 of the 216 edits).
TINYWORLD = {"inner_params": ["transformer.h.2.mlp.c_proj", "transformer.h.3.mlp.c_proj"], "lr": 5e-4}
# SmolLM2-135M-Instruct (Llama, 30 layers): the Llama-3-8B-Instruct file's modules placed on 30
# layers by `defaults` (gate_proj 10-14, up_proj 16-22); lr keeps that file's step lr·d_in
# (E‖k̂‖² = d_in), 1e-6 · 4096 / 576, where the published 1e-6 would move a 576-wide key 7x less.
SMOLLM2_LR = 7.1e-6


def defaults(config, profile: str) -> dict:
    """The published modules for the model's family, each group's layers at the same relative
    depth as in the published model; the published lr (1e-6) but where a profile tunes it."""
    if profile == "tinyworld":
        return dict(TINYWORLD)
    arch = architecture_of(config)
    depth = config.num_hidden_layers
    family = config.model_type if config.model_type in PUBLISHED else arch.family
    reference, groups = PUBLISHED.get(family, PUBLISHED["gptj"])
    if family in UNPUBLISHED:
        groups = [(UNPUBLISHED[family], groups[0][1])]
    values: dict = {"inner_params": [f"{arch.mlp.format(layer)}.{projection}" for projection, layers in groups
                                     for layer in scaled_layers(list(layers), reference, depth)]}
    if profile == "smollm2-135m":
        values["lr"] = SMOLLM2_LR
    return values


@dataclass
class Moments:
    """Running statistics of [k, g] rows for one layer shape (d_in, d_out): count, mean, the
    accumulated squared deviations, and the standard deviation they give."""

    n: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    std: torch.Tensor

    def to(self, device: torch.device) -> Moments:
        """On the rows' device (a state loaded from a run directory arrives on the CPU)."""
        return Moments(self.n.to(device), self.mean.to(device), self.var.to(device), self.std.to(device))


@dataclass
class LifelongNormalizer:
    """UltraEdit's part of a sequence's state: one `Moments` per layer shape, shared by the
    layers of that shape and updated with each pass's rows of each layer, as published.

    The update is the published one, quirk included: a batch of m rows adds m times its
    unbiased variance (not its sum of squared deviations) to `var`. The one difference: the
    published unbiased variance of a single row is NaN and would make every later weight NaN;
    here a single row adds no spread (it happens only with `token: ans`, a one-token target
    and one case in a pass)."""

    moments: dict[tuple[int, int], Moments] = field(default_factory=dict)

    def update(self, shape: tuple[int, int], rows: torch.Tensor) -> None:
        m = self.moments.get(shape)
        if m is None:
            zeros = rows.new_zeros(rows.shape[1])
            m = Moments(rows.new_zeros(1), zeros, zeros, zeros)
        m = m.to(rows.device)
        count = rows.shape[0]
        n = m.n + count
        delta = rows.mean(0) - m.mean
        spread = rows.var(0) if count > 1 else torch.zeros_like(delta)
        var = m.var + count * spread + m.n * count * delta.pow(2) / n
        std = (var / (n - 1 + torch.finfo(rows.dtype).eps)).sqrt()
        self.moments[shape] = Moments(n, m.mean + count * delta / n, var, std)  # new tensors: a saved copy stays

    def normalise(self, shape: tuple[int, int], rows: torch.Tensor) -> torch.Tensor:
        m = self.moments[shape].to(rows.device)
        return (rows - m.mean) / (m.std + torch.finfo(rows.dtype).eps)

    def remember(self, handle: EditHandle) -> None:
        """The handle's restore puts the statistics back as they are now."""
        saved = dict(self.moments)
        handle.on_undo(lambda: setattr(self, "moments", saved))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{d_in}x{d_out}/{key}": getattr(m, key) for (d_in, d_out), m in self.moments.items()
                for key in ("n", "mean", "var", "std")}

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        by_shape: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        for key, value in saved.items():
            shape, _, name = key.partition("/")
            d_in, _, d_out = shape.partition("x")
            by_shape.setdefault((int(d_in), int(d_out)), {})[name] = value
        self.moments = {shape: Moments(**values) for shape, values in by_shape.items()}


def module_names(hp: UltraEditHparams) -> list[str]:
    return [name.removesuffix(".weight") for name in hp.inner_params]


def shape_of(module) -> tuple[int, int]:
    """(d_in, d_out), as the published code keys its statistics."""
    return in_out(module)


def check_state(model, hp: UltraEditHparams, parts: dict) -> None:
    """Lifelong statistics saved in a run directory: for each shape of the edited layers
    (`d_inxd_out`), a count and the mean, squared deviations and spread of [k, g] rows, which
    are d_in + d_out wide."""
    expect_parts(parts, {"ultraedit"})
    saved = parts.get("ultraedit") or {}
    shapes = {f"{d_in}x{d_out}": d_in + d_out for d_in, d_out in
              (shape_of(model.get_submodule(name)) for name in module_names(hp))}
    for shape in sorted({key.partition("/")[0] for key in saved}):
        if shape not in shapes:
            raise StateMismatch(f"ultraedit/{shape} is not the shape of an edited layer ({', '.join(sorted(shapes))})")
        expect_tensor(saved, f"ultraedit/{shape}/n", (1,))
        for key in ("mean", "var", "std"):
            expect_tensor(saved, f"ultraedit/{shape}/{key}", (shapes[shape],))
    for key in sorted(k for k in saved if k.partition("/")[2] not in ("n", "mean", "var", "std")):
        raise StateMismatch(f"ultraedit/{key} is not part of the statistics")


def read_tokens(mask: torch.Tensor, labels: torch.Tensor, token: str) -> torch.Tensor:
    """Where keys and gradients are read: every real token (`mask`), or each token whose next
    token is a target token (`ans`)."""
    if token == "mask":
        return mask.bool()
    predicts = torch.zeros_like(mask, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != -100
    return predicts


def keys_and_gradients(model, tokenizer, cases: list[Case], hp: UltraEditHparams,
                       normalizer: LifelongNormalizer) -> dict[str, TokenPieces]:
    """Step 1, one pass per `batch_size_once` cases; each pass's rows join the statistics."""
    names = module_names(hp)
    found: dict[str, list[TokenPieces]] = {name: [] for name in names}
    for start in range(0, len(cases), hp.batch_size_once):
        chunk = cases[start:start + hp.batch_size_once]
        inputs, labels = target_batch(model, tokenizer, [(case.prompt, case.target) for case in chunk])
        read, _ = pieces(model, names, lambda: target_loss(model(**inputs).logits, labels),
                         read_tokens(inputs["attention_mask"], labels, hp.token))
        for name in names:
            normalizer.update(shape_of(model.get_submodule(name)),
                              torch.cat([read[name].inputs, read[name].output_grads], -1))
            found[name].append(read[name])
    return {name: TokenPieces(torch.cat([p.inputs for p in parts]), torch.cat([p.output_grads for p in parts]))
            for name, parts in found.items()}


def values(read: TokenPieces, shape: tuple[int, int], lr: float, normalizer: LifelongNormalizer) -> torch.Tensor:
    """Step 2: (tokens × d_out) wanted output changes, v = −lr ‖k̂‖² ĝ."""
    normalised = normalizer.normalise(shape, torch.cat([read.inputs, read.output_grads], -1))
    keys, grads = normalised.split([shape[0], shape[1]], -1)
    return -lr * keys.pow(2).sum(-1, keepdim=True) * grads


def ridge_update(keys: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Step 3: ΔW (d_out × d_in) = Vᵀ K (Kᵀ K + I)⁻¹, the published ridge solve."""
    gram = keys.T @ keys + torch.eye(keys.shape[1], dtype=keys.dtype, device=keys.device)
    return torch.linalg.solve(gram, keys.T @ wanted).T


def prepare(model, tokenizer, hp: UltraEditHparams, cache: EditorCache) -> None:
    """Before the first case: every named module is a linear layer (its 2-D weight was checked
    with the hyperparameters; an embedding has one too, and is refused here)."""
    from transformers.pytorch_utils import Conv1D

    for name in module_names(hp):
        module = model.get_submodule(name)
        if not isinstance(module, (torch.nn.Linear, Conv1D)):
            raise WildInputError(f"inner_params: {name!r} is not a linear layer (nn.Linear or GPT-2's Conv1D) "
                                 f"but {type(module).__name__}")


def apply(model, tokenizer, cases: list[Case], hp: UltraEditHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """One update for all the cases: every layer's change is computed on the model as it is,
    then all are written."""
    normalizer = state.part("ultraedit", LifelongNormalizer) if hp.carry_statistics else LifelongNormalizer()
    normalizer.remember(handle)
    read = keys_and_gradients(model, tokenizer, cases, hp, normalizer)
    updates = {}
    for name, pieces_of in read.items():
        shape = shape_of(model.get_submodule(name))
        updates[name] = ridge_update(pieces_of.inputs, values(pieces_of, shape, hp.lr, normalizer))
    handle.save([f"{name}.weight" for name in updates])
    for name, update in updates.items():
        add_update(model.get_submodule(name), update)
    handle.info.append({"tokens": {name: len(p.inputs) for name, p in read.items()},
                        "update_norms": {name: float(u.norm()) for name, u in updates.items()}})


ULTRAEDIT = Editor("ultraedit", "UltraEdit: ridge updates from normalised per-token gradients, lifelong "
                   "statistics (Gu et al. 2025)", UltraEditHparams, defaults, apply, prepare=prepare, ignored=IGNORED,
                   check_state=check_state)
