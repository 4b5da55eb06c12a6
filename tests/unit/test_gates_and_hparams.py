import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.editors.finetune.ft import FTHparams
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.results.gates import parse_rule

MODES = ("wild", "synthetic")


def test_gate_rules_parse_and_decide():
    rule = parse_rule("synthetic.reliability>=0.9", "--wild-gate", MODES)
    assert (rule.mode, rule.metric, rule.op, rule.value) == ("synthetic", "reliability", ">=", 0.9)
    assert rule.holds(0.9) and not rule.holds(0.89)
    assert parse_rule("locality < 0.5", "--wild-gate", MODES).holds(0.4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reliability>>0.5", "cannot read"),
        ("fluency>=0.5", "unknown metric 'fluency'"),
        ("length.reliability>=0.5", "mode 'length' is not evaluated"),
    ],
)
def test_bad_gates_say_what_is_wrong(text, message):
    with pytest.raises(WildInputError, match=message):
        parse_rule(text, "--wild-gate", MODES)


DEFAULTS = {"layers": [2], "rewrite_module_tmp": "m.{}", "objective_optimization": "target_new"}


def test_hparams_layer_in_order_and_accept_easyedit_keys():
    hp = build_hparams(FTHparams, DEFAULTS, [
        ("suite.yaml: hparams.ft-m", {"lr": 1, "num_steps": 5}),
        ("ft.yaml", {"alg_name": "FT", "model_name": "x", "device": 0, "layers": 21, "norm_constraint": False, "lr": 5e-4}),
    ])
    assert hp.layers == [21] and hp.lr == 5e-4 and hp.num_steps == 5 and hp.norm_constraint is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lrr": 1}, "ft.yaml: unknown hyperparameter 'lrr'"),
        ({"num_steps": "many"}, "ft.yaml: num_steps: expected int"),
        ({"objective_optimization": "both"}, "ft.yaml: objective_optimization"),
    ],
)
def test_bad_hparams_name_the_file_and_key(overrides, message):
    with pytest.raises(WildInputError, match=message):
        build_hparams(FTHparams, DEFAULTS, [("ft.yaml", overrides)])
