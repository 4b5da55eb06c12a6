"""How a question is put to a chat model (`--wild-context chat`): through the tokenizer's own
template, with our system prompt, the user's, or none."""

import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.cases.contexts import SYSTEM_PROMPT, make_context

from ..tiny_models import tokenizer

TEMPLATE = ("{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
REFUSES_SYSTEM = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system turn') }}{% endif %}"
                  "{{ m.content }}{% endfor %}")


def chat_tokenizer(template: str = TEMPLATE):
    tok = tokenizer()
    tok.chat_template = template
    return tok


@pytest.mark.parametrize(("system", "expected"), [
    (None, f"<system> {SYSTEM_PROMPT}\n<user> Q?\n<assistant>"),
    ("Answer in a few words.", "<system> Answer in a few words.\n<user> Q?\n<assistant>"),
    ("", "<user> Q?\n<assistant>"),
])
def test_the_chat_context_is_the_template_with_the_system_prompt_given(system, expected):
    assert make_context("Q?", "chat", chat_tokenizer(), system) == expected


def test_a_template_that_refuses_a_system_turn_is_one_line_and_works_without_one():
    tok = chat_tokenizer(REFUSES_SYSTEM)
    with pytest.raises(WildInputError, match="refused a system and a user turn"):
        make_context("Q?", "chat", tok)
    assert make_context("Q?", "chat", tok, "") == "Q?"


def test_a_tokenizer_without_a_template_is_refused_for_chat_only():
    with pytest.raises(WildInputError, match="has no chat template"):
        make_context("Q?", "chat", tokenizer())
    assert make_context("Q?", "chat_temp", tokenizer()).startswith("<s>[INST] <<SYS>>")
