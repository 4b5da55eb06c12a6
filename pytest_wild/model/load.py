"""Load a causal LM and its tokenizer: the bundled tinyworld model, a named model (converted
once into the cache, `prepared_models`), a local directory or a hub id, all through the same
`from_pretrained` path, safetensors only."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cases.case import WildInputError
from .devices import DEVICE

TINYWORLD_DIR = Path(__file__).parents[1] / "data" / "tinyworld"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """The model, its tokenizer and how to name it in reports."""

    model: object
    tokenizer: object
    spec: str
    profile: str
    device: str
    dtype: str


def resolve_model_spec(spec: str | None) -> tuple[str, str]:
    """(path or hub id, hyperparameter profile). The profile picks tuned editor defaults. A
    named model's path is its converted directory in the cache (`prepare_named` makes it)."""
    from .named import named_model

    if spec in (None, "", "tinyworld"):
        return str(TINYWORLD_DIR), "tinyworld"
    named = named_model(spec)
    if named is not None:
        from .prepared import model_directory

        return str(model_directory(named)), named.profile
    return (str(Path(spec).expanduser()) if spec.startswith("~") else spec), "default"


def resolve_device(device: str) -> str:
    import torch

    if not DEVICE.fullmatch(device):
        raise WildInputError(f"--wild-device: {device!r} is not cpu, cuda, cuda:N or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WildInputError(f"--wild-device: {device!r} asked for, but no CUDA device is available")
    return device


PARAMETERS_PER_THREAD = 25_000_000
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def choose_cpu_threads(model, device: str) -> int | None:
    """Set torch's CPU thread count for a model on the CPU, unless the user set one
    (OMP_NUM_THREADS or MKL_NUM_THREADS). Each process gets its share of the cores it may run
    on (xdist workers split them), and no more than one thread per 25M parameters: on a small
    model more threads only add synchronisation, which a busy machine turns into many-fold
    slowdowns (docs/wild.md, "Threads"). Returns the count set, or None when left alone."""
    import torch

    if device.split(":")[0] != "cpu" or any(os.environ.get(name) for name in THREAD_SETTINGS):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = sum(p.numel() for p in model.parameters())
    threads = max(1, min(cores // max(workers, 1), size // PARAMETERS_PER_THREAD))
    torch.set_num_threads(threads)
    return threads


def load_config(spec: str | None, trust_remote_code: bool = False):
    """(config, profile) without loading weights: enough to resolve hyperparameters early."""
    from transformers import AutoConfig

    path, profile = resolve_model_spec(spec)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), profile
    except Exception as exc:  # an untrusted config (or, when trusted, its own code): any failure is one line
        raise WildInputError(f"--wild-model: cannot load {spec or path!r} ({_first_line(exc)})") from None


def model_shape(config, trust_remote_code: bool = False):
    """The model's depth and module names, from a skeleton on the meta device (no weights
    read, no memory taken), for checking hyperparameters before anything is loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    from .architectures import ModelShape

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # any config value transformers cannot build a model from
        raise WildInputError(f"--wild-model: its config.json does not describe a model transformers can build "
                             f"({_first_line(exc)})") from None
    return ModelShape(config.num_hidden_layers, frozenset(name for name, _ in skeleton.named_modules()),
                      config.model_type, {name: tuple(p.shape) for name, p in skeleton.named_parameters()})


def prepare_named(spec: str | None, say: Callable[[str], None] | None = None) -> None:
    """A named model's directory converted if it is not yet, and verified against its
    manifest (`say` takes the progress lines; stderr by default)."""
    from .named import named_model

    named = named_model(spec)
    if named is not None:
        from .prepared import prepare, to_stderr

        prepare(named, say or to_stderr)


def check_model(spec: str | None, trust_remote_code: bool = False, say: Callable[[str], None] | None = None):
    """A local model directory, before any weights are read (on the xdist controller too,
    where a named model is converted before any worker starts): its files, its weights'
    headers against its config, its tokenizer (`model_files`). Returns (config, profile,
    shape) for the hyperparameter checks. Hub ids are checked when loaded."""
    from .directory import check_links, check_tokenizer, check_weights_match, weight_headers

    prepare_named(spec, say)
    path, profile = resolve_model_spec(spec)
    directory = Path(path)
    if directory.is_dir():
        check_links(directory)
        found = weight_headers(directory)
    config, profile = load_config(spec, trust_remote_code)
    shape = model_shape(config, trust_remote_code)
    if directory.is_dir():
        check_weights_match(directory, shape.parameters, found)
        check_tokenizer(_tokenizer(path, spec, trust_remote_code), getattr(config, "vocab_size", None), path)
        _check_generation_config(directory)
    return config, profile, shape


def _check_generation_config(directory: Path) -> None:
    """The directory's generation_config.json asks for greedy decoding (the engine checks
    the loaded model's again, for hub ids)."""
    from transformers import GenerationConfig

    from .tokens import check_greedy

    if not (directory / "generation_config.json").is_file():
        return
    try:
        generation_config = GenerationConfig.from_pretrained(directory)
    except Exception as exc:  # an untrusted file: any failure is one line
        raise WildInputError(f"--wild-model: {directory / 'generation_config.json'}: cannot read it "
                             f"({_first_line(exc)})") from None
    check_greedy(generation_config, "--wild-model")


def _tokenizer(path: str, spec: str | None, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # tokenizer files are untrusted input: any failure is one line
        raise WildInputError(f"--wild-model: cannot load the tokenizer of {spec or path!r} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_model(spec: str | None, device: str = "auto", dtype: str = "float32",
               trust_remote_code: bool = False, device_map: str | None = None) -> LoadedModel:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from .directory import check_tokenizer

    prepare_named(spec)
    path, profile = resolve_model_spec(spec)
    if dtype not in DTYPES:
        raise WildInputError(f"--wild-dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    group = [resolve_device(d) for d in device.split("+")]
    device = group[0]
    placement = _placement(group) if device_map == "auto" else {}
    transformers.utils.logging.disable_progress_bar()
    tokenizer = _tokenizer(path, spec, trust_remote_code)
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # its load report is a long table; the one line below says it
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=trust_remote_code,
            output_loading_info=True, **placement
        )
    except Exception as exc:  # weights are untrusted input: any failure is one line
        raise WildInputError(f"--wild-model: cannot load {spec or path!r} ({_first_line(exc)})") from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    random = sorted(info.get("missing_keys", [])) + sorted(str(k[0]) if isinstance(k, tuple) else str(k)
                                                          for k in info.get("mismatched_keys", []))
    if random:
        raise WildInputError(f"--wild-model: {spec or path!r}: {len(random)} weights of the model are missing from "
                             f"the checkpoint or of another shape ({', '.join(random[:3])}{', ...' if len(random) > 3 else ''})")
    check_tokenizer(tokenizer, model.get_input_embeddings().num_embeddings, spec or path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not placement:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model, tokenizer, spec or "tinyworld", profile, device, dtype)


def _placement(group: list[str]) -> dict:
    """from_pretrained arguments that spread the model over the worker's GPUs only."""
    import importlib.util

    import torch

    if importlib.util.find_spec("accelerate") is None:
        raise WildInputError("--wild-device-map auto: needs the accelerate package (pip install accelerate)")
    gpus = [int(d.split(":")[1]) if ":" in d else 0 for d in group if d.startswith("cuda")]
    if not gpus:
        raise WildInputError("--wild-device-map auto: needs at least one CUDA device")
    return {"device_map": "auto", "max_memory": {gpu: torch.cuda.mem_get_info(gpu)[0] for gpu in gpus}}


def fingerprint(model, samples_per_tensor: int = 4096) -> str:
    """A weights fingerprint that stays cheap for a 7B model: the config plus every tensor's
    name, shape, dtype and a fixed strided sample of its values."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::stride][:samples_per_tensor].to("cpu", torch.float32).contiguous()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
