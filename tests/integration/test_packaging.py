"""Installs are reproducible: every declared dependency range admits its locked (tested)
version, CI installs with the lock file and runs exactly the README's test command."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = Version(version)
    return pins


def test_every_dependency_is_locked_inside_its_declared_range():
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    for text in dependencies:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"
        assert not requirement.specifier.contains(Version("999")), f"{name} has no upper bound"


def test_ci_installs_from_the_lock_file_and_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    test_command = re.search(r"## Test\n\n```sh\n(.+?)\n```", readme).group(1)
    assert ci.rstrip().splitlines()[-1] == test_command
    installs = [line for line in ci.splitlines() if line.startswith("pip install") and "pip==" not in line]
    assert installs and all("-c constraints.txt" in line for line in installs)


def test_the_suites_command_lists_the_bundled_suites_from_an_empty_project(tmp_path):
    found = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "suites"], cwd=tmp_path, capture_output=True,
                           text=True, check=True)
    names = {line.split()[0]: line for line in found.stdout.splitlines()}
    assert set(names) == {"tinyworld", "tinyworld-sequential", "qaedit", "qaedit-full", "qaedit-800",
                          "counterfact-1k"}
    assert "@data/qaedit-800.json" in names["qaedit-800"] and "hub WenDingY/QAEdit" in names["qaedit-full"]
    assert "qaedit-800.json" in names["qaedit"] and "bundled" in names["qaedit"]
