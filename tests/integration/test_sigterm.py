"""SIGTERM where a run spends long stretches inside one test or after the last one (issue 31):
a sequence of edits (one test runs the whole sequence), and the judging at the end. A CI
cancels with SIGTERM and kills seconds later, so each must stop within seconds, keeping what
it has: a sequence's snapshot in its run directory and a partial report; the verdicts given so
far, every other answer unjudged "run stopped". Real subprocesses, really signalled; as
`timeout` does, the signal goes to the whole process group under xdist, whose workers must
then stop and never be replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..judge_server import JudgeServer
from . import outer_xdist_removed

STOPPED_WITHIN = 60.0  # seconds from SIGTERM to the process's exit: a few in fact; generous for a busy CI box


def run_until(tmp_path: Path, args: list[str], ready, group: bool = False) -> tuple[int, str, float]:
    """Start `pytest args` in `tmp_path`, send SIGTERM (to its process group with `group`)
    once `ready()` holds, and return (exit status, output, seconds from the signal to the exit)."""
    output = tmp_path / "output.txt"
    with output.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-u", "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                                   env=outer_xdist_removed(), stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not ready():
                assert process.poll() is None, output.read_text()[-3000:]  # ended before it was signalled
                assert time.monotonic() < deadline, output.read_text()[-3000:]
                time.sleep(0.1)
            signalled = time.monotonic()
            if group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
            try:
                returncode = process.wait(timeout=STOPPED_WITHIN * 2)
            except subprocess.TimeoutExpired:
                returncode = None
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return returncode, output.read_text(), took


def snapshot_done(run_dir: Path) -> list[int]:
    """The number of edits each sequence's latest snapshot holds."""
    return sorted(json.loads(p.read_text())["done"] for p in run_dir.glob("*/latest.json"))  # written whole (atomically)


@pytest.mark.parametrize("workers", [[], ["-n", "2", "--wild-orders=2"]], ids=["serial", "xdist"])
def test_sigterm_stops_a_sequence_at_its_next_edit_with_its_snapshot_and_a_partial_report(tmp_path, workers):
    run_dir = tmp_path / "rd"
    returncode, text, took = run_until(
        tmp_path, ["--wild", "--editor=ft-m", "--wild-sequential=200", f"--wild-run-dir={run_dir}", "--wild-save-every=10",
                   "--wild-report=report.json", "--wild-markdown=table.md", "-p", "no:syrupy", "-rs", *workers],
        lambda: any(n >= 10 for n in snapshot_done(run_dir)), group=bool(workers))
    assert returncode == pytest.ExitCode.INTERRUPTED and took < STOPPED_WITHIN, (took, text[-3000:])
    assert "Traceback" not in text and "replacing crashed worker" not in text, text[-3000:]
    assert "the sequence" in text and "stopped after" in text and "(--wild-resume continues it)" in text, text[-3000:]
    done = snapshot_done(run_dir)
    assert done and max(done) >= 10 and all(0 < n < 200 for n in done), done  # each saved where it stopped
    partial = json.loads((tmp_path / "report.partial.json").read_text())
    assert (partial["complete"], partial["interrupted"], partial["stop_reason"]) == (False, True, "received SIGTERM")
    assert (tmp_path / "table.partial.md").exists() and not (tmp_path / "report.json").exists()


def test_sigterm_while_judging_keeps_the_results_and_leaves_the_answers_unjudged(tmp_path):
    """Every request hangs for 10 minutes (within the 15-minute timeout): SIGTERM ends the run
    within seconds with the report written, each answer unjudged "run stopped"."""
    with JudgeServer(every="hang", hang=600) as server:
        returncode, text, took = run_until(
            tmp_path, ["--wild", "--editor=ft-m", "--wild-limit=2", "--wild-metric=judge", f"--wild-judge={server.url}",
                       "--wild-judge-model=grader", "--wild-judge-timeout=900", "--wild-report=report.json",
                       "-p", "no:syrupy"],
            lambda: server.requests > 0)
    assert returncode == pytest.ExitCode.INTERRUPTED and took < STOPPED_WITHIN, (took, text[-3000:])
    assert "Traceback" not in text, text[-3000:]
    report = json.loads((tmp_path / "report.partial.json").read_text())
    assert report["stop_reason"] == "received SIGTERM" and report["cases"]["run"] == 2
    assert report["judge"]["unjudged_reasons"] == {"run stopped (received SIGTERM)": report["judge"]["answers"]}
    assert "UNJUDGED" in text
