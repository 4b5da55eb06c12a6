"""Memory-based editors: GRACE's codebook rules, its two decoding semantics (a KV-cached engine
must give exactly the answers of uncached decoding under each), WISE's shards, merges and
routing, and memories that leave the model exactly as it was when they are empty or restored."""

import json

import pytest
import torch

from pytest_wild.cases.case import Case, Locality
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorState, edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.editors.memory.codebook import Codebook
from pytest_wild.editors.memory.grace import GraceHparams, update_codebook
from pytest_wild.editors.memory.side_memory import ties_merge
from pytest_wild.editors.memory.wise import WiseHparams
from pytest_wild.generation.engine import Engine
from pytest_wild.model.load import TINYWORLD_DIR, load_model
from pytest_wild.model.reading import readers, reading

from ..tiny_models import SIZES, target_logprob, tiny_model, weights_hash


@pytest.fixture(scope="module")
def tinyworld():
    loaded = load_model(None, "cpu")
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def suite_cases() -> list[Case]:
    rows = [json.loads(line) for line in (TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()]
    return [Case(id=r["id"], prompt=r["prompt"], target=r["target"], subject=r["subject"], rephrase=r["rephrase"],
                 locality=tuple(Locality(x["loc"], x["loc_ans"]) for x in r["locality"])) for r in rows]


def grace_hparams(model, **overrides) -> GraceHparams:
    editor = get_editor("grace")
    return build_hparams(editor.hparams_type, editor.defaults(model.config, "tinyworld"), [("test", overrides)])


def uncached(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """The paper's loop: the whole sequence again at every step, no KV cache, greedy."""
    ids = tokenizer(prompt)["input_ids"]
    start = len(ids)
    with torch.no_grad(), reading(model, torch.tensor([start - 1])):
        for _ in range(steps):
            ids.append(int(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    return ids[start:]


def edited_sequence(model, tokenizer, cases, hp):
    """Edit `cases` one after another into one codebook; the handles, newest last."""
    state = EditorState()
    handles = []
    for case in cases:
        torch.manual_seed(0)
        handles.append(edit(get_editor("grace"), model, tokenizer, [case], hp, state=state))
    return handles


def restore(handles) -> None:
    for handle in reversed(handles):
        handle.restore()


@pytest.mark.parametrize("replacement", ["replace_last", "replace_prompt", "replace_all"])
@pytest.mark.parametrize("semantics", ["published", "per-token"])
def test_the_kv_cached_engine_gives_the_answers_of_uncached_decoding(tinyworld, suite_cases, semantics, replacement):
    model, tokenizer = tinyworld
    # one key with a wide radius (a second key would split it): generated tokens, 15 to 20
    # away from it, fall in it, and the two semantics part ways
    hp = grace_hparams(model, semantics=semantics, replacement=replacement, eps=30.0, n_iter=5)
    handles = edited_sequence(model, tokenizer, suite_cases[:1], hp)
    try:
        prompts = [q for case in suite_cases[:3] for q in (case.prompt, case.rephrase)] + [suite_cases[3].prompt]
        lengths = [6, 3, 8, 1, 5, 7, 4]  # rows leave the cached batch at different steps
        cached = Engine(model, tokenizer).generate_fixed(prompts, lengths)
        assert [list(g.token_ids) for g in cached] == [uncached(model, tokenizer, p, n) for p, n in zip(prompts, lengths)]
    finally:
        restore(handles)


def test_the_semantics_differ_where_generated_tokens_fall_in_a_radius(tinyworld, suite_cases):
    """Not a vacuous choice: with a radius that takes in generated tokens, the same codebook
    answers differently under the two semantics."""
    model, tokenizer = tinyworld
    answers = {}
    for semantics in ("published", "per-token"):
        hp = grace_hparams(model, semantics=semantics, eps=30.0, n_iter=5)
        handles = edited_sequence(model, tokenizer, suite_cases[:1], hp)
        answers[semantics] = [g.token_ids for g in Engine(model, tokenizer).generate_fixed(
            [c.prompt for c in suite_cases[:8]], [8] * 8)]
        restore(handles)
    assert answers["published"] != answers["per-token"]


def test_an_edit_changes_the_answer_and_its_restore_leaves_the_unedited_model(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    engine = Engine(model, tokenizer)
    questions = [q for case in suite_cases[:12] for q in (case.prompt, case.rephrase, case.locality[0].question)]
    before = [g.token_ids for g in engine.generate(questions)]
    digest = weights_hash(model)
    handles = edited_sequence(model, tokenizer, suite_cases[:3], grace_hparams(model))
    edited = engine.generate([case.prompt for case in suite_cases[:3]])
    assert [g.text.strip() for g in edited] == [case.target for case in suite_cases[:3]]
    assert weights_hash(model) == digest  # GRACE never writes a weight
    restore(handles)
    assert [g.token_ids for g in engine.generate(questions)] == before
    assert readers(model) == [] and not model.get_submodule("transformer.h.3.mlp.c_fc")._forward_hooks


def test_an_attached_empty_codebook_is_the_unedited_model(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    engine = Engine(model, tokenizer)
    questions = [case.prompt for case in suite_cases[:20]]
    before = [g.token_ids for g in engine.generate(questions)]
    book = Codebook()
    book.attach(model, model.get_submodule("transformer.h.3.mlp.c_fc"), "per-token", "replace_all")
    try:
        assert [g.token_ids for g in engine.generate(questions)] == before
    finally:
        book.close()
    assert readers(model) == []


def test_a_saved_codebook_resumed_on_a_fresh_state_answers_as_the_original(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    engine = Engine(model, tokenizer)
    hp = grace_hparams(model)
    state = EditorState()
    for case in suite_cases[:3]:
        torch.manual_seed(0)
        edit(get_editor("grace"), model, tokenizer, [case], hp, state=state)
    questions = [case.prompt for case in suite_cases[:6]]
    edited = [g.token_ids for g in engine.generate(questions)]
    saved = {k: v.clone() for k, v in state.state_dict().items()}
    assert saved["grace/keys"].shape[0] == 3
    state.clear()  # the sequence ends: its codebook leaves the model
    assert readers(model) == []
    resumed = EditorState()
    resumed.load_state_dict(saved)
    get_editor("grace").resume(model, hp, resumed)
    try:
        assert [g.token_ids for g in engine.generate(questions)] == edited
    finally:
        resumed.clear()


def rules_hparams(**overrides) -> GraceHparams:
    return GraceHparams(layers=[0], rewrite_module_tmp="m", **overrides)


def test_codebook_rules_insert_split_expand_and_cover():
    book, hp = Codebook(), rules_hparams(eps=1.0)
    value = torch.zeros(3)

    def add(x, label):
        return update_codebook(book, torch.tensor([x, 0.0]), value, torch.tensor(float(label)), hp)

    assert add(0.0, 1) == ("insert", 0)
    assert add(1.5, 1) == ("expand", 0)  # same label, within ε₀ + ε: the radius grows to cover it
    assert book.radii[0].item() == pytest.approx(1.5)
    assert add(1.0, 1) == ("covered", 0)
    assert add(5.0, 2) == ("insert", 1)  # farther than ε₀ + ε
    assert add(6.0, 3) == ("split", 2)  # another label nearby: both radii cut to half the distance
    assert book.radii[1].item() == pytest.approx(0.5 - 1e-5) and book.radii[2].item() == pytest.approx(0.5)
    # labels kept newest first, as EasyEdit's add_key keeps them: key 0's label is read as 3's,
    # so an edit of label 1 near key 0 now splits it instead of expanding it
    assert len(book) == 3 and book.labels.tolist() == [3.0, 2.0, 1.0]
    assert add(-1.8, 1) == ("split", 3)


def test_moving_average_moves_the_key_halfway():
    book, hp = Codebook(), rules_hparams(eps=1.0, eps_expand="moving_average")
    for x in (0.0, 1.5):
        update_codebook(book, torch.tensor([x, 0.0]), torch.zeros(3), torch.tensor(1.0), hp)
    assert book.keys[0].tolist() == [0.75, 0.0] and book.radii[0].item() == pytest.approx(1.5)


@pytest.mark.parametrize("model_type", sorted(SIZES))
@pytest.mark.parametrize("name", ["grace", "wise"])
def test_memory_editors_edit_every_architecture_without_writing_a_weight(name, model_type):
    model, tokenizer = tiny_model(model_type)
    case = Case(id="x", prompt="Q: Where was Kalo Venbri born? A:", target="Dorwyn", subject="Kalo Venbri",
                rephrase=None, locality=())
    editor = get_editor(name)
    # A random 32-wide model cannot reach WISE's published margins (the loss stays near 33 of
    # 37), so whether its prompt passes the 0.88 threshold is a coin flip of the weights
    # (GPT-NeoX: 0.286 against 0.292), and the published 20% mask leaves a few dozen of its
    # neurons to train (Llama's target rises by 0.24). The plumbing is what this asks: WISE
    # routes from half its distance and trains every neuron; the rise asked stays GRACE's 0.25
    # (WISE's measured on the six: 0.32 to 0.73).
    overrides = {"act_ratio": 0.5, "mask_ratio": 1.0} if name == "wise" else {}
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, "default"), [("test", overrides)])
    digest, logprob = weights_hash(model), target_logprob(model, tokenizer, case)
    torch.manual_seed(0)
    handle = edit(editor, model, tokenizer, [case], hp)
    assert target_logprob(model, tokenizer, case) > logprob + 0.25
    assert weights_hash(model) == digest
    handle.restore()
    assert target_logprob(model, tokenizer, case) == logprob and readers(model) == []


def test_published_grace_layers_and_modules_for_7b_shapes():
    from transformers import AutoConfig

    editor = get_editor("grace")
    llama = editor.defaults(AutoConfig.for_model("llama", num_hidden_layers=32), "default")
    gpt2 = editor.defaults(AutoConfig.for_model("gpt2", n_layer=48), "default")
    qwen = editor.defaults(AutoConfig.for_model("qwen2", num_hidden_layers=28), "default")
    gptj = editor.defaults(AutoConfig.for_model("gptj", n_layer=28), "default")
    assert (llama["layers"], llama["rewrite_module_tmp"], llama["n_iter"]) == ([27], "model.layers.{}.mlp.down_proj", 50)
    assert (gpt2["layers"], gpt2["rewrite_module_tmp"], gpt2["n_iter"]) == ([35], "transformer.h.{}.mlp.c_fc", 200)
    assert qwen["layers"] == [18] and (gptj["layers"], gptj["n_iter"]) == ([25], 200)


# --- WISE ---------------------------------------------------------------------------------------

def wise_hparams(model, **overrides) -> WiseHparams:
    editor = get_editor("wise")
    return build_hparams(editor.hparams_type, editor.defaults(model.config, "tinyworld"), [("test", overrides)])


def test_ties_merge_trims_elects_signs_and_averages_the_agreeing_entries():
    base = torch.zeros(4)
    a, b = torch.tensor([3.0, -1.0, 2.0, 0.1]), torch.tensor([1.0, 2.0, -4.0, 0.2])
    merged = ties_merge([a, b], base, density=0.5, mix=[0.5, 0.5])
    # a keeps 3 and 2, b keeps 2 and -4; entry 2's elected sign is -: only b's -4 counts
    assert merged.tolist() == pytest.approx([1.5, 1.0, -2.0, 0.0])


def test_wise_edits_restores_and_edits_again_on_the_same_state(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    engine = Engine(model, tokenizer)
    questions = [q for case in suite_cases[:6] for q in (case.prompt, case.locality[0].question)]
    before = [g.token_ids for g in engine.generate(questions)]
    digest, state, hp = weights_hash(model), EditorState(), wise_hparams(model, n_iter=20)
    for case in suite_cases[:2]:  # the second edit on a restored state must route as the first did
        torch.manual_seed(0)
        handle = edit(get_editor("wise"), model, tokenizer, [case], hp, state=state)
        assert engine.generate([case.prompt])[0].text.strip() == case.target
        assert weights_hash(model) == digest  # WISE trains its copy, never the model's weight
        handle.restore()
        assert [g.token_ids for g in engine.generate(questions)] == before
        assert readers(model) == []


def test_wise_shards_every_save_freq_and_merges_every_merge_freq(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    state = EditorState()
    hp = wise_hparams(model, n_iter=2, save_freq=2, merge_freq=4)
    actions = []
    for case in suite_cases[:4]:
        torch.manual_seed(0)
        handle = edit(get_editor("wise"), model, tokenizer, [case], hp, state=state)
        actions.append((handle.info[0]["action"], handle.info[0]["shards"]))
    assert actions == [("edited", 0), ("saved a shard", 1), ("edited", 1), ("merged shards", 1)]
    memory = state.parts()["wise"]
    assert torch.equal(memory.side, model.get_submodule("transformer.h.3.mlp.c_fc").weight)  # started again
    saved = {k: v.clone() for k, v in state.state_dict().items()}
    assert {f"wise/{key}" for key in ("side", "mask", "count", "shard.0", "shard_min.0")} <= set(saved)
    assert int(saved["wise/count"]) == 4
    state.clear()
    assert readers(model) == []


def test_wise_merge_without_retrieval_keeps_one_merged_weight(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    state = EditorState()
    hp = wise_hparams(model, n_iter=2, save_freq=1, merge_freq=2, retrieve=False)
    for case in suite_cases[:4]:
        torch.manual_seed(0)
        edit(get_editor("wise"), model, tokenizer, [case], hp, state=state)
    memory = state.parts()["wise"]
    assert memory.merged is not None and memory.shards == () and len(memory.candidates()) == 2
    state.clear()


def test_wise_prompt_semantics_gives_the_answers_of_uncached_decoding(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    state = EditorState()
    torch.manual_seed(0)
    handle = edit(get_editor("wise"), model, tokenizer, [suite_cases[0]], wise_hparams(model, n_iter=20, semantics="prompt"),
                  state=state)
    try:
        prompts = [suite_cases[0].prompt, suite_cases[0].rephrase, suite_cases[1].prompt, suite_cases[2].prompt]
        lengths = [6, 3, 8, 4]
        cached = Engine(model, tokenizer).generate_fixed(prompts, lengths)
        assert [list(g.token_ids) for g in cached] == [uncached(model, tokenizer, p, n) for p, n in zip(prompts, lengths)]
    finally:
        handle.restore()


def test_a_saved_side_memory_resumed_on_a_fresh_state_answers_as_the_original(tinyworld, suite_cases):
    model, tokenizer = tinyworld
    engine = Engine(model, tokenizer)
    hp, state = wise_hparams(model, n_iter=20), EditorState()
    torch.manual_seed(0)
    edit(get_editor("wise"), model, tokenizer, [suite_cases[0]], hp, state=state)
    questions = [case.prompt for case in suite_cases[:4]]
    edited = [g.token_ids for g in engine.generate(questions)]
    saved = {k: v.clone() for k, v in state.state_dict().items()}
    state.clear()
    resumed = EditorState()
    resumed.load_state_dict(saved)
    get_editor("wise").resume(model, hp, resumed)
    try:
        assert [g.token_ids for g in engine.generate(questions)] == edited
    finally:
        resumed.clear()


def test_published_wise_defaults_for_7b_shapes():
    from transformers import AutoConfig

    editor = get_editor("wise")
    llama2 = editor.defaults(AutoConfig.for_model("llama", num_hidden_layers=32, vocab_size=32000), "default")
    llama3 = editor.defaults(AutoConfig.for_model("llama", num_hidden_layers=32, vocab_size=128256), "default")
    gptj = editor.defaults(AutoConfig.for_model("gptj", n_layer=28), "default")
    gpt2 = editor.defaults(AutoConfig.for_model("gpt2", n_layer=12), "default")
    assert (llama2["layers"], llama2["rewrite_module_tmp"]) == ([27], "model.layers.{}.mlp.down_proj")
    assert llama3["layers"] == [29] and llama3["act_ratio"] == 0.5 and llama3["n_iter"] == 30
    assert gptj["layers"] == [21] and gptj["act_margin"] == [15.0, 40.0, 20.0]
    assert (gpt2["layers"], gpt2["rewrite_module_tmp"], gpt2["n_iter"], gpt2["act_ratio"]) == (
        [8], "transformer.h.{}.mlp.c_fc", 40, 0.8)

