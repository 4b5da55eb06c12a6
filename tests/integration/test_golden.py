"""Golden snapshots of generations (pytest_wild/results/golden.py), through pytester: recorded with
--snapshot-update, byte-stable on rerun, identical serially and with -n 2, failing with a
diff of the generations when they change, unused goldens reported and removed, goldens of
unselected cases kept, and nothing lost when an xdist worker crashes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_wild.cases.case import case_key
from pytest_wild.model.load import TINYWORLD_DIR
from pytest_wild.results.golden import (
                                        GoldenGuard,
                                        GoldenSettings,
                                        WildGoldenExtension,
                                        golden_record,
                                        model_key,
                                        render,
                                        suite_key,
                                        )
from pytest_wild.run.options import Options
from pytest_wild.scores.record import CaseResult

from . import outer_xdist_removed

SUITE = f"data: {TINYWORLD_DIR / 'suite.jsonl'}\nlimit: 4\nseed: 1\nthresholds: {{}}\n"
CASES = ("tw-0034", "tw-0145", "tw-0195", "tw-0205")  # the 4 cases of SUITE
GOLDEN = Path("golden/tinyworld/ft-m/open")
WILD = ("--wild", "--editor", "ft-m", "--wild-suite=open.yaml", "-p", "no:cacheprovider")
CRASH_CONFTEST = """
import os
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if os.environ.get("PYTEST_XDIST_WORKER") and item.name == os.environ.get("WILD_CRASH_CASE"):
        os._exit(1)
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Inner runs must not think they are xdist workers when this file runs under -n 2."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
                 "PYTEST_ADDOPTS", "WILD_CRASH_CASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Goldens of SUITE recorded once for the module (copied into each test's directory)."""
    where = tmp_path_factory.mktemp("recorded")
    (where / "open.yaml").write_text(SUITE)
    done = subprocess.run([sys.executable, "-m", "pytest", *WILD, "--snapshot-update", "-q"],
                          cwd=where, env=outer_xdist_removed(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return where / "golden"


def with_goldens(pytester, recorded: Path) -> Path:
    pytester.makefile(".yaml", open=SUITE)
    shutil.copytree(recorded, pytester.path / "golden")
    return pytester.path / GOLDEN


def snapshot_of(directory: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.glob("*.json"))}


def contents(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.json"))}


# --- through pytester --------------------------------------------------------------------

def test_goldens_are_recorded_stable_and_the_same_serially_and_in_parallel(pytester):
    pytester.makefile(".yaml", open=SUITE)
    first = pytester.runpytest_subprocess(*WILD)
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(["wild goldens: none recorded for this configuration (golden/tinyworld/ft-m/open),"
                                " so none were compared; record them with --snapshot-update"])
    assert not (pytester.path / "golden").exists()

    written = pytester.runpytest_subprocess(*WILD, "--snapshot-update")
    written.assert_outcomes(passed=4)
    written.stdout.fnmatch_lines(["*4 snapshots generated*"])
    directory = pytester.path / GOLDEN
    assert sorted(p.name for p in directory.iterdir()) == [f"{case}.json" for case in CASES]
    text = (directory / "tw-0034.json").read_text()
    assert text.endswith("}\n") and text == render(json.loads(text))
    data = json.loads(text)
    assert data["case"]["id"] == "tw-0034" and set(data["case"]) == {"id", "prompt", "target", "rephrase"}
    assert data["generations"]["mode"] == "wild"
    assert {"question", "before", "after"} <= set(data["generations"]["prompt"])
    assert {"question", "before", "after"} <= set(data["generations"]["rephrase"])
    assert len(data["generations"]["locality"]) == 3
    assert set(data["scores"]["wild"]) == {"reliability", "generalization", "locality", "locality_all", "locality_em"}

    before = snapshot_of(directory)
    again = pytester.runpytest_subprocess(*WILD, "-n", "2", "--snapshot-update")
    again.assert_outcomes(passed=4)
    again.stdout.fnmatch_lines(["*4 snapshots passed*"])
    assert snapshot_of(directory) == before  # no byte, not even a timestamp, changed

    parallel = pytester.runpytest_subprocess(*WILD, "-n", "2", "--snapshot-update", "-o", "wild_golden_dir=golden-n2")
    parallel.assert_outcomes(passed=4)
    assert contents(pytester.path / "golden-n2" / GOLDEN.relative_to("golden")) == contents(directory)


def test_changed_generations_fail_with_a_diff_and_are_accepted_by_update(pytester, recorded):
    directory = with_goldens(pytester, recorded)
    (directory / "tw-0205.json").unlink()
    pytester.makefile(".yaml", hp="num_steps: 1\nlr: 1.0e-5\n")  # an edit too weak to change the answers
    changed = pytester.runpytest_subprocess(*WILD, "--wild-hparams=hp.yaml", "--wild-threshold", "reliability>=1")
    assert changed.ret == pytest.ExitCode.TESTS_FAILED
    out = changed.stdout.str()
    assert "golden golden/tinyworld/ft-m/open/tw-0205.json does not exist: run with --snapshot-update to record it" in out
    failed = [case for case in CASES if f"open.yaml::{case} - " in out]
    assert failed, out
    changed.stdout.fnmatch_lines([
        "reliability: asked * expected * generated *",  # the threshold first ...
        "golden golden/tinyworld/ft-m/open/*.json differs (- golden, + this run); accept with --snapshot-update:",
        "  generations.prompt.after  (asked \"Q: *\")",  # ... then the changed generations
        "    - \" *\"",
        "    + \" *\"",
    ])
    assert "scores.wild.reliability" in out

    accepted = pytester.runpytest_subprocess(*WILD, "--wild-hparams=hp.yaml", "--snapshot-update", "-p", "no:xdist")
    accepted.assert_outcomes(xfailed=4)  # the weak edits miss: expected failures, recorded as they are
    accepted.stdout.fnmatch_lines(["*1 snapshot generated. * updated.*"])
    rerun = pytester.runpytest_subprocess(*WILD, "--wild-hparams=hp.yaml", "-n", "2")
    rerun.assert_outcomes(xfailed=4)
    rerun.stdout.fnmatch_lines(["*4 snapshots passed*"])


def test_required_goldens_fail_each_case_without_one_until_recorded(pytester, recorded):
    """--wild-require-goldens (a CI gate): no golden directory fails every case with one line,
    under -n 2 too, and writes nothing; the recorded goldens then pass (here set by the ini)."""
    pytester.makefile(".yaml", open=SUITE)
    missing = pytester.runpytest_subprocess(*WILD, "--wild-require-goldens", "-n", "2")
    missing.assert_outcomes(failed=4)
    out = missing.stdout.str()
    for case in CASES:
        assert f"\ngolden golden/tinyworld/ft-m/open/{case}.json does not exist: run with --snapshot-update to record " \
               "it\n" in out and f"FAILED open.yaml::{case} - " in out, out
    missing.stdout.fnmatch_lines(["wild goldens: none recorded for this configuration (golden/tinyworld/ft-m/open), "
                                  "and --wild-require-goldens fails each case without one; record them with "
                                  "--snapshot-update and commit them"])
    assert not (pytester.path / "golden").exists()

    shutil.copytree(recorded, pytester.path / "golden")
    present = pytester.runpytest_subprocess(*WILD, "-o", "wild_require_goldens=true")
    present.assert_outcomes(passed=4)
    present.stdout.fnmatch_lines(["*4 snapshots passed*", "wild goldens: golden/tinyworld/ft-m/open"])


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "n2"])
def test_without_syrupy_the_cases_run_and_no_golden_is_compared_or_touched(pytester, recorded, workers):
    directory = with_goldens(pytester, recorded)
    before = snapshot_of(directory)
    pytester.makefile(".yaml", hp="num_steps: 1\nlr: 1.0e-5\n")  # generations that differ from the goldens
    result = pytester.runpytest_subprocess(*WILD, "--wild-hparams=hp.yaml", "-p", "no:syrupy", *workers)
    result.assert_outcomes(xfailed=4)
    result.stdout.fnmatch_lines(["wild goldens: not compared (the syrupy plugin is disabled: -p no:syrupy)"])
    assert "differs" not in result.stdout.str()
    assert snapshot_of(directory) == before


def test_a_golden_of_a_case_gone_from_the_suite_is_reported_then_removed(pytester, recorded):
    directory = with_goldens(pytester, recorded)
    orphan = directory / "tw-9999.json"
    shutil.copy(directory / "tw-0034.json", orphan)
    kept = contents(directory)
    del kept["tw-9999.json"]

    bare = pytester.runpytest_subprocess(*WILD)
    assert bare.ret != 0
    bare.stdout.fnmatch_lines(["*4 snapshots passed. 1 snapshot unused.*",
                               "*wild goldens: unused (its case is not in the suite): golden/tinyworld/ft-m/open/tw-9999.json"])
    assert orphan.exists()

    update = pytester.runpytest_subprocess(*WILD, "-n", "2", "--snapshot-update")
    update.assert_outcomes(passed=4)
    update.stdout.fnmatch_lines(["*4 snapshots passed. 1 unused snapshot deleted.*"])
    assert "Deleted case_gone_from_suite[tw-9999] (golden/tinyworld/ft-m/open/tw-9999.json)" in update.stdout.str()
    assert contents(directory) == kept


@pytest.mark.parametrize("select", [
    pytest.param(["--wild-limit", "2"], id="wild-limit"),
    pytest.param(["-k", "tw-0034 or tw-0195", "-n", "2"], id="k-xdist"),
    pytest.param(["--wild-shard", "1/2", "-p", "no:xdist"], id="shard-no-xdist"),
])
def test_goldens_of_unselected_cases_survive_an_update(pytester, recorded, select):
    directory = with_goldens(pytester, recorded)
    before = contents(directory)
    result = pytester.runpytest_subprocess(*WILD, "--snapshot-update", *select)
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert "unused" not in out and "Deleted" not in out
    assert contents(directory) == before


def test_a_crashed_worker_loses_its_case_and_no_golden(pytester, recorded, monkeypatch):
    directory = with_goldens(pytester, recorded)
    shutil.copy(directory / "tw-0034.json", directory / "tw-9999.json")  # would be deleted
    before = contents(directory)
    pytester.makeconftest(CRASH_CONFTEST)
    monkeypatch.setenv("WILD_CRASH_CASE", "tw-0145")
    result = pytester.runpytest_subprocess(*WILD, "-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    assert "crashed while running 'open.yaml::tw-0145'" in out
    result.stdout.fnmatch_lines(["wild goldens: xdist worker(s) gw* crashed: unused goldens were kept (nothing deleted)*"])
    assert "Deleted" not in out
    assert contents(directory) == before


# --- without a subprocess ----------------------------------------------------------------

def options(**changes) -> Options:
    base = dict(editor="ft-m", model=None, suite=None, limit=None, modes=("wild",), context=None,
                metric="em", hparams_file=None, device="cpu", dtype="float32", stop_rule="published")
    return Options(**{**base, **changes})


def test_golden_paths_name_model_editor_suite_and_off_default_settings(tmp_path):
    assert model_key(None) == model_key("tinyworld") == "tinyworld"
    assert model_key(str(TINYWORLD_DIR)) == "tinyworld"
    assert model_key("Qwen/Qwen2.5-0.5B") == "Qwen__Qwen2.5-0.5B"
    (tmp_path / "my-model").mkdir()
    assert model_key(str(tmp_path / "my-model") + "/") == "my-model"
    assert suite_key("tinyworld", "question", options()) == "tinyworld"
    assert suite_key("tinyworld", "question", options(context="question")) == "tinyworld"
    assert suite_key("tinyworld", "question", options(context="chat", stop_rule="sentence", metric="f1")) \
        == "tinyworld+context-chat+stop-sentence+metric-f1"
    assert suite_key("owner__data", "chat", options(modes=("wild", "synthetic"), batch_size=4, dtype="bfloat16")) \
        == "owner__data+eval-wild-synthetic+batch-4+dtype-bfloat16"
    assert case_key("a/b:c").startswith("a_b_c+") and case_key("tw-0001") == "tw-0001"


def test_golden_record_rounds_scores_and_keeps_the_generations():
    answer = {"question": "Q?", "before": " a", "after": " b", "score": 0.0}
    row = CaseResult(id="c1", source=None, prompt="Q?", target="b", rephrase="R?", subject="s", flags=[],
                     modes={"wild": {"reliability": 0.0, "generalization": None, "locality": 2 / 3,
                                     "locality_em": 0.123456,
                                     "answers": {"prompt": answer, "rephrase": {**answer, "question": "R?"},
                                                 "locality": [{"question": "L?", "answer": "x", "before": " x",
                                                               "after": " y", "same": False, "em_after": 0.0}]}},
                            "synthetic": {"reliability": 0.99999, "generalization": 1.0, "locality": -0.0}})
    record = golden_record(row, options(modes=("wild", "synthetic")))
    assert record["scores"] == {"wild": {"reliability": 0.0, "generalization": None, "locality": 0.67,
                                         "locality_em": 0.12},
                                "synthetic": {"reliability": 1.0, "generalization": 1.0, "locality": 0.0}}
    assert record["generations"] == {
        "mode": "wild",
        "prompt": {"question": "Q?", "before": " a", "after": " b"},
        "rephrase": {"question": "R?", "before": " a", "after": " b"},
        "locality": [{"question": "L?", "answer": "x", "before": " x", "after": " y"}],
    }
    assert render(record) == render(golden_record(row, options(modes=("wild", "synthetic"))))
    assert "-0.0" not in render(record)


def test_the_guard_turns_cleanup_off_when_a_worker_goes_down_with_an_error():
    config = SimpleNamespace(option=SimpleNamespace(no_cleanup=False), rootpath=Path("."))
    guard = GoldenGuard(GoldenSettings(config=config, run=None, root=Path("golden")))
    node = SimpleNamespace(workeroutput={}, gateway=SimpleNamespace(id="gw0"))
    guard.pytest_testnodedown(node, None)
    assert config.option.no_cleanup is False
    guard.pytest_testnodedown(node, "Not properly terminated")
    assert config.option.no_cleanup is True
    assert guard.settings.crashed == ["gw0"]


def test_the_extension_is_importable_and_constructible_without_arguments():
    from syrupy.utils import import_module_member

    cls = import_module_member("pytest_wild.results.golden.WildGoldenExtension")
    assert cls is WildGoldenExtension
    assert cls().file_extension == "json"


@pytest.mark.parametrize("case_id", ["tw-0042", "NQ-1104", "1104", "a b", "x[1]", "é-1"])
def test_a_case_claims_its_own_golden_and_never_one_whose_case_is_gone(tmp_path, case_id):
    """syrupy relates snapshots to tests by name: a case of the run (passed, skipped or
    expected to fail) must match its own golden's name, so recording it raises no warning,
    and must not match a gone case's golden, which would then never be removed."""
    from types import SimpleNamespace

    from syrupy.location import PyTestLocation

    from pytest_wild.cases.case import Case, item_name

    def test_edit():
        pass

    case = Case(case_id, "Q: ?", "x", "", None, ())
    item = SimpleNamespace(path=tmp_path / "open.yaml", obj=test_edit, name=item_name(case_id),
                           nodeid=f"open.yaml::{item_name(case_id)}", case=case)
    location = PyTestLocation(item)
    assert location.matches_snapshot_name(WildGoldenExtension.get_snapshot_name(test_location=location))
    gone = next(iter(WildGoldenExtension().read_snapshot_collection(snapshot_location=str(tmp_path / "tw-9999.json"))))
    assert not location.matches_snapshot_name(gone.name)
