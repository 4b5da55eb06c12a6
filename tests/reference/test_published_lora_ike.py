"""LoRA and IKE against their plain published forms (bench/published.py: EasyEdit's LoRA loop by
hand without peft, EasyEdit's IKE prompt and `icl_lm_eval`) on the bundled model."""

import pytest
import torch

from bench import published
from pytest_wild.cases.loaders import load_file
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorCache, edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.generation.engine import Engine
from pytest_wild.model.load import TINYWORLD_DIR, load_model


@pytest.fixture(scope="module")
def world():
    loaded = load_model(None, "cpu")
    return loaded.model, loaded.tokenizer, load_file(TINYWORLD_DIR / "suite.jsonl")[:2]


def hparams(name, model, **overrides):
    editor = get_editor(name)
    return editor, build_hparams(editor.hparams_type, editor.defaults(model.config, "tinyworld"), [("test", overrides)])


@pytest.mark.parametrize("lora_type", ["adalora", "lora"])
def test_the_merged_adapter_is_the_published_loops_update(world, lora_type):
    model, tok, cases = world
    editor, hp = hparams("lora", model, lora_type=lora_type, num_steps=8)
    for case in cases:
        torch.manual_seed(0)
        handle = edit(editor, model, tok, [case], hp)
        modules = [name.removesuffix(".weight") for name in handle.names if name.endswith(".weight")]
        ours = {m: published.weight_update(model, m, handle.original(f"{m}.weight")) for m in modules}
        handle.restore()
        torch.manual_seed(0)
        theirs = published.lora_edit(model, tok, [{"prompt": case.prompt, "target_new": case.target}], hp, modules)
        assert len(modules) == model.config.n_layer  # every layer's c_attn, as EasyEdit's GPT-2 file
        for m in modules:
            assert ours[m].norm() > 0
            assert ((ours[m] - theirs[m].double()).norm() / theirs[m].double().norm()).item() < 1e-4


def test_the_asked_text_and_teacher_forced_reading_are_easyedits(world):
    model, tok, cases = world
    editor, hp = hparams("ike", model)
    engine, cache = Engine(model, tok, "published"), EditorCache(model)
    for case in cases:
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        prefix, chosen = handle.prompt_prefix, handle.info[0]["demonstrations"]
        for question in (case.prompt, case.rephrase):
            assert prefix + question == published.ike_prompt(chosen, case.prompt, case.target, question)
            ours = engine.teacher_forced_accuracy([prefix + question], [case.target])[0]
            assert ours == published.icl_accuracy(model, tok, prefix + question, case.target)
        handle.restore()
