"""Second-moment statistics of a module's input over a text corpus, as the locate-then-edit
editors (ROME, R-ROME, MEMIT, AlphaEdit) use them.

For each requested module m the statistic is the *uncentered* second moment
C_m = E[k kᵀ] = (Σ k kᵀ) / n of the vectors k entering m (the rewrite module's input, the
MLP "key"), over every non-padded token of the corpus sample. All requested modules are
measured in one pass over the corpus: forward hooks read the inputs, and the forward pass
is stopped as soon as the deepest requested module has been seen.

Corpora (`resolve_corpus`):

- ``tinyworld``: the text corpus bundled with the tinyworld model, one document a line;
- a path to a text file: one document a line (empty lines skipped);
- a path to a local dataset directory: read with ``datasets.load_dataset(path)``;
- ``wikitext`` (Salesforce/wikitext, wikitext-103-raw-v1), ``wikipedia`` (wikimedia/wikipedia,
  20231101.en) or ``name`` / ``name:config`` of any dataset with a ``text`` column;
- ``model-sample``: text sampled from the model itself (`sampled_corpus`), which a run uses
  instead of a hub corpus it cannot reach, saying so (`published_corpus_or_fallback`).

The sample is the first ``n_samples`` non-empty documents of a fixed pseudo-random permutation
(seed 1), each truncated to the model's maximum length.

Results are cached twice: in memory for the life of the process, and on disk as one
safetensors file per (model identity, module, corpus, sample count, dtype) under
``$PYTEST_WILD_CACHE/stats`` (default ``~/.cache/pytest-wild/stats``). Files are written
atomically and carry the token count, their own key and a checksum in their metadata; a file
that is truncated, corrupt or for another key is ignored and recomputed. A file lock per
(model, corpus, sample) group makes several processes (pytest-xdist workers) asking at the
same time compute the statistics once: the others wait and then load the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..cases.case import WildInputError
from ..cases.files import read_text
from ..storage import cache_root
from .sampled_corpus import DOCUMENTS, MODEL_SAMPLE, TOKENS, sampled_corpus_file
from .tracing import StopForward, input_of

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
PERMUTATION_SEED = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64}
HUB_CORPORA = {
    "wikitext": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en"),
}
# The cap the published code puts on document length for models with very long contexts.
LENGTH_CAP = {"qwen2": 4096}


class Memory(Protocol):
    """Where a process keeps statistics it has read (an editor cache, pytest_wild.editors.api)."""

    identity: str  # the model's weights fingerprint, as first seen

    def lookup(self, key: Any) -> Any | None: ...

    def put(self, key: Any, value: Any) -> None: ...


@dataclass(frozen=True)
class Corpus:
    """Where documents come from. `identity` names the corpus in cache keys."""

    identity: str
    kind: str  # "lines" (a text file) or "datasets"
    location: str  # file path, dataset directory or hub name
    config: str | None = None
    split: str = "train"
    text_field: str = "text"


@dataclass(frozen=True)
class SecondMoment:
    """C = E[k kᵀ] over `count` token positions, on the CPU in the accumulation dtype."""

    matrix: torch.Tensor
    count: int
    key: str


def default_cache_dir() -> Path:
    return cache_root() / "stats"


def resolve_corpus(spec: str) -> Corpus:
    """A `mom2_dataset` value -> the corpus it names (see the module docstring)."""
    from .load import TINYWORLD_DIR

    if spec == "tinyworld":
        path = TINYWORLD_DIR / "corpus.txt"
        return Corpus(f"tinyworld-{_file_digest(path)}", "lines", str(path))
    if spec == MODEL_SAMPLE:  # its file is made per model, where the model is known (second_moments)
        return Corpus(f"{MODEL_SAMPLE}:{DOCUMENTS}x{TOKENS}", "sampled", "")
    if spec in HUB_CORPORA:
        name, config = HUB_CORPORA[spec]
        return Corpus(f"hf:{name}:{config}", "datasets", name, config)
    path = Path(spec).expanduser()
    if path.is_file():
        return Corpus(f"file:{path.name}:{_file_digest(path)}", "lines", str(path.resolve()))
    if path.is_dir():
        return Corpus(f"dir:{path.name}:{_dir_digest(path)}", "datasets", str(path.resolve()))
    if re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", spec):
        name, _, config = spec.partition(":")
        return Corpus(f"hf:{name}:{config}", "datasets", name, config or None)
    raise WildInputError(
        f"mom2_dataset: {spec!r} is neither tinyworld, wikitext, wikipedia, a text file, a dataset "
        "directory nor a hub dataset name (owner/name[:config])"
    )


def max_length_of(model, tokenizer=None) -> int:
    """The document truncation length: the model's context size (Mistral: its sliding window;
    Qwen2: at most 4096, as the published code caps it)."""
    config = model.config
    found = [getattr(config, k, None) for k in ("n_positions", "max_position_embeddings", "n_ctx")]
    length = next((int(v) for v in found if isinstance(v, int) and v > 0), None)
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window > 0:
        length = min(length or window, window)
    cap = LENGTH_CAP.get(config.model_type)
    if cap:
        length = min(length or cap, cap)
    if length is None:
        limit = getattr(tokenizer, "model_max_length", None)
        length = int(limit) if isinstance(limit, int) and limit < 1_000_000 else 2048
    return length


def second_moments(model, tokenizer, modules: list[str], corpus: str | Corpus = "tinyworld",
                   n_samples: int = 100_000, dtype: str = "float32", *, cache_dir: str | Path | None = None,
                   max_length: int | None = None, batch_tokens: int | None = None,
                   progress: bool = True, memory: Memory | None = None) -> dict[str, SecondMoment]:
    """C = E[k kᵀ] of each named module's input over the corpus sample, computed once: from
    `memory` (the model's editor cache, which also fixes the model's identity as first seen,
    so a sequence of edits keeps the statistics of the unedited model), else from the disk
    cache, else in one pass for all the modules still missing (under a lock shared with other
    processes)."""
    if dtype not in DTYPES:
        raise WildInputError(f"mom2_dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    corpus = resolve_corpus(corpus) if isinstance(corpus, str) else corpus
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    max_length = max_length or max_length_of(model, tokenizer)
    if memory is None:
        from .load import fingerprint

        identity = fingerprint(model)
    else:
        identity = memory.identity
    modules = list(dict.fromkeys(modules))
    known = dict(model.named_modules())
    for name in modules:
        if name not in known:
            raise WildInputError(f"rewrite_module_tmp: the model has no module {name!r}")

    keys = {name: _key(identity, name, corpus, n_samples, dtype, max_length) for name in modules}
    shapes = {name: _input_dim(known[name]) for name in modules}
    found = {}
    if memory is not None:
        found = {name: memory.lookup(("second moment", keys[name])) for name in modules}
        found = {name: moment for name, moment in found.items() if moment is not None}

    def from_disk() -> list[str]:
        for name in [name for name in modules if name not in found]:
            loaded = _load(_path(cache_dir, identity, name, keys[name]), keys[name], shapes[name], DTYPES[dtype])
            if loaded is not None:
                found[name] = loaded
        return [name for name in modules if name not in found]

    missing = from_disk()
    if missing:
        group = _digest(json.dumps([identity, corpus.identity, n_samples, dtype, max_length]))[:16]
        with _lock(cache_dir / identity / f"{group}.lock"):
            missing = from_disk()  # another process may have finished while this one waited
            if missing and corpus.kind == "sampled":
                location = sampled_corpus_file(model, tokenizer, cache_dir / identity, DOCUMENTS, TOKENS)
                corpus = Corpus(corpus.identity, "lines", str(location))
            if missing:
                sums, count = _accumulate(model, tokenizer, missing, corpus, n_samples, DTYPES[dtype],
                                          max_length, batch_tokens, progress)
                for name in missing:
                    moment = SecondMoment((sums[name] / max(count, 1)).cpu(), count, keys[name])
                    _save(_path(cache_dir, identity, name, keys[name]), moment)
                    found[name] = moment
    if memory is not None:
        for name in modules:
            memory.put(("second moment", keys[name]), found[name])
    return {name: found[name] for name in modules}


def published_corpus_or_fallback(hp) -> tuple[Any, str | None]:
    """Hyperparameters whose `mom2_dataset` is a hub corpus that cannot be reached (no
    network, no copy in the datasets cache) get `model-sample` instead, with the line that
    says so (shown in the header; the report's hyperparameters name the corpus used).
    Anything else is returned as it is."""
    from dataclasses import replace

    spec = getattr(hp, "mom2_dataset", None)
    if not isinstance(spec, str) or spec == MODEL_SAMPLE:
        return hp, None
    try:
        corpus = resolve_corpus(spec)
    except WildInputError:
        return hp, None  # refused where the statistics are computed, as before
    if corpus.kind != "datasets" or Path(corpus.location).is_dir():
        return hp, None
    problem = _hub_problem(corpus.location)
    if problem is None:
        return hp, None
    return replace(hp, mom2_dataset=MODEL_SAMPLE), (
        f"mom2_dataset: {spec} cannot be reached ({problem}); the second-moment statistics come from text sampled "
        f"from the model itself instead (mom2_dataset: {MODEL_SAMPLE}, {DOCUMENTS} documents of {TOKENS} tokens, "
        "computed once and cached), not from the published corpus")


def _hub_problem(name: str) -> str | None:
    """Why the hub dataset `name` cannot be read: not in the datasets cache, and the hub does
    not answer (one request, no retries: an offline machine learns it in seconds)."""
    from datasets import config as datasets_config
    from huggingface_hub import HfApi

    if (Path(datasets_config.HF_DATASETS_CACHE) / name.replace("/", "___")).is_dir():
        return None
    try:
        HfApi().dataset_info(name, timeout=10)
    except Exception as exc:  # offline mode, no network, no such dataset: each is a reason to fall back
        text = str(exc).strip()
        return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    return None


# ---------------------------------------------------------------------------- internals

def _key(identity: str, module: str, corpus: Corpus, n: int, dtype: str, max_length: int) -> str:
    return json.dumps({"format": FORMAT_VERSION, "model": identity, "module": module, "corpus": corpus.identity,
                       "n_samples": n, "dtype": dtype, "max_length": max_length}, sort_keys=True)


def _path(cache_dir: Path, identity: str, module: str, key: str) -> Path:
    spec = json.loads(key)
    corpus = re.sub(r"[^\w.-]+", "_", spec["corpus"])[:60]
    name = f"{module}.{corpus}.{spec['n_samples']}.{spec['dtype']}.{_digest(key)[:8]}.safetensors"
    return cache_dir / identity / name


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _file_digest(path: Path) -> str:
    """The content hash of a corpus file, computed once per path, size and modification time."""
    info = path.stat()
    return _content_digest(str(path.resolve()), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _dir_digest(path: Path) -> str:
    """Names, sizes and modification times of a dataset directory's files (cheap, not contents)."""
    entries = sorted((str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime))
                     for p in path.rglob("*") if p.is_file())
    return _digest(json.dumps(entries))[:16]


def _tensor_digest(tensor: torch.Tensor) -> str:
    return _digest(tensor.contiguous().view(torch.uint8).numpy().tobytes())


def _input_dim(module) -> int | None:
    """The width of the vectors entering a linear module (nn.Linear, or GPT-2's Conv1D)."""
    width = getattr(module, "in_features", None) or getattr(module, "nx", None)
    return width if isinstance(width, int) else None


@contextmanager
def _lock(path: Path):
    """A file lock shared with other processes; none where the cache cannot be written (a
    read-only shared cache): then each process computes what it misses, as it must anyway."""
    from filelock import FileLock

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _save(path: Path, moment: SecondMoment) -> None:
    """Write atomically; a cache that cannot be written costs a recomputation next run (and a
    warning), never the run."""
    from safetensors.torch import save_file

    matrix = moment.matrix.contiguous()
    metadata = {"format": FORMAT_VERSION, "key": moment.key, "count": str(moment.count),
                "sha256": _tensor_digest(matrix)}
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"mom2": matrix}, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("pytest-wild: cannot save %s (%s); it is recomputed next run", path, exc.strerror or exc)
    finally:
        temporary.unlink(missing_ok=True)


def _load(path: Path, key: str, width: int | None, dtype: torch.dtype) -> SecondMoment | None:
    """The cached statistic, or None when the file is absent, unreadable, for another key,
    fails its checksum or is not a `width` x `width` matrix of `dtype` (then it is recomputed
    and overwritten). The checksum catches damage, not forgery: a cache restored from
    elsewhere is checked against the model as well."""
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            matrix = handle.get_tensor("mom2")
        if metadata.get("key") != key or metadata.get("format") != FORMAT_VERSION:
            raise ValueError("the file is for another key")
        if _tensor_digest(matrix) != metadata.get("sha256"):
            raise ValueError("checksum mismatch")
        count = int(metadata["count"])
        if count <= 0 or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError("malformed statistic")
        if (width is not None and matrix.shape[0] != width) or matrix.dtype != dtype:
            raise ValueError(f"a {tuple(matrix.shape)} {matrix.dtype} matrix, the module takes {width} ({dtype})")
        if not torch.isfinite(matrix).all():
            raise ValueError("not finite")
        return SecondMoment(matrix, count, key)
    except Exception as exc:  # a truncated or corrupt file: never used
        log.warning("pytest-wild: ignoring the statistics cache file %s (%s); recomputing", path, exc)
        return None


def _documents(corpus: Corpus, n_samples: int) -> list[str]:
    """The first `n_samples` non-empty documents in a fixed pseudo-random order."""
    import numpy as np

    if corpus.kind == "lines":
        lines = read_text(Path(corpus.location), "mom2_dataset corpus").splitlines()
        docs = [line.strip() for line in lines if line.strip()]
        order = np.random.default_rng(PERMUTATION_SEED).permutation(len(docs))
        return [docs[i] for i in order[:n_samples]]
    import datasets

    try:
        if Path(corpus.location).is_dir():
            data = datasets.load_dataset(corpus.location, split=corpus.split)
        else:
            data = datasets.load_dataset(corpus.location, corpus.config, split=corpus.split)
    except Exception as exc:
        raise WildInputError(f"mom2_dataset: cannot load {corpus.identity} ({type(exc).__name__}: {exc})") from None
    if corpus.text_field not in data.column_names:
        raise WildInputError(f"mom2_dataset: {corpus.identity} has no {corpus.text_field!r} column")
    order = np.random.default_rng(PERMUTATION_SEED).permutation(len(data))
    docs: list[str] = []
    chunk = max(1000, n_samples)
    for start in range(0, len(order), chunk):  # read in chunks, skipping empty rows (wikitext has many)
        rows = data.select(order[start : start + chunk].tolist())[corpus.text_field]
        docs += [text.strip() for text in rows if text and text.strip()]
        if len(docs) >= n_samples:
            break
    return docs[:n_samples]


def _batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Document indices grouped longest first so that padded batches stay near `budget` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for index in order:
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def _accumulate(model, tokenizer, modules: list[str], corpus: Corpus, n_samples: int, dtype: torch.dtype,
                max_length: int, batch_tokens: int | None, progress: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Σ k kᵀ for each module's input and the number of token positions, in one pass."""
    from tqdm.auto import tqdm

    docs = _documents(corpus, n_samples)
    if not docs:
        raise WildInputError(f"mom2_dataset: {corpus.identity} has no non-empty documents")
    encoded = tokenizer(docs, truncation=True, max_length=max_length)["input_ids"]
    encoded = [ids for ids in encoded if ids]
    device = next(model.parameters()).device
    named = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    state = {"mask": None, "seen": set()}

    def hook(name):
        def record(module, args, kwargs, output):
            x = input_of(args, kwargs)
            rows = x[state["mask"]].to(dtype)
            if name not in sums:
                sums[name] = torch.zeros(rows.shape[-1], rows.shape[-1], dtype=dtype, device=rows.device)
            sums[name].addmm_(rows.T, rows)
            state["seen"].add(name)
            if len(state["seen"]) == len(modules):
                raise StopForward
        return record

    handles = [named[name].register_forward_hook(hook(name), with_kwargs=True) for name in modules]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    budget = batch_tokens or max(3 * max_length, 8192)
    count = 0
    bar = tqdm(total=len(encoded), desc=f"pytest-wild: second moments ({len(modules)} modules)", unit="doc",
               disable=not progress, leave=False)
    try:
        for batch in _batches([len(ids) for ids in encoded], budget):
            longest = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.bool)
            for row, index in enumerate(batch):  # right padding: positions count from 0
                ids[row, : len(encoded[index])] = torch.tensor(encoded[index])
                mask[row, : len(encoded[index])] = True
            state["mask"], state["seen"] = mask.to(device), set()
            try:
                model(input_ids=ids.to(device), attention_mask=mask.long().to(device), use_cache=False)
            except StopForward:
                pass
            count += int(mask.sum())
            bar.update(len(batch))
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
    return sums, count
