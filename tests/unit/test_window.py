"""A case too long for the model window is reported as not evaluable, with its token counts,
and left out of the results; nothing feeds it to the model (no IndexError in an editor or the
teacher-forced pass, no device-side assert on a GPU). The teacher-forced pass runs only where
it is used."""

import json

import pytest

from pytest_wild.cases import Case, Locality
from pytest_wild.editors import get_editor
from pytest_wild.evaluation import Evaluator, Settings
from pytest_wild.hparams import build_hparams
from pytest_wild.model import load_model
from pytest_wild.window import model_window, why_not_evaluable

QUESTION = "Which company does Draker Breldeirhin work for?"
FILLER = " ".join(["Harrow"] * 125)  # 125 tokens of the bundled tokenizer: with a question, past 128


def _case(id: str, prompt: str = QUESTION, rephrase: str | None = "Draker Breldeirhin works for?",
          loc: str = "Where is Harrow Foundry?") -> Case:
    return Case(id, prompt, "Harrow Foundry", "Draker Breldeirhin", rephrase, (Locality(loc, "Dorwyn Hill"),))


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
    assert rows[0]["modes"]["wild"]["reliability"] == 1.0 and rows[0]["teacher_forced"] == {}
    assert set(rows[1]["teacher_forced"]) <= {"prompt", "rephrase"} and rows[1]["teacher_forced"]
    assert rows[2]["not_evaluable"].startswith("prompt of 138 tokens") and rows[2]["modes"] == {}
    assert forced and all(p in (QUESTION, "Draker Breldeirhin works for?") for call in forced for p in call)
    synthetic = Evaluator(loaded.model, loaded.tokenizer, Settings(("wild", "synthetic")))
    row = synthetic.evaluate([right], lambda cases: NoEdit())[0]
    assert row["teacher_forced"]["prompt"] is not None and row["modes"]["synthetic"]["reliability"] is not None


def test_the_command_line_skips_reports_and_counts_unfit_cases(pytester):
    cases = [_case("tw-fits").as_record(), _case("tw-long", prompt=f"{FILLER} {QUESTION}").as_record(),
             _case("tw-long-loc", loc=f"{FILLER} {FILLER}").as_record()]
    (pytester.path / "data.json").write_text(json.dumps(cases))
    result = pytester.runpytest_subprocess("--wild", "--editor=rome", "--wild-suite=data.json", "-rs",
                                           "--wild-report=out.json", "--wild-markdown=out.md", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "IndexError" not in output
    assert "tw-long not evaluable: prompt of 138 tokens (" in output and "model window 128" in output
    assert "tw-long-loc not evaluable: locality question 1 of 251 tokens" in output
    assert "not evaluable (too long for the model window), left out of the results: 2 cases (tw-long, tw-long-loc)" in output
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes["skipped"] == 2 and outcomes.get("passed", 0) + outcomes.get("xfailed", 0) == 1
    report = json.loads((pytester.path / "out.json").read_text())
    assert report["complete"] is True and report["cases"]["not_evaluable"] == 2
    assert set(report["not_evaluable"]) == {"tw-long", "tw-long-loc"}
    assert all(cell["n"] == 1 for cell in report["results"]["wild"].values())
    assert "2 cases not evaluable" in (pytester.path / "out.md").read_text()
