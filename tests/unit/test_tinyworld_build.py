"""Tests for the tinyworld generator, the shipped model directory and a smoke build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pytest_wild.tinyworld.world import (DEFAULT_SEED, World, corpus_lines, generate_world, mend_records,
                                         perplexity_lines, sequential_pool, sequential_records, suite_records)

DATA = Path(__file__).resolve().parents[2] / "pytest_wild" / "data" / "tinyworld"
SUITE_KEYS = {"id", "source", "prompt", "target", "subject", "rephrase", "locality", "ground_truth"}
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
WORLD_FILES = {"suite.jsonl", "sequential.jsonl", "corpus.txt", "perplexity.txt", "mend.jsonl", "build.json"}


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(DEFAULT_SEED)


@pytest.fixture(scope="module")
def shipped_suite() -> list[dict]:
    return [json.loads(line) for line in (DATA / "suite.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def shipped_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DATA)


def test_same_seed_gives_same_world(world: World) -> None:
    again = generate_world(DEFAULT_SEED)
    assert again == world
    assert again.training_text() == world.training_text()
    assert suite_records(again) == suite_records(world)


def test_different_seed_gives_different_world(world: World) -> None:
    other = generate_world(DEFAULT_SEED + 1)
    assert other.subjects != world.subjects
    assert [f.answer for f in other.facts] != [f.answer for f in world.facts]


def test_subjects_are_unique_and_prefix_free(world: World) -> None:
    assert len(world.subjects) >= 300
    assert len(set(world.subjects)) == len(world.subjects)
    ordered = sorted(world.subjects)
    assert not any(b.startswith(a) for a, b in zip(ordered, ordered[1:]))
    assert all(len(name.split()) == 2 and name.istitle() for name in world.subjects)


def test_relations_have_templates_and_answers(world: World) -> None:
    assert len(world.relations) >= 5
    for relation in world.relations:
        assert len(relation.templates) >= 4
        assert all(t.startswith("Q: ") and t.endswith("? A:") for t in relation.templates)
        assert len(set(relation.answers)) == len(relation.answers) >= 10
        assert not any("." in a or "\n" in a for a in relation.answers)


def test_every_subject_has_every_relation(world: World) -> None:
    assert len(world.facts) == len(world.subjects) * len(world.relations)
    for fact in world.facts:
        assert fact.answer in world.relation(fact.relation).answers


def test_subject_occurs_once_in_every_question(world: World) -> None:
    for subject in world.subjects[:50]:
        for relation in world.relations:
            for t in range(len(relation.templates)):
                assert relation.question(subject, t).count(subject) == 1


def test_heldout_facts_are_absent_from_training_text(world: World) -> None:
    text = world.training_text()
    held_subjects = [f.subject for f in world.heldout]
    assert 0.10 <= len(world.heldout) / len(world.subjects) <= 0.15
    assert len(set(held_subjects)) == len(held_subjects)
    for fact in world.heldout:
        relation = world.relation(fact.relation)
        assert fact.subject in text
        for t in range(len(relation.templates)):
            assert relation.question(fact.subject, t) not in text
        assert relation.statement.split("{answer}")[0].format(subject=fact.subject) not in text


def test_training_lines_cover_trained_facts(world: World) -> None:
    lines = world.training_lines()
    assert len(lines) == sum(len(world.relation(f.relation).templates) + 1 for f in world.trained_facts)
    assert world.qa_line(world.trained_facts[0], 0) == lines[0]
    assert lines[0].endswith(f" A: {world.trained_facts[0].answer}.")


def test_shipped_world_files_match_generator(world: World, shipped_suite: list[dict]) -> None:
    assert shipped_suite == suite_records(world)
    assert (DATA / "corpus.txt").read_text(encoding="utf-8").splitlines() == corpus_lines(world)


def test_every_file_that_depends_on_the_world_only_regenerates_byte_identical(world: World) -> None:
    from pytest_wild.tinyworld.build import world_files

    for name, text in world_files(generate_world(DEFAULT_SEED)).items():
        assert (DATA / name).read_bytes() == text.encode("utf-8"), name


def test_the_sequential_suite_edits_1200_distinct_facts_and_leaves_its_locality_subjects_alone(world: World) -> None:
    records = sequential_records(world)
    assert len(records) >= 1200
    assert len({r["id"] for r in records}) == len(records)
    facts = [(r["subject"], next(rel.name for rel in world.relations
                                 if r["prompt"] in {rel.question(r["subject"], t) for t in range(len(rel.templates))}))
             for r in records]
    assert len(set(facts)) == len(records)  # distinct (subject, relation) facts
    assert sum(r["ground_truth"] is None for r in records) == len(world.heldout)
    edited = {subject for subject, _ in facts}
    pool = set(sequential_pool(world))
    assert not edited & pool
    for r in records:
        assert r["rephrase"] != r["prompt"] and r["subject"] in r["rephrase"]
        assert r["ground_truth"] is None or r["ground_truth"] != r["target"]
        assert len(r["locality"]) == 3 and all(any(s in loc["loc"] for s in pool) for loc in r["locality"])
    text = perplexity_lines(world)
    assert text and all(any(s in line for s in pool) for line in text)
    assert not set(text) & set(corpus_lines(world))  # held out of the statistics' text


def test_shipped_build_json_matches_files_and_quality_bar() -> None:
    info = json.loads((DATA / "build.json").read_text(encoding="utf-8"))
    assert info["seed"] == DEFAULT_SEED
    for name, digest in info["sha256"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest
    assert info["em_trained"] >= 0.9
    assert info["em_heldout"] <= 0.1
    assert (DATA / "model.safetensors").stat().st_size < 10 * 2**20


def test_suite_cases_are_well_formed(world: World, shipped_suite: list[dict]) -> None:
    assert len(shipped_suite) >= 200
    assert [r["id"] for r in shipped_suite] == [f"tw-{i:04d}" for i in range(len(shipped_suite))]
    assert len({r["subject"] for r in shipped_suite}) == len(shipped_suite)
    for record in shipped_suite:
        assert set(record) == SUITE_KEYS
        assert record["prompt"].count(record["subject"]) == 1
        assert record["rephrase"].count(record["subject"]) == 1
        assert record["rephrase"] != record["prompt"]
        assert len(record["locality"]) >= 3
        for item in record["locality"]:
            assert set(item) == {"loc", "loc_ans"}
            assert record["subject"] not in item["loc"]


def test_suite_targets_follow_the_world(world: World, shipped_suite: list[dict]) -> None:
    heldout = {(f.subject, f.answer) for f in world.heldout}
    sources = [r["source"] for r in shipped_suite]
    assert set(sources) == {"tinyworld-heldout", "tinyworld-counterfact"}
    assert 0.4 <= sources.count("tinyworld-heldout") / len(sources) <= 0.6
    for record in shipped_suite:
        if record["source"] == "tinyworld-heldout":
            assert record["ground_truth"] is None
            assert (record["subject"], record["target"]) in heldout
        else:
            assert record["ground_truth"] != record["target"]
            assert record["ground_truth"] in {f.answer for f in world.facts if f.subject == record["subject"]}


def test_answers_are_one_to_four_tokens(world: World, shipped_tokenizer) -> None:
    for relation in world.relations:
        for answer in relation.answers:
            assert 1 <= len(shipped_tokenizer(" " + answer)["input_ids"]) <= 4, answer


def test_shipped_model_meets_the_quality_bar_under_wild_decoding(world: World, shipped_tokenizer) -> None:
    """Measured again here, not read from build.json: >= 0.9 exact match on trained facts,
    <= 0.1 on held-out ones, and the suite's true answers and locality answers known."""
    from transformers import AutoModelForCausalLM

    from pytest_wild.tinyworld.build import measure

    model = AutoModelForCausalLM.from_pretrained(DATA).eval()
    shipped_tokenizer.padding_side = "left"
    measured = measure(model, shipped_tokenizer, world)
    assert measured["em_trained"] >= 0.9
    assert measured["em_heldout"] <= 0.1
    assert measured["em_suite_counterfact_prompt_truth"] >= 0.95
    assert measured["em_suite_locality"] >= 0.95


def test_smoke_build_is_loadable(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_wild.tinyworld.build import build

    out = tmp_path / "tinyworld"
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    info = build(out, steps=3, log=lambda _: None)
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == (deterministic, threads)
    assert info["steps"] == 3
    assert {p.name for p in out.iterdir()} == MODEL_FILES | WORLD_FILES
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer("Q: Where was Kalo Venbri born? A:", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == model.config.eos_token_id


def test_mend_trains_on_facts_and_questions_neither_bundled_suite_holds(world: World) -> None:
    records, suite, sequential = mend_records(world), suite_records(world), sequential_records(world)
    assert len(records) == 1200 and len({r["id"] for r in records}) == len(records)

    def fact(r: dict) -> tuple[str, str]:
        return r["subject"], next(rel.name for rel in world.relations
                                  if r["prompt"] in {rel.question(r["subject"], t) for t in range(len(rel.templates))})

    trained = {fact(r) for r in records}
    assert len(trained) == len(records)
    assert not trained & {fact(r) for r in sequential}
    assert not {s for s, _ in trained} & ({r["subject"] for r in suite} | set(sequential_pool(world)))
    evaluated = {text for r in suite + sequential for text in (r["prompt"], r["rephrase"], *(l["loc"] for l in r["locality"]))}
    assert not evaluated & {text for r in records for text in (r["prompt"], r["rephrase"], r["locality"][0]["loc"])}
    for r in records:
        assert r["target"] != r["ground_truth"] == world.value(*fact(r)) and r["subject"] not in r["locality"][0]["loc"]
