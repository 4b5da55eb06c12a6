"""AlphaEdit: MEMIT's targets and keys, with each update projected onto the null space of the
preserved knowledge (Fang et al. 2025).

P_l = Û Ûᵀ, where Û are the eigenvectors of the second moment C_l whose eigenvalue is below
`nullspace_threshold` (absolute, as published; `nullspace_threshold_mode: energy` instead
keeps the smallest eigen-directions holding at most that fraction of C's trace, the relative
threshold the author suggests when the absolute one selects everything or nothing). Per layer

    ΔW_lᵀ = (P (K Kᵀ + C_prev) + α I)⁻¹ P K Rᵀ,   α = `L2`,

so ΔW P = ΔW: keys in C's large-eigenvalue directions (the preserved subspace) map as before.
With no previous edits (C_prev = 0) this equals P K (α I + Kᵀ P K)⁻¹ Rᵀ, an n × n solve.

C_prev (Σ K Kᵀ of the keys edited so far, as the edited model reads them) is
kept per model in an explicit `AlphaEditSession`. Restoring an edit rewinds the session to
where it was, so single edits, each restored before the next, always start from C_prev = 0;
sequential edits that are not restored accumulate. `session(model).reset()` empties it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..architectures import architecture_of
from ..cases import Case
from . import Editor
from .locate import PROJECTIONS, EditRestore, check_layers, moments, scaled_layers, template_prefix
from .memit import PUBLISHED_LAYERS, REFERENCE, edit_layers


@dataclass
class AlphaEditHparams:
    """EasyEdit's AlphaEdit keys. `mom2_update_weight` and `mom2_adjustment` are accepted and
    unused, as in the published code (the projection, not λC, preserves knowledge)."""

    layers: list[int]
    rewrite_module_tmp: str
    v_loss_layer: int
    fact_token: Literal["subject_last", "subject_first", "last"] = "subject_last"
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    nullspace_threshold: float = 2e-2
    nullspace_threshold_mode: Literal["absolute", "energy"] = "absolute"
    L2: float = 10.0
    mom2_update_weight: float = 15000.0
    mom2_adjustment: bool = True
    mom2_dataset: str = "wikitext"
    mom2_n_samples: int = 100_000
    mom2_dtype: Literal["float32", "float64"] = "float32"
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[10, 5]])
    layer_selection: Literal["all"] = "all"


# (steps, lr, weight decay, clamp, L2): AlphaEdit repo for GPT-2 XL, GPT-J and Llama3-8B (used
# for Llama and Mistral), EasyEdit's qwen2.5-7b file for Qwen2; NeoX follows GPT-J (GUESS).
FAMILY_VALUES = {"gpt2": (20, 0.5, 0.5, 0.75, 10.0), "gptj": (25, 0.5, 0.5, 0.75, 10.0),
                 "gpt_neox": (25, 0.5, 0.5, 0.75, 10.0), "llama": (25, 0.1, 0.5, 0.75, 10.0),
                 "qwen2": (25, 0.5, 1e-3, 4.0, 1.0)}

# Tuned on the bundled tinyworld model: as MEMIT's, with α (L2) 1; the published absolute
# threshold 2e-2 keeps 249 and 337 of 512 directions at layers 0 and 1 (about the 70% the
# author reports for Llama3).
TINYWORLD = {"layers": [0, 1], "v_num_grad_steps": 30, "v_lr": 0.5, "v_weight_decay": 0.5,
             "clamp_norm_factor": 8.0, "L2": 1.0, "nullspace_threshold": 2e-2,
             "nullspace_threshold_mode": "absolute", "mom2_dataset": "tinyworld", "mom2_n_samples": 100_000,
             "mom2_dtype": "float64", "context_template_length_params": [[10, 5]]}


def defaults(config, profile: str) -> dict:
    arch = architecture_of(config)
    depth = config.num_hidden_layers
    layers = PUBLISHED_LAYERS.get((arch.family, depth))
    layers = list(layers) if layers else scaled_layers(REFERENCE[arch.family][1], REFERENCE[arch.family][0], depth)
    family = "qwen2" if config.model_type == "qwen2" else arch.family
    steps, lr, decay, clamp, l2 = FAMILY_VALUES[family]
    values = {"layers": layers, "rewrite_module_tmp": arch.mlp_out, "v_loss_layer": depth - 1,
              "v_num_grad_steps": steps, "v_lr": lr, "v_weight_decay": decay, "clamp_norm_factor": clamp, "L2": l2}
    if profile == "tinyworld":
        values.update(TINYWORLD)
    return values


# ----------------------------------------------------------------------------- session


class AlphaEditSession:
    """The keys edited so far on one model: C_prev = Σ K Kᵀ per rewrite module."""

    def __init__(self) -> None:
        self.c_prev: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.c_prev = {}

    def snapshot(self) -> dict[str, torch.Tensor]:
        return dict(self.c_prev)  # tensors are replaced, never changed in place

    def rewind(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.c_prev = dict(snapshot)

    def add(self, name: str, keys: torch.Tensor, dtype: torch.dtype) -> None:
        """C_prev += K Kᵀ for keys K (d_k × n), kept on the CPU."""
        keys = keys.to("cpu", dtype)
        previous = self.c_prev.get(name)
        update = keys @ keys.T
        self.c_prev[name] = update if previous is None else previous + update


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session(model) -> AlphaEditSession:
    """The AlphaEdit session of a model object (created empty on first use)."""
    if model not in _SESSIONS:
        _SESSIONS[model] = AlphaEditSession()
    return _SESSIONS[model]


class SessionRestore(EditRestore):
    """Restores the weights and rewinds the session to where it was before the edit."""

    def __init__(self, model, names: list[str], state: AlphaEditSession) -> None:
        super().__init__(model, names)
        self._session = state
        self._snapshot = state.snapshot()

    def restore(self) -> None:
        super().restore()
        if self._session is not None:
            self._session.rewind(self._snapshot)
            self._session = None


# --------------------------------------------------------------------------- projection

def projection(moment, threshold: float, mode: str, device) -> tuple[torch.Tensor, int]:
    """(P = Û Ûᵀ, number of directions kept), cached per statistic, threshold and device."""
    key = (moment.key, float(threshold), mode, str(device))
    if key not in PROJECTIONS:
        eigenvalues, vectors = torch.linalg.eigh(moment.matrix.to(device=device, dtype=torch.float64))
        if mode == "energy":  # the smallest directions whose summed eigenvalues stay within the share
            share = eigenvalues.clamp_min(0).cumsum(0) / eigenvalues.clamp_min(0).sum().clamp_min(1e-30)
            keep = share <= threshold
        else:
            keep = eigenvalues < threshold
        basis = vectors[:, keep]
        # stored in the statistics' dtype (float32 for the published settings: d_k² × 4 bytes)
        PROJECTIONS[key] = ((basis @ basis.T).to(moment.matrix.dtype), int(keep.sum()))
    return PROJECTIONS[key]


def alphaedit_solve(proj: torch.Tensor, keys: torch.Tensor, resid: torch.Tensor, c_prev: torch.Tensor | None,
                    alpha: float) -> torch.Tensor:
    """ΔW (d_v × d_k) from ΔWᵀ = (P (K Kᵀ + C_prev) + α I)⁻¹ P K Rᵀ, in float64."""
    proj, keys, resid = proj.double(), keys.double(), resid.double()
    projected = proj @ keys  # (d_k, n)
    if c_prev is None:
        eye = torch.eye(keys.shape[1], dtype=torch.float64, device=keys.device)
        return (projected @ torch.linalg.solve(alpha * eye + keys.T @ projected, resid.T)).T
    eye = torch.eye(keys.shape[0], dtype=torch.float64, device=keys.device)
    system = proj @ (keys @ keys.T + c_prev.to(keys.device, torch.float64)) + alpha * eye
    return torch.linalg.solve(system, projected @ resid.T).T


def apply(model, tokenizer, cases: list[Case], hp: AlphaEditHparams) -> SessionRestore:
    """Edit all the cases in one projected update; add their keys to the session's C_prev."""
    layers = sorted(set(hp.layers))
    check_layers(model, layers, hp.v_loss_layer)
    names = {layer: hp.rewrite_module_tmp.format(layer) for layer in layers}
    state = session(model)
    handle = SessionRestore(model, [f"{name}.weight" for name in names.values()], state)
    try:
        stats = moments(model, tokenizer, hp, layers)
        kept = {}

        def solve(layer, name, keys, resid):
            proj, kept[layer] = projection(stats[layer], hp.nullspace_threshold, hp.nullspace_threshold_mode,
                                           keys.device)
            return alphaedit_solve(proj, keys, resid, state.c_prev.get(name), hp.L2)

        edited = edit_layers(model, tokenizer, cases, hp, handle, solve)
        for info in handle.info:
            info["nullspace_dim"] = kept[info["layer"]]
        # the keys of this batch on the edited model join C_prev (the published code reads them
        # again after the edit; edit_layers says why they are the ones it solved with)
        dtype = torch.float64 if hp.mom2_dtype == "float64" else torch.float32
        for name, keys in edited.items():
            state.add(name, keys, dtype)
    except BaseException:
        handle.restore()
        raise
    return handle


ALPHAEDIT = Editor("alphaedit", "AlphaEdit: MEMIT updates projected onto the preserved keys' null space "
                   "(Fang et al. 2025)", AlphaEditHparams, defaults, apply, template_prefix)
