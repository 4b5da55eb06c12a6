"""Editors from other packages, as a method author meets them: the example plugin installed
with pip and run through the plugin, `pytest-wild editors` with broken plugins installed,
`--wild-conformance` on every built-in editor and on editors broken on purpose (each failing
the check that names its fault), and the CI workflow `pytest-wild init-ci` writes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_wild.cli import main, parser
from pytest_wild.editors import BUILTIN

EXAMPLE = Path(__file__).parents[2] / "examples" / "editor-plugin"
BROKEN = Path(__file__).parents[1] / "editor_plugins"
CHECKS = 7
PLUGINS = {
    "broken-editors 0.1": {
        "leaky": "broken_editors:LEAKY", "inexact": "broken_editors:INEXACT",
        "nondeterministic": "broken_editors:NONDETERMINISTIC", "single": "broken_editors:SINGLE",
        "ft-m": "broken_editors:LEAKY", "unimportable": "not_a_module_xyz:EDITOR", "twice": "broken_editors:LEAKY",
        "not-an-editor": "broken_editors:_broken", "misnamed": "broken_editors:INEXACT",
        "exits": "exiting_editor:EDITOR", "../escape": "broken_editors:LEAKY",
        "bad-defaults": "broken_editors:BAD_DEFAULTS", "no-defaults": "broken_editors:NO_DEFAULTS",
    },
    "other-editors 2.0": {"twice": "broken_editors:INEXACT"},
}


@pytest.fixture(scope="module", autouse=True)
def imported_once():
    """What a run imports, imported before the first in-process run: pytester drops the
    modules a run imports when it ends, and torch's C extension cannot be imported twice."""
    import importlib

    import pytest_wild.api  # noqa: F401
    import pytest_wild.editors.conformance  # noqa: F401
    import pytest_wild.scores.evaluation  # noqa: F401
    import pytest_wild.results.golden  # noqa: F401
    from pytest_wild.model.load import check_model, load_model

    for target in BUILTIN.values():
        importlib.import_module(target.partition(":")[0])
    load_model(None, "cpu")
    check_model(None)


def install_dist_info(site: Path, dist: str, entries: dict[str, str]) -> None:
    """A distribution's metadata as an installer leaves it: NAME-VERSION.dist-info with METADATA
    and entry_points.txt (the modules themselves come from `BROKEN` on the path)."""
    name, version = dist.split()
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entries.items())
    (info / "entry_points.txt").write_text(f"[pytest_wild.editors]\n{lines}")


def on_path(monkeypatch, *paths: Path) -> None:
    """`paths` importable here (in-process runs) and in subprocesses (PYTHONPATH)."""
    for path in reversed(paths):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(map(str, paths)))


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    for dist, entries in PLUGINS.items():
        install_dist_info(site, dist, entries)
    on_path(monkeypatch, site, EXAMPLE, BROKEN)
    return site


def outcome_lines(result) -> dict[str, str]:
    """Check name -> PASSED / FAILED / SKIPPED, from `-v`'s lines."""
    found = re.findall(r"conformance-\S+::(\w+) (PASSED|FAILED|SKIPPED)", result.stdout.str())
    return dict(found)


def test_the_example_plugin_installed_with_pip_is_listed_runs_and_passes_conformance(pytester, tmp_path, monkeypatch,
                                                                                      capsys):
    """From the example's own pyproject.toml, as a user installs it (a copy, so the checkout
    stays clean): listed with its package, run on two cases, conformant under -n 2 (the listing
    and the run in process, with the install on sys.path, as a user's site-packages is)."""
    source, site = tmp_path / "example", tmp_path / "site"
    shutil.copytree(EXAMPLE, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)],
                   check=True)
    on_path(monkeypatch, site)
    assert main(["editors"]) == 0
    listing = capsys.readouterr().out
    assert any(line.split()[:3] == ["rank-one", "wild-rank-one", "0.1.0"] and "example plugin" in line
               for line in listing.splitlines()), listing

    run = pytester.runpytest_inprocess("--wild", "--editor", "rank-one", "-p", "no:cacheprovider", "-p", "no:syrupy",
                                       "-k", "tw-0001 or tw-0002", "--wild-report=r.json")
    assert run.ret == 0, run.stdout.str()[-3000:]
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["config"]["editor"]["name"] == "rank-one" and len(report["samples"]) == 2
    assert report["results"]["wild"]["reliability"]["value"] > 0  # it edits: tw-0002's answer becomes its target

    checked = pytester.runpytest_subprocess("--wild", "--editor", "rank-one", "--wild-conformance",
                                            "-p", "no:cacheprovider", "-n", "2")
    checked.assert_outcomes(passed=CHECKS)


@pytest.mark.parametrize("editor", sorted(BUILTIN))
def test_every_built_in_editor_passes_conformance(pytester, editor):
    result = pytester.runpytest_inprocess("--wild", "--editor", editor, "--wild-conformance", "-p", "no:cacheprovider")
    # as published: one case per update (the batch check is skipped, saying why); IKE also keeps no
    # edit across a sequence (the sequence check is skipped too)
    skipped = {"grace": 1, "wise": 1, "ike": 2}.get(editor, 0)
    result.assert_outcomes(passed=CHECKS - skipped, skipped=skipped)


FAULTS = {
    "leaky": ("leaks_no_state_between_edits", "something of the first edit outlived its restore"),
    "inexact": ("restores_the_weights_exactly", "1 tensor(s) differ from before the edit: transformer.h.0.mlp.c_proj.weight"),
    "nondeterministic": ("is_deterministic", "with the same seed (torch.manual_seed(0) before each"),
}


@pytest.mark.parametrize("editor", sorted(FAULTS))
def test_each_broken_editor_fails_only_the_check_that_names_its_fault(pytester, broken_plugins, editor):
    result = pytester.runpytest_inprocess("--wild", "--editor", editor, "--wild-conformance", "-p", "no:cacheprovider", "-v")
    check, message = FAULTS[editor]
    outcomes = outcome_lines(result)
    assert len(outcomes) == CHECKS and outcomes[check] == "FAILED", result.stdout.str()[-3000:]
    others = {name: status for name, status in outcomes.items() if name != check}
    skipped = {"leaks_no_state_between_edits"} if editor == "nondeterministic" else set()
    assert others == {name: "SKIPPED" if name in skipped else "PASSED" for name in others}
    assert f"{check}: " in result.stdout.str() and message in result.stdout.str()
    assert result.ret == 1


def test_an_editor_declaring_no_batch_and_no_sequence_is_checked_without_them_and_refused_them(pytester, broken_plugins):
    checked = pytester.runpytest_inprocess("--wild", "--editor", "single", "--wild-conformance", "-p", "no:cacheprovider",
                                           "-rs")
    checked.assert_outcomes(passed=CHECKS - 2, skipped=2)
    checked.stdout.fnmatch_lines(["*declares that it does not edit batches (Editor(batches=False))*",
                                  "*declares that its edits cannot follow one another (Editor(sequences=False))*"])
    for option, line in (("--wild-batch-size=2", "--wild-batch-size 2: the editor single edits one case per update"),
                         ("--wild-sequential=2", "--wild-sequential 2: the editor single cannot keep its edits")):
        refused = pytester.runpytest_inprocess("--wild", "--editor", "single", option, "-p", "no:cacheprovider")
        assert refused.ret == 4 and line in refused.stderr.str()


def test_editors_into_a_closed_pipe_ends_quietly():
    """`pytest-wild editors | head -1`: the reader is gone before the list is written (here it
    closes the pipe at once, so the write surely meets a closed pipe): no BrokenPipeError."""
    reader = subprocess.Popen([sys.executable, "-m", "pytest_wild.cli", "editors"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader.stdout.close()
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 1 and stderr == "", stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_editors_onto_a_full_disk_is_one_line():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "editors"], stdout=full, stderr=subprocess.PIPE,
                              text=True)
    assert done.returncode == 1 and done.stderr == "pytest-wild: No space left on device\n", done.stderr


def test_editors_lists_each_package_and_why_a_plugin_is_not_used(broken_plugins, capsys):
    assert main(["editors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [
        ("ft-m", "built-in", "fine-tune the MLP output projection on the target tokens"),
        ("leaky", "broken-editors 0.1", "broken on purpose: Solves again"),
        ("ft-m", "broken-editors 0.1", "not used: a built-in editor has this name (broken_editors:LEAKY)"),
        ("twice", "broken-editors 0.1", "not used: other-editors 2.0 also provides an editor of this name"),
        ("twice", "other-editors 2.0", "not used: broken-editors 0.1 also provides an editor of this name"),
        ("unimportable", "broken-editors 0.1", "cannot be imported: ModuleNotFoundError: No module named 'not_a_module_xyz'"),
        ("not-an-editor", "broken-editors 0.1", "is not a pytest_wild.api.Editor"),
        ("misnamed", "broken-editors 0.1", "is an Editor called 'inexact', not 'misnamed' as its entry point"),
        ("exits", "broken-editors 0.1", "cannot be imported: SystemExit: 3"),
        ("../escape", "broken-editors 0.1", "not used: an editor's name is letters, digits and . _ - only"),
    ]
    for name, origin, about in expected:
        assert any(line.split()[0] == name and f" {origin} " in line and about in line for line in lines), (name, lines)
    assert [line.split()[0] for line in lines if line.split()[1] == "built-in"] == sorted(BUILTIN)


@pytest.mark.parametrize(("editor", "line"), [
    ("unimportable", "--editor unimportable: not_a_module_xyz:EDITOR (broken-editors 0.1) cannot be imported: "
                     "ModuleNotFoundError: No module named 'not_a_module_xyz'"),
    ("twice", "--editor twice: broken-editors 0.1 and other-editors 2.0 each provide an editor of this name; "
              "none is used"),
    ("not-an-editor", "--editor not-an-editor: broken_editors:_broken (broken-editors 0.1) is not a pytest_wild.api.Editor"),
    ("exits", "--editor exits: exiting_editor:EDITOR (broken-editors 0.1) cannot be imported: SystemExit: 3"),
    ("bad-defaults", "--editor bad-defaults: broken_editors:BAD_DEFAULTS (broken-editors 0.1) raised KeyError in its "
                     "defaults(): 'no_such_key'"),
    ("no-defaults", "--editor no-defaults: broken_editors:NO_DEFAULTS (broken-editors 0.1) returned NoneType from its "
                    "defaults(), not a mapping of hyperparameters"),
])
def test_a_plugin_that_cannot_be_used_is_refused_in_one_line(pytester, broken_plugins, editor, line):
    result = pytester.runpytest_inprocess("--wild", "--editor", editor, "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 4 and line in output and "Traceback" not in output


def test_a_broken_plugin_breaks_no_other_run_and_a_shadowed_one_is_named(pytester, broken_plugins):
    result = pytester.runpytest_inprocess("--wild", "--editor", "ft-m", "-p", "no:cacheprovider", "-p", "no:syrupy",
                                          "-k", "tw-0001")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["wild editor: ft-m of broken-editors 0.1 (broken_editors:LEAKY) not used: "
                                 "a built-in editor has this name", "*1 passed*"])


def commands(workflow: dict) -> list[list[str]]:
    """The pytest and pytest-wild command lines of a workflow's `run` steps (up to a
    redirection), with GitHub's expressions and the shell's glob given example values."""
    found = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                line = line.replace("${{ matrix.shard }}", "1").replace("wild-*.json", "wild-1.json wild-2.json")
                words = shlex.split(line)
                words = words[:next((i for i, word in enumerate(words) if word in (">", ">>")), len(words))]
                if words and words[0] in ("pytest", "pytest-wild"):
                    found.append(words)
    return found


REQUIREMENT = "pytest-wild @ git+https://github.com/wild/pytest-wild.git@0123456789abcdef0123456789abcdef01234567"
VARIANTS = {"cpu": [], "gpu": ["--gpu-model", "meta-llama/Llama-2-7b-hf", "--shards", "3"],
            "gpu-named": ["--gpu-model", "models/llama-2-7b", "--gpu-suite", "my-suite", "--runner", "self-hosted,a100",
                          "--shards", "1"]}


@pytest.mark.parametrize("gpu", [[], ["--gpu-model", "meta-llama/Llama-2-7b-hf", "--shards", "3"]], ids=["cpu", "gpu"])
def test_init_ci_writes_valid_yaml_whose_commands_exist_with_those_options(pytester, tmp_path, gpu):
    from pytest_wild.run.options import options_from_config

    out = tmp_path / "wild.yml"
    assert main(["init-ci", "--editor", "ft-m", "--out", str(out), "--gate", "reliability>=0.4",
                 "--gate", "locality>=0.9", "--requirement", REQUIREMENT, *gpu]) == 0
    workflow = yaml.safe_load(out.read_text())
    assert set(workflow["jobs"]) == ({"cpu", "gpu", "gpu-report"} if gpu else {"cpu"})
    if gpu:
        assert workflow["jobs"]["gpu"]["strategy"]["matrix"]["shard"] == [1, 2, 3]
        assert workflow["jobs"]["gpu"]["runs-on"] == ["self-hosted", "gpu"]
    found = commands(workflow)
    assert [words[:2] for words in found if words[0] == "pytest-wild"] == \
        ([["pytest-wild", "constraints"]] * 3 + [["pytest-wild", "merge-reports"], ["pytest-wild", "table"]] if gpu
         else [["pytest-wild", "constraints"]])
    pytests = [words[1:] for words in found if words[0] == "pytest"]
    assert any("--wild-conformance" in args for args in pytests)
    assert any("--wild-gate=reliability>=0.4" in args and "--wild-markdown=wild.md" in args
               and "--wild-require-goldens" in args for args in pytests)
    for job in workflow["jobs"].values():  # pytest-wild as named, the rest under its pins, torch's CPU build
        installs = [shlex.split(line) for step in job["steps"] for line in step.get("run", "").splitlines()
                    if line.startswith("python -m pip install")]
        assert installs[0] == ["python", "-m", "pip", "install", "--no-deps", REQUIREMENT]
        assert all("-c" in words for words in installs[1:]) and REQUIREMENT in installs[-1]
        torch = [words for words in installs if "torch" in words]
        assert torch == ([] if job is workflow["jobs"].get("gpu") else
                         [["python", "-m", "pip", "install", "--no-deps", "-c", "$RUNNER_TEMP/wild-constraints.txt",
                           "torch", "--index-url", "https://download.pytorch.org/whl/cpu"]])
    for args in pytests:
        config = pytester.parseconfig(*args)
        options = options_from_config(config)  # every value checked as a run checks it
        assert options.editor == "ft-m"
    for words in found:
        if words[0] == "pytest-wild":
            parser().parse_args(words[1:])  # exits with status 2 on an unknown command or option


def test_init_ci_refuses_to_overwrite_and_bad_values_in_one_line(tmp_path, capsys):
    out = tmp_path / "wild.yml"
    out.write_text("mine\n")
    assert main(["init-ci", "--requirement", REQUIREMENT, "--editor", "ft-m", "--out", str(out)]) == 2
    assert main(["init-ci", "--requirement", REQUIREMENT, "--editor", "x; rm -rf /", "--out", str(tmp_path / "b.yml")]) == 2
    assert main(["init-ci", "--requirement", REQUIREMENT, "--editor", "ft-m", "--gate", "reliability>=lots", "--out", str(tmp_path / "c.yml")]) == 2
    (tmp_path / "d").mkdir()
    assert main(["init-ci", "--requirement", REQUIREMENT, "--editor", "ft-m", "--out", str(tmp_path / "d"), "--force"]) == 2
    (tmp_path / "link.yml").symlink_to(out)
    assert main(["init-ci", "--requirement", REQUIREMENT, "--editor", "ft-m", "--out", str(tmp_path / "link.yml"), "--force"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"pytest-wild init-ci: {out}: exists already; pass --force to replace it",
                      "pytest-wild init-ci: --editor: 'x; rm -rf /': use letters, digits and . _ / @ : + - only",
                      "pytest-wild init-ci: --gate: 'reliability>=lots': write a rule such as reliability>=0.5",
                      f"pytest-wild init-ci: --out: {tmp_path / 'd'} is a directory; name a file",
                      f"pytest-wild init-ci: {tmp_path / 'link.yml'}: is a symbolic link; name the file itself"]
    assert out.read_text() == "mine\n" and not (tmp_path / "b.yml").exists() and not (tmp_path / "c.yml").exists()


def validate(workflow: Path) -> subprocess.CompletedProcess:
    """GitHub's workflow schema (SchemaStore's, bundled in check-jsonschema, so offline)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(workflow)], capture_output=True, text=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_workflow_init_ci_writes_is_valid_against_githubs_schema(tmp_path, monkeypatch, variant):
    monkeypatch.chdir(tmp_path)  # the method's repository, with a suite of its own
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "my-suite.yaml").write_text("data: my-cases.json\n")
    out = tmp_path / "wild.yml"
    assert main(["init-ci", "--editor", "rank-one", "--requirement", REQUIREMENT, "--out", str(out),
                 *VARIANTS[variant]]) == 0
    checked = validate(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yml"  # the validator does reject: a job without runs-on
    broken.write_text(out.read_text().replace("    runs-on: ubuntu-latest\n", "", 1))
    assert validate(broken).returncode == 1


def test_init_ci_refusals_through_the_command_line(tmp_path):
    """Run as a user runs it: this checkout's pytest-wild is an editable install, which a runner
    cannot repeat; a requirement with a token in it is refused without showing the token; a GPU
    suite the runner would not find. Each: one line, status 2, no workflow written."""
    token = "ghp_s3cretT0ken"
    (tmp_path.parent / "outside.yaml").write_text("data: x.json\n")
    (tmp_path / "suites").mkdir()
    for extra, line in (
            ((), "pytest-wild init-ci: pytest-wild is installed editable from file://"),
            (("--requirement", f"pytest-wild @ git+https://{token}@github.com/wild/pytest-wild.git@main"),
             "pytest-wild init-ci: --requirement: its URL holds credentials, which are never written into a "
             "workflow; keep them in the runner's secrets"),
            (("--requirement", "wild-rank-one==0.1.0"),
             "pytest-wild init-ci: --requirement: names wild-rank-one, not pytest-wild"),
            (("--gpu-model", "m/x", "--gpu-suite", "qaedit-typo"),
             "pytest-wild init-ci: --gpu-suite: 'qaedit-typo' is not a suite file, a .json/.jsonl data file, a suite "
             f"in {tmp_path / 'suites'} or the bundled suites, nor a hub dataset id (owner/name)"),
            (("--gpu-model", "m/x", "--gpu-suite", "suites/../../outside.yaml"),
             "pytest-wild init-ci: --gpu-suite: 'suites/../../outside.yaml' is outside this repository, where the "
             "runner cannot find it")):
        done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "init-ci", "--editor", "rank-one", *extra],
                              cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2 and done.stdout == "" and done.stderr.startswith(line), done.stderr
        assert len(done.stderr.splitlines()) == 1 and token not in done.stderr
        assert not (tmp_path / ".github").exists()
