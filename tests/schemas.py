"""The JSON Schemas pytest-wild ships (pytest_wild/schemas/), applied to what the tests' runs wrote:
every report (a JSON object with `schema_version`: partial and merged ones too) and every golden (an
object with `case` and `scores`) under a directory a test was given. Checked with `jsonschema`, the
validator the JSON Schema project lists as Python's reference one: hand-written checks would drift
from the schema they claim to follow."""

from __future__ import annotations

import functools
import json
import os
from importlib.resources import files
from pathlib import Path

GOLDEN_KEYS = {"case", "scores", "generations"}


@functools.cache
def validator(name: str):
    """The checked schema `schemas/<name>.schema.json`, as a validator (made once per session)."""
    import jsonschema

    schema = json.loads(files("pytest_wild").joinpath(f"schemas/{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def kind_of(data) -> str | None:
    """"report", "golden", or None for any other JSON (data, configs, caches)."""
    if isinstance(data, dict) and "schema_version" in data:
        return "report"
    if isinstance(data, dict) and {"case", "scores"} <= set(data) <= GOLDEN_KEYS:
        return "golden"
    return None


def problems(data, kind: str) -> list[str]:
    """Where `data` breaks its schema, one line each ('$.samples[0].modes: ...')."""
    found = sorted(validator(kind).iter_errors(data), key=lambda error: list(error.absolute_path))
    return [f"{error.json_path}: {error.message[:300]}" for error in found]


def written_problems(directory: Path) -> list[str]:
    """Every report and golden under `directory` (links not followed) that breaks its schema."""
    found = []
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            path = Path(root) / name
            if not name.endswith(".json") or path.is_symlink():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):  # not JSON a run wrote: bad-input tests' own files
                continue
            kind = kind_of(data)
            if kind is not None:
                found += [f"{path} ({kind}) {line}" for line in problems(data, kind)]
    return found
