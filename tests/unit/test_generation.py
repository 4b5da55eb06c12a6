"""The batched engine must answer exactly as the published loop does."""

import pytest

from pytest_wild.contexts import make_context
from pytest_wild.generation import Engine
from pytest_wild.loaders import load_file
from pytest_wild.model import TINYWORLD_DIR, load_model
from pytest_wild.reference import reference_generate
from pytest_wild.tokens import target_ids


@pytest.fixture(scope="module")
def loaded():
    return load_model(None, "cpu")


@pytest.fixture(scope="module")
def cases():
    return load_file(TINYWORLD_DIR / "suite.jsonl")


def questions(cases, n):
    found = []
    for case in cases:
        found += [case.prompt, case.rephrase] + [loc.question for loc in case.locality]
    return list(dict.fromkeys(found))[:n]


@pytest.mark.parametrize("context", ["question", "qa_inst"])
def test_batched_engine_matches_the_one_at_a_time_uncached_loop(loaded, cases, context):
    asked = [make_context(q, context, loaded.tokenizer) for q in questions(cases, 48 if context == "question" else 12)]
    asked += ["Q: Where was", "Kalo", "Q: What is the favourite instrument of Nobody Atall? A:"]
    engine = Engine(loaded.model, loaded.tokenizer, batch_size=16)
    batched = engine.generate(asked)
    for context_text, generation in zip(asked, batched):
        assert generation == reference_generate(loaded.model, loaded.tokenizer, context_text), context_text


def test_answers_stop_at_the_first_stop_string_and_strip_it(loaded, cases):
    engine = Engine(loaded.model, loaded.tokenizer)
    for generation in engine.generate(questions(cases, 30)):
        text = loaded.tokenizer.decode(generation.token_ids)
        assert text.endswith((".", "\n", loaded.tokenizer.eos_token)) or len(generation.token_ids) == 50
        assert "." not in generation.text and "\n" not in generation.text


def test_fixed_length_generation_gives_exactly_the_asked_token_counts(loaded, cases):
    engine = Engine(loaded.model, loaded.tokenizer)
    asked = [case.prompt for case in cases[:6]]
    lengths = [1, 2, 3, 4, 0, 7]
    assert [len(g.token_ids) for g in engine.generate_fixed(asked, lengths)] == lengths


def test_teacher_forced_accuracy_reads_the_target_given_the_gold_prefix(loaded, cases):
    engine = Engine(loaded.model, loaded.tokenizer)
    counterfact = [case for case in cases if case.ground_truth is not None][:8]
    truth = engine.teacher_forced_accuracy([c.prompt for c in counterfact], [c.ground_truth for c in counterfact])
    assert truth == [1.0] * len(counterfact)
    (tgt, predicted), = engine.teacher_forced([counterfact[0].prompt], [counterfact[0].target])
    assert tgt == target_ids(loaded.tokenizer, counterfact[0].prompt, counterfact[0].target)
    assert len(predicted) == len(tgt)


def test_target_ids_do_not_double_a_leading_space(loaded):
    tok = loaded.tokenizer
    assert target_ids(tok, "Q: x? A:", " Dorwyn") == target_ids(tok, "Q: x? A:", "Dorwyn")
    assert tok.decode(target_ids(tok, "Q: x? A:", "Port Sallow")) == " Port Sallow"
