"""The plugin as users meet it, through pytester: serially, with `-n 2`, and without xdist."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_wild.model.load import TINYWORLD_DIR
from pytest_wild.scores.answers import f1

SUITE_DATA = TINYWORLD_DIR / "suite.jsonl"
SEQUENTIAL_DATA = TINYWORLD_DIR / "sequential.jsonl"
PERPLEXITY_TEXT = TINYWORLD_DIR / "perplexity.txt"
RUNNERS = {
    "serial": [],
    "xdist": ["-n", "2"],
    "no-xdist": ["-p", "no:xdist"],
}


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


def without_timing(text: str) -> str:
    """A report's text less its `timing` section, the one part the wall clock writes."""
    start = text.index('\n  "timing": {')
    return text[:start] + text[text.index("\n  },\n", start) + len("\n  },"):]


def test_wild_run_collects_one_test_per_case_and_reports_the_same_bytes_serially_and_under_xdist(pytester):
    """Serially, with -n 2 and without xdist: one test per case, the long steps before the
    first case shown, the results table in 80 columns, a time line, and the same report bytes
    but for the timing section."""
    suite = write_suite(pytester)
    pytester.makepyfile(test_other="def test_not_collected_under_wild(): assert False")
    reports = {}
    for name, runner in RUNNERS.items():
        report = pytester.path / f"{name}.json"
        result = pytester.runpytest_subprocess(
            "--wild", "--editor", "ft-m", f"--wild-suite={suite}", f"--wild-report={report}",
            "--wild-eval", "wild,synthetic,length", *runner)
        result.assert_outcomes(passed=4)
        devices = "wild devices: gw0=cpu gw1=cpu" if "-n" in runner else "wild devices: auto"
        result.stdout.fnmatch_lines([devices, "*4 passed*", "*WILD results*", "mode *metric *mean *± stderr *cases *passing",
                                     "wild *reliability *", "wild *locality *", "synthetic *reliability *",
                                     "length *locality *",
                                     "time: * s per edit (median *), * s per question (* questions)"])
        progress = result.stderr.lines if "-n" in runner else result.stdout.lines
        steps = [line for line in progress if line.startswith("[gw" if "-n" in runner else "wild: ") and "wild: " in line]
        assert any("wild: loading the bundled tinyworld model (float32, device " in line and line.endswith(" ...")
                   for line in steps), (name, steps)
        assert any("wild: unedited answers of " in line and ": done in " in line for line in steps), (name, steps)
        lines = result.stdout.lines
        start = next(i for i, line in enumerate(lines) if line.startswith("mode "))
        assert all(len(line) <= 80 for line in lines[start : start + 11])  # header, rule, 3 modes x 3 metrics
        text = report.read_text()
        timing = json.loads(text)["timing"]
        assert timing["summary"]["cases"] == 4
        assert sorted(timing["cases"]) == sorted(row["id"] for row in json.loads(text)["samples"])
        assert all(t["edit_seconds"] > 0 and t["evaluate_seconds"] > 0 and t["questions"] == 15 for t in timing["cases"].values())
        reports[name] = without_timing(text)
    assert reports["serial"] == reports["xdist"] == reports["no-xdist"]
    data = json.loads(reports["serial"])
    assert len(data["samples"]) == 4 and "timing" not in data["samples"][0]
    assert set(data["results"]) == {"wild", "synthetic", "length"}
    assert data["config"]["editor"]["name"] == "ft-m"
    assert data["config"]["editor"]["hparams"]["objective_optimization"] == "target_new"
    assert len(data["config"]["model"]["fingerprint"]) == 16
    assert {"prompt", "rephrase", "locality"} <= set(data["samples"][0]["modes"]["wild"]["answers"])


def test_an_edit_that_did_not_work_is_an_expected_failure_and_a_threshold_makes_it_fail(pytester):
    """By default a case whose edit missed is `xfailed` with what was asked, expected and
    generated (`-rx`), and the run passes; a per-case threshold turns the same case into a
    failure with the same words."""
    weak = _tiny_steps(pytester)
    default = pytester.runpytest_subprocess("--wild", "--editor", "ft-l", f"--wild-suite={write_suite(pytester, limit=8)}",
                                            f"--wild-hparams={weak}", "-rx")
    assert default.ret == 0
    assert default.parseoutcomes().get("xfailed", 0) >= 1 and "failed" not in default.parseoutcomes()
    default.stdout.fnmatch_lines(['XFAIL open.yaml::tw-* - reliability: asked "Q: * expected "*" generated "*'])
    strict = write_suite(pytester, name="strict", thresholds="{reliability: 1, generalization: 1, locality: 1}", limit=8)
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-l", f"--wild-suite={strict}", f"--wild-hparams={weak}")
    output = result.stdout.str()
    assert result.ret == 1
    assert result.parseoutcomes()["failed"] == default.parseoutcomes()["xfailed"]
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
                                            "--wild-gate", "locality>1", "--wild-markdown=gates.md")
    assert failing.ret == 1
    markdown = (pytester.path / "gates.md").read_text().splitlines()
    assert "| `locality>1` | wild | 1.000 | **FAILED** |" in markdown
    assert markdown[-1] == "**WILD gates: 1 of 2 FAILED (locality>1): the run fails**"
    failing.stdout.fnmatch_lines(["*passed in*", "*WILD results*", "*gate synthetic.reliability>=0 (synthetic): passed*",
                                  "*gate locality>1 (wild): FAILED*"])
    assert failing.stdout.lines[-1].strip("= ") == "WILD gates: 1 of 2 FAILED (locality>1): the run fails"


def test_f1_of_the_same_answers_is_reported_beside_each_metric_of_an_answering_mode(pytester):
    """Under exact match, the wild and length modes carry the token F1 of the same answers per
    case, in the aggregates, indented under each metric in the table, and a gate reads it;
    the teacher-forced mode has no answers and no F1; under --wild-metric f1 none is kept."""
    suite = write_suite(pytester)
    run = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-suite={suite}", "--wild-eval",
                                        "wild,synthetic,length", "--wild-gate", "length.reliability_f1>=0",
                                        "--wild-report=em.json")
    assert run.ret == 0, run.stdout.str()[-2000:]
    report = json.loads((pytester.path / "em.json").read_text())
    for mode in ("wild", "length"):
        assert {"reliability_f1", "generalization_f1", "locality_f1"} <= set(report["results"][mode])
        for sample in report["samples"]:
            answers = sample["modes"][mode]["answers"]
            assert sample["modes"][mode]["reliability_f1"] == f1(answers["prompt"]["after"], sample["target"])
    assert not any(key.endswith("_f1") for key in report["results"]["synthetic"])
    run.stdout.re_match_lines([r"^wild +reliability +[0-9.]+", r"^wild {14}f1 +[0-9.]+",
                               r".*gate length.reliability_f1>=0 \(length\): passed.*"])
    f1_run = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-suite={suite}", "--wild-metric=f1",
                                           "--wild-report=f1.json")
    assert f1_run.ret == 0
    assert not any(key.endswith("_f1") for key in json.loads((pytester.path / "f1.json").read_text())["results"]["wild"])


def test_grace_reports_the_papers_synthetic_reading_and_the_teacher_forced_one_beside(pytester):
    """Under GRACE `synthetic` is the paper's free-generation reading and the teacher-forced one
    is `synthetic_tf`, in the table, the report and the gates; on tinyworld they part (the
    published reading compares the target encoded without its leading space: 0)."""
    suite = write_suite(pytester)
    result = pytester.runpytest_subprocess("--wild", "--editor", "grace", f"--wild-suite={suite}", "--wild-eval",
                                           "wild,synthetic", "--wild-report=report.json",
                                           "--wild-gate", "synthetic_tf.reliability>=1", "--wild-gate", "synthetic.reliability>0")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*WILD results*", "synthetic *reliability *0.000*", "synthetic_tf *reliability *1.000*",
                                 "*gate synthetic_tf.reliability>=1 (synthetic_tf): passed*",
                                 "*gate synthetic.reliability>0 (synthetic): FAILED*"])
    data = json.loads((pytester.path / "report.json").read_text())
    assert set(data["results"]) == {"wild", "synthetic", "synthetic_tf"}
    assert data["config"]["evaluation"]["modes"] == ["wild", "synthetic", "synthetic_tf"]


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


def ran(result, suite: str = "tinyworld.yaml") -> dict[str, str]:
    """Each case's outcome in `-v` output, serial ("tinyworld.yaml::tw-0010 PASSED [ 16%]")
    or xdist ("[gw0] [ 16%] PASSED tinyworld.yaml::tw-0010")."""
    outcomes = {}
    for line in result.stdout.lines:
        test, outcome = re.search(re.escape(suite) + r"::\S+", line), re.search(r"\b(PASSED|FAILED|XFAIL|ERROR)\b", line)
        if test and outcome and not line.startswith(("FAILED ", "ERROR ", "XFAIL ")):
            outcomes[test.group()] = outcome.group()
    return outcomes


def test_lf_reruns_exactly_the_failed_cases_and_a_pasted_id_runs_that_case_alone(pytester):
    """Serially and under xdist. Also: an option's value with '::' is no test id, and
    published hyperparameter keys the editor ignores are said once in the header."""
    threshold = ("--wild-threshold", "locality>=1")  # of these 6 cases, ft-m changes tw-0098's locality answer
    first = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=6", "-v", *threshold)
    outcomes = ran(first)
    assert len(outcomes) == 6 and all(test.startswith("tinyworld.yaml::tw-") for test in outcomes), first.stdout.str()
    failed = [test for test, outcome in outcomes.items() if outcome == "FAILED"]
    assert failed == ["tinyworld.yaml::tw-0098"] and first.ret == 1
    for workers in ([], ["-n", "2"]):
        again = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=6", "-v", "--lf", *threshold, *workers)
        assert ran(again) == {failed[0]: "FAILED"}, (workers, again.stdout.str())
    chosen_id = next(test for test, outcome in outcomes.items() if outcome == "PASSED")
    pytester.path.joinpath("ft.yaml").write_text("alg_name: FT\nkl_factor: 0\n")
    for workers in ([], ["-n", "2"]):
        chosen = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=6", "-v", chosen_id, *workers,
                                               "-W", "error::DeprecationWarning", "--wild-hparams=ft.yaml")
        assert chosen.ret == 0
        notes = [line for line in chosen.stdout.lines if line.startswith("wild hparams:")]
        assert notes == ["wild hparams: ft.yaml: kl_factor ignored (EasyEdit's FT computes no KL term: its files "
                         "set it to 0 and its training loop never reads it)"]
        assert ran(chosen) == {chosen_id: "PASSED"}, workers
        chosen.stdout.fnmatch_lines(["*= 1 passed*"])  # (xdist does not count deselected tests)
    # an id the run does not have: a row of tests/integration/test_bad_input.py


def test_last_missed_reruns_exactly_the_missed_edits_and_forgets_those_that_land(pytester):
    """A missed edit is an expected failure, which --lf never reruns; --wild-last-missed reruns
    just those, serially and under xdist, for the same configuration only, and a rerun whose
    edits now land (other hyperparameters) removes them from the record."""
    pytester.path.joinpath("weak.yaml").write_text("num_steps: 1\nlr: 0.002\n")
    pytester.path.joinpath("stronger.yaml").write_text("num_steps: 1\nlr: 0.004\n")
    suite = write_suite(pytester, limit=8)
    run = ("--wild", "--editor=ft-m", f"--wild-suite={suite}", "-v")
    first = pytester.runpytest_subprocess(*run, "--wild-hparams=weak.yaml")
    missed = {test for test, outcome in ran(first, "open.yaml").items() if outcome == "XFAIL"}
    assert first.ret == 0 and 2 <= len(missed) < 8, first.stdout.str()
    for workers in ([], ["-n", "2"]):
        again = pytester.runpytest_subprocess(*run, "--wild-hparams=weak.yaml", "--wild-last-missed", *workers)
        assert ran(again, "open.yaml") == dict.fromkeys(missed, "XFAIL"), (workers, again.stdout.str())
        again.stdout.fnmatch_lines([f"wild last-missed: rerunning the {len(missed)} edits the last run missed "
                                    "(editor=ft-m model=tinyworld suite=open.yaml *"])
    other = pytester.runpytest_subprocess("--wild", "--editor=ft-l", f"--wild-suite={suite}", "-v", "--wild-last-missed")
    assert len(ran(other, "open.yaml")) == 8
    other.stdout.fnmatch_lines(["wild last-missed: no earlier run recorded for editor=ft-l *: running every case, as --lf does"])
    stronger = pytester.runpytest_subprocess(*run, "--wild-hparams=stronger.yaml", "--wild-last-missed")
    outcomes = ran(stronger, "open.yaml")
    still = {test for test, outcome in outcomes.items() if outcome == "XFAIL"}
    assert set(outcomes) == missed and len(still) < len(missed), stronger.stdout.str()
    last = pytester.runpytest_subprocess(*run, "--wild-hparams=stronger.yaml", "--wild-last-missed")
    assert set(ran(last, "open.yaml")) == (still or set(outcomes) | set(ran(first, "open.yaml"))), last.stdout.str()
    without_cache = pytester.runpytest_subprocess(*run, "--wild-last-missed", "-p", "no:cacheprovider")
    assert without_cache.ret == 4
    without_cache.stderr.fnmatch_lines(["ERROR: --wild-last-missed: needs pytest's cache, which -p no:cacheprovider turned off"])


SHUFFLE = """
import random

def pytest_collection_modifyitems(items):
    random.Random(7).shuffle(items)  # as -p randomly does
"""
SEQUENCE = ("--wild", "--editor=ft-m", "--wild-suite=seq.yaml", "--wild-sequential=6", "--wild-checkpoints=2,4",
            "--wild-orders=2")


def write_sequential_suite(pytester) -> None:
    """The bundled sequential suite's first 12 cases and 100 lines of its perplexity text."""
    pytester.path.joinpath("seq.jsonl").write_text("".join(SEQUENTIAL_DATA.read_text().splitlines(True)[:12]))
    pytester.path.joinpath("text.txt").write_text("".join(PERPLEXITY_TEXT.read_text().splitlines(True)[:100]))
    pytester.makefile(".yaml", seq="data: seq.jsonl\nsampling: first\ncontext: question\nperplexity: text.txt\n")


def test_sequences_run_in_order_on_one_process_each_and_resume_after_sigkill(pytester):
    """--wild-sequential with two --wild-orders: the first 6 cases edited one after another
    into one model, in two seeded orders; the curve (mean ± sd over the orders) in the summary,
    the report and `pytest-wild table --sequence`; a case's message says where it stands in its
    sequence. Under -n 2 with the tests shuffled (as -p randomly does) each order runs whole on
    its own worker (here with the plugins loaded by `-p`, autoload off: the report is whole). A serial run, killed with SIGKILL midway and resumed from its run
    directory (one process then runs both orders, restoring the model in between), writes the
    same report (but the timing)."""
    write_sequential_suite(pytester)
    pytester.makepyfile(shuffle=SHUFFLE)
    with pytest.MonkeyPatch.context() as patch:  # and with plugins loaded by hand, as pytest's docs say to without autoload
        patch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        result = pytester.runpytest_subprocess(*SEQUENCE, "-p", "pytest_wild.plugin", "-p", "xdist.plugin", "-p", "syrupy",
                                               "-p", "shuffle", "-n", "2", "-v", "--wild-plot=curve.png",
                                               "--wild-report=xdist.json")
    assert result.ret == 0, result.stdout.str()
    workers: dict[str, set[str]] = {}
    for line in result.stdout.lines:
        found = re.match(r"\[(gw\d)\] .*(?:PASSED|XFAIL) seq\.yaml::tws-\d+@(order-\d)", line)
        if found:
            workers.setdefault(found.group(2), set()).add(found.group(1))
    assert sorted(workers) == ["order-1", "order-2"] and all(len(found) == 1 for found in workers.values())
    assert workers["order-1"] != workers["order-2"]
    result.stdout.fnmatch_lines(["plot written to curve.png"])
    assert (pytester.path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    reference = without_timing((pytester.path / "xdist.json").read_text())
    data = json.loads(reference)
    assert data["sequence"]["edits"] == 6 and [p["edits"] for p in data["sequence"]["curve"]] == [2, 4, 6]
    assert sorted(data["sequence"]["curves_by_order"]) == ["1", "2"] and len(data["samples"]) == 12
    positions = {order: sorted(row["sequence"]["position"] for row in data["samples"] if row["sequence"]["order"] == order)
                 for order in (1, 2)}
    assert positions == {1: list(range(1, 7)), 2: list(range(1, 7))}
    assert set(data["sequence"]["curve"][-1]["spread"]["final"]["wild"]) == {
        "reliability", "generalization", "locality", "reliability_f1", "generalization_f1", "locality_f1"}
    table = pytester.run(sys.executable, "-m", "pytest_wild.cli", "table", "--sequence", "xdist.json")
    assert table.ret == 0 and len(table.outlines) == 2 + 3 * 2  # head; 2, 4 and 6 edits, both conventions
    assert table.outlines[2].startswith("| `ft-m` | 2 | final | ")

    killed = pytester.path / "killed.json"
    run = subprocess.Popen([sys.executable, "-m", "pytest", *SEQUENCE, "-p", "no:cacheprovider", "--wild-run-dir=rd",
                            "--wild-save-every=1", f"--wild-report={killed}"], cwd=pytester.path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = pytester.path / "rd" / "order-1" / "latest.json"
    while run.poll() is None and not (latest.exists() and json.loads(latest.read_text())["done"] >= 3):
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL and not killed.exists()  # killed before its end
    resumed = pytester.runpytest_subprocess(*SEQUENCE, "-p", "shuffle", "-rx", "--wild-resume=rd", f"--wild-report={killed}")
    assert resumed.ret == 0, resumed.stdout.str()
    outcomes = resumed.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("xfailed", 0) == 12 and outcomes.get("deselected") == 2 * 6
    resumed.stdout.fnmatch_lines(["wild: order 1: resumed after * of 6 edits"])
    resumed.stdout.fnmatch_lines(["sequence (wild), edits kept: *", "mean ± sd over 2 seeded orders of the same edits",
                                  "*edits  convention *reliab.*capab. EM*perplexity",
                                  "     2  final *±*", "     2  immediate *", "     4  final *", "     6  final *"])
    if outcomes.get("xfailed"):
        resumed.stdout.fnmatch_lines(["(edit * of the sequence: its question * right after its own edit; *)"])
    assert without_timing(killed.read_text()) == reference


def test_the_header_says_how_many_targets_the_published_stop_rule_cannot_reach(pytester):
    result = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-suite=qaedit", "--collect-only",
                                           "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["wild suite: 44 of the 800 targets contain an inner '.', which the published stop "
                                 "rule never lets an answer reach (flagged inner-stop; see --wild-stop sentence)"])
    result = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-suite=qaedit", "--wild-stop=sentence",
                                           "--collect-only", "-p", "no:cacheprovider")
    assert "inner '.'" not in result.stdout.str()


def test_an_unreachable_statistics_corpus_is_replaced_by_the_models_own_text_and_the_header_says_so(pytester,
                                                                                                    monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(pytester.path / "datasets"))
    pytester.makefile(".yaml", hp="mom2_dataset: owner-nowhere/no-such-corpus\n")
    result = pytester.runpytest_subprocess("--wild", "--editor=memit", "--wild-hparams=hp.yaml", "--collect-only",
                                           "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["wild hparams: mom2_dataset: owner-nowhere/no-such-corpus cannot be reached (*); "
                                 "the second-moment statistics come from text sampled from the model itself instead "
                                 "(mom2_dataset: model-sample, 256 documents of 128 tokens, computed once and cached), "
                                 "not from the published corpus"])
