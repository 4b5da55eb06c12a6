"""The package's shape, read from its own source: no process-wide mutable state, an import
graph without cycles, and editor families that do not import each other."""

import ast
from pathlib import Path

import pytest_wild

PACKAGE = Path(pytest_wild.__file__).parent
MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "WeakKeyDictionary", "WeakValueDictionary"}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return found


def _empty_container(value: ast.expr) -> bool:
    """`{}`, `[]`, `set()`, `weakref.WeakKeyDictionary()`...: a container made to be filled."""
    if isinstance(value, (ast.Dict, ast.List, ast.Set)):
        return not (value.keys if isinstance(value, ast.Dict) else value.elts)
    if isinstance(value, ast.Call) and not value.args and not value.keywords:
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in MUTABLE_CALLS
    return False


def test_no_module_keeps_state_in_a_global_container():
    found = []
    for name, tree in modules().items():
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if value is not None and _empty_container(value):
                found.append(f"{name}:{node.lineno}")
        found += [f"{name}:{node.lineno} (global)" for node in ast.walk(tree) if isinstance(node, ast.Global)]
    assert found == []


def imports(name: str, tree: ast.Module) -> set[str]:
    package = name.split(".") if name.count(".") and _is_package(name) else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            out |= {f"{target}.{a.name}" for a in node.names} if node.module is None else {target}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_wild"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pytest_wild")}
    return out


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    trees = modules()
    return {name: {m for m in imports(name, tree) if m in trees and m != name} for name, tree in trees.items()}


def test_the_import_graph_has_no_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1 and not nxt.startswith(node) and not node.startswith(nxt):
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_editor_families_and_methods_do_not_import_each_other():
    edges = graph()
    families = {"pytest_wild.editors.locate", "pytest_wild.editors.finetune"}
    for name, targets in edges.items():
        family = next((f for f in families if name.startswith(f)), None)
        for target in targets:
            other = next((f for f in families if target.startswith(f)), None)
            assert other in (None, family), f"{name} imports {target}"
    methods = {f"pytest_wild.editors.locate.{m}" for m in ("rome", "memit", "alphaedit")}
    for method in methods:
        assert not edges[method] & methods, f"{method} imports another method"
    assert not any(t.startswith("pytest_wild.editors") for t in edges["pytest_wild.model.stats"])


def test_no_module_imports_a_package_above_it():
    """A package's `__init__` introduces its modules; one of them importing it back would run the
    package half-initialised, and hides which module the name really comes from."""
    up = [f"{name} imports {target}" for name, targets in graph().items() for target in targets
          if name.startswith(target + ".")]
    assert up == []


def stage(module: str) -> str:
    """The pipeline stage a module belongs to: its sub-package of pytest_wild (`cases`, `model`, `editors`,
    `generation`, `scores`, `results`, `sequence`, `run`, `judge`...), or the top-level module itself."""
    return ".".join(module.split(".")[:2])


def private_reaches(name: str, tree: ast.Module) -> list[str]:
    """Each place where `name` uses an underscore name of a module in another stage: imported by name
    (`from ..results.report import _cell`) or read off an imported module (`report._cell`)."""
    package = name.split(".") if _is_package(name) else name.split(".")[:-1]
    found, modules_bound = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("pytest_wild"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if stage(full if node.module is None else target) != stage(name):
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{name}:{node.lineno} imports {target}.{alias.name}")
                    modules_bound[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pytest_wild") and alias.asname and stage(alias.name) != stage(name):
                    modules_bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules_bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{name}:{node.lineno} reads {modules_bound[node.value.id]}.{node.attr}")
    return found


def test_no_module_reaches_into_another_stages_private_names():
    """Underscore names are a stage's own business: another stage that uses one breaks when the owner
    changes it, and nothing in the owner's module says so."""
    found = [line for name, tree in modules().items() for line in private_reaches(name, tree)]
    assert found == []


def test_a_reach_into_another_stages_private_name_is_found():
    """The check above, on made-up modules: each way of reaching in is reported, a stage's own use is not."""
    source = ("from ..results.report import _cell, table\n"
              "from ..results import report\n"
              "from . import _own\n"
              "from .engine import _step\n"
              "x = report._cell(1) + report.table()\n")
    found = private_reaches("pytest_wild.generation.made_up", ast.parse(source))
    assert found == ["pytest_wild.generation.made_up:1 imports pytest_wild.results.report._cell",
                     "pytest_wild.generation.made_up:5 reads pytest_wild.results.report._cell"]


# The pipeline's stages in order (the brief's suite → cases → model → editor → generation →
# scores → golden/report), with the one module every stage writes through at the bottom. The
# orchestration (plugin, run, cli, ci, api, tinyworld) calls all of them and is not a stage.
STAGES = ["storage", "cases", "model", "editors", "generation", "scores", "judge", "sequence", "results"]


def test_no_stage_imports_a_later_stage_except_a_module_of_names():
    """Imports point to an earlier stage (or within one). The exception is a leaf that only
    names things (it imports nothing of pytest_wild: `scores.metrics`, the metric names a
    suite's thresholds are checked against), which any stage may read."""
    edges = graph()

    def stage(name: str) -> int | None:
        parts = name.split(".")
        return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None

    upward = sorted(f"{name} -> {target}" for name, targets in edges.items() for target in targets
                    if stage(name) is not None and stage(target) is not None and stage(target) > stage(name)
                    and edges[target])
    assert upward == []
