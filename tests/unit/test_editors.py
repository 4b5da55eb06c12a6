import pytest
import torch

from pytest_wild.cases.case import Case, Locality, WildInputError
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.model.architectures import architecture_of

from ..tiny_models import SIZES, target_logprob, tiny_model, weights_hash

FT_EDITORS = ("ft", "ft-l", "ft-m")
CASE = Case(id="x", prompt="Q: Where was Kalo Venbri born? A:", target="Dorwyn", subject="Kalo Venbri",
            rephrase=None, locality=(Locality("Q: What?", "no"),))


def hparams_for(name: str, model, **overrides):
    editor = get_editor(name)
    return editor, build_hparams(editor.hparams_type, editor.defaults(model.config, "default"), [("test", overrides)])


@pytest.mark.parametrize("model_type", sorted(SIZES))
@pytest.mark.parametrize("name", FT_EDITORS)
def test_edit_raises_target_changes_only_its_module_and_restores_exactly(model_type, name):
    model, tok = tiny_model(model_type)
    editor, hp = hparams_for(name, model, lr=5e-2, num_steps=20, norm_constraint=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digest, logprob = weights_hash(model), target_logprob(model, tok, CASE)
    handle = edit(editor, model, tok, [CASE], hp)
    assert target_logprob(model, tok, CASE) > logprob + 0.2
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    prefixes = tuple(hp.rewrite_module_tmp.format(layer) + "." for layer in hp.layers)
    assert changed and all(k.startswith(prefixes) for k in changed)
    handle.restore()
    assert weights_hash(model) == digest


@pytest.mark.parametrize("model_type", sorted(SIZES))
def test_default_modules_exist_in_every_architecture(model_type):
    model, _ = tiny_model(model_type)
    arch = architecture_of(model.config)
    modules = dict(model.named_modules())
    for template in (arch.block, arch.mlp, arch.mlp_out):
        assert template.format(0) in modules
    assert arch.ln_f in modules
    for name in FT_EDITORS:
        _, hp = hparams_for(name, model)
        assert all(0 <= layer < model.config.num_hidden_layers for layer in hp.layers)


def test_published_default_layers_for_7b_shapes():
    from transformers import AutoConfig

    from pytest_wild.editors.finetune.ft import FT_M

    llama = AutoConfig.for_model("llama", num_hidden_layers=32)
    qwen = AutoConfig.for_model("qwen2", num_hidden_layers=28)
    gptj = AutoConfig.for_model("gptj", n_layer=28)
    assert FT_M.defaults(llama, "default")["layers"] == [21]
    assert FT_M.defaults(qwen, "default")["layers"] == [27]
    assert FT_M.defaults(gptj, "default")["layers"] == [21]
    assert FT_M.defaults(llama, "default")["rewrite_module_tmp"] == "model.layers.{}.mlp.down_proj"


def test_many_edits_and_restores_leave_every_weight_bit_identical():
    model, tok = tiny_model("gpt2", seed=1)
    digest = weights_hash(model)
    for i, name in enumerate(FT_EDITORS * 4):
        editor, hp = hparams_for(name, model, lr=1e-2, num_steps=3)
        case = Case(id=str(i), prompt=f"Q: Where was Kalo {i} born? A:", target=f"Town{i}", subject=f"Kalo {i}",
                    rephrase=None, locality=())
        edit(editor, model, tok, [case], hp).restore()
    assert weights_hash(model) == digest


def test_norm_constraint_keeps_weights_in_the_box():
    model, tok = tiny_model("gpt2")
    editor, hp = hparams_for("ft-l", model, lr=1e-1, num_steps=5, norm_constraint=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = edit(editor, model, tok, [CASE], hp)
    for key, value in model.state_dict().items():
        assert (value - before[key]).abs().max() <= 1e-3 + 1e-7
    handle.restore()


@pytest.mark.parametrize("name", ("ft-m", "rome", "memit"))
def test_an_edit_that_fails_half_way_leaves_every_weight_as_it_was(name, monkeypatch):
    """The edit of two cases raises half-way (a CUDA out-of-memory, a Ctrl-C), after weights
    have changed: at the fine-tuning's fifth forward pass, or at the second weight update of
    a locate-then-edit method. The changed weights are put back before the error reaches the
    caller, and nothing stays trainable."""
    import importlib

    model, tok = tiny_model("gpt2", seed=2)
    if name.startswith("ft"):
        quick = {"lr": 5e-2, "num_steps": 5}
    else:
        quick = {"mom2_dataset": "tinyworld", "mom2_n_samples": 50, "v_num_grad_steps": 3,
                 "layers": [1] if name == "rome" else [1, 2]}
    editor, hp = hparams_for(name, model, **quick)
    cases = [CASE, Case(id="y", prompt="Q: Where was Tarn Bolvi born? A:", target="Emberly", subject="Tarn Bolvi",
                        rephrase=None, locality=())]
    digest = weights_hash(model)
    calls = []

    def fails_on(count: int, step):
        def wrapped(*args, **kwargs):
            calls.append(1)
            if len(calls) == count:
                raise KeyboardInterrupt("stopped mid-edit")
            return step(*args, **kwargs)
        return wrapped

    if name.startswith("ft"):
        monkeypatch.setattr(model, "forward", fails_on(5, model.forward))
    else:
        module = importlib.import_module("pytest_wild.editors.locate." + ("rome" if name == "rome" else "spread"))
        monkeypatch.setattr(module, "add_update", fails_on(2, module.add_update))
    with pytest.raises(KeyboardInterrupt):
        edit(editor, model, tok, cases, hp)
    assert len(calls) > 1 and weights_hash(model) == digest
    assert not any(p.requires_grad for p in model.parameters())


# EasyEdit's hparams/FT/llama-7b.yaml as published (layers moved into the tiny model)
EASYEDIT_FT = {"alg_name": "FT", "model_name": "./hugging_cache/llama-2-7b", "device": 0, "layers": [1],
               "num_steps": 25, "batch_size": 1, "max_length": 30, "lr": 5e-4, "weight_decay": 0, "kl_factor": 0,
               "norm_constraint": False, "rewrite_module_tmp": "model.layers.{}.mlp.down_proj.weight",
               "layer_module_tmp": "model.layers.{}", "mlp_module_tmp": "model.layers.{}.mlp",
               "attn_module_tmp": "model.layers.{}.self_attn", "ln_f_module": "model.norm", "lm_head_module": "lm_head"}


@pytest.mark.parametrize("name", ["ft-l", "ft-m"])
def test_a_stock_easyedit_ft_file_loads_and_trains_the_parameter_it_names(name):
    from pytest_wild.editors.hparams import ignored_keys
    from pytest_wild.model.load import model_shape

    model, tok = tiny_model("llama")
    editor = get_editor(name)
    layers = [("llama-7b.yaml", EASYEDIT_FT)]
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, "default"), layers,
                       model_shape(model.config), ignored=editor.ignored)
    assert hp.rewrite_module_tmp == "model.layers.{}.mlp.down_proj.weight" and hp.lr == 5e-4
    notes = ignored_keys(layers, editor.ignored)
    assert notes == ["llama-7b.yaml: kl_factor ignored (EasyEdit's FT computes no KL term: its files set it to 0 "
                     "and its training loop never reads it)"]
    handle = edit(editor, model, tok, [CASE], hp)
    assert handle.names == ["model.layers.1.mlp.down_proj.weight"]
    handle.restore()
    with pytest.raises(WildInputError, match="llama-7b.yaml: unknown hyperparameter 'kl_factr'"):
        build_hparams(editor.hparams_type, editor.defaults(model.config, "default"),
                      [("llama-7b.yaml", EASYEDIT_FT | {"kl_factr": 0})], ignored=editor.ignored)
