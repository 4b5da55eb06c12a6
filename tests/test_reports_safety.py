"""Reports that cannot mislead (issue 12): a run stopped early (-x, Ctrl-C, SIGTERM) never
replaces a complete report with a partial one that looks complete."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest


def inner_env() -> dict[str, str]:
    """Inner runs must not think they are xdist workers when this file runs under -n 2."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}


def test_a_run_stopped_by_maxfail_leaves_the_complete_report_and_writes_a_marked_partial_one(pytester):
    outputs = ("--wild-report=report.json", "--wild-markdown=table.md")
    stale = pytester.path / "report.partial.json"
    stale.write_text("{}")
    done = pytester.runpytest_subprocess("--wild", "--editor", "ft-m", "--wild-limit", "4", *outputs)
    assert done.ret == pytest.ExitCode.OK, done.stdout.str()
    complete = json.loads((pytester.path / "report.json").read_text())
    assert (complete["complete"], complete["interrupted"]) == (True, False)
    assert complete["cases"] == {"selected": 4, "run": 4, "selected_before_sharding": 4}
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


def test_sigterm_stops_the_run_leaving_the_earlier_report_and_writing_a_marked_partial_one(tmp_path):
    earlier = tmp_path / "report.json"
    earlier.write_bytes(b'{"complete": true}\n')  # any earlier report: it must stay byte for byte
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pytest", "--wild", "--editor", "ft-m", "--wild-limit", "40", "-v",
         "-p", "no:cacheprovider", f"--wild-report={earlier}"],
        cwd=tmp_path, env=inner_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
