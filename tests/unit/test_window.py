"""A case too long for the model window is reported as not evaluable, with its token counts,
and left out of the results; nothing feeds it to the model (no IndexError in an editor or the
teacher-forced pass, no device-side assert on a GPU). The teacher-forced pass runs only where
it is used."""

import json

import pytest

from pytest_wild.cases.case import Case, Locality
from pytest_wild.cases.window import locality_left_out, model_window, why_not_evaluable
from pytest_wild.editors import get_editor
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.model.load import load_model
from pytest_wild.scores.evaluation import Evaluator, Settings

QUESTION = "Which company does Draker Breldeirhin work for?"
FILLER = " ".join(["Harrow"] * 125)  # 125 tokens of the bundled tokenizer: with a question, past 128


def _case(id: str, prompt: str = QUESTION, rephrase: str | None = "Draker Breldeirhin works for?",
          loc: str = "Where is Harrow Foundry?", *more: str) -> Case:
    return Case(id, prompt, "Harrow Foundry", "Draker Breldeirhin", rephrase,
                tuple(Locality(q, "Dorwyn Hill") for q in (loc, *more)))


@pytest.fixture(scope="module")
def loaded():
    return load_model(None, "cpu")


def test_the_window_is_read_from_the_config(loaded):
    assert model_window(loaded.model.config) == 128
    assert model_window(object()) is None


def test_each_question_is_measured_with_its_answer_and_named(loaded):
    tokenizer = loaded.tokenizer
    fits = why_not_evaluable(_case("ok"), tokenizer, 128, str)
    prompt = why_not_evaluable(_case("p", prompt=f"{FILLER} {QUESTION}"), tokenizer, 128, str)
    rephrase = why_not_evaluable(_case("r", rephrase=f"{FILLER} works for?"), tokenizer, 128, str)
    locality = why_not_evaluable(_case("l", loc=f"{FILLER} Where?"), tokenizer, 128, str)
    assert fits is None
    assert prompt == "prompt of 138 tokens (140 with its answer), model window 128"
    assert rephrase.startswith("rephrase of ") and rephrase.endswith(", model window 128")
    assert locality.startswith("locality question 1 of ") and "with its answer" in locality
    assert why_not_evaluable(_case("p", prompt=f"{FILLER} {QUESTION}"), tokenizer, None, str) is None


def test_only_what_the_published_estimators_ask_makes_a_case_unfit(loaded):
    """The paper's `locality` asks the first locality question alone: a later one too long
    leaves the case evaluable, that question left out with its line."""
    tokenizer = loaded.tokenizer
    later = _case("l2", QUESTION, "Draker Breldeirhin works for?", "Where is Harrow Foundry?", f"{FILLER} Where?",
                  "Where is Dorwyn Hill?")
    assert why_not_evaluable(later, tokenizer, 128, str) is None
    left = locality_left_out(later, tokenizer, 128, str)
    assert list(left) == [1] and left[1].startswith("locality question 2 of ") and left[1].endswith("model window 128")
    assert locality_left_out(_case("first", loc=f"{FILLER} Where?"), tokenizer, 128, str) == {}
    assert locality_left_out(later, tokenizer, None, str) == {}


def test_the_context_and_the_editors_prefix_count(loaded):
    tokenizer = loaded.tokenizer
    near = _case("near", prompt=" ".join(["Harrow"] * 113) + " " + QUESTION)  # 128 with its answer
    assert why_not_evaluable(near, tokenizer, 128, str) is None
    assert "with its answer and the editor's prefix" in why_not_evaluable(near, tokenizer, 128, str, edit_prefix=1)
    assert why_not_evaluable(near, tokenizer, 128, lambda q: f"Q: {q} A:").startswith("prompt of 129 tokens (131 with its answer)")


def test_the_locate_editors_measure_their_context_templates(loaded):
    rome = get_editor("rome")
    hp = build_hparams(rome.hparams_type, rome.defaults(loaded.model.config, "tinyworld"), [])
    assert 10 <= rome.prefix(loaded.model, loaded.tokenizer, hp) <= 16  # templates of 10 sampled tokens + ". "
    assert get_editor("ft-m").prefix is None


class NoEdit:
    def restore(self) -> None:
        pass


def test_an_unfit_case_never_reaches_the_model_and_teacher_forcing_runs_only_where_used(loaded, monkeypatch):
    evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild",)))
    forced: list[list[str]] = []
    real = evaluator.engine.teacher_forced
    monkeypatch.setattr(evaluator.engine, "teacher_forced", lambda p, t: forced.append(list(p)) or real(p, t))
    edited: list[list[str]] = []
    # the unedited model answers the bundled world's facts: a right answer needs no teacher forcing
    right = Case("right", f"Q: {QUESTION} A:", "Meadowlark Foods", "Draker Breldeirhin",
                 None, (Locality("Where is Harrow Foundry?", "Dorwyn Hill"),))
    long = _case("long", prompt=f"{FILLER} {QUESTION}")
    rows = evaluator.evaluate([right, _case("wrong"), long], lambda cases: edited.append([c.id for c in cases]) or NoEdit())
    assert edited == [["right", "wrong"]]
    assert rows[0].modes["wild"]["reliability"] == 1.0 and rows[0].teacher_forced == {}
    assert set(rows[1].teacher_forced) <= {"prompt", "rephrase"} and rows[1].teacher_forced
    assert rows[2].not_evaluable.startswith("prompt of 138 tokens") and rows[2].modes == {}
    assert forced and all(p in (QUESTION, "Draker Breldeirhin works for?") for call in forced for p in call)
    synthetic = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic")))
    row = synthetic.evaluate([right], lambda cases: NoEdit())[0]
    assert row.teacher_forced["prompt"] is not None and row.modes["synthetic"]["reliability"] is not None


def test_a_later_locality_question_too_long_is_left_out_and_only_the_all_questions_metrics_lose_the_case(loaded, monkeypatch):
    evaluator = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic", "length")))
    asked: list[str] = []
    for name in ("generate", "generate_fixed", "teacher_forced"):
        real = getattr(evaluator.engine, name)
        monkeypatch.setattr(evaluator.engine, name, lambda texts, *rest, real=real: asked.extend(texts) or real(texts, *rest))
    long_question = f"{FILLER} Where?"
    whole = _case("whole", QUESTION, "Draker Breldeirhin works for?", "Where is Harrow Foundry?", "Where is Dorwyn Hill?")
    later = _case("later", QUESTION, "Draker Breldeirhin works for?", "Where is Harrow Foundry?", long_question,
                  "Where is Dorwyn Hill?")
    edited: list[Case] = []
    rows = evaluator.evaluate([whole, later], lambda cases: edited.extend(cases) or NoEdit())
    assert long_question not in asked and all(long_question not in text for text in asked)
    assert [len(case.locality) for case in edited] == [2, 2]  # the editor is given the case as asked
    ours, theirs = rows
    assert theirs.not_evaluable is None
    assert theirs.locality_not_evaluable[0].startswith("locality question 2 of ")
    for mode in ("wild", "synthetic", "length"):
        # the published locality reads the first question, as it would without the long one
        assert theirs.modes[mode]["locality"] == ours.modes[mode]["locality"] is not None
        assert theirs.modes[mode]["reliability"] == ours.modes[mode]["reliability"]
        assert theirs.modes[mode]["locality_all"] is None and ours.modes[mode]["locality_all"] is not None
    assert theirs.modes["wild"]["locality_em"] is None and ours.modes["wild"]["locality_em"] is not None


def test_the_command_line_skips_reports_and_counts_unfit_cases(pytester):
    cases = [_case("tw-fits").as_record(), _case("tw-long", prompt=f"{FILLER} {QUESTION}").as_record(),
             _case("tw-long-loc", loc=f"{FILLER} {FILLER}").as_record(),
             _case("tw-long-loc2", QUESTION, "Draker Breldeirhin works for?", "Where?", f"{FILLER} {FILLER}").as_record()]
    (pytester.path / "data.json").write_text(json.dumps(cases))
    result = pytester.runpytest_subprocess("--wild", "--editor=rome", "--wild-suite=data.json", "-rs",
                                           "--wild-report=out.json", "--wild-markdown=out.md", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "IndexError" not in output
    assert "tw-long not evaluable: prompt of 138 tokens (" in output and "model window 128" in output
    assert "tw-long-loc not evaluable: locality question 1 of 251 tokens" in output
    assert "not evaluable (too long for the model window), left out of the results: 2 cases (tw-long, tw-long-loc)" in output
    assert ("locality questions too long for the model window, left out (locality_all and locality_em not "
            "evaluable there): 1 case (tw-long-loc2); first: tw-long-loc2: locality question 2 of 251 tokens") in output
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes["skipped"] == 2 and outcomes.get("passed", 0) + outcomes.get("xfailed", 0) == 2
    report = json.loads((pytester.path / "out.json").read_text())
    assert report["complete"] is True and report["cases"]["not_evaluable"] == 2
    assert set(report["not_evaluable"]) == {"tw-long", "tw-long-loc"}
    cells = report["results"]["wild"]
    assert {metric: cell["n"] for metric, cell in cells.items()} == {
        "reliability": 2, "generalization": 2, "locality": 2, "locality_all": 1, "locality_em": 1,
        "reliability_f1": 2, "generalization_f1": 2, "locality_f1": 2}  # F1 of the first locality answer, as locality
    (partial,) = [row for row in report["samples"] if row["id"] == "tw-long-loc2"]
    assert partial["locality_not_evaluable"][0].startswith("locality question 2 of 251 tokens")
    assert "2 cases not evaluable" in (pytester.path / "out.md").read_text()
