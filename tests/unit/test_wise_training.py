"""WISE trains as EasyEdit's `WISE.edit` does (models/wise/WISE.py, utils.py), in the five places
where that moves the scores (docs/measured.md, "WISE trains as EasyEdit does"): the target
loss's divisor, the early stop's step, the positions of left-padded rows, the activation
distance over every column, and context templates decoded as one batch that stops at EOS."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from pytest_wild.cases.case import Case, Locality
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorState
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.editors.memory.side_memory import layer_output, token_distances
from pytest_wild.editors.memory.wise import (
    TEMPLATE_PREFIXES,
    above_the_edit,
    attach,
    context_templates,
    edit_batch,
    ft_loss,
    greedy_batch,
    settled,
    train_side,
)
from pytest_wild.model.architectures import architecture_of
from pytest_wild.model.batching import positions_of
from pytest_wild.model.load import TINYWORLD_DIR, load_model
from pytest_wild.model.tokens import target_ids
from pytest_wild.model.tracing import trace

TEMPLATES = ["{}", "Because of this, {}", "I {}"]


@pytest.fixture(scope="module")
def tinyworld():
    loaded = load_model(None, "cpu")
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def case() -> Case:
    row = json.loads((TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()[0])
    return Case(id=row["id"], prompt=row["prompt"], target=row["target"], subject=row["subject"],
                rephrase=row["rephrase"], locality=tuple(Locality(x["loc"], x["loc_ans"]) for x in row["locality"]))


def wise_hparams(model, **overrides):
    editor = get_editor("wise")
    return build_hparams(editor.hparams_type, editor.defaults(model.config, "tinyworld"), [("test", overrides)])


# --- 1. the target loss: summed over T tokens, divided by T + 1 ----------------------------------

def test_a_rows_target_loss_is_divided_by_its_target_tokens_plus_one():
    vocab = 4
    logits = torch.zeros(3, vocab)  # uniform: every target token costs ln 4
    rows = torch.tensor([0, 0, 1])  # row 0 has two target tokens, row 1 one, row 2 none
    loss = ft_loss(logits, torch.tensor([1, 2, 3]), rows, edit_rows=3)
    # (2 ln4 / 3 + ln4 / 2 + 0) / 3; dividing by T alone would give (ln4 + ln4 + 0) / 3
    assert loss.item() == pytest.approx((2 / 3 + 1 / 2) * math.log(vocab) / 3)


def test_edit_rows_are_labelled_on_their_target_tokens(tinyworld, case):
    model, tokenizer = tinyworld
    batch = edit_batch(model, tokenizer, case, TEMPLATES, "A week has seven days.")
    for row, template in enumerate(TEMPLATES):
        labels = batch["labels"][row]
        assert labels[labels != -100].tolist() == target_ids(tokenizer, template.format(case.prompt), case.target)
    assert (batch["labels"][-1] == -100).all()


def test_a_longest_unrelated_row_moves_the_labels_to_where_the_longest_prompt_ends(tinyworld, case):
    """EasyEdit masks each row's first P columns, P the longest templated prompt, and the padding:
    where the unrelated row is the longest row, the ends of the prompts are labelled too."""
    model, tokenizer = tinyworld
    unrelated = " ".join(["Water boils at one hundred degrees Celsius at sea level."] * 3)
    batch = edit_batch(model, tokenizer, case, TEMPLATES, unrelated)
    longest = max(len(tokenizer(t.format(case.prompt))["input_ids"]) for t in TEMPLATES)
    width = batch["input_ids"].shape[1]
    target = len(target_ids(tokenizer, case.prompt, case.target))
    assert width > longest + target  # the unrelated row is the longest
    for row in range(len(TEMPLATES)):
        labelled = (batch["labels"][row] != -100).nonzero().flatten().tolist()
        first_real = int(batch["attention_mask"][row].argmax())
        assert labelled == list(range(max(longest, first_real), width))
        assert len(labelled) > target


# --- 2. the early stop: on the two losses before the newest ---------------------------------------

def test_the_early_stop_reads_the_two_losses_before_the_newest():
    assert not settled([0.01, 0.01])  # settled, but the meter has not seen the second loss yet
    assert settled([0.01, 0.01, 5.0])  # the newest loss is not looked at
    assert not settled([5.0, 0.01, 0.01])
    assert not settled([0.5, 0.5, 0.5])  # the loss must also be at most 0.02


# --- 3. positions: the columns, a left-padded row shifted by its padding --------------------------

def test_a_left_padded_row_sits_at_positions_shifted_by_its_padding(tinyworld, case):
    model, tokenizer = tinyworld
    batch = edit_batch(model, tokenizer, case, TEMPLATES, "A week has seven days.")
    ids, mask, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    padded = int((mask == 0).sum(-1).argmax())
    padding = int((mask[padded] == 0).sum())
    assert padding > 0
    assert positions[padded].tolist() == list(range(ids.shape[1]))  # the first real token at `padding`
    # and the training's forward pass runs at those positions
    arch, hp = architecture_of(model.config), wise_hparams(model)
    module = model.get_submodule(hp.rewrite_module_tmp.format(hp.layers[0]))
    with torch.no_grad():
        hidden = above_the_edit(model, module, batch, hp.layers[0])()
        logits = model.get_output_embeddings()(model.get_submodule(arch.ln_f)(hidden))
        at_columns = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        from_first_token = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask)).logits
    real = mask[padded].bool()
    assert torch.allclose(logits[padded, real], at_columns[padded, real], atol=1e-4)
    assert not torch.allclose(logits[padded, real], from_first_token[padded, real], atol=1e-2)


# --- 4. the activation distance: over every column, padding included ------------------------------

def test_the_recorded_distance_averages_every_column_padding_included(tinyworld, case):
    model, tokenizer = tinyworld
    hp = wise_hparams(model, n_iter=1)
    state = EditorState()
    module, memory = attach(model, hp, state)
    try:
        generator = torch.Generator().manual_seed(0)
        side = module.weight.detach() + 0.05 * torch.randn(module.weight.shape, generator=generator)
        memory.side, memory.mask = side, torch.ones_like(side)
        batch = edit_batch(model, tokenizer, case, TEMPLATES, "A week has seven days.")
        _, in_scope, _, _ = train_side(model, module, memory, batch, hp)  # read before the one step
        name = hp.rewrite_module_tmp.format(hp.layers[0])
        x = trace(model, architecture_of(model.config), batch["input_ids"], batch["attention_mask"], inputs=[name],
                  position_ids=batch["position_ids"]).inputs[name]
        with torch.no_grad():
            distances = token_distances(memory.activation, module(x), layer_output(module, side, x))[:-1]
        mask = batch["attention_mask"][:-1]
        every_column = distances.mean(-1).mean().item()
        real_tokens = ((distances * mask).sum(-1) / mask.sum(-1)).mean().item()
        assert (mask == 0).any() and abs(every_column - real_tokens) > 1e-3
        assert in_scope == pytest.approx(every_column, rel=1e-5)
    finally:
        state.clear()


# --- 5. context templates: one left-padded batch, each row ending at EOS --------------------------

class ScriptedModel:
    """Next token: EOS after the token `yes`, else `word`; records each call's ids and positions."""

    def __init__(self, yes: int, word: int, eos: int, vocab: int) -> None:
        self.yes, self.word, self.eos, self.vocab = yes, word, eos, vocab
        self.device = torch.device("cpu")
        self.generation_config = SimpleNamespace(eos_token_id=eos)
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def __call__(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        self.calls.append((input_ids, position_ids))
        last = input_ids[:, -1]
        nxt = torch.where(last == self.yes, self.eos, self.word)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float()[:, None, :])


def test_templates_come_from_one_left_padded_batch_and_stop_at_eos(tinyworld):
    _, tokenizer = tinyworld
    ends = [tokenizer(prefix)["input_ids"][-1] for prefix in TEMPLATE_PREFIXES]
    yes = ends[TEMPLATE_PREFIXES.index("Yes")]
    word = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert ends.count(yes) == 1 and len(word) == 1
    model = ScriptedModel(yes, word[0], tokenizer.eos_token_id, len(tokenizer))
    templates = context_templates(model, tokenizer)
    assert len(templates) == 1 + 2 * len(TEMPLATE_PREFIXES) and templates[0] == "{}"
    assert templates[TEMPLATE_PREFIXES.index("Yes") + 1] == "Yes {}"  # ended at EOS, nothing after it
    assert templates[1] == "I" + " the" * 5 + " {}"
    assert templates[6] == "I" + " the" * 10 + " {}"
    ids, positions = model.calls[0]
    assert ids.shape[0] == len(TEMPLATE_PREFIXES)  # one batch, left-padded
    short = int((ids == tokenizer.pad_token_id).sum(-1).argmax())
    assert positions[short].tolist()[-1] == len(tokenizer(TEMPLATE_PREFIXES[short])["input_ids"]) - 1


def test_greedy_batch_keeps_decoding_the_rows_that_have_not_ended():
    model = ScriptedModel(yes=5, word=7, eos=0, vocab=10)
    rows = greedy_batch(model, [[5], [3, 4]], length=3, pad_id=0, ends={0})
    assert rows == [[5, 0], [3, 4, 7, 7, 7]]


def test_templates_are_those_of_generate_as_easyedit_calls_it(tinyworld):
    """On the bundled model: `generate` on the left-padded prefixes, pad = EOS, greedy."""
    model, tokenizer = tinyworld
    assert tokenizer.padding_side == "left"
    prefixes = tokenizer(list(TEMPLATE_PREFIXES), padding=True, return_tensors="pt")
    expected = ["{}"]
    for length in (5, 10):
        out = model.generate(**prefixes, max_new_tokens=length, num_beams=1, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
        expected += [text + " {}" for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
    assert context_templates(model, tokenizer) == expected
