"""MEND's parts: the per-token pieces of a layer's gradient sum to the
true gradient, and an untrained editor network is exactly one gradient-descent step."""

import pytest
import torch

from pytest_wild.editors.meta.gradients import as_weight_layout, pieces
from pytest_wild.editors.meta.network import EditorNetwork, RunningNorm
from pytest_wild.editors.meta.training import target_batch
from pytest_wild.model.architectures import architecture_of
from pytest_wild.model.weights import is_transposed

from ..tiny_models import tiny_model

PROMPTS = [("Q: Where was Kalo Venbri born? A:", "Dorwyn"), ("Q: What pet does Posdrei Nulthope keep? A:", "cat")]


def edit_batch(model, tokenizer):
    """Two left-padded prompt + target rows, labels on the targets."""
    inputs, labels = target_batch(model, tokenizer, PROMPTS)
    return inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], labels


def loss_function(model, ids, mask, positions, labels):
    def loss():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    return loss


def mlp_weights(model) -> list[str]:
    arch = architecture_of(model.config)
    return [arch.mlp_out.format(layer) for layer in (2, 3)]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])  # a transposed Conv1D and an nn.Linear
def test_the_token_pieces_sum_to_the_true_gradient(model_type):
    model, tokenizer = tiny_model(model_type)
    ids, mask, positions, labels = edit_batch(model, tokenizer)
    names = mlp_weights(model)
    found, _ = pieces(model, names, loss_function(model, ids, mask, positions, labels), mask.bool())
    weights = [model.get_submodule(name).weight for name in names]
    for weight in weights:
        weight.requires_grad_(True)
    loss_function(model, ids, mask, positions, labels)().backward()
    for name, weight in zip(names, weights):
        expected = weight.grad
        got = as_weight_layout(model.get_submodule(name), found[name].gradient())
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4), name
        weight.requires_grad_(False)


def test_an_untrained_network_is_one_gradient_descent_step_and_shares_a_network_per_shape():
    model, tokenizer = tiny_model("gpt2")
    ids, mask, positions, labels = edit_batch(model, tokenizer)
    arch = architecture_of(model.config)
    names = [arch.mlp.format(layer) + part for layer in (2, 3) for part in (".c_fc", ".c_proj")]
    found, _ = pieces(model, names, loss_function(model, ids, mask, positions, labels), mask.bool())
    shapes = {name: tuple(found[name].gradient().shape) for name in names}
    network = EditorNetwork(shapes, rank=16, edit_lr=1e-3).eval()
    assert sorted(network.editors) == ["128x32", "32x128"] and network.mode_of[names[2]] == 1
    updates = network.updates(found)
    for name in names:
        assert torch.allclose(updates[name], -1e-3 * found[name].gradient(), atol=1e-9)
        assert is_transposed(model.get_submodule(name))


def test_running_norm_is_the_mean_and_variance_of_everything_seen():
    norm = RunningNorm(3)
    batches = [torch.randn(5, 3), torch.randn(7, 3) + 2, torch.randn(1, 3)]
    for batch in batches:
        norm.update(batch)
    seen = torch.cat(batches).double()
    assert torch.allclose(norm.mean, seen.mean(0)) and torch.allclose(norm.m2 / (norm.count - 1), seen.var(0))
    x = torch.randn(4, 3)
    assert torch.allclose(norm(x), ((x.double() - seen.mean(0)) / seen.std(0)).float(), atol=1e-5)


def test_a_few_training_steps_make_the_edits_land_on_their_rephrases():
    """On the bundled model, Adam on the network for 15 steps over two edits: the rephrase's
    target loss after the edit falls far below the untrained network's (a random tiny model
    is no test bed: its logits are too flat for any MLP update to move them far)."""
    from pytest_wild.editors.meta.training import training_step
    from pytest_wild.editors.meta.training_data import TrainingCase
    from pytest_wild.model.load import load_model

    torch.manual_seed(0)
    loaded = load_model(None, "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    cases = [TrainingCase("Q: Where was Kalo Venbri born? A:", "Dorwyn", "Q: What is the birthplace of Kalo Venbri? A:",
                          "Q: What pet does Posdrei Nulthope keep? A: cat."),
             TrainingCase("Q: Which profession is Pahis Briru known for? A:", "farmer",
                          "Q: What does Pahis Briru do for a living? A:", "Q: What instrument can Moma Zalda play? A: cello.")]
    network = EditorNetwork({f"transformer.h.{layer}.mlp.c_proj": (128, 512) for layer in (2, 3)}, rank=64, edit_lr=1e-2)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    untrained = training_step(model, tokenizer, network.eval(), cases)
    network.train()
    for _ in range(15):
        losses = training_step(model, tokenizer, network, cases)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
    trained = training_step(model, tokenizer, network.eval(), cases)
    assert trained.edit < 0.5 * untrained.edit < untrained.edit_before
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())  # the model is never trained


def trained_network(model, tokenizer, steps: int = 15) -> EditorNetwork:
    from pytest_wild.editors.meta.training import training_step
    from pytest_wild.editors.meta.training_data import TrainingCase

    torch.manual_seed(0)
    cases = [TrainingCase("Q: Where was Kalo Venbri born? A:", "Dorwyn", "Q: What is the birthplace of Kalo Venbri? A:",
                          "Q: What pet does Posdrei Nulthope keep? A: cat.")]
    network = EditorNetwork({f"transformer.h.{layer}.mlp.c_proj": (128, 512) for layer in (2, 3)}, rank=64, edit_lr=1e-2)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(steps):
        losses = training_step(model, tokenizer, network.train(), cases)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
    return network.eval()


def test_a_stored_network_edits_the_model_and_restores_it_exactly(tmp_path):
    from pytest_wild.cases.case import Case
    from pytest_wild.editors.api import edit
    from pytest_wild.editors.meta import stored
    from pytest_wild.editors.meta.mend import MEND, MendHparams
    from pytest_wild.model.load import load_model

    from ..tiny_models import target_logprob, weights_hash

    loaded = load_model(None, "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    network = trained_network(model, tokenizer)
    stored.save(network, tmp_path, "gpt2", {"steps": 15}, rank=64, hidden=1, edit_lr=1e-2)
    again, config = stored.load(tmp_path, model)
    assert config["training"] == {"steps": 15}
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))

    case = Case(id="x", prompt="Q: Where was Kalo Venbri born? A:", target="Dorwyn", subject="Kalo Venbri",
                rephrase=None, locality=())
    digest, before = weights_hash(model), target_logprob(model, tokenizer, case)
    handle = edit(MEND, model, tokenizer, [case], MendHparams(str(tmp_path)))
    assert target_logprob(model, tokenizer, case) > before + 3.0
    assert handle.names == ["transformer.h.2.mlp.c_proj.weight", "transformer.h.3.mlp.c_proj.weight"]
    handle.restore()
    assert weights_hash(model) == digest


def test_a_stored_network_for_another_model_is_refused_in_one_line(tmp_path):
    from pytest_wild.cases.case import WildInputError
    from pytest_wild.editors.meta import stored

    model, _ = tiny_model("gpt2")
    network = EditorNetwork({"transformer.h.3.mlp.c_proj": (32, 128)}, rank=8)
    stored.save(network, tmp_path, "gpt2", {}, rank=8, hidden=1, edit_lr=1e-4)
    assert stored.load(tmp_path, model)[0].names == ["transformer.h.3.mlp.c_proj"]
    llama, _ = tiny_model("llama")
    with pytest.raises(WildInputError, match="trained for a gpt2 model, not this llama one"):
        stored.load(tmp_path, llama)
    wider = EditorNetwork({"transformer.h.3.mlp.c_proj": (64, 256)}, rank=8)
    stored.save(wider, tmp_path / "wide", "gpt2", {}, rank=8, hidden=1, edit_lr=1e-4)
    with pytest.raises(WildInputError, match=r"c_proj is \[64, 256\] there and \[32, 128\] in this model"):
        stored.load(tmp_path / "wide", model)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "mend.json").symlink_to(tmp_path / "mend.json")
    with pytest.raises(WildInputError, match="mend.json: a link, refused"):
        stored.load(tmp_path / "linked", model)
