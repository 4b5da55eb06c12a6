"""The public editor API: everything an editing method outside pytest-wild may import, from
one place. The protocol is written out in docs/editor-api.md; every other module of
pytest_wild is private and may change in any release. `tests/unit/test_public_api.py` fails
if a name here disappears.

Importing this module imports torch (the plugin itself never does without `--wild`).
"""

from __future__ import annotations

from .cases.case import Case, Locality, WildInputError
from .editors.api import (EditHandle, Editor, EditorCache, EditorState, StateMismatch, cached, edit, expect_parts,
                          expect_tensor, saved_parts)
from .cases.files import read_yaml
from .editors.hparams import build_hparams
from .model.architectures import Architecture, ModelShape, architecture_of
from .model.batching import left_pad, positions_of, right_pad
from .model.reading import add_reader, reading, remove_reader
from .model.stats import SecondMoment, second_moments
from .model.tokens import target_ids
from .model.weights import add_update, is_transposed, parameters_under

__all__ = [
    # the protocol
    "Editor", "EditHandle", "EditorCache", "EditorState", "edit", "cached",
    # a saved sequence state checked before a resumed sequence edits (Editor.check_state)
    "StateMismatch", "saved_parts", "expect_parts", "expect_tensor",
    # what an update edits
    "Case", "Locality",
    # hyperparameters: a dataclass, per-architecture defaults, YAML overrides
    "build_hparams", "read_yaml", "ModelShape", "WildInputError",
    # module names per architecture
    "Architecture", "architecture_of", "parameters_under",
    # weights written in each module's layout
    "add_update", "is_transposed",
    # tokens and batches as the engine builds them
    "target_ids", "left_pad", "right_pad", "positions_of",
    # the statistics cache (second moments of a module's input, on disk and per model)
    "second_moments", "SecondMoment",
    # memories read in the forward pass: where each row's prompt starts and ends
    "reading", "add_reader", "remove_reader",
]
