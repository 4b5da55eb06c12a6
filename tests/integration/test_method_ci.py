"""An editing method's repository under the workflow `pytest-wild init-ci` writes, played as a
GitHub-hosted runner plays it, three pushes long. The user runs the README's block ("Use
pytest-wild in your method's CI") line by line in a fresh virtual environment: pytest-wild
from a git repository (so its PEP 610 record is a VCS URL and commit), the method, init-ci,
the goldens, two commits. After each commit the runner, in another fresh virtual
environment, runs the CPU job's `run:` steps in order with `bash -e` and GitHub's variables
(CI, GITHUB_ACTIONS, GITHUB_WORKSPACE, GITHUB_STEP_SUMMARY, RUNNER_TEMP), a step after a
failed one only when its `if` is `always()`. Conformance passes; the gated run fails while goldens are missing, passes
once they are committed, and fails with a diff when the editor changes an answer.

Shortcuts, for a machine without network and with 2 cores:
- The README's `pip` is run as `python -m pip`, its git URL is the local repository's.
- pytest-wild's repository is this working tree's package files (pyproject.toml, README.md,
  pytest_wild/) committed into a temporary git repository.
- Nothing comes from an index (PIP_NO_INDEX, PIP_NO_BUILD_ISOLATION=0: setuptools as
  installed). The fresh environments reach the outer environment's packages (torch, pytest,
  ... at the pinned versions) through a .pth file naming a directory of links to its
  site-packages entries, pytest-wild's own entries and its .pth files left out (a virtual
  environment cannot inherit another one's site-packages); pip then finds every pinned
  dependency installed, so the workflow's pip lines install pytest-wild and the method only.
  pytest's console script is written into each environment's bin/ (pip found pytest installed
  and wrote none).
- Not run: the `uses:` steps (actions/checkout: the runner's workspace is a clone of the
  method's repository, pulled to each push; actions/setup-python: the fresh environment is
  the runner's Python; actions/upload-artifact: the file it uploads is checked instead) and
  the line installing torch from PyTorch's CPU index (out of reach; torch's CPU build is among
  the linked packages). Later pushes reuse the first push's environment, whose install step
  would install the same.
- The gated step evaluates 4 of the bundled suite's cases (PYTEST_ADDOPTS=--wild-limit=4, a
  seeded sample), and so does the user's recording (time).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "editor-plugin"
LIMIT = "--wild-limit=4"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
GIT = ("git", "-c", "user.name=Wild Test", "-c", "user.email=wild@example.org", "-c", "init.defaultBranch=main")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def package_repository(where: Path) -> str:
    """pytest-wild's package files from the working tree, committed; the commit."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, where / name)
    shutil.copytree(ROOT / "pytest_wild", where / "pytest_wild", ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", cwd=where)
    git("add", "-A", cwd=where)
    git("commit", "-qm", "pytest-wild", cwd=where)
    return git("rev-parse", "HEAD", cwd=where)


def linked_site(where: Path) -> Path:
    """Links to the outer environment's installed packages, less pytest-wild and .pth files."""
    where.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        if name.startswith(("pytest_wild", "__editable__", "__pycache__", "wild_rank_one")) or name.endswith(".pth"):
            continue
        (where / name).symlink_to(entry)
    return where


def fresh_environment(where: Path, site: Path) -> Path:
    """A virtual environment seeing `site`, with pytest's console script; its bin/."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    own_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    (Path(own_site) / "outer.pth").write_text(f"{site}\n")
    launcher = where / "bin" / "pytest"
    launcher.write_text(f"#!{python}\nimport pytest\nraise SystemExit(pytest.main())\n")
    launcher.chmod(0o755)
    return where / "bin"


def environment(bin_dir: Path, home: Path, **extra: str) -> dict[str, str]:
    """A clean process environment: the fresh environment first on PATH, no PYTHONPATH (this
    checkout must not be imported), pip offline (PIP_NO_BUILD_ISOLATION=0 is pip's spelling of
    --no-build-isolation as a variable: builds use the linked setuptools, not one from an index)."""
    kept = {name: os.environ[name] for name in ("LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    return {**kept, "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "OMP_NUM_THREADS": "1",
            "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTEST_WILD_CACHE": str(home / "wild-cache"), **extra}


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)


def offline(script: str) -> str:
    """The step's script less the line installing torch from PyTorch's CPU index."""
    kept = [line for line in script.splitlines() if not ("torch" in shlex.split(line) and TORCH_INDEX in line)]
    assert len(kept) == len(script.splitlines()) - (TORCH_INDEX in script)
    return "\n".join(kept) + "\n"


class Runner:
    """The CPU job's steps on a runner: one workspace and environment for every push."""

    def __init__(self, workspace: Path, bin_dir: Path, home: Path) -> None:
        self.workspace, self.temp, self.pushes = workspace, home / "runner-temp", 0
        self.temp.mkdir()
        self.env = environment(bin_dir, home, CI="true", GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(workspace),
                               RUNNER_TEMP=str(self.temp))

    def push(self, installed: bool) -> dict[str, subprocess.CompletedProcess | str]:
        """Each step's outcome by name (the `run` text when unnamed): its process, or why it
        was not run."""
        git("pull", "-q", "--ff-only", cwd=self.workspace)
        job = yaml.safe_load((self.workspace / ".github" / "workflows" / "wild.yml").read_text())["jobs"]["cpu"]
        self.pushes += 1
        summary = self.temp / f"step-summary-{self.pushes}.md"
        summary.touch()
        env = {**self.env, "GITHUB_STEP_SUMMARY": str(summary)}
        outcomes: dict[str, subprocess.CompletedProcess | str] = {"summary": str(summary)}
        failed = False
        for step in job["steps"]:
            name = step.get("name") or step.get("run") or step["uses"]
            if failed and step.get("if") != "always()":
                outcomes[name] = "skipped after a failed step"
            elif "uses" in step:
                outcomes[name] = "a GitHub action (see the module docstring)"
                if step["uses"].startswith("actions/upload-artifact"):
                    outcomes[name] += f"; uploads {step['with']['path']}: " + \
                        ("present" if (self.workspace / step["with"]["path"]).is_file() else "absent")
            elif "pip install" in step["run"] and installed:
                outcomes[name] = "installed by the first push"
            else:
                script = offline(step["run"])
                step_env = {**env, "PYTEST_ADDOPTS": LIMIT} if "--wild-require-goldens" in script else env
                outcomes[name] = done = shell(script, self.workspace, step_env)
                failed = done.returncode != 0
        return outcomes


def output(done) -> str:
    return done.stdout + done.stderr


def readme_blocks() -> list[str]:
    """The shell blocks of the README's section "Use pytest-wild in your method's CI"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Use pytest-wild in your method's CI\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def as_run_here(line: str, requirement: str) -> str:
    """A README line as this test runs it: `pip` as `python -m pip` (the fresh environment has
    pip as a linked module, no script), the git URL as the local repository's."""
    line = re.sub(r"^pip install ", "python -m pip install ", line)
    return line.replace('"pytest-wild @ git+https://github.com/OWNER/pytest-wild@COMMIT"', f"'{requirement}'")


def test_a_method_repository_passes_its_pull_requests_under_the_init_ci_workflow(tmp_path):
    package, method, workspace, home = (tmp_path / name for name in ("pytest-wild", "method", "runner", "home"))
    for directory in (package, method, home):
        directory.mkdir()
    commit = package_repository(package)
    site = linked_site(tmp_path / "outer-site")
    requirement = f"pytest-wild @ git+file://{package}@{commit}"
    shutil.copytree(EXAMPLE, method, dirs_exist_ok=True)
    git("init", "-q", cwd=method)
    git("add", "-A", cwd=method)
    git("commit", "-qm", "rank-one", cwd=method)
    git("clone", "-q", str(method), str(workspace), cwd=tmp_path)
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "Wild Test"), ("EMAIL", "wild@example.org"))}
    user = environment(fresh_environment(tmp_path / "user-venv", site), home, PYTEST_ADDOPTS=LIMIT, **identity)
    runner = Runner(workspace, fresh_environment(tmp_path / "runner-venv", site), home)

    # The user runs the README's block; after each commit, the runner plays the push.
    said, pushes = {}, []
    user_block, install_block = readme_blocks()
    for line in user_block.splitlines():
        done = shell(as_run_here(line, requirement), method, user)
        assert done.returncode == 0, f"{line}\n{output(done)}"
        said[line.split("#")[0].strip()] = done
        if "git commit" in line:
            pushes.append(runner.push(installed=bool(pushes)))
    wrote = said["pytest-wild init-ci --editor rank-one"]
    assert wrote.stderr == (f"pytest-wild init-ci: note: pytest-wild comes from a repository on this machine "
                            f"(file://{package}), which a GitHub-hosted runner cannot reach; for one, pass "
                            "--requirement SPEC\n")
    assert f"installing {requirement}." in wrote.stdout
    recorded = said["pytest --wild --editor rank-one --snapshot-update"]
    assert "4 snapshots generated." in recorded.stdout, output(recorded)

    # The README's install lines are the workflow's.
    job = yaml.safe_load((method / ".github" / "workflows" / "wild.yml").read_text())["jobs"]["cpu"]
    install_name = "Install pytest-wild, torch's CPU build and the method, at pytest-wild's tested versions"
    install = next(step["run"] for step in job["steps"] if step.get("name") == install_name)
    assert install.replace(requirement, "SPEC").splitlines() == \
        [re.sub(r"\s+#.*$", "", line) for line in install_block.splitlines()]

    # First push, the workflow without goldens: installed, conformant, the gated run fails.
    first, second = pushes
    install, conformance, gated, summary_step = (first[name] for name in (
        install_name, "Editor protocol (conformance)", "Bundled suite, gates and goldens",
        "Results table as the job summary"))
    assert install.returncode == 0, output(install)
    located = shell("python -c 'import pytest_wild, wild_rank_one; print(pytest_wild.__file__, wild_rank_one.__file__)'",
                    workspace, runner.env).stdout.split()
    assert located[0].startswith(str(tmp_path / "runner-venv")) and located[1] == str(workspace / "wild_rank_one.py")
    assert conformance.returncode == 0 and "7 passed" in conformance.stdout, output(conformance)
    assert gated.returncode == 1, output(gated)
    missing = re.findall(r"^FAILED tinyworld\.yaml::(tw-\d+) - Failed: golden golden/tinyworld/rank-one/tinyworld/"
                         r"(tw-\d+)\.json does not exist: run with --snapshot-update to record it$", gated.stdout, re.M)
    assert len(missing) == 4 and all(case == golden for case, golden in missing), output(gated)
    assert "--wild-require-goldens fails each case without one" in gated.stdout
    assert summary_step.returncode == 0 and "| wild | reliability |" in Path(first["summary"]).read_text()
    assert first["actions/upload-artifact@v4"].endswith("uploads wild.json: present")

    # Second push, the goldens committed: it passes.
    gated = second["Bundled suite, gates and goldens"]
    assert gated.returncode == 0 and "4 snapshots passed." in gated.stdout, output(gated)
    assert "gate reliability>=0.5 (wild): passed" in gated.stdout

    # A pull request that changes the editor's answers fails with the diff.
    source = method / "wild_rank_one.py"
    source.write_text(source.read_text().replace("steps: int = 25", "steps: int = 2"))
    git("commit", "-qam", "fewer steps", cwd=method)
    third = runner.push(installed=True)
    assert third["Editor protocol (conformance)"].returncode == 0
    gated = third["Bundled suite, gates and goldens"]
    assert gated.returncode == 1, output(gated)
    assert "differs (- golden, + this run); accept with --snapshot-update:" in gated.stdout
    assert "    - \"" in gated.stdout and "    + \"" in gated.stdout
