"""The public editor API (`pytest_wild.api`, docs/editor-api.md) is a promise to method authors:
these tests fail if a public name disappears, if the protocol's objects lose a field or method
the docs describe, if the docs stop naming a public name, or if the example plugin and the
editors broken on purpose reach past the public API."""

import ast
import dataclasses
from pathlib import Path

import pytest_wild.api as api

ROOT = Path(__file__).parents[2]
PUBLIC = {
    "Editor", "EditHandle", "EditorCache", "EditorState", "edit", "cached",
    "StateMismatch", "saved_parts", "expect_parts", "expect_tensor",
    "Case", "Locality",
    "build_hparams", "read_yaml", "ModelShape", "WildInputError",
    "Architecture", "architecture_of", "parameters_under",
    "add_update", "is_transposed",
    "target_ids", "left_pad", "right_pad", "positions_of",
    "second_moments", "SecondMoment",
    "reading", "add_reader", "remove_reader",
}
EDITOR_FIELDS = ["name", "description", "hparams_type", "defaults", "apply", "prefix", "prepare", "ignored", "batches",
                 "sequences", "resume", "check_cases", "check_state"]
METHODS = {
    "EditHandle": {"save", "on_undo", "names", "original", "restore", "info", "prompt_prefix"},
    "EditorState": {"part", "state_dict", "load_state_dict", "clear"},
    "EditorCache": {"get", "lookup", "put", "keys", "clear", "identity", "bytes", "max_bytes", "belongs_to"},
}
CASE_FIELDS = {"id", "prompt", "target", "subject", "rephrase", "locality", "source", "ground_truth"}


def test_every_public_name_is_importable_from_pytest_wild_api():
    assert set(api.__all__) == PUBLIC
    assert [name for name in sorted(PUBLIC) if not hasattr(api, name)] == []


def test_the_protocols_objects_keep_what_the_docs_describe():
    assert [f.name for f in dataclasses.fields(api.Editor)] == EDITOR_FIELDS
    assert CASE_FIELDS <= {f.name for f in dataclasses.fields(api.Case)}
    model = __import__("torch").nn.Linear(2, 2)
    objects = {"EditHandle": api.EditHandle(model), "EditorState": api.EditorState(),
               "EditorCache": api.EditorCache(model)}
    for name, methods in METHODS.items():
        have = set(dir(type(objects[name]))) | set(vars(objects[name]))  # properties not evaluated
        assert sorted(methods - have) == [], name


def test_the_docs_page_names_every_public_name_and_editor_field():
    text = (ROOT / "docs" / "editor-api.md").read_text()
    assert [name for name in sorted(PUBLIC) if f"`{name}" not in text and f"{name}(" not in text] == []
    assert [name for name in EDITOR_FIELDS if f"{name}=" not in text] == []


def pytest_wild_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    found |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in found if name and name.startswith("pytest_wild")}


def test_the_example_plugin_and_the_broken_editors_use_only_the_public_api():
    example = ROOT / "examples" / "editor-plugin" / "wild_rank_one.py"
    assert pytest_wild_imports(example) == {"pytest_wild.api"}
    assert pytest_wild_imports(ROOT / "tests" / "editor_plugins" / "broken_editors.py") == {"pytest_wild.api"}
    assert len(example.read_text().splitlines()) < 100  # "a real, simple method in under 100 lines"
