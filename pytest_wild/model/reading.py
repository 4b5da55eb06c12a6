"""Where each row's prompt starts and ends, told to the memory-based editors' forward hooks.

A memory-based editor (GRACE, WISE) decides inside the model's forward pass whether an input
is in an edit's scope, and GRACE decides it at the last *prompt* token. A hook sees only the
hidden states of one call, so the callers that know where prompts end say so: the engine
before each prompt pass (and when rows leave a batch), the teacher-forced reading before its
one pass. A hook reads it with `last_prompt(model)`; a call the callers did not announce
(an editor's own forward passes, a user's script) has none, and hooks treat its last
position as the last prompt token, as EasyEdit's first forward call does.

Readers are objects on the model (never module globals), added by an edit and removed by its
undo, with `begin(last, first)` (a new batch: `last[b]` is row b's last prompt position in
the call that follows and `first[b]` its first real token, after the left padding; later
calls of length 1 are cached decoding steps), `keep(rows)` (the batch was cut to these rows)
and `end()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

ATTRIBUTE = "_wild_readers"


class Reader(Protocol):
    def begin(self, last: torch.Tensor, first: torch.Tensor) -> None: ...

    def keep(self, rows: torch.Tensor) -> None: ...

    def end(self) -> None: ...


def readers(model) -> list[Reader]:
    return list(getattr(model, ATTRIBUTE, ()))


def add_reader(model, reader: Reader) -> None:
    object.__setattr__(model, ATTRIBUTE, [*readers(model), reader])


def remove_reader(model, reader: Reader) -> None:
    left = [r for r in readers(model) if r is not reader]
    if left:
        object.__setattr__(model, ATTRIBUTE, left)
    elif hasattr(model, ATTRIBUTE):
        object.__delattr__(model, ATTRIBUTE)


@contextmanager
def reading(model, last: torch.Tensor, first: torch.Tensor | None = None) -> Iterator[None]:
    """Announce each row's last prompt position (and first real token: 0 without padding) for
    the calls made inside the block."""
    found = readers(model)
    first = torch.zeros_like(last) if first is None else first
    for reader in found:
        reader.begin(last, first)
    try:
        yield
    finally:
        for reader in found:
            reader.end()


def keep_rows(model, rows: torch.Tensor) -> None:
    """The batch being read was cut to `rows` (indices into the previous batch)."""
    for reader in readers(model):
        reader.keep(rows)
