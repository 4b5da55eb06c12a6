"""State has owners: the per-model `EditorCache` and the per-sequence `EditorState` are the
only places editors keep anything between edits, so two models or two sequences in one
process never see each other's entries, and the cache keeps to its bound."""

import copy

import pytest
import torch

from pytest_wild.cases.case import Case
from pytest_wild.editors.api import EditHandle, EditorCache, EditorState, edit, tensor_bytes
from pytest_wild.editors.locate.alphaedit import PreservedKeys

from ..tiny_models import tiny_model, weights_hash
from .test_locate_editors import hparams_for as locate_hparams
from .test_locate_editors import statistics_cache  # noqa: F401 (the module's statistics cache directory)

CASES = [Case(id=f"c{i}", prompt=f"The pet kept by {name}", target=pet, subject=name, rephrase=None, locality=())
         for i, (name, pet) in enumerate([("Moma Zalda", "newt"), ("Pahis Briru", "white mouse")])]
QUICK = {"mom2_dataset": "tinyworld", "mom2_n_samples": 200, "mom2_dtype": "float64",
         "context_template_length_params": [[5, 2]], "v_num_grad_steps": 5, "layers": [1, 2]}


def hparams_for(name: str, model, **overrides):
    return locate_hparams(name, model, **(QUICK | overrides))


def updates(model, handle: EditHandle) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name].detach() - handle.original(name) for name in handle.names}


def test_two_models_in_one_process_never_see_each_others_cache_entries():
    first, tok = tiny_model("gpt2", seed=0)
    second, _ = tiny_model("gpt2", seed=1)
    editor, hp = hparams_for("memit", first)
    first_cache, second_cache = EditorCache(first), EditorCache(second)
    edit(editor, first, tok, [CASES[0]], hp, cache=first_cache).restore()
    with pytest.raises(ValueError, match="another model"):
        edit(editor, second, tok, [CASES[0]], hp, cache=first_cache)
    handle = edit(editor, second, tok, [CASES[0]], hp, cache=second_cache)
    shared = updates(second, handle)
    handle.restore()
    # the second model's statistics and templates are its own: a process that never saw the
    # first model computes the very same update
    alone, _ = tiny_model("gpt2", seed=1)
    handle = edit(editor, alone, tok, [CASES[0]], hp, cache=EditorCache(alone))
    for name, update in updates(alone, handle).items():
        assert torch.equal(update, shared[name]), name
    moments = [key for key in first_cache.keys() + second_cache.keys() if key[0] == "second moment"]
    assert len(moments) == 4 and first_cache.identity != second_cache.identity
    assert all(first_cache.identity in key[1] for key in first_cache.keys() if key[0] == "second moment")
    assert all(second_cache.identity in key[1] for key in second_cache.keys() if key[0] == "second moment")


def test_two_sequences_keep_their_own_alphaedit_keys():
    model, tok = tiny_model("gpt2")
    twin = copy.deepcopy(model)
    editor, hp = hparams_for("alphaedit", model, L2=1e-3, nullspace_threshold_mode="energy", nullspace_threshold=0.3)
    one, other = EditorState(), EditorState()
    edit(editor, model, tok, [CASES[0]], hp, cache=EditorCache(model), state=one)
    handle = edit(editor, model, tok, [CASES[1]], hp, cache=EditorCache(model), state=one)
    after_two = updates(model, handle)
    # the other sequence edits only the second case, from the same start
    handle = edit(editor, twin, tok, [CASES[1]], hp, cache=EditorCache(twin), state=other)
    alone = updates(twin, handle)
    name = hp.rewrite_module_tmp.format(hp.layers[0])
    ones, others = one.part("alphaedit", PreservedKeys), other.part("alphaedit", PreservedKeys)
    assert set(ones.c_prev) == set(others.c_prev) == {hp.rewrite_module_tmp.format(layer) for layer in hp.layers}
    assert not torch.equal(ones.c_prev[name], others.c_prev[name])
    fresh, _ = tiny_model("gpt2")
    handle = edit(editor, fresh, tok, [CASES[1]], hp)
    for module, update in updates(fresh, handle).items():
        assert torch.equal(update, alone[module]), module  # nothing of the first sequence reached it
        assert not torch.equal(update, after_two[module]), module  # while the first sequence's own edit did see it


def test_the_cache_stays_under_its_bound_and_the_edit_is_the_same():
    model, tok = tiny_model("gpt2")
    editor, hp = hparams_for("memit", model)
    roomy = EditorCache(model, max_bytes=1 << 30)
    digest = weights_hash(model)
    handle = edit(editor, model, tok, [CASES[0]], hp, cache=roomy)
    expected = updates(model, handle)
    handle.restore()
    factors = [key for key in roomy.keys() if key[0] == "cholesky"]
    assert len(factors) == 2
    both = sum(tensor_bytes(roomy.lookup(key)) for key in factors)
    bound = both // 2 + 1024  # room for one factor, not both
    tight = EditorCache(model, max_bytes=bound)
    handle = edit(editor, model, tok, [CASES[0]], hp, cache=tight)
    assert tight.bytes <= bound and len([key for key in tight.keys() if key[0] == "cholesky"]) <= 1
    for name, update in updates(model, handle).items():
        assert torch.equal(update, expected[name]), name
    handle.restore()
    tight.clear()
    assert tight.keys() == [] and tight.bytes == 0 and weights_hash(model) == digest


def test_a_restored_edit_leaves_no_state_for_the_next_single_edit():
    """Single-edit runs share one EditorState per process (runtime.editor_state): restoring
    an edit takes its keys out again, so case B edited after case A (restored) is B alone."""
    model, tok = tiny_model("gpt2")
    editor, hp = hparams_for("alphaedit", model, L2=1e-3, nullspace_threshold_mode="energy", nullspace_threshold=0.3)
    cache, shared = EditorCache(model), EditorState()
    edit(editor, model, tok, [CASES[0]], hp, cache=cache, state=shared).restore()
    assert shared.part("alphaedit", PreservedKeys).c_prev == {} and shared.state_dict() == {}
    handle = edit(editor, model, tok, [CASES[1]], hp, cache=cache, state=shared)
    after_a = updates(model, handle)
    handle.restore()
    handle = edit(editor, model, tok, [CASES[1]], hp, cache=cache, state=EditorState())
    alone = updates(model, handle)
    handle.restore()
    assert after_a.keys() == alone.keys() and all(torch.equal(after_a[m], alone[m]) for m in alone)
