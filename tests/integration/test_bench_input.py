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
