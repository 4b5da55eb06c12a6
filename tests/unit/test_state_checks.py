"""A sequence's saved editor state (a run directory's state.safetensors, which may come from
elsewhere) is checked against the model and hyperparameters before a resumed sequence edits
anything (`Editor.check_state`): each stateful editor accepts the state it saved itself after
real edits on tinyworld and refuses, naming the tensor, one of another shape or kind, one
missing, one it does not keep."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_wild.cases.case import Case, Locality
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorCache, EditorState, StateMismatch, edit, saved_parts
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.model.load import TINYWORLD_DIR, load_model

QUICK = {"grace": {}, "wise": {"n_iter": 5},
         "alphaedit": {"mom2_n_samples": 200, "v_num_grad_steps": 5, "context_template_length_params": [[5, 2]]},
         "ultraedit": {}}


@pytest.fixture(scope="module")
def tinyworld():
    loaded = load_model(None, "cpu")
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def saved_states(tinyworld, tmp_path_factory) -> dict:
    """Each stateful editor's state after two edits on tinyworld, as a run directory saves it."""
    import os

    os.environ.setdefault("PYTEST_WILD_CACHE", str(tmp_path_factory.mktemp("cache")))
    model, tokenizer = tinyworld
    rows = [json.loads(line) for line in (TINYWORLD_DIR / "suite.jsonl").read_text().splitlines()[:2]]
    cases = [Case(id=r["id"], prompt=r["prompt"], target=r["target"], subject=r["subject"], rephrase=r["rephrase"],
                  locality=tuple(Locality(x["loc"], x["loc_ans"]) for x in r["locality"])) for r in rows]
    found = {}
    for name, overrides in QUICK.items():
        editor = get_editor(name)
        hp = build_hparams(editor.hparams_type, editor.defaults(model.config, "tinyworld"), [("test", overrides)])
        state, cache, handles = EditorState(), EditorCache(model), []
        if editor.prepare is not None:
            editor.prepare(model, tokenizer, hp, cache)
        torch.manual_seed(0)
        for case in cases:
            handles.append(edit(editor, model, tokenizer, [case], hp, cache=cache, state=state))
        flat = {key: value.detach().clone() for key, value in state.state_dict().items()}
        for handle in reversed(handles):
            handle.restore()
        state.clear()
        found[name] = (editor, hp, flat)
    return found


@pytest.mark.parametrize("name", sorted(QUICK))
def test_an_editor_accepts_the_state_it_saved(tinyworld, saved_states, name):
    editor, hp, flat = saved_states[name]
    assert flat  # two edits leave a state to save
    editor.check_state(tinyworld[0], hp, saved_parts(flat))


def forged(flat: dict, how: str) -> tuple[dict, str]:
    """The saved state changed one way, and the start of the line that must name it."""
    flat = dict(flat)
    key = sorted(flat)[0]
    if how == "shape":
        flat[key] = torch.zeros(*(s + 1 for s in flat[key].shape)) if flat[key].dim() else torch.zeros(2)
        return flat, f"{key} is "
    if how == "kind":
        flat[key] = flat[key].to(torch.int64) if flat[key].dtype.is_floating_point else flat[key].double()
        return flat, f"{key} is "
    if how == "missing":
        del flat[key]
        return flat, ""
    flat["elsewhere/x"] = torch.zeros(1)
    return flat, "part 'elsewhere' is not kept by this editor"


# AlphaEdit keeps one C_prev per module, each optional (a module with none has no keys yet),
# so none is missing there.
FORGERIES = [(name, how) for name in sorted(QUICK) for how in ("shape", "kind", "missing", "part")
             if (name, how) != ("alphaedit", "missing")]


@pytest.mark.parametrize(("name", "how"), FORGERIES)
def test_a_forged_state_is_refused_naming_the_tensor(tinyworld, saved_states, name, how):
    editor, hp, flat = saved_states[name]
    changed, names = forged(flat, how)
    with pytest.raises(StateMismatch) as refused:
        editor.check_state(tinyworld[0], hp, saved_parts(changed))
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith(names), message
    if how == "missing":
        assert message.endswith("is missing") or "is not part of" in message, message
