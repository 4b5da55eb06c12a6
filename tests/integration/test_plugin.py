"""The plugin as users meet it, through pytester: serially, with `-n 2`, and without xdist."""

import json
from pathlib import Path

import pytest

from pytest_wild.model import TINYWORLD_DIR

SUITE_DATA = TINYWORLD_DIR / "suite.jsonl"
RUNNERS = {
    "serial": [],
    "xdist": ["-n", "2"],
    "no-xdist": ["-p", "no:xdist"],
}


@pytest.fixture(params=sorted(RUNNERS))
def runner(request):
    return RUNNERS[request.param]


def write_suite(pytester, name="open", thresholds="{}", limit=4):
    pytester.makefile(".yaml", **{name: f"data: {SUITE_DATA}\nlimit: {limit}\nseed: 1\nthresholds: {thresholds}\n"})
    return f"{name}.yaml"


def test_without_wild_the_plugin_does_nothing_and_imports_no_torch(pytester):
    pytester.makepyfile(
        """
        import sys

        def test_light():
            assert "torch" not in sys.modules
            assert "transformers" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "WILD" not in result.stdout.str()


def test_help_lists_the_option_group(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*WILD evaluation of knowledge edits*", "*--wild-suite=NAME_OR_PATH*"])


def test_wild_run_collects_one_test_per_case_and_reports(pytester, runner):
    suite = write_suite(pytester)
    pytester.makepyfile(test_other="def test_not_collected_under_wild(): assert False")
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--wild", "--editor", "ft-m", f"--wild-suite={suite}", f"--wild-report={report}",
        "--wild-eval", "wild,synthetic,length", *runner)
    result.assert_outcomes(passed=4)
    devices = "wild devices: gw0=cpu gw1=cpu" if "-n" in runner else "wild devices: auto"
    result.stdout.fnmatch_lines([devices, "*4 passed*", "*WILD results*", "mode *metric *mean *± stderr *cases *passing",
                                 "wild *reliability *", "wild *locality *", "synthetic *reliability *",
                                 "length *locality *"])
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if line.startswith("mode "))
    assert all(len(line) <= 80 for line in lines[start : start + 11])  # header, rule, 3 modes x 3 metrics
    data = json.loads(report.read_text())
    assert len(data["samples"]) == 4
    assert set(data["results"]) == {"wild", "synthetic", "length"}
    assert data["config"]["editor"]["name"] == "ft-m"
    assert data["config"]["editor"]["hparams"]["objective_optimization"] == "target_new"
    assert len(data["config"]["model"]["fingerprint"]) == 16
    sample = data["samples"][0]
    assert {"prompt", "rephrase", "locality"} <= set(sample["modes"]["wild"]["answers"])


def test_serial_and_parallel_runs_write_the_same_report_bytes(pytester):
    suite = write_suite(pytester, limit=6)
    reports = {}
    for name, args in (("serial", []), ("parallel", ["-n", "2"])):
        path = pytester.path / f"{name}.json"
        result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-suite={suite}",
                                               f"--wild-report={path}", *args)
        assert result.ret == 0
        reports[name] = path.read_bytes()
    assert reports["serial"] == reports["parallel"]
    assert len(json.loads(reports["serial"])["samples"]) == 6


def test_failures_say_what_was_asked_expected_and_generated(pytester):
    suite = write_suite(pytester, name="strict", thresholds="{reliability: 1, locality: 1}", limit=8)
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-l", f"--wild-suite={suite}",
                                           f"--wild-hparams={_tiny_steps(pytester)}")
    output = result.stdout.str()
    assert result.ret == 1
    assert 'reliability: asked "Q: ' in output and '" expected "' in output and '" generated "' in output
    assert "teacher-forced token accuracy" in output


def _tiny_steps(pytester) -> Path:
    path = pytester.path / "weak.yaml"
    path.write_text("num_steps: 1\nlr: 0.0001\n")
    return path


def test_gates_decide_the_exit_status(pytester):
    suite = write_suite(pytester)
    passing = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-suite={suite}",
                                            "--wild-gate", "locality>=0")
    assert passing.ret == 0
    failing = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-suite={suite}",
                                            "--wild-gate", "synthetic.reliability>=0", "--wild-eval", "wild,synthetic",
                                            "--wild-gate", "locality>1")
    assert failing.ret == 1
    failing.stdout.fnmatch_lines(["*passed in*", "*WILD results*", "*gate synthetic.reliability>=0 (synthetic): passed*",
                                  "*gate locality>1 (wild): FAILED*"])
    assert failing.stdout.lines[-1].strip("= ") == "WILD gates: 1 of 2 FAILED (locality>1): the run fails"


def test_only_failed_drops_cases_the_model_already_answers(pytester):
    suite = write_suite(pytester, limit=12)
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-suite={suite}", "--wild-only-failed")
    result.stdout.fnmatch_lines(["*--wild-only-failed dropped * cases the unedited model already answered correctly*"])
    assert result.ret == 0


def test_a_tilde_in_a_path_option_means_the_home_directory(pytester, monkeypatch):
    home = pytester.mkdir("home")
    monkeypatch.setenv("HOME", str(home))
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-limit", "2", "-p", "no:cacheprovider",
                                           "--wild-report=~/report.json", "--wild-markdown=~/table.md")
    assert result.ret in (0, 1)
    assert (home / "report.json").is_file() and (home / "table.md").is_file()
    assert not (pytester.path / "~").exists()


def test_an_id_printed_by_verbose_output_runs_that_case_alone_when_pasted_back(pytester):
    """Also: an option's value with '::' is no test id, and published hyperparameter keys the
    editor ignores are said once in the header."""
    listed = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=4", "--collect-only", "-q")
    ids = [line for line in listed.stdout.lines if "::edit[" in line]
    assert len(ids) == 4 and ids[0].startswith("tinyworld.yaml::edit[tw-")
    pytester.path.joinpath("ft.yaml").write_text("alg_name: FT\nkl_factor: 0\n")
    for workers in ([], ["-n", "2"]):
        chosen = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=4", "-v", ids[2], *workers,
                                               "-W", "error::DeprecationWarning", "--wild-hparams=ft.yaml")
        assert chosen.ret == 0
        notes = [line for line in chosen.stdout.lines if line.startswith("wild hparams:")]
        assert notes == ["wild hparams: ft.yaml: kl_factor ignored (EasyEdit's FT computes no KL term: its files "
                         "set it to 0 and its training loop never reads it)"]
        passed = [line for line in chosen.stdout.lines if "PASSED" in line]
        assert len(passed) == 1 and ids[2] in passed[0], workers  # (xdist does not count deselected tests)
        chosen.stdout.fnmatch_lines(["*= 1 passed*"])
    unknown = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=4", "tinyworld.yaml::edit[nope]")
    assert unknown.ret == 4
    assert unknown.stderr.lines[0].startswith("ERROR: tinyworld.yaml::edit[nope]: no such test in this run")
