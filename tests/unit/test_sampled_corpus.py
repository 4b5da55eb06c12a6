"""Statistics without the published corpus: text sampled from the model itself, used when named
or, with a line saying so, when the hub corpus cannot be reached; computed once and cached."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_wild.model import sampled_corpus, stats

from ..tiny_models import tiny_model

MODULES = ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]


@dataclass(frozen=True)
class Settings:
    mom2_dataset: str
    mom2_n_samples: int = 100


def test_sampled_documents_are_the_models_own_seeded_text():
    model, tok = tiny_model("gpt2")
    first = sampled_corpus.sample_documents(model, tok, count=5, length=12)
    assert first == sampled_corpus.sample_documents(model, tok, count=5, length=12)
    assert len(first) == 5 and len(set(first)) == 5 and all("\n" not in text for text in first)
    other, _ = tiny_model("gpt2", seed=1)
    assert sampled_corpus.sample_documents(other, tok, count=5, length=12) != first


def test_model_sample_statistics_are_computed_once_from_a_cached_file(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "DOCUMENTS", 8)  # the default size (256 x 128) takes minutes on a CPU
    monkeypatch.setattr(stats, "TOKENS", 10)
    model, tok = tiny_model("gpt2")
    sampled = []
    original = sampled_corpus.sample_documents
    monkeypatch.setattr(sampled_corpus, "sample_documents", lambda *a, **k: sampled.append(1) or original(*a, **k))
    found = stats.second_moments(model, tok, MODULES, "model-sample", 100, "float64", cache_dir=tmp_path,
                                 progress=False)
    files = list(tmp_path.rglob("model-sample.*.txt"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 8 and sampled == [1]
    assert found[MODULES[0]].count > 0 and "model-sample:" in found[MODULES[0]].key
    again = stats.second_moments(model, tok, MODULES[:1] + ["transformer.h.2.mlp.c_proj"], "model-sample", 100,
                                 "float64", cache_dir=tmp_path, progress=False)
    assert sampled == [1]  # the new module read the same file: the text is sampled once per model
    assert again[MODULES[0]].count == found[MODULES[0]].count


def test_an_unreachable_hub_corpus_falls_back_visibly_and_a_reachable_one_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(stats, "_hub_problem", lambda name: "OfflineModeIsEnabled: offline" if "wikitext" in name
                        else None)
    used, note = stats.published_corpus_or_fallback(Settings("wikitext"))
    assert used == Settings("model-sample")
    assert note.startswith("mom2_dataset: wikitext cannot be reached (OfflineModeIsEnabled: offline); the second-moment "
                           "statistics come from text sampled from the model itself instead")
    assert stats.published_corpus_or_fallback(Settings("wikipedia")) == (Settings("wikipedia"), None)
    assert stats.published_corpus_or_fallback(Settings("tinyworld")) == (Settings("tinyworld"), None)
    assert stats.published_corpus_or_fallback(object())[1] is None  # an editor without statistics


def test_the_hub_check_reads_the_offline_hub_as_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert stats._hub_problem("Salesforce/wikitext") is not None
    (tmp_path / "datasets" / "Salesforce___wikitext").mkdir(parents=True)  # a copy in the datasets cache is enough
    assert stats._hub_problem("Salesforce/wikitext") is None
