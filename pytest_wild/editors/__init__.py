"""The editor registry. Each editor is a small module exposing an `Editor` record (see
`api.py` for the protocol); the registry names them by import target, so nothing heavy is
imported until one is asked for. Editors are grouped by family: `locate/` (ROME, R-ROME,
MEMIT, AlphaEdit), `finetune/` (FT, FT-L, FT-M, LoRA), `memory/` (GRACE, WISE), `meta/` (MEND, and
UltraEdit, which reads MEND's per-token gradients without a trained network), `incontext/` (IKE).

Other packages add editors through the `pytest_wild.editors` entry-point group, whose
values point at an `Editor` object ("package.module:ATTR"; docs/editor-api.md). A plugin
never replaces a built-in editor, and two plugins never silently replace each other: such a
name is listed with what is wrong with it, and a plugin that cannot be imported is refused
with one line only when it is asked for, so it breaks no other run.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, is_dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..cases.case import WildInputError

if TYPE_CHECKING:  # the protocol's module imports torch; the registry must not
    from .api import Editor

ENTRY_POINT_GROUP = "pytest_wild.editors"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BUILT_IN = "built-in"

BUILTIN = {
    "ft": "pytest_wild.editors.finetune.ft:FT",
    "ft-l": "pytest_wild.editors.finetune.ft:FT_L",
    "ft-m": "pytest_wild.editors.finetune.ft:FT_M",
    "lora": "pytest_wild.editors.finetune.lora:LORA",
    "rome": "pytest_wild.editors.locate.rome:ROME",
    "r-rome": "pytest_wild.editors.locate.rome:R_ROME",
    "memit": "pytest_wild.editors.locate.memit:MEMIT",
    "alphaedit": "pytest_wild.editors.locate.alphaedit:ALPHAEDIT",
    "grace": "pytest_wild.editors.memory.grace:GRACE",
    "wise": "pytest_wild.editors.memory.wise:WISE",
    "mend": "pytest_wild.editors.meta.mend:MEND",
    "ultraedit": "pytest_wild.editors.meta.ultraedit:ULTRAEDIT",
    "ike": "pytest_wild.editors.incontext.ike:IKE",
}


@dataclass(frozen=True)
class Entry:
    """One editor name as found: its import target, the package it comes from ("built-in", or
    the distribution's name and version) and, for a plugin that is not used, why."""

    name: str
    target: str
    origin: str
    problem: str | None = None


def discover() -> list[Entry]:
    """Every editor name found, built-in ones first, each plugin with what stops it from being
    used (its name taken by a built-in editor, or by another plugin). Nothing is imported."""
    found = [Entry(name, target, BUILT_IN) for name, target in BUILTIN.items()]
    plugins = [(ep.name, ep.value, _origin(ep)) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for name, target, origin in sorted(set(plugins)):
        others = sorted({o for n, t, o in plugins if n == name and (t, o) != (target, origin)})
        if not NAME.fullmatch(name):  # it names the golden directory
            problem = "not used: an editor's name is letters, digits and . _ - only"
        elif name in BUILTIN:
            problem = "not used: a built-in editor has this name"
        elif others:
            problem = f"not used: {', '.join(others)} also provide{'s' if len(others) == 1 else ''} an editor of this name"
        else:
            problem = None
        found.append(Entry(name, target, origin, problem))
    return found


def _origin(ep) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def available() -> dict[str, str]:
    """Editor name -> import target ("module:ATTR") of every editor that can be asked for."""
    return {entry.name: entry.target for entry in discover() if entry.problem is None}


def shadowed(name: str) -> list[Entry]:
    """The plugins that provide an editor called `name` and are not used: said in the run's header."""
    return [entry for entry in discover() if entry.name == name and entry.problem is not None]


def find(name: str) -> Entry:
    """The usable entry called `name` (nothing imported); one line saying why not otherwise."""
    found = discover()
    usable = {entry.name: entry for entry in found if entry.problem is None}
    if name in usable:
        return usable[name]
    providers = sorted(entry.origin for entry in found if entry.name == name)
    if providers:  # two plugins of one name, neither a built-in
        raise WildInputError(f"--editor {name}: {' and '.join(providers)} each provide an editor of this name; "
                             "none is used")
    raise WildInputError(f"--editor: unknown editor {name!r} (available: {', '.join(sorted(usable))})")


def get_editor(name: str) -> Editor:
    """The editor called `name`, imported and checked; one line naming the package otherwise."""
    return load(find(name))


class Unusable(WildInputError):
    """An editor that cannot be used; `reason` says why without naming the editor again."""

    def __init__(self, entry: Entry, reason: str) -> None:
        super().__init__(f"--editor {entry.name}: {entry.target} ({entry.origin}) {reason}")
        self.reason = reason


def fault(name: str, what: str, exc: BaseException | None = None) -> Unusable:
    """One line naming the editor `name`, its package and target, for what its own code did
    wrong (`what`; with `exc`, the exception it raised there): a plugin's bug is said as the
    plugin's."""
    return Unusable(find(name), what if exc is None else f"raised {type(exc).__name__} in {what}: {_first_line(exc)}")


def load(entry: Entry) -> Editor:
    """Import an entry's `Editor`; any failure, the editor's own import errors included, is one
    line naming the editor, its package and its target."""
    from .api import Editor

    module_name, _, attr = entry.target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr) if attr else None
    except (Exception, SystemExit) as exc:  # a plugin's import may raise anything, even exit: one line, no traceback
        raise Unusable(entry, f"cannot be imported: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(found, Editor):
        raise Unusable(entry, "is not a pytest_wild.api.Editor (write the entry point as \"module:ATTR\")")
    if found.name != entry.name:
        raise Unusable(entry, f"is an Editor called {found.name!r}, not {entry.name!r} as its entry point")
    if not (isinstance(found.hparams_type, type) and is_dataclass(found.hparams_type)):
        raise Unusable(entry, "has an hparams_type that is not a dataclass")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
