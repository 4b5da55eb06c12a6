"""The editor registry. Each editor is a small module exposing an `Editor` record; the
registry names them by import target, so nothing heavy is imported until one is asked for.

Other packages add editors through the `pytest_wild.editors` entry-point group, whose
values point at an `Editor` object ("package.module:ATTR").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from ..cases import WildInputError

ENTRY_POINT_GROUP = "pytest_wild.editors"

BUILTIN = {
    "ft": "pytest_wild.editors.ft:FT",
    "ft-l": "pytest_wild.editors.ft:FT_L",
    "ft-m": "pytest_wild.editors.ft:FT_M",
    "rome": "pytest_wild.editors.rome:ROME",
    "r-rome": "pytest_wild.editors.rome:R_ROME",
    "memit": "pytest_wild.editors.memit:MEMIT",
    "alphaedit": "pytest_wild.editors.alphaedit:ALPHAEDIT",
}


@dataclass(frozen=True)
class Editor:
    """What an editing method provides: its hyperparameter dataclass, its per-architecture
    defaults and `apply`, which edits the model in place and returns a `Restore` handle.
    `prefix`, where the editor's prompts put text before the case's prompt (context templates),
    says how many tokens at most, so cases too long for the model window are found first."""

    name: str
    description: str
    hparams_type: type
    defaults: Callable  # (model config, profile) -> dict of hyperparameters
    apply: Callable  # (model, tokenizer, cases, hparams) -> Restore
    prefix: Callable | None = None  # (model, tokenizer, hparams) -> tokens before the prompt


def available() -> dict[str, str]:
    """Editor name -> import target ("module:ATTR"); built-in names win over plugins."""
    return {**{ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}, **BUILTIN}


def get_editor(name: str) -> Editor:
    editors = available()
    if name not in editors:
        raise WildInputError(f"--editor: unknown editor {name!r} (available: {', '.join(sorted(editors))})")
    module_name, _, attr = editors[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
