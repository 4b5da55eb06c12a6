"""Tiny randomly initialised models of every supported architecture, sharing the bundled
tokenizer, for tests that must run on CPU in seconds."""

from __future__ import annotations

import hashlib

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from pytest_wild.cases.case import Case
from pytest_wild.model.load import TINYWORLD_DIR
from pytest_wild.model.reading import reading
from pytest_wild.model.tokens import target_ids

SIZES = {
    "gpt2": dict(n_embd=32, n_layer=4, n_head=2, n_positions=128),
    "gptj": dict(n_embd=32, n_layer=4, n_head=2, n_positions=128, rotary_dim=8),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128),
    "llama": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=128),
    "mistral": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                    intermediate_size=64, max_position_embeddings=128),
    "qwen2": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64, max_position_embeddings=128),
}


def tokenizer():
    tok = AutoTokenizer.from_pretrained(TINYWORLD_DIR)
    tok.padding_side = "left"
    return tok


def tiny_model(model_type: str, seed: int = 0):
    tok = tokenizer()
    ids = dict(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), **ids, **SIZES[model_type])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.requires_grad_(False)
    return model, tok


def weights_hash(model) -> str:
    """sha256 of every weight's bytes: equal only for a bit-exact restore."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def target_logprob(model, tok, case: Case) -> float:
    """log p(target | prompt), teacher-forced: did an edit move the model toward the target?"""
    prompt = tok(case.prompt)["input_ids"]
    target = target_ids(tok, case.prompt, case.target)
    with torch.no_grad(), reading(model, torch.tensor([len(prompt) - 1])):  # where a memory looks
        logp = model(torch.tensor([prompt + target])).logits[0, :-1].log_softmax(-1)
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(target))


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def chat_model(directory):
    """A copy of the bundled model in `directory` whose tokenizer has a small chat template
    (`<system> …`, `<user> …`, then `<assistant>`); returns that tokenizer."""
    directory.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((TINYWORLD_DIR / name).read_bytes())
    tok = AutoTokenizer.from_pretrained(directory)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(directory)
    return tok
