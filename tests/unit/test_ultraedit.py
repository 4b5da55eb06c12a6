"""UltraEdit: its edit on every architecture, its lifelong statistics as sequence state, its
published defaults per model."""

import math

import pytest
import torch
from transformers import AutoConfig

from pytest_wild.cases.case import Case, Locality
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorState, edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.editors.meta.ultraedit import LifelongNormalizer, module_names
from pytest_wild.model.load import model_shape

from ..tiny_models import SIZES, target_logprob, tiny_model, weights_hash

CASE = Case(id="x", prompt="Q: Where was Kalo Venbri born? A:", target="Dorwyn", subject="Kalo Venbri",
            rephrase=None, locality=(Locality("Q: What?", "no"),))
OTHER = Case(id="y", prompt="Q: Who wrote Tessa Ombrel? A:", target="Hal Virre", subject="Tessa Ombrel",
             rephrase=None, locality=())


def setup(model, **overrides):
    editor = get_editor("ultraedit")
    defaults = editor.defaults(model.config, "default")
    return editor, build_hparams(editor.hparams_type, defaults, [("test", overrides)], model_shape(model.config))


@pytest.mark.parametrize("model_type", sorted(SIZES))
def test_edit_raises_the_target_changes_only_its_modules_and_restores_every_bit(model_type):
    model, tok = tiny_model(model_type)
    editor, hp = setup(model, lr=0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digest, logprob = weights_hash(model), target_logprob(model, tok, CASE)
    state = EditorState()
    handle = edit(editor, model, tok, [CASE], hp, state=state)
    assert target_logprob(model, tok, CASE) > logprob + 0.05
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{name}.weight" for name in module_names(hp)}
    assert state.parts()["ultraedit"].moments
    handle.restore()
    assert weights_hash(model) == digest
    assert state.parts()["ultraedit"].moments == {}


def test_a_sequence_carries_its_statistics_and_a_restore_takes_each_edit_back_out():
    model, tok = tiny_model("llama")
    editor, hp = setup(model, lr=0.05)
    state = EditorState()
    first = edit(editor, model, tok, [CASE], hp, state=state)
    normalizer = state.parts()["ultraedit"]
    after_one = {shape: m.n.item() for shape, m in normalizer.moments.items()}
    second = edit(editor, model, tok, [OTHER], hp, state=state)
    after_two = {shape: m.n.item() for shape, m in normalizer.moments.items()}
    assert all(after_two[shape] > count for shape, count in after_one.items())
    saved = state.state_dict()
    assert saved and all(key.startswith("ultraedit/") for key in saved)
    second.restore()
    assert {shape: m.n.item() for shape, m in normalizer.moments.items()} == after_one
    reloaded = LifelongNormalizer()
    reloaded.load_state_dict({key.partition("/")[2]: value for key, value in saved.items()})
    assert {shape: m.n.item() for shape, m in reloaded.moments.items()} == after_two
    first.restore()


def test_the_statistics_are_the_published_running_update_and_one_row_adds_no_nan():
    rows = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    normalizer = LifelongNormalizer()
    normalizer.update((3, 2), rows[:4])
    normalizer.update((3, 2), rows[4:])
    m = normalizer.moments[(3, 2)]
    # the published update, written out: each batch adds m × its unbiased variance
    mean = rows.mean(0)
    first, second = rows[:4], rows[4:]
    var = 4 * first.var(0) + 3 * second.var(0) + 4 * 3 * (second.mean(0) - first.mean(0)).pow(2) / 7
    assert m.n.item() == 7
    torch.testing.assert_close(m.mean, mean)
    torch.testing.assert_close(m.var, var)
    torch.testing.assert_close(m.std, (var / (6 + torch.finfo(torch.float32).eps)).sqrt())
    normalizer.update((3, 2), rows[:1])
    assert all(math.isfinite(v) for v in normalizer.moments[(3, 2)].std.tolist())


def test_reading_the_answer_tokens_reads_fewer_rows_than_every_token():
    model, tok = tiny_model("gpt2")
    read = {}
    for token in ("mask", "ans"):
        editor, hp = setup(model, token=token, lr=0.05)
        handle = edit(editor, model, tok, [CASE], hp)
        read[token] = handle.info[0]["tokens"]
        handle.restore()
    prompt, target = len(tok(CASE.prompt)["input_ids"]), len(tok(" " + CASE.target)["input_ids"])
    assert set(read["ans"].values()) == {target}
    assert set(read["mask"].values()) == {prompt + target}


def config(model_type, layers, **extra):
    return AutoConfig.for_model(model_type, num_hidden_layers=layers, **extra)


def test_the_published_modules_for_the_published_models_and_scaled_for_others():
    ultraedit = get_editor("ultraedit")

    def modules(cfg):
        return ultraedit.defaults(cfg, "default")["inner_params"]

    assert modules(config("gptj", 28)) == [f"transformer.h.{i}.mlp.fc_out" for i in range(18, 27)]
    assert modules(config("llama", 32)) == ([f"model.layers.{i}.mlp.gate_proj" for i in range(11, 16)]
                                            + [f"model.layers.{i}.mlp.up_proj" for i in range(18, 25)])
    assert modules(config("mistral", 32)) == ["model.layers.29.mlp.down_proj", "model.layers.30.mlp.down_proj"]
    assert modules(config("qwen2", 28)) == ([f"model.layers.{i}.mlp.gate_proj" for i in range(18, 27)]
                                            + [f"model.layers.{i}.mlp.up_proj" for i in range(18, 27)])
    # no published GPT-2 or NeoX file: GPT-J's fc_out at the same relative depth
    assert modules(config("gpt2", 12)) == [f"transformer.h.{i}.mlp.c_proj" for i in range(8, 12)]
    assert modules(config("gpt_neox", 28)) == [f"gpt_neox.layers.{i}.mlp.dense_4h_to_h" for i in range(18, 27)]
    assert ultraedit.defaults(config("llama", 32), "default").get("lr", 1e-6) == 1e-6


def test_every_default_fits_its_tiny_model():
    for model_type in sorted(SIZES):
        model, _ = tiny_model(model_type)
        _, hp = setup(model)
        assert hp.inner_params and hp.token == "mask" and hp.batch_size_once == 10


def test_statistics_not_carried_make_each_update_as_if_it_were_the_first():
    """`carry_statistics: false` (EasyEdit's executor, which builds a new editor per call): the
    second edit of a sequence is the edit it would be with fresh statistics on the same weights."""
    model, tok = tiny_model("gpt2")
    editor, hp = setup(model, lr=0.05, carry_statistics=False)
    state = EditorState()
    first = edit(editor, model, tok, [CASE], hp, state=state)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    second = edit(editor, model, tok, [OTHER], hp, state=state)
    in_sequence = {k: v - before[k] for k, v in model.state_dict().items()}
    second.restore()
    alone = edit(editor, model, tok, [OTHER], hp)
    assert all(torch.equal(v - before[k], in_sequence[k]) for k, v in model.state_dict().items())
    assert state.parts() == {}
    alone.restore()
    first.restore()
