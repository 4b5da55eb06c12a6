"""`pytest-wild init-ci`: a GitHub Actions workflow for an editing method's repository, filled
in from the templates in `templates/` (readable YAML, not generated code): conformance and the
bundled suite with gates and goldens on CPU for every pull request, the Markdown table as the
job summary, and optionally a real model sharded over a self-hosted GPU runner.

pytest-wild is installed on the runner as it is installed here, read from the distribution's
own record (PEP 610 `direct_url.json`): a runner must evaluate with the same pytest-wild the
goldens were recorded with. An install a runner cannot repeat (editable, a local directory or
archive) is refused rather than guessed at; `--requirement SPEC` names another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

from .cases.case import WildInputError
from .results.gates import parse_rule
from .scores.metrics import MODES

DEFAULT_PATH = Path(".github/workflows/wild.yml")
# What may go into the workflow unquoted: names, hub ids, runner labels, gate rules.
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@:+-]*")
RULE = re.compile(r"[A-Za-z0-9_.]+(>=|<=|>|<|==)[0-9.]+")
DEFAULT_GATES = ("reliability>=0.5",)
# What a requirement may hold inside the workflow's single-quoted shell words: no quote,
# backslash, `$` (so no GitHub expression `${{ }}` either) or backtick.
SPEC = re.compile(r"[A-Za-z0-9 ._~:/?#\[\]@!&()*+,;=%<>-]+")
PASS_SPEC = "pass --requirement SPEC naming a pytest-wild a runner can install (e.g. pytest-wild==VERSION)"


@dataclass(frozen=True)
class Workflow:
    editor: str
    requirement: str
    gates: tuple[str, ...] = DEFAULT_GATES
    gpu_model: str | None = None
    gpu_suite: str = "qaedit"
    shards: int = 4
    runner: str = "self-hosted,gpu"


def render(workflow: Workflow) -> str:
    """The workflow's text, every value checked first (one line naming the option otherwise)."""
    _plain(workflow.editor, "--editor")
    check_requirement(workflow.requirement)
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
            .replace("@REQUIREMENT@", workflow.requirement))


def check_gpu_suite(suite: str, repository: Path) -> None:
    """The GPU job's suite must exist on the runner: a bundled suite, a hub dataset id, or a
    suite of this repository (its suites/ or a file in it), as `--wild-suite` finds them."""
    from .cases.suite import BUNDLED_SUITES, find_suite

    found = find_suite(suite, repository, repository, option="--gpu-suite")
    if isinstance(found, Path) and not (found.is_relative_to(repository.resolve()) or
                                        found.is_relative_to(BUNDLED_SUITES.resolve())):
        raise WildInputError(f"--gpu-suite: {suite!r} is outside this repository, where the runner cannot find it")


def installed_requirement() -> tuple[str, str | None]:
    """How to install the pytest-wild installed here, from its PEP 610 record, and a note when
    only this machine can follow it (a git repository on a local path). `WildInputError` for
    an install a runner cannot repeat, and for a URL holding credentials, which are never
    written into a workflow (nor shown)."""
    try:
        dist = distribution("pytest-wild")
    except PackageNotFoundError:
        raise WildInputError(f"pytest-wild is not installed here (run from a source tree); {PASS_SPEC}") from None
    record_text = dist.read_text("direct_url.json")
    if record_text is None:  # installed from an index
        return f"pytest-wild=={dist.version}", None
    record = json.loads(record_text)
    url = str(record.get("url", ""))
    parts = urlsplit(url)
    if _credentials(url):
        raise WildInputError("pytest-wild was installed from a URL with credentials in it, which are never written "
                             f"into a workflow; {PASS_SPEC} (a private repository: a token in the runner's secrets)")
    if "vcs_info" in record:
        vcs = record["vcs_info"]
        requirement = f"pytest-wild @ {vcs['vcs']}+{url}@{vcs['commit_id']}"
        if record.get("subdirectory"):  # the project lies below the repository's root
            requirement += f"#subdirectory={record['subdirectory']}"
        note = None
        if parts.scheme == "file":
            note = (f"pytest-wild comes from a repository on this machine ({url}), which a GitHub-hosted runner "
                    "cannot reach; for one, pass --requirement SPEC")
        return requirement, note
    if record.get("dir_info", {}).get("editable"):
        raise WildInputError(f"pytest-wild is installed editable from {url}, which a runner cannot repeat; {PASS_SPEC}")
    if "archive_info" in record and parts.scheme in ("http", "https"):
        digest = record["archive_info"].get("hash")  # "sha256=<hex>", a URL fragment pip checks
        return f"pytest-wild @ {url}" + (f"#{digest}" if digest else ""), None
    raise WildInputError(f"pytest-wild is installed from {url}, a local path a runner cannot reach; {PASS_SPEC}")


def check_requirement(requirement: str) -> None:
    """A pip requirement for pytest-wild that fits the workflow's quoted shell words and
    carries no credentials (one line naming --requirement otherwise)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    if _credentials(requirement):
        raise WildInputError("--requirement: its URL holds credentials, which are never written into a workflow; "
                             "keep them in the runner's secrets")
    if not SPEC.fullmatch(requirement):
        raise WildInputError(f"--requirement: {requirement!r}: quotes, backslashes, $ and ` are not allowed")
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]  # packaging adds the text and a caret on lines of their own
        raise WildInputError(f"--requirement: {requirement!r} is not a pip requirement: {reason}") from None
    if canonicalize_name(parsed.name) != "pytest-wild":
        raise WildInputError(f"--requirement: names {parsed.name}, not pytest-wild")


def _credentials(text: str) -> bool:
    """Whether a URL in `text` carries a password, or a user name over http(s) (where a token
    is written as one); `ssh://git@host/...` names an account, not a secret."""
    for match in re.finditer(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/\s]*)@", text):
        scheme, userinfo = match.group(1).rsplit("+", 1)[-1].lower(), match.group(2)
        if ":" in userinfo or scheme in ("http", "https"):
            return True
    return False


def write(workflow: Workflow, path: Path, force: bool = False) -> None:
    """Write the workflow; an existing file is replaced only with `force`, never through a link,
    and a path that cannot be written is refused as a run's outputs are (`outputs.check_outputs`)."""
    from .results.outputs import check_outputs
    from .storage import write_text_atomic

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

