"""Where the paper's code computes something, the result carries the published name and equals
the paper's computation; our variants are reported beside it under their own names."""

import json

import pytest
import torch

from pytest_wild.cases.case import Case, Locality
from pytest_wild.cases.contexts import PUBLISHED_CHAT, make_context
from pytest_wild.cases.suite import load_suite
from pytest_wild.editors.api import edit
from pytest_wild.generation.engine import Engine
from pytest_wild.generation.reference import reference_generated, reference_teacher_forced
from pytest_wild.model.load import load_model
from pytest_wild.model.reading import reading
from pytest_wild.scores.answers import target_flags
from pytest_wild.scores.evaluation import Evaluator, Settings
from pytest_wild.scores.metrics import mode_labels
from pytest_wild.scores.record import CaseResult

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
        scores[context] = row.teacher_forced
    assert scores["question"] == scores["qa_inst"]


def test_double_space_targets_are_flagged():
    assert any(f.startswith("double-space") for f in target_flags(" October 2011", "published"))
    assert not any(f.startswith("double-space") for f in target_flags("October 2011", "published"))


def test_locality_is_the_first_question_and_locality_all_every_question(loaded):
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.hparams import build_hparams

    case = load_suite(_bundled(), limit=4).cases[0]
    # the second locality question is the edit question itself, whose answer a successful edit changes
    edited = Case(id=case.id, prompt=case.prompt, target=case.target, subject=case.subject, rephrase=case.rephrase,
                  locality=(case.locality[0], Locality(case.prompt, "old answer")))
    editor = get_editor("ft-m")
    hparams = build_hparams(editor.hparams_type, editor.defaults(loaded.model.config, "tinyworld"), [])
    evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic", "length")))
    row = evaluator.evaluate([edited], lambda cases: edit(editor, loaded.model, loaded.tokenizer, cases, hparams))[0]
    wild = row.modes["wild"]
    assert wild["reliability"] == 1.0
    assert wild["locality"] == 1.0 and wild["locality_all"] == 0.5
    for mode in ("synthetic", "length"):
        assert row.modes[mode]["locality"] > row.modes[mode]["locality_all"]


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


def _grace(loaded):
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.hparams import build_hparams

    editor = get_editor("grace")
    return editor, build_hparams(editor.hparams_type, editor.defaults(loaded.model.config, "tinyworld"), [])


def _share(pair: tuple[list[int], list[int]]) -> float:
    """np.mean(np.equal(a, b)), as the paper's code scores a reading."""
    a, b = pair
    return sum(x == y for x, y in zip(a, b)) / len(a)


def test_free_generation_reading_equals_the_papers_code_on_edited_and_unedited_models(loaded):
    """The engine's batched, cached generation of the target's token count gives the tokens of
    the paper's uncached `generate`, on GRACE-edited models and where an answer ends early at
    EOS (the output's last tokens then reach back into the prompt)."""
    model, tok = loaded.model, loaded.tokenizer
    engine = Engine(model, tok, batch_size=16)
    editor, hp = _grace(loaded)
    long_target = "a very long target answer of many tokens here"
    ended = ["Q: Which animal does Trelgo Nirbro have as a pet? A: donkey", "Q: Where was Musbri Pashailu born? A: Varrow\n"]
    found = engine.generated_tokens(ended, [long_target] * 2)
    assert found == [reference_generated(model, tok, q, long_target) for q in ended]
    assert all(tokens[-1] == tok.eos_token_id for _, tokens in found)  # both ended early at EOS
    for case in load_suite(_bundled(), limit=6).cases:
        handle = edit(editor, model, tok, [case], hp)
        try:
            asked = [(case.prompt, case.target), (case.rephrase, case.target)]
            asked += [(loc.question, loc.answer) for loc in case.locality]
            found = engine.generated_tokens([q for q, _ in asked], [a for _, a in asked])
            assert found == [reference_generated(model, tok, q, a) for q, a in asked], case.id
        finally:
            handle.restore()


def test_grace_synthetic_is_the_papers_free_generation_and_teacher_forcing_goes_beside(loaded):
    """Under GRACE, `synthetic` is what the paper's evaluate.py computes for GRACE
    (`vanilla_generation=True`), read on the edited model by the published code written out
    (reference.py); the teacher-forced reading is `synthetic_tf`, never the published name."""
    model, tok = loaded.model, loaded.tokenizer
    editor, hp = _grace(loaded)
    evaluator = Evaluator(model, tok, Settings(("wild", "synthetic"), synthetic="generated"))
    cases = load_suite(_bundled(), limit=6).cases
    before = {case.id: [reference_generated(model, tok, loc.question, loc.answer)[1] for loc in case.locality]
              for case in cases}
    published: dict[str, dict] = {}

    def edit_and_read(batch):
        handle = edit(editor, model, tok, batch, hp)
        (case,) = batch
        after = [reference_generated(model, tok, loc.question, loc.answer)[1] for loc in case.locality]
        agree = [_share((b, a)) for b, a in zip(before[case.id], after)]
        forced = []
        for question in (case.prompt, case.rephrase):  # GRACE's query at the last prompt token, as ours reads it
            with reading(model, torch.tensor([len(tok(question)["input_ids"]) - 1])):
                forced.append(reference_teacher_forced(model, tok, question, case.target))
        published[case.id] = {
            "synthetic": {"reliability": _share(reference_generated(model, tok, case.prompt, case.target)),
                          "generalization": _share(reference_generated(model, tok, case.rephrase, case.target)),
                          "locality": agree[0], "locality_all": sum(agree) / len(agree)},
            "teacher_forced": [_share(pair) for pair in forced],
        }
        return handle

    for case in cases:
        row = evaluator.evaluate([case], edit_and_read)[0]
        assert list(row.modes) == ["wild", "synthetic", "synthetic_tf"]
        assert row.modes["synthetic"] == published[case.id]["synthetic"], case.id
        tf = row.modes["synthetic_tf"]
        assert [tf["reliability"], tf["generalization"]] == published[case.id]["teacher_forced"], case.id
    # GRACE's published reading compares the target encoded alone ("goose", no leading space)
    # with what the model generates (" goose"): it scores 0 where teacher forcing scores 1
    assert all(published[c.id]["synthetic"]["reliability"] == 0.0 for c in cases)
    assert all(published[c.id]["teacher_forced"][0] == 1.0 for c in cases)


def test_only_grace_gets_the_free_generation_reading_and_its_teacher_forced_one_beside():
    assert mode_labels(("wild", "synthetic"), "published", "grace") == ("wild", "synthetic", "synthetic_tf")
    assert mode_labels(("synthetic", "length"), "sentence", "grace") == ("synthetic", "synthetic_tf", "length")
    for editor in ("ft", "ft-l", "ft-m", "rome", "r-rome", "memit", "alphaedit", "wise", "mend"):
        assert mode_labels(("wild", "synthetic"), "published", editor) == ("wild", "synthetic")


class _NoEdit:
    def restore(self) -> None:
        pass


def _bundled():
    from pytest_wild.cases.suite import BUNDLED_SUITES

    return BUNDLED_SUITES / "tinyworld.yaml"


@pytest.mark.parametrize(("editor", "named"), [("ft-m", "synthetic"), ("grace", "synthetic_tf")])
def test_a_missed_answer_says_which_reading_teacher_forcing_is_under_the_editor(editor, named):
    """Under GRACE the published `synthetic` is free generation: the note that teacher forcing
    would have passed an answer names `synthetic_tf` there, never the published name."""
    from pytest_wild.results.gates import parse_rule
    from pytest_wild.run.options import Options
    from pytest_wild.run.runtime import Runtime

    options = Options(editor=editor, model=None, suite=None, limit=1, modes=("wild",), context=None, metric="em",
                      hparams_file=None, device="cpu", dtype="float32", stop_rule="published")
    runtime = Runtime(options, load_suite(_bundled(), limit=1))
    row = CaseResult(id="c1", source=None, prompt="Q: Which pet? A:", target="goose", subject=None, rephrase=None,
                     flags=[], teacher_forced={"prompt": 1.0},
                     modes={"wild": {"answers": {"prompt": {"question": "Q: Which pet? A:", "after": " donkey"}}}})
    note = runtime._explain(parse_rule("reliability>=1", "--wild-threshold", ("wild",)), "wild", 0.0, row)
    assert note.endswith(f"(teacher-forced token accuracy 1.00: the {named} metric would have called this a success)")
