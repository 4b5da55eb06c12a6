"""`pytest-wild init-ci`: a GitHub Actions workflow for an editing method's repository, filled
in from the templates in `templates/` (readable YAML, not generated code): conformance and the
bundled suite with gates and goldens on CPU for every pull request, the Markdown table as the
job summary, and optionally a real model sharded over a self-hosted GPU runner."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from .cases import WildInputError
from .gates import parse_rule
from .metrics import MODES

DEFAULT_PATH = Path(".github/workflows/wild.yml")
# What may go into the workflow unquoted: names, hub ids, runner labels, gate rules.
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@:+-]*")
RULE = re.compile(r"[A-Za-z0-9_.]+(>=|<=|>|<|==)[0-9.]+")
DEFAULT_GATES = ("reliability>=0.5",)


@dataclass(frozen=True)
class Workflow:
    editor: str
    gates: tuple[str, ...] = DEFAULT_GATES
    gpu_model: str | None = None
    gpu_suite: str = "qaedit"
    shards: int = 4
    runner: str = "self-hosted,gpu"


def render(workflow: Workflow) -> str:
    """The workflow's text, every value checked first (one line naming the option otherwise)."""
    _plain(workflow.editor, "--editor")
    for gate in workflow.gates:
        if not RULE.fullmatch(gate):
            raise WildInputError(f"--gate: {gate!r}: write a rule such as reliability>=0.5")
        parse_rule(gate, "--gate", MODES)
    template = files("pytest_wild").joinpath("templates/github-workflow.yml").read_text(encoding="utf-8")
    if workflow.gpu_model is not None:
        _plain(workflow.gpu_model, "--gpu-model")
        _plain(workflow.gpu_suite, "--gpu-suite")
        labels = [label.strip() for label in workflow.runner.split(",") if label.strip()]
        for label in labels or [""]:
            _plain(label, "--runner")
        if workflow.shards < 1:
            raise WildInputError(f"--shards: expected a positive number, got {workflow.shards}")
        template += files("pytest_wild").joinpath("templates/github-workflow-gpu.yml").read_text(encoding="utf-8")
        template = (template.replace("@MODEL@", workflow.gpu_model).replace("@SUITE@", workflow.gpu_suite)
                    .replace("@RUNNER@", ", ".join(labels)).replace("@SHARDS@", str(workflow.shards))
                    .replace("@SHARD_LIST@", ", ".join(str(k) for k in range(1, workflow.shards + 1))))
    gates = " ".join(f'"--wild-gate={gate}"' for gate in workflow.gates)
    return (template.replace("@EDITOR@", workflow.editor).replace("@GATES@", gates)
            .replace("@VERSION@", version("pytest-wild")))


def write(workflow: Workflow, path: Path, force: bool = False) -> None:
    """Write the workflow; an existing file is replaced only with `force`, never through a link,
    and a path that cannot be written is refused as a run's outputs are (`outputs.check_outputs`)."""
    from .outputs import check_outputs
    from .report import write_text_atomic

    text = render(workflow)
    if path.is_symlink():
        raise WildInputError(f"{path}: is a symbolic link; name the file itself")
    check_outputs({"--out": path}, (), None)
    if path.exists() and not force:
        raise WildInputError(f"{path}: exists already; pass --force to replace it")
    write_text_atomic(path, text)


def _plain(value: str, option: str) -> None:
    if not PLAIN.fullmatch(value):
        raise WildInputError(f"{option}: {value!r}: use letters, digits and . _ / @ : + - only")

