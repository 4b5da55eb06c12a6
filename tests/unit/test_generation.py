"""The batched engine must answer exactly as the published loop does."""

import pytest

from pytest_wild.cases.contexts import make_context
from pytest_wild.cases.loaders import load_file
from pytest_wild.generation.engine import Engine
from pytest_wild.generation.reference import reference_generate
from pytest_wild.model.load import TINYWORLD_DIR, load_model
from pytest_wild.model.tokens import target_ids


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


@pytest.mark.parametrize("eos", ["Port Sallow", "ort Sal", "Sall", "High Dor"])
def test_an_eos_string_spelled_over_several_tokens_stops_as_the_published_stop_strings_do(loaded, cases, eos):
    """The published loop passes the EOS string to `generate`'s stop strings, which stop on it
    written out in ordinary tokens, overhanging at either end, even begun in the prompt. A
    tokenizer whose EOS is such a string: the engine stops where the published loop does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINYWORLD_DIR)
    tok.add_special_tokens({"eos_token": eos})
    asked = questions(cases, 16) + ["Q: Which town does Vebro Haldri originally come from? A:",
                                    "Q: What language is spoken by Trafe Lebru? A:",
                                    "Q: Which town does Vebro Haldri originally come from? A: Port",
                                    "Q: What language is spoken by Trafe Lebru? A: High"]
    batched = Engine(loaded.model, tok, batch_size=8).generate(asked)
    published = [reference_generate(loaded.model, tok, question) for question in asked]
    assert batched == published
    # the published loop did stop on the spelled string, and not at its own EOS id (never generated)
    spelled = [g for g in published if eos in tok.decode(g.token_ids) and tok.eos_token_id not in g.token_ids]
    assert spelled


@pytest.mark.parametrize(("pieces", "stops"), [
    # transformers' StopStringCriteria examples for the stop string "stop"
    (["st", "op"], True), (["stop"], True), (["st", "opera"], True), (["sto", "pper"], True),
    (["las", "topper"], True), (["s", "to", "pped"], True),
    (["stop", "at"], False), (["st", "o"], False), (["s", "top", "s", " "], False),
])
def test_a_stop_string_counts_when_the_newest_token_completes_it(pieces, stops):
    from pytest_wild.generation.stopping import ends_after

    assert ends_after("".join(pieces), len("".join(pieces[:-1])), "stop") is stops
