"""Path-valued options and pytest's rootdir (issue 12): pytest chooses the rootdir from the
command line's paths before it knows this plugin's options, so `--wild-suite ../data/x.yaml`
(with a space) would move the rootdir, and the goldens under it, out of the project and drop
its ini file. The `=` form keeps the project's rootdir; the space form is refused in one line."""

import pytest

from pytest_wild.model.load import TINYWORLD_DIR

SUITE = f"data: {TINYWORLD_DIR / 'suite.jsonl'}\nlimit: 2\nseed: 1\nthresholds: {{}}\n"
REFUSED = "ERROR: {0} {1}: write {0}={1} (with '='): pytest reads a path after a space as a test path and moves the rootdir to it"


@pytest.fixture
def project(pytester, monkeypatch):
    """`project/` with its own ini file, run from there; the suite in a sibling `data/`."""
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\nwild_golden_dir = goldens\n")
    data = pytester.mkdir("data")
    (data / "x.yaml").write_text(SUITE)
    (data / "hp.yaml").write_text("num_steps: 1\n")
    monkeypatch.chdir(project)
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    return project


def test_path_options_written_with_equals_keep_the_projects_rootdir_and_ini(pytester, project):
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-suite=../data/x.yaml",
                                           "--wild-hparams=../data/hp.yaml", "--wild-report=../data/report.json",
                                           "--snapshot-update", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"rootdir: {project}", "configfile: pytest.ini", "*2 passed*"])
    assert len(list(project.glob("goldens/tinyworld/ft-m/*/*.json"))) == 2  # the ini's golden root
    assert (project.parent / "data" / "report.json").is_file()
    assert not any((project.parent / name).exists() for name in ("goldens", "golden"))


@pytest.mark.parametrize("option, value", [
    ("--wild-suite", "../data/x.yaml"),
    ("--wild-hparams", "../data/hp.yaml"),
    ("--wild-model", "../data"),
    ("--wild-report", "report.json"),  # output paths: refused whether or not they exist
    ("--wild-markdown", "../data/table.md"),
])
def test_a_path_option_written_with_a_space_is_refused_in_one_line(pytester, project, option, value):
    suite = () if option == "--wild-suite" else ("--wild-suite=../data/x.yaml",)
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", *suite, option, value, "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([REFUSED.format(option, value)])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_space_before_a_name_that_is_no_path_is_accepted(pytester, project):
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-suite", "tinyworld",
                                           "--wild-model", "tinyworld", "--wild-limit", "2", "--co")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"rootdir: {project}", "configfile: pytest.ini", "*2 tests collected*"])
