"""The engine applies what greedy `model.generate` takes from the model's generation config
(every end-of-sequence id, the logits processors), token for token, on random models; and it
refuses a config that asks for another search."""

import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.generation.engine import Engine
from pytest_wild.generation.reference import reference_generate

from ..tiny_models import tiny_model

PROMPTS = [f"Q: {w} the {v} of {u}? A:" for w in ("What is", "Where was", "Who made")
           for v in ("name", "town", "pet", "tool") for u in ("Vebro Haldri", "Kalo")]


def both_ways(model, tok, prompts=PROMPTS):
    engine = Engine(model, tok, batch_size=8)
    return engine.generate(prompts), [reference_generate(model, tok, p) for p in prompts]


def test_every_eos_id_of_the_generation_config_ends_an_answer():
    model, tok = tiny_model("llama", seed=1)
    plain = Engine(model, tok).generate(PROMPTS)
    # a second end-of-sequence id that the plain answers produce mid-way, as Llama-3-Instruct's
    # <|eot_id|> beside <|end_of_text|>
    counts = {}
    for generation in plain:
        for token in generation.token_ids[1:-1]:
            counts[token] = counts.get(token, 0) + 1
    second = max(counts, key=counts.get)
    model.generation_config.eos_token_id = [tok.eos_token_id, second]
    engine, published = both_ways(model, tok)
    assert engine == published
    assert sum(g.token_ids[-1] == second for g in engine) >= 5  # the second id did end answers


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2"])
def test_a_repetition_penalty_applies_as_generate_applies_it(model_type):
    model, tok = tiny_model(model_type, seed=2)
    plain = Engine(model, tok).generate(PROMPTS)
    model.generation_config.repetition_penalty = 1.05
    engine, published = both_ways(model, tok)
    assert engine == published
    assert engine != plain  # the penalty changed answers, so the comparison means something


def test_the_other_greedy_processors_apply_as_generate_applies_them():
    model, tok = tiny_model("mistral", seed=3)
    plain = Engine(model, tok).generate(PROMPTS)
    config = model.generation_config
    config.no_repeat_ngram_size = 2
    config.min_new_tokens = 3
    config.suppress_tokens = [plain[0].token_ids[0]]
    config.bad_words_ids = [[plain[1].token_ids[0]]]
    config.eos_token_id = tok.eos_token_id
    engine, published = both_ways(model, tok)
    assert engine == published
    assert engine != plain


@pytest.mark.parametrize("setting", [{"num_beams": 4}, {"penalty_alpha": 0.6, "top_k": 4}, {"guidance_scale": 1.5}])
def test_a_config_asking_for_another_search_is_refused_with_one_line(setting):
    model, tok = tiny_model("gpt2")
    for name, value in setting.items():
        setattr(model.generation_config, name, value)
    with pytest.raises(WildInputError, match=f"generation_config.{next(iter(setting))} "):
        Engine(model, tok)


def test_a_model_directory_asking_for_beams_fails_the_run_with_one_line(pytester):
    import json
    import shutil

    from pytest_wild.model.load import TINYWORLD_DIR

    model = pytester.path / "beams"
    shutil.copytree(TINYWORLD_DIR, model)
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps(config | {"num_beams": 4}))
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-model=beams", "--wild-limit", "2",
                                           "-p", "no:cacheprovider")
    assert result.ret == 4
    output = result.stdout.str() + result.stderr.str()
    assert "generation_config.num_beams = 4 asks for another search than greedy decoding" in output
    assert "Traceback" not in output
