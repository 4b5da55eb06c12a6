"""A GGUF checkpoint turned into a safetensors model directory by transformers' own GGUF
support (the `gguf` package reads the file, transformers unpacks every block into float32),
so pytest-wild carries no dequantizer of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..cases.case import WildInputError

NEEDED = ("gguf", "accelerate")  # transformers reads GGUF files with the first and loads them with the second


def check_conversion_packages(what: str) -> None:
    """Before anything is downloaded: the packages the conversion needs are installed."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise WildInputError(f"{what}: converting its weights needs the {' and '.join(missing)} "
                             f"package{'s' if len(missing) > 1 else ''} (pip install 'pytest-wild[smollm2]')")


def convert_gguf(gguf: Path, out: Path, what: str) -> None:
    """Write `gguf` as a float32 model with its tokenizer (and chat template) into `out`.
    `GgufConfig(dequantize=True)` asks transformers for a plain dense model, which it then
    no longer marks as quantized, so `save_pretrained` writes it as any other."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if getattr(model, "hf_quantizer", None) is not None:
            raise ValueError("transformers left the model marked as quantized")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except Exception as exc:  # a file from a package index: any failure is one line
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise WildInputError(f"{what}: transformers could not convert {gguf.name} ({reason})") from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
