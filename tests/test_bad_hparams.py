"""Hyperparameters that make no sense for the method or the model fail the run before the
first edit, through the real command line, with one line naming the file, key and value."""

import pytest

from pytest_wild.hparams import ModelShape, build_hparams
from pytest_wild.cases import WildInputError
from pytest_wild.editors import get_editor

BAD = [
    ("ft-m", "layers: [7]", "bad.yaml: layers: layer 7 is not in the model (gpt2, 4 layers): use 0 to 3"),
    ("ft-m", "lr: -0.1", "bad.yaml: lr: expected a number > 0.0, got -0.1"),
    ("ft-m", "lr: .nan", "bad.yaml: lr: expected a finite number, got nan"),
    ("ft-m", "rewrite_module_tmp: 'transformer.h.{}.mlp.c_nope'",
     "bad.yaml: rewrite_module_tmp: 'transformer.h.{}.mlp.c_nope' names 'transformer.h.2.mlp.c_nope', which is "
     "not a module of the model (gpt2, 4 layers)"),
    ("rome", "kl_factor: -1", "bad.yaml: kl_factor: expected a number >= 0.0, got -1.0"),
    ("memit", "v_loss_layer: 4", "bad.yaml: v_loss_layer: layer 4 is not in the model (gpt2, 4 layers)"),
]


@pytest.mark.parametrize(("editor", "line", "message"), BAD, ids=[f"{e}-{line.split(':')[0]}" for e, line, _ in BAD])
def test_a_bad_hyperparameter_fails_the_run_with_one_line_before_any_edit(pytester, editor, line, message):
    pytester.makefile(".yaml", bad=line)
    result = pytester.runpytest_subprocess("--wild", f"--editor={editor}", "--wild-hparams=bad.yaml",
                                           "--wild-limit=2", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert message in output
    assert "Traceback" not in output and "passed" not in output


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
])
def test_every_bounded_key_is_checked_with_its_origin(editor, key, value, message):
    from pytest_wild.model import TINYWORLD_DIR, load_config

    config, _ = load_config(str(TINYWORLD_DIR))
    method = get_editor(editor)
    with pytest.raises(WildInputError) as raised:
        build_hparams(method.hparams_type, method.defaults(config, "tinyworld"), [("bad.yaml", {key: value})])
    assert str(raised.value) == message
