"""Where the paper's code computes something, the result carries the published name and equals
the paper's computation; our variants are reported beside it under their own names."""

import json

import pytest

from pytest_wild.cases import Case, Locality
from pytest_wild.contexts import PUBLISHED_CHAT, make_context
from pytest_wild.evaluation import Evaluator, Settings
from pytest_wild.generation import Engine
from pytest_wild.model import load_model
from pytest_wild.reference import reference_teacher_forced
from pytest_wild.scores import target_flags
from pytest_wild.suite import load_suite
from pytest_wild.editors.api import edit

LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}[INST] <<SYS>>\n{{ m['content'] }}\n"
    "<</SYS>>\n\n{% elif m['role'] == 'user' %}{{ m['content'] }} [/INST]{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def loaded():
    return load_model(None, "cpu")


@pytest.fixture(scope="module")
def qaedit_records(shared_data):
    """QAEdit records the bundled model never saw, the 8 leading-space targets among them."""
    records = json.loads((shared_data / "qaedit-800.json").read_text())
    spaced = [r for r in records if r["target"].startswith(" ")]
    return records[:40] + spaced


def test_teacher_forced_reading_equals_the_papers_code_on_qaedit_records(loaded, qaedit_records):
    engine = Engine(loaded.model, loaded.tokenizer, batch_size=16)
    prompts = [r["prompt"] for r in qaedit_records]
    targets = [r["target"] for r in qaedit_records]
    found = engine.teacher_forced(prompts, targets)
    published = [reference_teacher_forced(loaded.model, loaded.tokenizer, p, t) for p, t in zip(prompts, targets)]
    assert found == published
    # a leading space is kept, as published: the label ids differ from the stripped target's
    spaced = next(i for i, t in enumerate(targets) if t.startswith(" "))
    stripped = engine.teacher_forced([prompts[spaced]], [targets[spaced].lstrip()])[0][0]
    assert found[spaced][0] != stripped


def test_teacher_forced_reading_ignores_the_context_as_the_papers_code_does(loaded):
    case = load_suite(_bundled(), limit=3).cases[0]
    scores = {}
    for context in ("question", "qa_inst"):
        evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic"), context))
        row = evaluator.evaluate([case], lambda cases: _NoEdit())[0]
        scores[context] = row["teacher_forced"]
    assert scores["question"] == scores["qa_inst"]


def test_double_space_targets_are_flagged():
    assert any(f.startswith("double-space") for f in target_flags(" October 2011", "published"))
    assert not any(f.startswith("double-space") for f in target_flags("October 2011", "published"))


def test_locality_is_the_first_question_and_locality_all_every_question(loaded):
    from pytest_wild.editors import get_editor
    from pytest_wild.hparams import build_hparams

    case = load_suite(_bundled(), limit=4).cases[0]
    # the second locality question is the edit question itself, whose answer a successful edit changes
    edited = Case(id=case.id, prompt=case.prompt, target=case.target, subject=case.subject, rephrase=case.rephrase,
                  locality=(case.locality[0], Locality(case.prompt, "old answer")))
    editor = get_editor("ft-m")
    hparams = build_hparams(editor.hparams_type, editor.defaults(loaded.model.config, "tinyworld"), [])
    evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic", "length")))
    row = evaluator.evaluate([edited], lambda cases: edit(editor, loaded.model, loaded.tokenizer, cases, hparams))[0]
    wild = row["modes"]["wild"]
    assert wild["reliability"] == 1.0
    assert wild["locality"] == 1.0 and wild["locality_all"] == 0.5
    for mode in ("synthetic", "length"):
        assert row["modes"][mode]["locality"] > row["modes"][mode]["locality_all"]


def test_chat_temp_is_the_papers_string_and_chat_the_models_template_with_the_bare_question(loaded):
    tok = loaded.tokenizer
    question = "Q: Where was Kalo Venbri born? A:"
    assert make_context(question, "chat_temp", tok) == (
        "<s>[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n"
        "Q: Where was Kalo Venbri born? A: [/INST]</s>")
    assert PUBLISHED_CHAT.format(question) == make_context(question, "chat_temp", tok)
    saved = tok.chat_template
    tok.chat_template = LLAMA2_TEMPLATE
    try:
        text = make_context(question, "chat", tok)
    finally:
        tok.chat_template = saved
    assert text.endswith(question + " [/INST]")  # the bare question, no trailing </s>
    assert "You are a helpful, respectful and honest assistant." in text
    assert "Please answer" not in text


def test_first_k_sampling_takes_the_first_records_and_seeded_a_sample():
    every = load_suite(_bundled()).cases
    first = load_suite(_bundled(), limit=10, sampling="first")
    seeded = load_suite(_bundled(), limit=10)
    assert [c.id for c in first.cases] == [c.id for c in every[:10]]
    assert first.sampling == "first" and seeded.sampling == "seeded"
    assert [c.id for c in seeded.cases] != [c.id for c in every[:10]]


def test_messages_and_reports_show_the_text_the_model_was_given(pytester):
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-l", "--wild-limit", "6", "-p", "no:cacheprovider",
                                           "--wild-context", "qa_inst", "--wild-sampling", "first",
                                           "--wild-report=report.json", "-rx")
    output = result.stdout.str()
    assert 'asked "Please answer the question:' in output
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["config"]["suite"]["sampling"] == "first"
    answer = report["samples"][0]["modes"]["wild"]["answers"]["prompt"]
    assert answer["context"] == "Please answer the question:\n\nQ: " + answer["question"] + "\nA:"


class _NoEdit:
    def restore(self) -> None:
        pass


def _bundled():
    from pytest_wild.suite import BUNDLED_SUITES

    return BUNDLED_SUITES / "tinyworld.yaml"
