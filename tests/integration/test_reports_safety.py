"""Reports that cannot mislead (issue 12): a run stopped early (-x, Ctrl-C, SIGTERM) never
replaces a complete report with a partial one that looks complete, and `merge-reports`
refuses a set of shard reports that is not the whole run, or a malformed report, in one line
each."""

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from . import outer_xdist_removed, read_only

MERGE = [sys.executable, "-m", "pytest_wild.cli", "merge-reports"]


def test_a_run_stopped_by_maxfail_leaves_the_complete_report_and_writes_a_marked_partial_one(pytester):
    outputs = ("--wild-report=report.json", "--wild-markdown=table.md")
    stale = pytester.path / "report.partial.json"
    stale.write_text("{}")
    done = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-limit", "4", *outputs)
    assert done.ret == pytest.ExitCode.OK, done.stdout.str()
    complete = json.loads((pytester.path / "report.json").read_text())
    assert (complete["complete"], complete["interrupted"]) == (True, False)
    assert complete["cases"] == {"selected": 4, "run": 4, "selected_before_sharding": 4, "not_evaluable": 0}
    assert not stale.exists()  # a complete run removes what an earlier interrupted one left
    before = {name: (pytester.path / name).read_bytes() for name in ("report.json", "table.md")}

    stopped = pytester.runpytest_subprocess("--wild", "--editor", "ft-l", "--wild-threshold=reliability>=1",
                                            "--wild-limit", "6", "-x", *outputs)
    assert stopped.ret == pytest.ExitCode.TESTS_FAILED
    assert {name: (pytester.path / name).read_bytes() for name in before} == before
    partial = json.loads((pytester.path / "report.partial.json").read_text())
    assert (partial["complete"], partial["interrupted"]) == (False, True)
    assert partial["stop_reason"] == "stopping after 1 failures"
    assert partial["cases"]["selected"] == 6
    assert partial["cases"]["run"] == len(partial["samples"]) < 6
    assert "(partial: " in (pytester.path / "table.partial.md").read_text().splitlines()[0]
    stopped.stdout.fnmatch_lines(["partial run: * of 6 selected cases run (stopping after 1 failures)*",
                                  "report written to *report.partial.json"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_sigterm_stops_the_run_leaving_the_earlier_report_and_writing_a_marked_partial_one(tmp_path, workers):
    """SIGTERM to the pytest process (serially, or the xdist controller): it stops handing out
    cases, and the cases run so far reach a partial report beside the earlier one."""
    earlier = tmp_path / "report.json"
    earlier.write_bytes(b'{"complete": true}\n')  # any earlier report: it must stay byte for byte
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pytest", "--wild", "--editor", "ft-m", "--wild-limit", "40", "-v",
         "-p", "no:cacheprovider", f"--wild-report={earlier}", *workers],
        cwd=tmp_path, env=outer_xdist_removed(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines_into, args=(process.stdout, lines))
    reader.start()
    output = []
    try:
        deadline = time.monotonic() + 180
        while not any(" PASSED" in line or " FAILED" in line for line in output):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "".join(output)  # the run ended before any case finished
            output.append(line)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=30)
    while not lines.empty():
        output.append(lines.get() or "")
    text = "".join(output)
    assert returncode == pytest.ExitCode.INTERRUPTED, text
    assert "Traceback" not in text
    assert earlier.read_bytes() == b'{"complete": true}\n'
    partial = json.loads((tmp_path / "report.partial.json").read_text())
    assert (partial["complete"], partial["interrupted"], partial["stop_reason"]) == (False, True, "received SIGTERM")
    assert 1 <= partial["cases"]["run"] == len(partial["samples"]) < partial["cases"]["selected"] == 40
    assert "report written to" in text and "report.partial.json" in text


def _lines_into(stream, lines: queue.Queue) -> None:
    """Read the run's output without blocking the test, which must watch for progress."""
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> dict[int, dict]:
    """The reports of the 3 shards of a 3-case run, made once for the session and shared by
    xdist workers under a file lock (pytest-xdist's documented pattern for session data)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the directory every worker's base temp lies in
    where = root / "wild-shards"
    with FileLock(str(root / "wild-shards.lock")):
        if not all((where / f"shard{k}.json").is_file() for k in (1, 2, 3)):
            where.mkdir(exist_ok=True)
            for k in (1, 2, 3):
                done = subprocess.run([sys.executable, "-m", "pytest", "--wild", "--editor", "ft-m", "--wild-limit", "3",
                                       "--wild-shard", f"{k}/3", f"--wild-report=shard{k}.json", "-q", "-p", "no:cacheprovider"],
                                      cwd=where, env=outer_xdist_removed(), capture_output=True, text=True)
                assert done.returncode == 0, done.stdout + done.stderr
    return {k: json.loads((where / f"shard{k}.json").read_text()) for k in (1, 2, 3)}


def merge(tmp_path: Path, reports: dict[str, dict | bytes], *options: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`pytest-wild merge-reports` over the reports written as files of these names."""
    for name, report in reports.items():
        (tmp_path / name).write_bytes(report if isinstance(report, bytes) else json.dumps(report).encode())
    out = tmp_path / "merged.json"
    done = subprocess.run([*MERGE, *options, *reports, "-o", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert "Traceback" not in done.stderr
    return done, out


def test_a_merge_of_every_shard_is_complete_and_counts_the_whole_run(shards, tmp_path):
    assert [shards[k]["config"]["shard"] for k in (1, 2, 3)] == [[1, 3], [2, 3], [3, 3]]
    assert {shards[k]["cases"]["selected_before_sharding"] for k in (1, 2, 3)} == {3}
    done, out = merge(tmp_path, {f"s{k}.json": shards[k] for k in (3, 1, 2)})
    assert done.returncode == 0, done.stderr
    merged = json.loads(out.read_text())
    assert (merged["complete"], merged["interrupted"]) == (True, False)
    assert merged["cases"] == {"selected": 3, "run": 3, "selected_before_sharding": 3, "not_evaluable": 0}
    assert merged["config"]["missing_shards"] == []


def test_a_merge_with_shards_missing_is_refused_in_one_line_naming_them(shards, tmp_path):
    done, out = merge(tmp_path, {"s2.json": shards[2]})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["pytest-wild merge-reports: shards 1/3 and 3/3 are missing; "
                                        "merge every shard's report, or pass --allow-partial"]
    assert not out.exists()


def test_a_merge_with_a_shard_given_twice_is_refused(shards, tmp_path):
    done, out = merge(tmp_path, {"s1.json": shards[1], "s2.json": shards[2], "again.json": shards[2],
                                 "s3.json": shards[3]})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["pytest-wild merge-reports: again.json: shard 2/3 is given twice (also s2.json)"]
    assert not out.exists()


def test_a_partial_shard_is_refused_unless_allowed_and_then_the_merge_says_incomplete(shards, tmp_path):
    cut = dict(shards[2], complete=False, interrupted=True, stop_reason="received SIGTERM",
               cases={**shards[2]["cases"], "run": 0}, samples=[])
    reports = {"s1.json": shards[1], "s2.json": cut}
    done, out = merge(tmp_path, reports)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "pytest-wild merge-reports: shard 3/3 is missing; merge every shard's report, or pass --allow-partial",
        "pytest-wild merge-reports: s2.json: partial report (received SIGTERM, 0 of 1 selected cases run); "
        "rerun its shard, or pass --allow-partial",
    ]
    assert not out.exists()
    done, out = merge(tmp_path, reports, "--allow-partial")
    assert done.returncode == 0, done.stderr
    merged = json.loads(out.read_text())
    assert (merged["complete"], merged["interrupted"]) == (False, True)
    assert merged["cases"] == {"selected": 3, "run": 1, "selected_before_sharding": 3, "not_evaluable": 0}
    assert merged["config"]["missing_shards"] == ["3/3"]


@pytest.mark.parametrize("where", ["a-directory", "under-a-file", "read-only"])
def test_a_merged_report_that_cannot_be_written_is_one_line_and_replaces_nothing(shards, tmp_path, where):
    reports = {f"s{k}.json": shards[k] for k in (1, 2, 3)}
    for name, report in reports.items():
        (tmp_path / name).write_text(json.dumps(report))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "merged.json").write_text("earlier\n")
    out, expected = {"a-directory": ("ro", "-o ro: is a directory; name the merged report's file"),
                     "under-a-file": ("s1.json/merged.json", "-o s1.json/merged.json: cannot be written (Not a directory)"),
                     "read-only": ("ro/merged.json", "-o ro/merged.json: cannot be written (Read-only file system)")}[where]
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with read_only(tmp_path / "ro") if where == "read-only" else contextlib.nullcontext():
        done = subprocess.run([*MERGE, *reports, "-o", out], cwd=tmp_path, capture_output=True, text=True)
    if where == "read-only" and os.geteuid() != 0:
        expected = expected.replace("Read-only file system", "Permission denied")
    assert done.returncode == 2 and done.stderr.splitlines() == [f"pytest-wild merge-reports: {expected}"], done.stderr
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_shards_of_runs_that_selected_different_cases_are_refused(shards, tmp_path):
    other = dict(shards[2], cases={**shards[2]["cases"], "selected_before_sharding": 5})
    done, out = merge(tmp_path, {"s1.json": shards[1], "s2.json": other, "s3.json": shards[3]})
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["pytest-wild merge-reports: s2.json: its run selected 5 cases before sharding, "
                                        "s1.json's 3; these are not shards of one run"]


def _with(report: dict, **changes) -> bytes:
    return json.dumps({**report, **changes}).encode()


def _sample(report: dict, drop: str) -> bytes:
    row = {k: v for k, v in report["samples"][0].items() if k != drop}
    return _with(report, samples=[row])


MALFORMED = {
    "not JSON": (lambda r: b'{"samples": [', "bad.json:1: invalid JSON (Expecting value)"),
    "not an object": (lambda r: b"[1, 2]", "bad.json: an array, not an object; is this a pytest-wild report?"),
    "samples missing": (lambda r: json.dumps({"config": r["config"]}).encode(),
                        "bad.json: field 'samples' is missing; is this a pytest-wild report?"),
    "samples not a list": (lambda r: _with(r, samples={"a": 1}), "bad.json: field 'samples' must be an array, not an object"),
    "sample not an object": (lambda r: _with(r, samples=["tw-1"]), "bad.json: field 'samples[0]' must be an object, not a string"),
    "sample without id": (lambda r: _sample(r, "id"), "bad.json: field 'samples[0].id' is missing"),
    "sample without modes": (lambda r: _sample(r, "modes"), "bad.json: field 'samples[0].modes' is missing"),
    "shard not K/N": (lambda r: _with(r, config={**r["config"], "shard": [4, 3]}),
                      "bad.json: field 'config.shard' must be null or [K, N] with 1 <= K <= N, not [4, 3]"),
    "timing of a case not a number": (
        lambda r: _with(r, timing={"cases": {"tw-1": {"edit_seconds": "1", "evaluate_seconds": 1.0, "questions": 5}}}),
        "bad.json: field 'timing.cases.tw-1.edit_seconds' must be a number, not a string"),
    "complete not a boolean": (lambda r: _with(r, complete="yes"), "bad.json: field 'complete' must be a boolean, not a string"),
    "not UTF-8": (lambda r: b'{"samples": "\xff"}', "bad.json: not UTF-8 (byte 0xff at offset 13)"),
    "nested too deeply": (lambda r: b"[" * 200_000 + b"]" * 200_000,
                          "bad.json: JSON nested too deeply to be a pytest-wild report"),
}


@pytest.mark.malformed_outputs
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_report_is_refused_in_one_line_naming_the_file_and_field(shards, tmp_path, kind):
    make, message = MALFORMED[kind]
    done, out = merge(tmp_path, {"s1.json": shards[1], "bad.json": make(shards[2]), "s3.json": shards[3]})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"pytest-wild merge-reports: {message}"]
    assert not out.exists()


@pytest.mark.malformed_outputs
def test_every_malformed_report_gets_its_own_line(shards, tmp_path):
    done, _ = merge(tmp_path, {"a.json": b"[]", "s2.json": shards[2], "b.json": b"\xfe"})
    assert done.returncode == 2
    assert [line.split(":")[1].strip() for line in done.stderr.splitlines()] == ["a.json", "b.json"]
