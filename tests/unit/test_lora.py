"""LoRA through peft: the adapter is trained, merged into the weights saved on the handle, and
the model leaves the edit with the modules it came with; restore is bit for bit."""

import pytest
import torch

from pytest_wild.cases.case import Case, Locality, WildInputError
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.model.load import model_shape

from ..tiny_models import SIZES, target_logprob, tiny_model, weights_hash

CASE = Case(id="x", prompt="Q: Where was Kalo Venbri born? A:", target="Dorwyn", subject="Kalo Venbri",
            rephrase=None, locality=(Locality("Q: What?", "no"),))


def lora_hparams(model, **overrides):
    editor = get_editor("lora")
    return editor, build_hparams(editor.hparams_type, editor.defaults(model.config, "default"), [("test", overrides)],
                                 model_shape(model.config), ignored=editor.ignored)


@pytest.mark.parametrize("lora_type", ["lora", "adalora"])
@pytest.mark.parametrize("model_type", sorted(SIZES))
def test_an_adapter_raises_the_target_touches_only_its_modules_and_restores_exactly(model_type, lora_type):
    model, tok = tiny_model(model_type)
    editor, hp = lora_hparams(model, lora_type=lora_type, num_steps=15, lr=5e-2)
    modules = dict(model.named_modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digest, logprob = weights_hash(model), target_logprob(model, tok, CASE)
    handle = edit(editor, model, tok, [CASE], hp)
    assert target_logprob(model, tok, CASE) > logprob + 0.2
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(handle.names)
    assert all(name.rsplit(".", 2)[-2] in hp.target_modules for name in changed)
    now = dict(model.named_modules())
    assert now.keys() == modules.keys() and all(now[n] is m for n, m in modules.items())
    assert not hasattr(model, "peft_config") and not any(p.requires_grad for p in model.parameters())
    handle.restore()
    assert weights_hash(model) == digest


def test_layers_limit_the_adapter_to_those_layers():
    model, tok = tiny_model("llama")
    editor, hp = lora_hparams(model, layers=[2], num_steps=3)
    handle = edit(editor, model, tok, [CASE], hp)
    assert handle.names == ["model.layers.2.self_attn.q_proj.weight", "model.layers.2.self_attn.v_proj.weight"]
    handle.restore()


def test_an_edit_that_fails_half_way_leaves_weights_and_modules_as_they_were(monkeypatch):
    from pytest_wild.editors.finetune import lora

    model, tok = tiny_model("gpt2", seed=2)
    editor, hp = lora_hparams(model, num_steps=5, lr=5e-2)
    modules, digest, calls = dict(model.named_modules()), weights_hash(model), []
    loss = lora._loss

    def fails_on_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("stopped mid-edit")
        return loss(*args, **kwargs)

    monkeypatch.setattr(lora, "_loss", fails_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        edit(editor, model, tok, [CASE], hp)
    assert weights_hash(model) == digest and dict(model.named_modules()) == modules
    assert not any(p.requires_grad for p in model.parameters())


# EasyEdit's hparams/LoRA/llama3-8b.yaml as published
EASYEDIT_LORA = {"alg_name": "LoRA", "model_name": "./hugging_cache/llama-3-8b-instruct", "device": 0,
                 "lora_type": "adalora", "layers": [], "num_steps": 70, "batch_size": 1, "max_length": 50,
                 "lr": 5e-3, "weight_decay": 0, "kl_factor": 0, "rank": 8, "lora_alpha": 32, "lora_dropout": 0.1,
                 "norm_constraint": False, "target_modules": ["q_proj", "v_proj"], "model_parallel": False}


def test_a_stock_easyedit_lora_file_loads_as_published():
    model, _ = tiny_model("llama")
    _, hp = lora_hparams(model, **EASYEDIT_LORA)
    assert (hp.lora_type, hp.layers, hp.target_modules, hp.num_steps, hp.lr, hp.rank, hp.lora_alpha) == (
        "adalora", [], ["q_proj", "v_proj"], 70, 5e-3, 8, 32.0)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("target_modules", ["c_proj"], "test: target_modules: 'c_proj' names no module of the model (llama, 4 layers)"),
    ("target_modules", [], "test: target_modules: name at least one module to adapt"),
    ("rank", 0, "test: rank: expected a number >= 1, got 0"),
    ("lora_dropout", 1.0, "test: lora_dropout: expected a number < 1.0, got 1.0"),
    ("lora_type", "qlora", "test: lora_type: 'qlora' is not one of ['lora', 'adalora']"),
    ("layers", [4], "test: layers: layer 4 is not in the model (llama, 4 layers): use 0 to 3"),
])
def test_bad_lora_hyperparameters_are_refused_naming_the_key(key, value, message):
    model, _ = tiny_model("llama")
    with pytest.raises(WildInputError) as raised:
        lora_hparams(model, **{key: value})
    assert str(raised.value) == message


def test_published_defaults_per_architecture():
    from transformers import AutoConfig

    editor = get_editor("lora")
    expected = {"gpt2": ("adalora", ["c_attn"], 30), "gptj": ("adalora", ["fc_in", "fc_out"], 50),
                "llama": ("adalora", ["q_proj", "v_proj"], 70), "qwen2": ("lora", ["q_proj", "v_proj"], 60)}
    for model_type, (lora_type, modules, steps) in expected.items():
        values = editor.defaults(AutoConfig.for_model(model_type), "default")
        assert (values["lora_type"], values["target_modules"], values["num_steps"]) == (lora_type, modules, steps)
        assert (values["rank"], values["lora_alpha"], values["lora_dropout"], values["lr"]) == (8, 32.0, 0.1, 5e-3)
