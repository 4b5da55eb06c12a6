"""Reading the files a run is given (data, suites, hyperparameters, corpora): every way one
can be unreadable (missing, a directory, no permission, not UTF-8) is one line naming it."""

from __future__ import annotations

from pathlib import Path

from .case import WildInputError


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of `path`, or `WildInputError` saying why not (never the content)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WildInputError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise WildInputError(f"{path}: cannot read {what} ({exc.strerror})") from None
