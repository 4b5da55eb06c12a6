"""The conformance check's own parts, without a model run: weights digests see one ulp, and the
state round trip fails for a part that cannot take back its own state_dict()."""

from types import SimpleNamespace

import pytest
import torch
from pytest_wild.editors.api import EditorState, StateMismatch
from pytest_wild.editors.conformance import Failed, _check_state_round_trip, differing, digests


def test_digests_tell_one_ulp_and_a_dtype_apart():
    model = torch.nn.Linear(3, 2)
    before = digests(model)
    assert set(before) == {"weight", "bias"} and differing(before, digests(model)) == []
    with torch.no_grad():
        model.weight[0, 0] = torch.nextafter(model.weight[0, 0], torch.tensor(2.0))
    assert differing(before, digests(model)) == ["weight"]
    assert differing(before, digests(model.double())) == ["bias", "weight"]


class Kept:
    """A state part as the protocol asks: tensors by name, and back."""

    def __init__(self) -> None:
        self.keys = torch.arange(6.0).reshape(2, 3)

    def state_dict(self) -> dict:
        return {"keys": self.keys}

    def load_state_dict(self, saved: dict) -> None:
        self.keys = saved["keys"]


class Forgetful(Kept):
    def load_state_dict(self, saved: dict) -> None:
        self.keys = torch.zeros(2, 3)


class Unloadable:
    def state_dict(self) -> dict:
        return {"keys": torch.ones(2)}


def state_of(part) -> EditorState:
    state = EditorState()
    state.part("memory", part)
    return state


def checked_by(check_state=None) -> SimpleNamespace:
    """What the round trip reads of a conformance run: the editor's check_state, the model, hparams."""
    return SimpleNamespace(editor=SimpleNamespace(check_state=check_state), model=None, hparams=None)


def test_a_part_that_takes_back_its_own_state_passes_the_round_trip():
    _check_state_round_trip(checked_by(), state_of(Kept))
    seen = []
    _check_state_round_trip(checked_by(lambda model, hp, parts: seen.append(parts)), state_of(Kept))
    assert list(seen[0]) == ["memory"] and torch.equal(seen[0]["memory"]["keys"], Kept().keys)


def test_a_check_state_that_refuses_the_editors_own_state_fails_the_round_trip():
    def refuse(model, hp, parts):
        raise StateMismatch("memory/keys is [2, 3] float32; expected a floating tensor of shape [n, 4]")

    with pytest.raises(Failed, match=r"check_state\(\) refuses the state the editor saved itself: StateMismatch"):
        _check_state_round_trip(checked_by(refuse), state_of(Kept))


@pytest.mark.parametrize(("part", "message"), [
    (Forgetful, "the state part 'memory' gives other tensors after load_state_dict() of its own state_dict()"),
    (Unloadable, "the state part 'memory' cannot be loaded from its own state_dict(): AttributeError"),
])
def test_a_part_that_cannot_take_back_its_own_state_fails_the_round_trip(part, message):
    with pytest.raises(Failed, match=message.replace("(", r"\(").replace(")", r"\)")):
        _check_state_round_trip(checked_by(), state_of(part))
