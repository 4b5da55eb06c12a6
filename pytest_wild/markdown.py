"""Text from reports, goldens and suites made safe for a Markdown table cell (GitHub's
flavour), since those files arrive in pull requests and the tables become CI job summaries:
a `|` or a line break in an editor's name must not add a cell or a row, and no field may
open a link, an image, HTML or emphasis."""

from __future__ import annotations

import re

LINE_BREAKS = re.compile(r"[\r\n\u0085\u2028\u2029]+")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # what opens emphasis, code, a link or a cell inside a line
HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def cell(text: str, code: bool = False) -> str:
    """`text` as one table cell: on one line, every Markdown character escaped; as a code
    span when `code` and the text holds no backtick (inside a code span only `|`, which GitHub
    still reads as a cell border, needs escaping)."""
    flat = CONTROL.sub("", LINE_BREAKS.sub(" ", text)).strip()
    if code and "`" not in flat and flat:
        return "`" + flat.replace("|", "\\|") + "`"
    escaped = "".join(HTML.get(char, char) for char in flat)
    return SPECIAL.sub(r"\\\1", escaped) if escaped else "-"
