"""Reading the files a run is given (data, suites, hyperparameters, corpora): every way one
can be unreadable (missing, a directory, no permission, not UTF-8, not a YAML mapping) is one
line naming it."""

from __future__ import annotations

from pathlib import Path

import yaml

from .case import WildInputError


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of `path`, or `WildInputError` saying why not (never the content)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WildInputError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise WildInputError(f"{path}: cannot read {what} ({exc.strerror})") from None


def read_yaml(path: Path, what: str) -> dict:
    """A YAML file that holds a mapping (a suite, hyperparameters), read safely (`safe_load`:
    no Python objects built from tags), or `WildInputError` naming the line."""
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise WildInputError(f"{path}: {what} nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise WildInputError(f"{path}{line}: invalid YAML in {what} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WildInputError(f"{path}: {what} must be a mapping of keys to values")
    return data
