"""The editor protocol and the three objects an edit is given.

An editing method is an `Editor` record. Its `apply(model, tokenizer, cases, hparams, *,
handle, cache, state)` edits the model in place for the cases of one update and records,
before it changes anything, how to undo it:

- `EditHandle` (one per update, owned by the caller): a copy of every parameter the edit
  touches (only those, never the whole model) and callbacks for anything else the edit
  changed (a sequence state that grew, a wrapped module). `restore()` undoes all of it. An
  in-context editor (IKE) changes no weight: it sets the handle's `prompt_prefix`, the text
  put before every question asked of the edited model, under every mode.
- `EditorCache` (one per model): what is computed once per model and reused by every edit
  (context templates, second moments, their Cholesky factors, AlphaEdit's projections),
  bounded in bytes, least recently used first out, `clear()` empties it.
- `EditorState` (one per sequence of edits): what an edit leaves for the next edit of the
  same sequence (AlphaEdit's preserved keys; memory-based editors' memories). Each editor
  keeps its own part under its own name.

`edit()` is the one place that calls `apply`: it creates the handle and, if `apply` raises
half-way, restores the model before the exception goes on.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Editor:
    """What an editing method provides: its hyperparameter dataclass, its per-architecture
    defaults and `apply` (see the module docstring). `prefix`, where the editor's prompts put
    text before the case's prompt (context templates), says how many tokens at most, so cases
    too long for the model window are found first. `prepare` computes what every edit reads
    and no case changes (statistics) before the first case, where its progress shows.
    `ignored` names keys of the method's published hyperparameter files that this
    implementation accepts and does not use, each with why (reported to the user, never an
    error). `batches` and `sequences` say whether the method edits several cases in one
    update and whether its edits may follow one another unrestored; a method that cannot
    declares False, and such runs are refused with one line. `resume` is for a method whose
    state acts on the model (a memory read by a forward hook): a sequence resumed from a run
    directory calls it after loading the state, before anything is evaluated. `check_cases`
    refuses, with one line, a suite the method must not be evaluated on with these
    hyperparameters (IKE's demonstrations must come from cases the suite does not hold); it is
    called with every case of the suite once the hyperparameters are resolved. `check_state`
    is for a method with a state: a sequence resumed from a run directory (which may come from
    elsewhere) calls it with the saved state's tensors by part, before any edit, and it raises
    `StateMismatch` naming the first tensor that does not fit the model and hyperparameters."""

    name: str
    description: str
    hparams_type: type
    defaults: Callable  # (model config, profile) -> dict of hyperparameters
    apply: Callable  # (model, tokenizer, cases, hparams, *, handle, cache, state) -> None
    prefix: Callable | None = None  # (model, tokenizer, hparams, cache) -> tokens before the prompt
    prepare: Callable | None = None  # (model, tokenizer, hparams, cache) -> None: what every edit reads
    ignored: Mapping[str, str] = field(default_factory=dict)  # hyperparameter key -> why it is not used
    batches: bool = True  # several cases in one update (--wild-batch-size)
    sequences: bool = True  # edits one after another, never restored in between (--wild-sequential)
    resume: Callable | None = None  # (model, hparams, state) -> None: put a loaded state back on the model
    check_cases: Callable | None = None  # (hparams, suite cases) -> None: WildInputError for a suite it must refuse
    check_state: Callable | None = None  # (model, hparams, saved parts) -> None: StateMismatch for a state that does not fit


class StateMismatch(ValueError):
    """A saved sequence state that does not fit this model and these hyperparameters: a
    tensor of another shape would be broadcast into a memory or fail an edit with a traceback."""


def saved_parts(flat: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A saved state's tensors (`part/key`, as `EditorState.state_dict` names them) by part."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        name, _, inner = key.partition("/")
        parts.setdefault(name, {})[inner] = value
    return parts


def expect_parts(parts: Mapping[str, Mapping[str, torch.Tensor]], allowed: set[str]) -> None:
    """Only the parts an editor keeps."""
    for name in sorted(set(parts) - allowed):
        raise StateMismatch(f"part {name!r} is not kept by this editor (it keeps {', '.join(sorted(allowed))})")


def expect_tensor(saved: Mapping[str, torch.Tensor], where: str, shape: tuple[int | None, ...],
                  integer: bool = False) -> torch.Tensor:
    """`saved[where.split('/', 1)[1]]`, a floating (or with `integer`, integer) tensor of
    `shape` (None: any size there); StateMismatch naming it otherwise."""
    key = where.split("/", 1)[1]
    if key not in saved:
        raise StateMismatch(f"{where} is missing")
    tensor = saved[key]
    if integer:
        kind_ok = not (tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool)
    else:
        kind_ok = tensor.dtype.is_floating_point
    fits = tensor.dim() == len(shape) and all(want is None or got == want for got, want in zip(tensor.shape, shape))
    if not (kind_ok and fits):
        wanted = "[" + ", ".join("n" if want is None else str(want) for want in shape) + "]"
        raise StateMismatch(f"{where} is {list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}; "
                            f"expected {'an integer' if integer else 'a floating'} tensor of shape {wanted}")
    return tensor


class EditHandle:
    """The undo of one update. Editors call `save` before writing a parameter and `on_undo`
    for any other change; `info` holds what the editor computed (one dict per rank update or
    layer), for tests and benchmarks. `prompt_prefix` is what an in-context editor puts
    before every question asked of the edited model (empty: nothing); restore empties it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._params = dict(model.named_parameters())
        self._saved: dict[str, torch.Tensor] = {}
        self._undo: list[Callable[[], None]] = []
        self.info: list[dict] = []
        self.prompt_prefix = ""

    def save(self, names: list[str]) -> None:
        """Keep a copy of each named parameter as it is now (a name saved twice keeps the first)."""
        for name in names:
            if name not in self._saved:
                self._saved[name] = self._params[name].detach().clone()

    def on_undo(self, undo: Callable[[], None]) -> None:
        """Run `undo` at restore, after the weights are back, latest first."""
        self._undo.append(undo)

    @property
    def names(self) -> list[str]:
        return sorted(self._saved)

    def original(self, name: str) -> torch.Tensor:
        return self._saved[name]

    @torch.no_grad()
    def restore(self) -> None:
        """Put back every saved parameter bit for bit, then undo the rest; once."""
        for name, saved in self._saved.items():
            self._params[name].copy_(saved)
            self._params[name].requires_grad_(False)
        self._saved.clear()
        self.prompt_prefix = ""
        while self._undo:
            self._undo.pop()()


def tensor_bytes(value: Any) -> int:
    """Bytes held by the tensors in a value (tensors, dataclasses, tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if is_dataclass(value) and not isinstance(value, type):
        return sum(tensor_bytes(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def default_bound() -> int:
    """A quarter of the machine's memory, or of the first GPU's when there is one: factors of
    C for MEMIT's five layers of Llama-3-8B alone would take 8 GB."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory // 4
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, OSError, ValueError):
        return 4 << 30


class EditorCache:
    """What editors compute once for one model and reuse, keyed by what it was computed from.
    At most `max_bytes` of tensors are kept: the least recently used entries go first, and an
    entry larger than the whole bound is computed and used but not kept."""

    def __init__(self, model: torch.nn.Module, max_bytes: int | None = None) -> None:
        self._model = weakref.ref(model)
        self.max_bytes = default_bound() if max_bytes is None else max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._identity: str | None = None

    def belongs_to(self, model: torch.nn.Module) -> bool:
        return self._model() is model

    @property
    def identity(self) -> str:
        """The model's weights fingerprint as first asked for (the statistics of the model as it
        was before any edit keep serving the whole sequence)."""
        if self._identity is None:
            from ..model.load import fingerprint

            self._identity = fingerprint(self._model())
        return self._identity

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._entries.values())

    def lookup(self, key: Hashable) -> Any | None:
        """The value kept under `key`, else None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key][0]

    def put(self, key: Hashable, value: Any) -> None:
        size = tensor_bytes(value)
        self._entries.pop(key, None)
        if size > self.max_bytes:
            return
        while self._entries and self.bytes + size > self.max_bytes:
            self._entries.popitem(last=False)
        self._entries[key] = (value, size)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value under `key`, computed (and kept, bound allowing) when missing."""
        found = self.lookup(key)
        if found is None:
            found = compute()
            self.put(key, found)
        return found

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def cached(cache: EditorCache | None, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()`, kept under `key` in `cache` when there is one (None: computed for this call)."""
    return compute() if cache is None else cache.get(key, compute)


class EditorState:
    """What the edits of one sequence carry from one to the next. Each editor keeps its part
    under its own name (`part`); a part that changes registers its own undo on the edit's
    handle, so a restored edit leaves the state as it was before it. A run directory saves the
    state between edits: a part that lives across edits has `state_dict()` and
    `load_state_dict()` (tensors by name, as torch modules do)."""

    def __init__(self) -> None:
        self._parts: dict[str, Any] = {}
        self._saved: dict[str, dict[str, torch.Tensor]] = {}  # loaded, given to each part when it is made

    def part(self, name: str, create: Callable[[], T]) -> T:
        if name not in self._parts:
            made = create()
            if name in self._saved:
                made.load_state_dict(self._saved.pop(name))
            self._parts[name] = made
        return self._parts[name]

    def parts(self) -> dict[str, Any]:
        """The parts made so far, by name."""
        return dict(self._parts)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every part's tensors, named `part/key`."""
        flat = {f"{name}/{key}": value for name, saved in self._saved.items() for key, value in saved.items()}
        for name, made in self._parts.items():
            if not hasattr(made, "state_dict"):
                raise TypeError(f"the editor's state part {name!r} cannot be saved: it has no state_dict()")
            flat |= {f"{name}/{key}": value for key, value in made.state_dict().items()}
        return flat

    def load_state_dict(self, flat: Mapping[str, torch.Tensor]) -> None:
        """Replace the state by a saved one; each part gets its tensors when its editor asks for it."""
        self.clear()
        self._saved.update(saved_parts(flat))

    def clear(self) -> None:
        """Forget every part; a part with `close()` (a memory attached to the model) is closed."""
        for made in self._parts.values():
            if hasattr(made, "close"):
                made.close()
        self._parts.clear()
        self._saved.clear()


def edit(editor: Editor, model, tokenizer, cases: list, hparams, *, cache: EditorCache | None = None,
         state: EditorState | None = None) -> EditHandle:
    """Apply one update and return its handle; an editor that raises half-way leaves the model
    (and the state) exactly as they were. Without a cache or a state, fresh ones are used."""
    cache = EditorCache(model) if cache is None else cache
    if not cache.belongs_to(model):
        raise ValueError("the editor cache was made for another model")
    handle = EditHandle(model)
    try:
        editor.apply(model, tokenizer, cases, hparams, handle=handle, cache=cache,
                     state=EditorState() if state is None else state)
    except BaseException:
        handle.restore()
        raise
    return handle
