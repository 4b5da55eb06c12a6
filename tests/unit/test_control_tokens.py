"""Answers are decoded without a chat template's control tokens, in every mode: a chat model
ends its turn with `<|im_end|>`, and with a fixed length it goes on into the template's next
turn (`<|im_start|>user`), none of which is its answer. The model here is a tiny Llama whose
greedy answer is written into its weights (each token's embedding points at the next token
of a fixed chain), with the bundled tokenizer given ChatML's control tokens and template."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from pytest_wild.cases.contexts import make_context
from pytest_wild.generation.engine import Engine

from ..tiny_models import tokenizer

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def chat_tokenizer():
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    return tok


def chain_model(tok, chain: list[int]):
    """A Llama whose greedy continuation of any prompt ending in chain[0] is chain[1:]: every
    block adds nothing (its output projections are zero), so the last position's hidden state
    is its token's embedding, which the unembedding maps to the next token of the chain."""
    assert len(set(chain)) == len(chain)
    config = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                  max_position_embeddings=128, tie_word_embeddings=False,
                                  bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embedding, unembedding = model.model.embed_tokens.weight, model.lm_head.weight
        embedding.zero_()
        unembedding.zero_()
        for slot, (token, following) in enumerate(zip(chain, chain[1:])):
            embedding[token, slot] = 1.0
            unembedding[following, slot] = 10.0
    model.requires_grad_(False)
    return model


def test_no_mode_answers_with_the_templates_control_tokens():
    tok = chat_tokenizer()
    context = make_context("What is the capital of France?", "chat", tok)
    prompt_ids = tok(context)["input_ids"]
    answer = tok(" Paris", add_special_tokens=False)["input_ids"]
    control = tok.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
    chain = [prompt_ids[-1], *answer, control[0], control[1], *tok("user", add_special_tokens=False)["input_ids"]]
    engine = Engine(chain_model(tok, chain), tok)

    fixed = engine.generate_fixed([context], [len(chain) - 1])[0]
    assert tok.decode(fixed.token_ids) == " Paris<|im_end|><|im_start|>user"  # what the model said, ids kept whole
    assert fixed.text == " Paris"
    free = engine.generate([context])[0]
    assert free.text == " Paris" and free.token_ids == (*answer, control[0])
