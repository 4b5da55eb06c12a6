"""Sharded runs, batch editing, and the Markdown / JUnit outputs, through pytester."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

from pytest_wild.cases.suite import BUNDLED_SUITES, load_suite

LIMIT = ("--wild-limit", "25")


def run_report(pytester, name, *args):
    path = pytester.path / f"{name}.json"
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", f"--wild-report={path}", *args)
    assert result.ret == 0, result.stdout.str()
    return json.loads(path.read_text())


def test_merged_shards_equal_the_unsharded_run(pytester):
    """On 25 cases of the bundled suite (the whole suite's goldens are checked elsewhere): 25
    does not divide by 3, so the shards differ in size."""
    whole = run_report(pytester, "whole", *LIMIT)
    shards = [run_report(pytester, f"shard{k}", *LIMIT, "--wild-shard", f"{k}/3", *(["-n", "2"] if k == 2 else []))
              for k in (1, 2, 3)]
    assert sorted(len(s["samples"]) for s in shards) == [8, 8, 9]
    assert sum(len(s["samples"]) for s in shards) == len(whole["samples"]) == 25
    merged_path = pytester.path / "merged.json"
    subprocess.run([sys.executable, "-m", "pytest_wild.cli", "merge-reports",
                    *[str(pytester.path / f"shard{k}.json") for k in (1, 2, 3)], "-o", str(merged_path)], check=True)
    merged = json.loads(merged_path.read_text())
    assert merged["results"] == whole["results"]
    assert merged["samples"] == whole["samples"]
    assert sorted(merged["timing"]["cases"]) == sorted(whole["timing"]["cases"]) == [r["id"] for r in whole["samples"]]
    assert merged["timing"]["summary"]["questions"] == whole["timing"]["summary"]["questions"]
    assert merged["complete"] is whole["complete"] is True
    assert merged["cases"] == whole["cases"] == {"selected": 25, "run": 25, "selected_before_sharding": 25, "not_evaluable": 0}
    assert [s["cases"]["selected_before_sharding"] for s in shards] == [25] * 3  # shard 2 ran under -n 2


def test_merge_refuses_reports_of_different_runs(pytester, tmp_path):
    a = run_report(pytester, "a", "--wild-limit", "2")
    b = dict(a, config={**a["config"], "editor": {"name": "ft-l", "hparams": {}}})
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    paths[0].write_text(json.dumps(a))
    paths[1].write_text(json.dumps(b))
    done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "merge-reports", *map(str, paths), "-o",
                           str(tmp_path / "m.json")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "b.json: config.editor differs" in done.stderr
    assert not (tmp_path / "m.json").exists()


def test_batch_editing_gives_the_same_results_serially_and_in_parallel(pytester):
    args = ("--wild-limit", "12", "--wild-batch-size", "4")
    serial = run_report(pytester, "serial", *args)
    parallel = run_report(pytester, "parallel", *args, "-n", "2")
    assert serial["samples"] == parallel["samples"]
    assert serial["config"]["batch_size"] == 4
    selected = load_suite(BUNDLED_SUITES / "tinyworld.yaml", limit=12).cases  # what a single-edit run selects
    assert [r["id"] for r in serial["samples"]] == sorted(case.id for case in selected)


def test_markdown_table_and_junit_properties(pytester):
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-limit", "3", "--wild-eval", "wild,synthetic",
                                           "--wild-markdown=table.md", "--junitxml", "junit.xml")
    assert result.ret == 0
    table = (pytester.path / "table.md").read_text().splitlines()
    assert table[2] == "| mode | metric | mean | ± stderr | cases | cases passing |"
    assert table[4].startswith("| wild | reliability | ") and table[5].startswith("| wild | ↳ f1 | ")
    assert table[10].startswith("| synthetic | reliability | ")  # teacher-forced: no answers, no F1
    assert table[4].endswith("/3 |")
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    names = {p.get("name") for case in cases for p in case.iter("property")}
    assert {"wild.wild.reliability", "wild.synthetic.locality"} <= names
    assert "pytest_wild" not in names


def test_shard_option_is_checked(pytester):
    result = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-shard", "4/3")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: --wild-shard: '4/3': write K/N with 1 <= K <= N, e.g. 2/4"])


