"""pytest-wild's own calls into transformers raise no deprecation: warnings from them are
errors here, and transformers' own deprecation log lines are failures too (it reports a
renamed output field through its logger, not through `warnings`). That a default run of the
plugin prints no warning is checked by every run of tests/integration/test_bundled_goldens.py."""

import logging
import warnings

import pytest

from pytest_wild.editors.api import edit
from pytest_wild.generation.engine import Engine

from ..unit.test_locate_editors import CASE, edit_model, hparams_for, statistics_cache  # noqa: F401
from ..tiny_models import SIZES

ROOT_QUESTIONS = ["Q: Where was Kalo Venbri born? A:", "The home town of Kalo Venbri", "Q: What?"]


def deprecations(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "deprecat" in r.getMessage().lower()]


@pytest.mark.parametrize("model_type", sorted(SIZES))
def test_engine_and_editors_call_transformers_as_it_wants_to_be_called(model_type, caplog):
    model, tok = edit_model(model_type)
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = Engine(model, tok, batch_size=2)
        engine.generate(ROOT_QUESTIONS)
        engine.generate_fixed(ROOT_QUESTIONS, [3, 2, 1])
        engine.teacher_forced(ROOT_QUESTIONS, ["Dorwyn Hill"] * 3)
        for name in ("rome", "memit"):
            editor, hparams = hparams_for(name, model)
            edit(editor, model, tok, [CASE], hparams).restore()
    assert deprecations(caplog.records) == []
