"""Text that reaches Markdown (a CI job summary, `pytest-wild table`) from what a pull request
or a model can write: editor names in reports and plugins, a model's name, stop reasons, a
model's answers quoted by the judge's lines. Each field is escaped so that it stays one cell of
one row and renders as the text it is: never a new row (`|`, a newline), HTML (`<`), a link,
an image or emphasis. CommonMark lets a backslash escape any ASCII punctuation; inside a code
span, where backslashes are literal, the span's fence is made longer than any run of
backticks in it and only `|` is escaped (GitHub's tables split cells on it even there)."""

from __future__ import annotations

import re

SPECIAL = frozenset("\\`*_[]<>|&~")  # what Markdown or its HTML could read as markup inside a line
_TICKS = re.compile(r"`+")


def _one_line(value: object) -> str:
    """The value's text with every line break and control character a space."""
    return "".join(ch if ch.isprintable() else " " for ch in str(value))


def text(value: object) -> str:
    """`value` as plain Markdown text, inline and literal."""
    return "".join("\\" + ch if ch in SPECIAL else ch for ch in _one_line(value))


def code(value: object) -> str:
    """`value` as an inline code span, literal, in one table cell."""
    body = _one_line(value).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in _TICKS.findall(body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"
