"""bench/editors.py's own options, through its real command line: a bad `--suite` or `--model`
is one line naming the option and exit 1, found before any per-method child starts (no child's
traceback, no "benchmark failed")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "editors.py"


@pytest.mark.parametrize(("args", "option", "names"), [
    (("--suite", "no-such-suite"), "--suite", "no-such-suite"),
    (("--model", "/no/such/model", "--suite", "qaedit"), "--model", "/no/such/model"),
])
def test_bad_bench_option_is_one_line(tmp_path: Path, args: tuple[str, ...], option: str, names: str) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--methods", "memit", "--cases", "1", "--naive-cases", "1",
                           *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                               "HOME": str(tmp_path)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}:") and names in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "benchmark failed" not in done.stderr
    assert "statistics:" not in done.stdout  # stopped before any work


def test_the_mirage_bench_runs_a_shard_again_whose_report_is_partial(tmp_path: Path) -> None:
    """A shard stopped midway (SIGTERM writes a partial report) is neither skipped as done nor
    merged into its row; a complete one is."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mirage", BENCH.parent / "mirage.py")
    mirage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mirage)
    report = tmp_path / "report.json"
    assert not mirage.complete(report)  # none yet
    report.write_text('{"complete": false, "samples": []}')
    assert not mirage.complete(report)
    report.write_text("{not json")
    assert not mirage.complete(report)
    report.write_text('{"complete": true, "samples": []}')
    assert mirage.complete(report)
