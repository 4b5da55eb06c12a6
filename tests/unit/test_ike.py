"""IKE: no weight changes; the handle carries the in-context prompt (demonstrations, then the
new fact), and every mode asks the edited model after it while the unedited answers stay on the
bare question; demonstrations come from edits the suite does not evaluate."""

import pytest

from pytest_wild.cases.case import Case, Locality, WildInputError
from pytest_wild.cases.suite import load_suite
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.editors.incontext import demonstrations as demos
from pytest_wild.model.load import TINYWORLD_DIR, load_model
from pytest_wild.scores.evaluation import Evaluator, Settings

from ..tiny_models import weights_hash

QUESTION = "Q: Where was Kalo Venbri born? A:"
CASE = Case(id="x", prompt=QUESTION, target="Dorwyn", subject="Kalo Venbri",
            rephrase="Q: In which town was Kalo Venbri born? A:",
            locality=(Locality("Q: What does Tarn Bolvi do for a living? A:", "baker"),))
TRAINING = [
    Case("t1", "Q: Where was Asta Morrow born? A:", "Quenby", "Asta Morrow", "Q: What is the birthplace of Asta Morrow? A:",
         (Locality("Q: What job does Pell Arn have? A:", "potter"),)),
    Case("t2", "Q: What instrument can Ivo Strand play? A:", "lyre", "Ivo Strand", None, ()),
]


@pytest.fixture(scope="module")
def loaded():
    return load_model(None, "cpu")


def ike_hparams(loaded, **overrides):
    editor = get_editor("ike")
    return editor, build_hparams(editor.hparams_type, editor.defaults(loaded.model.config, "tinyworld"),
                                 [("test", overrides)], ignored=editor.ignored)


def test_the_pool_holds_the_published_copy_update_and_retain_demonstrations():
    head = "New Fact: Q: Where was Asta Morrow born? A: Quenby\nPrompt: "
    assert demos.pool_texts(TRAINING) == [
        f"{head}Q: Where was Asta Morrow born? A: Quenby\n\n",
        f"{head}Q: What is the birthplace of Asta Morrow? A: Quenby\n\n",
        f"{head}Q: What job does Pell Arn have? A: potter\n\n",
        "New Fact: Q: What instrument can Ivo Strand play? A: lyre\nPrompt: Q: What instrument can Ivo Strand play? A: lyre\n\n",
    ]
    assert demos.query(CASE) == f"New Fact: {QUESTION} Dorwyn\nPrompt: {QUESTION}\n\n"


def test_retrieval_ranks_the_nearest_demonstrations_first():
    retriever = demos.Retriever.over(demos.pool_texts(TRAINING))
    nearest = retriever.nearest(demos.query(CASE), 4)
    assert nearest[0].endswith("Prompt: Q: Where was Asta Morrow born? A: Quenby\n\n")  # the same question's words
    assert nearest[-1].startswith("New Fact: Q: What instrument")  # shares nothing but the format
    assert sorted(nearest) == sorted(retriever.texts) and retriever.nearest(demos.query(CASE), 4) == nearest
    assert retriever.nearest(demos.query(CASE), 0) == []


def test_an_edit_changes_no_weight_and_puts_the_in_context_prompt_on_its_handle(loaded):
    editor, hp = ike_hparams(loaded, k=2)
    digest = weights_hash(loaded.model)
    handle = edit(editor, loaded.model, loaded.tokenizer, [CASE], hp)
    assert weights_hash(loaded.model) == digest and handle.names == []
    chosen = handle.info[0]["demonstrations"]
    assert len(chosen) == 2 and all(text.startswith("New Fact: ") and text.endswith("\n\n") for text in chosen)
    assert handle.prompt_prefix == "".join(chosen) + f"New Fact: {QUESTION} Dorwyn\nPrompt: "
    handle.restore()
    assert handle.prompt_prefix == ""


def test_every_mode_asks_the_edited_model_after_the_prefix_and_the_unedited_one_without(loaded, monkeypatch):
    """WILD, length and teacher-forced readings all see the same in-context prompt, as EasyEdit
    evaluates IKE; the unedited answers (and so locality's reference) are on the bare question."""
    evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic", "length")))
    asked: list[str] = []
    for name in ("generate", "generate_fixed", "teacher_forced", "teacher_forced_accuracy"):
        real = getattr(evaluator.engine, name)
        monkeypatch.setattr(evaluator.engine, name, lambda texts, *rest, real=real: asked.extend(texts) or real(texts, *rest))
    evaluator.prepare([CASE])
    bare = set(asked)
    assert bare and all(not text.startswith("New Fact") for text in bare)
    asked.clear()
    editor, hp = ike_hparams(loaded)
    row = evaluator.evaluate([CASE], lambda cases: edit(editor, loaded.model, loaded.tokenizer, cases, hp))[0]
    prefix = row.in_context
    assert prefix.endswith(f"New Fact: {QUESTION} Dorwyn\nPrompt: ")
    questions = {CASE.prompt, CASE.rephrase, CASE.locality[0].question}
    assert asked and all(text.startswith(prefix) for text in asked)
    assert {text[len(prefix):] for text in asked} == questions
    assert set(row.modes) == {"wild", "synthetic", "length"}
    assert row.modes["wild"]["answers"]["locality"][0]["before"] is not None


def test_a_case_that_does_not_fit_the_window_after_the_prefix_is_not_evaluable(loaded):
    evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild",)))
    editor, hp = ike_hparams(loaded, k=6)
    row = evaluator.evaluate([CASE], lambda cases: edit(editor, loaded.model, loaded.tokenizer, cases, hp))[0]
    assert row.not_evaluable.startswith("prompt of ") and row.not_evaluable.endswith(
        ", model window 128 (with the editor's in-context prompt)") and row.modes == {}


def test_demonstrations_sharing_a_case_with_the_suite_are_refused(tmp_path, loaded):
    editor, hp = ike_hparams(loaded)
    suite = load_suite(TINYWORLD_DIR / "suite.jsonl").cases
    editor.check_cases(hp, suite)  # the bundled MEND edits: disjoint from the bundled suite
    shared = tmp_path / "demos.jsonl"
    shared.write_text((TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()[3] + "\n")
    _, hp = ike_hparams(loaded, demonstrations=str(shared))
    with pytest.raises(WildInputError, match=f"^demonstrations: {shared}: case tw-0003 shares the id with a case of "
                                             "the evaluated suite"):
        editor.check_cases(hp, suite)
    _, hp = ike_hparams(loaded, k=0, demonstrations="")
    editor.check_cases(hp, suite)  # the new fact alone needs no demonstrations
    _, hp = ike_hparams(loaded, demonstrations="")
    with pytest.raises(WildInputError, match="^ike: no demonstrations: set `demonstrations: FILE`"):
        editor.check_cases(hp, suite)


def test_published_k_for_every_architecture_and_one_for_tinyworld(loaded):
    from transformers import AutoConfig

    editor = get_editor("ike")
    for model_type in ("gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2"):
        assert editor.defaults(AutoConfig.for_model(model_type), "default") == {"k": 16}
    assert editor.defaults(loaded.model.config, "tinyworld")["k"] == 1
