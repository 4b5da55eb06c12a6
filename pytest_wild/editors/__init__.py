"""The editor registry. Each editor is a small module exposing an `Editor` record (see
`api.py` for the protocol); the registry names them by import target, so nothing heavy is
imported until one is asked for. Editors are grouped by family: `locate/` (ROME, R-ROME,
MEMIT, AlphaEdit), `finetune/` (FT, FT-L, FT-M).

Other packages add editors through the `pytest_wild.editors` entry-point group, whose
values point at an `Editor` object ("package.module:ATTR").
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..cases import WildInputError

if TYPE_CHECKING:  # the protocol's module imports torch; the registry must not
    from .api import Editor

ENTRY_POINT_GROUP = "pytest_wild.editors"

BUILTIN = {
    "ft": "pytest_wild.editors.finetune.ft:FT",
    "ft-l": "pytest_wild.editors.finetune.ft:FT_L",
    "ft-m": "pytest_wild.editors.finetune.ft:FT_M",
    "rome": "pytest_wild.editors.locate.rome:ROME",
    "r-rome": "pytest_wild.editors.locate.rome:R_ROME",
    "memit": "pytest_wild.editors.locate.memit:MEMIT",
    "alphaedit": "pytest_wild.editors.locate.alphaedit:ALPHAEDIT",
}


def available() -> dict[str, str]:
    """Editor name -> import target ("module:ATTR"); built-in names win over plugins."""
    return {**{ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}, **BUILTIN}


def get_editor(name: str) -> Editor:
    editors = available()
    if name not in editors:
        raise WildInputError(f"--editor: unknown editor {name!r} (available: {', '.join(sorted(editors))})")
    module_name, _, attr = editors[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
