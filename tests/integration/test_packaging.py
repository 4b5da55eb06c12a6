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


def test_the_package_ships_the_lock_file_and_prints_it():
    """A workflow installing a released pytest-wild reads the pins from the package, not a clone,
    before anything else is installed: the shipped copy must be the repository's
    (`.ci/upstream --lock` writes both), printed with nothing but the standard library."""
    shipped = ROOT / "pytest_wild" / "constraints.txt"
    assert shipped.read_bytes() == (ROOT / "constraints.txt").read_bytes()
    # -S: no site-packages, as after the workflow's `pip install --no-deps pytest-wild`
    printed = subprocess.run([sys.executable, "-S", "-m", "pytest_wild.cli", "constraints"], capture_output=True,
                             text=True, check=True, env={"PYTHONPATH": str(ROOT)}).stdout
    assert printed == shipped.read_text() and "torch==" in printed
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "constraints.txt" in package_data["pytest_wild"]


def test_versions_of_the_command_and_of_the_plugin_in_pytests_own_listing(tmp_path):
    """`pytest-wild --version`; pytest lists third-party plugins with their distribution's version
    under `--version --version` and in every session's header."""
    from importlib.metadata import version

    import pytest_wild

    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert pytest_wild.__version__ == version("pytest-wild") == expected
    own = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "--version"], capture_output=True, text=True,
                         check=True)
    assert own.stdout == f"pytest-wild {expected}\n"
    listed = subprocess.run([sys.executable, "-m", "pytest", "--version", "--version"], cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    assert re.search(rf"^  pytest-wild-{re.escape(expected)} at .*plugin\.py$", listed.stdout, re.M), listed.stdout
    header = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert re.search(rf"^plugins: .*\bwild-{re.escape(expected)}\b", header.stdout, re.M), header.stdout


def test_the_wheel_holds_every_stage_package_and_the_package_data(tmp_path):
    """Built from this tree as pip builds it: the sub-packages of each stage (found, not listed),
    the bundled suites, the tinyworld model, the workflow templates, the lock file and the JSON
    Schemas the reports and goldens follow."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy: setuptools leaves build/ and *.egg-info/ where it builds
    shutil.copytree(ROOT / "pytest_wild", source / "pytest_wild", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("pytest_wild-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {path.parent.relative_to(ROOT).as_posix() for path in (ROOT / "pytest_wild").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names
    for stage in ("cases", "model", "editors", "generation", "scores", "results", "sequence", "run", "judge"):
        assert f"pytest_wild/{stage}/__init__.py" in names
    data = [path.relative_to(ROOT).as_posix() for folder in ("suites", "templates", "schemas", "data/tinyworld",
                                                             "data/tinyworld/mend", "data/smollm2-135m/mend")
            for path in (ROOT / "pytest_wild" / folder).glob("*") if path.is_file()]
    assert data and set(data) <= names
    assert {"pytest_wild/schemas/report.schema.json", "pytest_wild/schemas/golden.schema.json",
            "pytest_wild/constraints.txt"} <= names
