"""Per-architecture module names, so editors address the same parts of GPT-2, Llama, Mistral,
Qwen2, GPT-NeoX and GPT-J without knowing which one they hold."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ..cases.case import WildInputError


@dataclass(frozen=True)
class Architecture:
    """Module-name templates; `{}` is the layer index."""

    family: str
    block: str
    mlp: str
    mlp_out: str
    ln_f: str
    conv1d: bool = False


_GPT2 = Architecture("gpt2", "transformer.h.{}", "transformer.h.{}.mlp", "transformer.h.{}.mlp.c_proj",
                     "transformer.ln_f", conv1d=True)
_GPTJ = Architecture("gptj", "transformer.h.{}", "transformer.h.{}.mlp", "transformer.h.{}.mlp.fc_out",
                     "transformer.ln_f")
_NEOX = Architecture("gpt_neox", "gpt_neox.layers.{}", "gpt_neox.layers.{}.mlp",
                     "gpt_neox.layers.{}.mlp.dense_4h_to_h", "gpt_neox.final_layer_norm")
_LLAMA = Architecture("llama", "model.layers.{}", "model.layers.{}.mlp", "model.layers.{}.mlp.down_proj",
                      "model.norm")

ARCHITECTURES = {
    "gpt2": _GPT2,
    "gptj": _GPTJ,
    "gpt_neox": _NEOX,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}


def architecture_of(config) -> Architecture:
    """The module names for a model's config (`model.config`)."""
    model_type = config.model_type
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise WildInputError(f"--wild-model: architecture {model_type!r} is not supported (supported: {supported})") from None


@dataclass(frozen=True)
class ModelShape:
    """What hyperparameters are checked against before the first edit: the model's depth
    and the names of its modules (read off a weightless skeleton of the model)."""

    num_layers: int
    module_names: Collection[str]
    model_type: str
    parameters: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # name -> shape
