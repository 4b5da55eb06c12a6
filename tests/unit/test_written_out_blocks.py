"""The value search's written-out blocks (pytest_wild.editors.locate.blocks): the modules' numbers
where they are used, and the modules themselves wherever the code might differ."""

import functools

import pytest
import torch

from pytest_wild.cases.case import Case
from pytest_wild.editors.api import EditorCache
from pytest_wild.editors.locate.requests import prepare
from pytest_wild.editors.locate.templates import context_templates
from pytest_wild.editors.locate.values import ValueProblem
from pytest_wild.model.architectures import architecture_of

from ..tiny_models import SIZES, tiny_model

CASES = [Case(id="a", prompt="The home town of Kalo Venbri", target="Dorwyn Hill", subject="Kalo Venbri",
              rephrase=None, locality=()),
         Case(id="b", prompt="Q: Where was Moma Zalda born? A:", target="Tarn", subject="Moma Zalda",
              rephrase=None, locality=())]
WRITTEN_OUT = {"gpt2", "gpt_neox", "llama", "mistral", "qwen2"}  # GPT-J keeps its modules (no SDPA)


def problem(model, tok, at: str, reuse_prefix: bool = True, cache: EditorCache | None = None) -> ValueProblem:
    arch = architecture_of(model.config)
    templates = context_templates(model, tok, [[5, 2]], cache)
    requests = [prepare(tok, case, templates, [range(len(templates))]) for case in CASES]
    return ValueProblem(model, arch, requests, layer=1, at=at, loss_layer=3, pad=tok.eos_token_id,
                        reuse_prefix=reuse_prefix, cache=cache)


def loss_and_gradient(found: ValueProblem, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    delta = delta.clone().requires_grad_(True)
    with torch.enable_grad():
        loss, _ = found.losses(delta, kl_factor=0.0625, weight_decay=0.5)
        loss.sum().backward()
    return loss.detach(), delta.grad


def assert_modules_agree(found: ValueProblem, seed: int, tolerance: float) -> None:
    """The search's loss and gradient at a random δ, written out, equal the modules' ones."""
    delta = torch.randn(len(CASES), found.model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    loss, grad = loss_and_gradient(found, delta)
    found.written_out = None  # the modules, as the search runs them otherwise
    expected_loss, expected_grad = loss_and_gradient(found, delta)
    torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance * float(expected_grad.abs().max()))


@pytest.mark.parametrize("model_type", sorted(SIZES))
@pytest.mark.parametrize("at", ["mlp", "block"])
@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_written_out_blocks_give_the_modules_losses_and_gradients(model_type, at, reuse_prefix, dtype):
    model, tok = tiny_model(model_type)
    model.to(dtype)
    found = problem(model, tok, at, reuse_prefix)
    assert (found.written_out is not None) == (model_type in WRITTEN_OUT)
    # the same ops in the same order: equal up to float32 rounding in float32, and in bfloat16
    # (the search's δ and loss are float32 there) within a bfloat16 rounding of the hidden states
    assert_modules_agree(found, seed=1, tolerance=1e-5 if dtype == torch.float32 else 1e-2)


def test_written_out_neox_blocks_follow_the_sequential_residual_too():
    """Pythia adds attention and MLP side by side; NeoX models with use_parallel_residual off
    feed the attention's sum to the MLP. The tiny model has the first and a partial rotary
    embedding (a quarter of each head); here every layer is switched to the second."""
    model, tok = tiny_model("gpt_neox")
    for layer in model.gpt_neox.layers:
        layer.use_parallel_residual = False
    found = problem(model, tok, "block")
    assert found.written_out is not None
    assert_modules_agree(found, seed=3, tolerance=1e-5)


def test_written_out_blocks_stand_aside_for_hooks_training_and_other_attention():
    model, tok = tiny_model("llama")
    assert problem(model, tok, "block").written_out is not None
    handle = model.get_submodule("model.layers.3.mlp").register_forward_hook(lambda m, a, out: out)
    assert problem(model, tok, "block").written_out is None
    handle.remove()
    model.train()
    assert problem(model, tok, "block").written_out is None
    model.eval()
    model.set_attn_implementation("eager")
    assert problem(model, tok, "block").written_out is None


def test_written_out_blocks_are_dropped_when_they_miss_what_the_block_does():
    """A block whose forward does something the written-out code does not (here: a scaled
    output) fails the check against the clean pass, and the search runs the modules. The
    answer is kept in the model's editor cache, per block range, until the cache is cleared."""
    model, tok = tiny_model("gpt2")
    cache = EditorCache(model)
    block = model.get_submodule("transformer.h.3")
    forward = block.forward
    block.forward = functools.wraps(forward)(lambda *args, **kwargs: forward(*args, **kwargs) * 1.01)
    assert problem(model, tok, "block", cache=cache).written_out is None
    block.forward = forward
    assert problem(model, tok, "block", cache=cache).written_out is None
    assert problem(model, tok, "block").written_out is not None  # without the cache: checked again
    cache.clear()
    assert problem(model, tok, "block", cache=cache).written_out is not None
