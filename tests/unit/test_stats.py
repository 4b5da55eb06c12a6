import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from pytest_wild.cases.case import WildInputError
from pytest_wild.editors.api import EditorCache
from pytest_wild.model import stats

from ..tiny_models import tiny_model

DOCS = [
    "Kalo Venbri was born in Dorwyn.",
    "Q: Where was Kalo Venbri born? A: Dorwyn.",
    "",
    "Moma Zalda plays the cello and speaks Orimic at home with her family every evening.",
    "Pahis Briru is a blacksmith.",
    "Q: What pet does Posdrei Nulthope keep? A: cat.",
    "The river pilot of Caddow keeps a parrot called Vendri, who speaks three languages.",
    "Brabe Vindepon works for Copperline.",
] * 3
MODULES = ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return path


def direct_moment(model, tok, module: str, docs: list[str]) -> torch.Tensor:
    """E[k kᵀ] over every token of every document, one document at a time (no padding)."""
    total, count, found = 0, 0, {}
    hook = model.get_submodule(module).register_forward_hook(lambda m, args, out: found.update(x=args[0]))
    try:
        for doc in docs:
            ids = tok(doc, return_tensors="pt")["input_ids"]
            model(input_ids=ids)
            rows = found["x"][0].double()
            total = total + rows.T @ rows
            count += rows.shape[0]
    finally:
        hook.remove()
    return total / count


def count_computations(monkeypatch) -> list:
    calls = []
    original = stats._accumulate

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(stats, "_accumulate", counted)
    return calls


def test_second_moment_is_the_uncentered_mean_over_unpadded_tokens_of_all_layers_in_one_pass(tmp_path, corpus,
                                                                                              monkeypatch):
    model, tok = tiny_model("gpt2")
    calls = count_computations(monkeypatch)
    deeper = []
    model.transformer.h[2].register_forward_hook(lambda *a: deeper.append(1))  # never reached
    found = stats.second_moments(model, tok, MODULES, str(corpus), 1000, "float64", cache_dir=tmp_path / "c",
                                 progress=False)
    assert calls == [1] and deeper == []
    docs = [d for d in DOCS if d]
    n_tokens = sum(len(tok(d)["input_ids"]) for d in docs)
    for name in MODULES:
        moment = found[name]
        assert moment.matrix.dtype == torch.float64 and moment.count == n_tokens
        torch.testing.assert_close(moment.matrix, direct_moment(model, tok, name, docs), rtol=1e-6, atol=1e-8)


def test_float32_accumulation_and_sample_size(tmp_path, corpus):
    model, tok = tiny_model("llama")
    name = "model.layers.1.mlp.down_proj"
    found = stats.second_moments(model, tok, [name], str(corpus), 5, "float32", cache_dir=tmp_path, progress=False)
    moment = found[name]
    assert moment.matrix.dtype == torch.float32 and moment.matrix.shape == (64, 64)
    sample = stats._documents(stats.resolve_corpus(str(corpus)), 5)
    assert len(sample) == 5 and moment.count == sum(len(tok(d)["input_ids"]) for d in sample)
    torch.testing.assert_close(moment.matrix.double(), direct_moment(model, tok, name, sample), rtol=1e-4, atol=1e-6)


def test_memory_then_disk_cache_give_the_same_tensors_without_recomputing(tmp_path, corpus, monkeypatch):
    model, tok = tiny_model("gpt2")
    calls = count_computations(monkeypatch)
    memory = EditorCache(model)
    first = stats.second_moments(model, tok, MODULES, str(corpus), 100, "float32", cache_dir=tmp_path,
                                 progress=False, memory=memory)
    again = stats.second_moments(model, tok, MODULES[:1], str(corpus), 100, "float32", cache_dir=tmp_path,
                                 progress=False, memory=memory)
    assert again[MODULES[0]] is first[MODULES[0]]
    loaded = stats.second_moments(model, tok, MODULES, str(corpus), 100, "float32", cache_dir=tmp_path,
                                  progress=False)
    assert calls == [1]
    for name in MODULES:
        assert torch.equal(loaded[name].matrix, first[name].matrix) and loaded[name].count == first[name].count
    files = sorted(p.name for p in tmp_path.rglob("*.safetensors"))
    assert len(files) == 2 and all(name in " ".join(files) for name in MODULES)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_new_layer_is_computed_alone_and_other_keys_get_other_files(tmp_path, corpus, monkeypatch):
    model, tok = tiny_model("gpt2")
    stats.second_moments(model, tok, MODULES[:1], str(corpus), 100, "float32", cache_dir=tmp_path, progress=False)
    seen = []
    original = stats._accumulate
    monkeypatch.setattr(stats, "_accumulate",
                        lambda m, t, modules, *a: seen.append(modules) or original(m, t, modules, *a))
    stats.second_moments(model, tok, MODULES, str(corpus), 100, "float32", cache_dir=tmp_path, progress=False)
    stats.second_moments(model, tok, MODULES, str(corpus), 7, "float64", cache_dir=tmp_path, progress=False)
    assert seen == [MODULES[1:], MODULES]
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


@pytest.mark.parametrize("damage", ["truncate", "flip", "other-key", "forged-shape", "forged-dtype"])
def test_a_damaged_cache_file_is_never_used_and_is_recomputed(tmp_path, corpus, monkeypatch, damage):
    model, tok = tiny_model("gpt2")
    name = MODULES[0]
    first = stats.second_moments(model, tok, [name], str(corpus), 100, "float32", cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.rglob("*.safetensors")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, one value changed: only the checksum can tell
        path.write_bytes(data[:-8] + bytes(255 - b for b in data[-8:]))
    elif damage.startswith("forged"):  # key and checksum right, matrix not the module's
        from safetensors.torch import save_file

        width = first[name].matrix.shape[0]
        forged = torch.eye(width // 2) if damage == "forged-shape" else torch.eye(width, dtype=torch.float64)
        save_file({"mom2": forged}, str(path), metadata={"format": stats.FORMAT_VERSION, "key": first[name].key,
                                                         "count": "7", "sha256": stats._tensor_digest(forged)})
    else:
        other = stats.second_moments(model, tok, [name], str(corpus), 3, "float32", cache_dir=tmp_path,
                                     progress=False)
        assert not torch.equal(other[name].matrix, first[name].matrix)
        (other_path,) = [p for p in tmp_path.rglob("*.safetensors") if p != path]
        path.write_bytes(other_path.read_bytes())
    calls = count_computations(monkeypatch)
    again = stats.second_moments(model, tok, [name], str(corpus), 100, "float32", cache_dir=tmp_path, progress=False)
    assert calls == [1]
    assert torch.equal(again[name].matrix, first[name].matrix)
    assert stats._load(path, first[name].key, first[name].matrix.shape[0], torch.float32) is not None  # rewritten whole


def _worker(cache_dir: str, corpus: str, counter: str, out: str, barrier) -> None:
    """One of two processes asking for the same statistics at the same moment."""
    torch.set_num_threads(1)
    model, tok = tiny_model("gpt2")
    original = stats._accumulate

    def slow(*args, **kwargs):
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough for the other process to reach the lock
        return original(*args, **kwargs)

    stats._accumulate = slow
    barrier.wait()
    found = stats.second_moments(model, tok, MODULES, corpus, 100, "float32", cache_dir=cache_dir, progress=False)
    torch.save({name: m.matrix for name, m in found.items()}, out)


def test_two_processes_asking_at_once_compute_once_and_get_identical_tensors(tmp_path, corpus):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    counter = tmp_path / "computations.txt"
    outs = [tmp_path / f"out{i}.pt" for i in range(2)]
    workers = [context.Process(target=_worker, args=(str(tmp_path / "cache"), str(corpus), str(counter), str(out),
                                                     barrier)) for out in outs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert len(counter.read_text().split()) == 1
    first, second = (torch.load(out) for out in outs)
    assert first.keys() == second.keys() == set(MODULES)
    assert all(torch.equal(first[name], second[name]) for name in MODULES)


def test_a_local_dataset_directory_reads_like_the_text_file(tmp_path, corpus):
    import json

    pytest.importorskip("datasets")

    directory = tmp_path / "dataset"
    directory.mkdir()
    with open(directory / "train.jsonl", "w") as handle:
        for doc in DOCS:
            handle.write(json.dumps({"text": doc}) + "\n")
    model, tok = tiny_model("gpt2")
    from_dir = stats.second_moments(model, tok, MODULES[:1], str(directory), 100, "float64", cache_dir=tmp_path,
                                    progress=False)
    from_file = stats.second_moments(model, tok, MODULES[:1], str(corpus), 100, "float64", cache_dir=tmp_path,
                                     progress=False)
    assert from_dir[MODULES[0]].key != from_file[MODULES[0]].key
    assert from_dir[MODULES[0]].count == from_file[MODULES[0]].count
    torch.testing.assert_close(from_dir[MODULES[0]].matrix, from_file[MODULES[0]].matrix)


def test_corpus_names_cache_location_and_bad_input(tmp_path, monkeypatch):
    assert stats.resolve_corpus("tinyworld").identity.startswith("tinyworld-")
    assert stats.resolve_corpus("wikitext").location == "Salesforce/wikitext"
    assert stats.resolve_corpus("wikitext").config == "wikitext-103-raw-v1"
    assert stats.resolve_corpus("wikipedia").config == "20231101.en"
    assert stats.resolve_corpus("owner/name:cfg").config == "cfg"
    with pytest.raises(WildInputError, match="mom2_dataset"):
        stats.resolve_corpus("no such corpus")
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(tmp_path / "root"))
    assert stats.default_cache_dir() == tmp_path / "root" / "stats"
    model, tok = tiny_model("gpt2")
    with pytest.raises(WildInputError, match="mom2_dtype"):
        stats.second_moments(model, tok, MODULES, "tinyworld", 10, "float16")
    with pytest.raises(WildInputError, match="no module"):
        stats.second_moments(model, tok, ["transformer.h.9.mlp.c_proj"], "tinyworld", 10, "float32")
    found = stats.second_moments(model, tok, MODULES[:1], "tinyworld", 10, "float32", progress=False)
    assert found[MODULES[0]].count > 0 and list((tmp_path / "root" / "stats").rglob("*.safetensors"))
