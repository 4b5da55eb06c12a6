"""Hyperparameters that make no sense for the method or the model are refused before the
first edit with one line naming where they came from, the key and the value (through the
command line: tests/integration/test_bad_input.py)."""

import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.editors import get_editor
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.model.architectures import ModelShape


def test_defaults_that_name_no_module_of_the_model_are_refused_naming_the_defaults():
    editor = get_editor("ft-m")
    shape = ModelShape(num_layers=4, module_names=frozenset({"transformer.h.0.mlp"}), model_type="gpt2")
    defaults = {"layers": [0], "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj", "objective_optimization": "target_new"}
    with pytest.raises(WildInputError, match="^the editor's defaults: rewrite_module_tmp: "):
        build_hparams(editor.hparams_type, defaults, [], shape)


@pytest.mark.parametrize(("editor", "key", "value", "message"), [
    ("ft-m", "num_steps", -3, "bad.yaml: num_steps: expected a number >= 0, got -3"),
    ("memit", "mom2_n_samples", 0, "bad.yaml: mom2_n_samples: expected a number >= 1, got 0"),
    ("memit", "v_lr", 0.0, "bad.yaml: v_lr: expected a number > 0.0, got 0.0"),
    ("alphaedit", "L2", float("inf"), "bad.yaml: L2: expected a finite number, got inf"),
    ("rome", "clamp_norm_factor", -4, "bad.yaml: clamp_norm_factor: expected a number > 0.0, got -4.0"),
    ("lora", "rank", 0, "bad.yaml: rank: expected a number >= 1, got 0"),
    ("lora", "lora_alpha", 0, "bad.yaml: lora_alpha: expected a number > 0.0, got 0.0"),
    ("lora", "lora_dropout", 1.5, "bad.yaml: lora_dropout: expected a number < 1.0, got 1.5"),
    ("lora", "lr", 0, "bad.yaml: lr: expected a number > 0.0, got 0.0"),
    ("ike", "k", -1, "bad.yaml: k: expected a number >= 0, got -1"),
    ("ultraedit", "lr", 0, "bad.yaml: lr: expected a number > 0.0, got 0.0"),
    ("ultraedit", "batch_size_once", 0, "bad.yaml: batch_size_once: expected a number >= 1, got 0"),
])
def test_every_bounded_key_is_checked_with_its_origin(editor, key, value, message):
    from pytest_wild.model.load import TINYWORLD_DIR, load_config

    config, _ = load_config(str(TINYWORLD_DIR))
    method = get_editor(editor)
    with pytest.raises(WildInputError) as raised:
        build_hparams(method.hparams_type, method.defaults(config, "tinyworld"), [("bad.yaml", {key: value})])
    assert str(raised.value) == message


@pytest.mark.parametrize(("modules", "message"), [
    ([], "bad.yaml: inner_params: name at least one module to edit"),
    (["transformer.h.9.mlp.c_proj"], "bad.yaml: inner_params: 'transformer.h.9.mlp.c_proj' is not a linear layer of "
     "the model (gpt2, 4 layers) (a module with a 2-D weight)"),
    (["transformer.h.0.ln_1.weight"], "bad.yaml: inner_params: 'transformer.h.0.ln_1.weight' is not a linear layer"),
])
def test_modules_named_one_by_one_must_be_linear_layers_of_the_model(modules, message):
    from pytest_wild.model.load import TINYWORLD_DIR, load_config, model_shape

    config, _ = load_config(str(TINYWORLD_DIR))
    method = get_editor("ultraedit")
    with pytest.raises(WildInputError) as raised:
        build_hparams(method.hparams_type, method.defaults(config, "tinyworld"), [("bad.yaml", {"inner_params": modules})],
                      model_shape(config))
    assert str(raised.value).startswith(message)


def test_published_names_with_and_without_weight_are_accepted():
    from pytest_wild.model.load import TINYWORLD_DIR, load_config, model_shape

    config, _ = load_config(str(TINYWORLD_DIR))
    method = get_editor("ultraedit")
    names = ["transformer.h.1.mlp.c_fc.weight", "transformer.h.3.mlp.c_proj"]
    hp = build_hparams(method.hparams_type, method.defaults(config, "tinyworld"), [("ok.yaml", {"inner_params": names})],
                       model_shape(config))
    assert hp.inner_params == names
