"""Every editor's defaults for the named model smollm2-135m (SmolLM2-135M-Instruct) build
hyperparameters that fit that model: its layers, its modules, the shapes of the weights they
edit. Checked against its config alone, on a weightless skeleton: no download, no weights."""

from pathlib import Path

import pytest
from transformers import AutoConfig

from pytest_wild.editors import BUILTIN, get_editor
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.model.load import model_shape

PROFILE = "smollm2-135m"
# SmolLM2-135M-Instruct's config.json (what the converted model's says, checkpoint fields aside).
CONFIG = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
          "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True,
          "hidden_act": "silu", "max_position_embeddings": 8192, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="module")
def smollm2():
    config = AutoConfig.for_model("llama", **CONFIG)
    return config, model_shape(config)


# MEND's one default is its shipped network (docs/measured.md, "MEND for SmolLM2-135M"; test below).
TUNED = sorted(BUILTIN)
# Editors whose published values take no per-model choice: LoRA's Llama file adapts q_proj and
# v_proj of every layer, IKE's k is 16 for every model; smollm2-135m gets them as published.
AS_PUBLISHED = {"lora", "ike"}


@pytest.mark.parametrize("name", TUNED)
def test_every_editor_has_defaults_for_smollm2_that_fit_the_model(name, smollm2):
    config, shape = smollm2
    editor = get_editor(name)
    defaults = editor.defaults(config, PROFILE)
    if name in AS_PUBLISHED:
        assert defaults == editor.defaults(config, "default")
    else:
        assert defaults != editor.defaults(config, "default"), "the profile has no values of its own"
    hp = build_hparams(editor.hparams_type, defaults, [], shape, editor.ignored)
    layers = getattr(hp, "layers", [])
    for layer in layers:
        assert 0 <= layer < 30
    template = getattr(hp, "rewrite_module_tmp", None)
    if template is not None and name != "ft":
        # the MLP's down projection, (d_model, d_ff) as nn.Linear stores it
        for layer in layers:
            assert shape.parameters[f"{template.format(layer)}.weight"] == (576, 1536)


def test_the_published_layers_are_scaled_to_30_layers(smollm2):
    config, _ = smollm2
    layers = {name: get_editor(name).defaults(config, PROFILE).get("layers") for name in set(TUNED) - AS_PUBLISHED}
    assert layers["ft-m"] == layers["ft-l"] == layers["ft"] == [20]  # 21 of 32
    assert layers["rome"] == layers["r-rome"] == [5]  # 5 of 32
    assert layers["memit"] == layers["alphaedit"] == [3, 4, 5, 6, 7]  # 4-8 of 32
    assert layers["grace"] == layers["wise"] == [25]  # 27 of 32
    assert get_editor("rome").defaults(config, PROFILE)["v_loss_layer"] == 29


def test_mend_ships_a_network_for_smollm2_that_fits_the_model(smollm2):
    """The shipped network loads against the model's own modules (names, shapes, model type: what
    stored.load checks before any weight is read) on a weightless skeleton, and was trained on data
    checked disjoint from the bundled QAEdit suite."""
    import torch
    from transformers import AutoModelForCausalLM

    from pytest_wild.editors.meta import stored

    config, shape = smollm2
    editor = get_editor("mend")
    hp = build_hparams(editor.hparams_type, editor.defaults(config, PROFILE), [], shape)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    network, found = stored.load(Path(hp.directory), model)
    assert sorted(network.names) == sorted(f"model.layers.{layer}.mlp.{name}" for layer in (27, 28, 29)
                                           for name in ("gate_proj", "up_proj", "down_proj"))  # the last 3 blocks
    assert "qaedit" in found["training"]["checked_against"]


def test_ultraedit_places_the_llama3_files_modules_on_30_layers(smollm2):
    config, shape = smollm2
    modules = get_editor("ultraedit").defaults(config, PROFILE)["inner_params"]
    # gate_proj 11-15 and up_proj 18-24 of 32: each group's top at the same depth, as many layers in proportion
    assert modules == ([f"model.layers.{i}.mlp.gate_proj" for i in range(10, 15)]
                       + [f"model.layers.{i}.mlp.up_proj" for i in range(16, 23)])
    assert modules == get_editor("ultraedit").defaults(config, "default")["inner_params"]  # only lr is tuned
    assert all(shape.parameters[f"{name}.weight"] == (1536, 576) for name in modules)
