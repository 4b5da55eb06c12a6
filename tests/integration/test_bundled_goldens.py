"""The project's own gate: every built-in editor, on the bundled suite, must reproduce the
committed goldens (any changed generation fails until `golden/` is updated in the same
commit), and its aggregates must equal the goldens' (the README's table, which
tests/unit/test_readme.py holds to the goldens) to the third decimal. Each run is also the
check that a default run prints no warning (deprecations are errors in it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_wild.compare import COLUMNS, from_goldens

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "golden" / "tinyworld"


def outer_xdist_removed() -> dict[str, str]:
    """The environment without the outer run's xdist variables, which would make syrupy and
    the plugin in the inner run believe they are an xdist worker."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}


def test_every_builtin_editor_has_goldens():
    from pytest_wild.editors import BUILTIN

    assert {path.name for path in GOLDENS.iterdir()} == set(BUILTIN)
    for editor in BUILTIN:
        assert len(list((GOLDENS / editor / "tinyworld").glob("*.json"))) == 216, editor


# WISE trains a copy of an FFN weight on 12 rows for 40 steps per edit: its whole suite takes
# 100 s alone and 140 s beside the other tests, more than a 20-minute CI on 2 cores can hold.
# CI compares 54 of its cases (the seeded --wild-limit sample); `pytest --wild --editor wise` compares all 216.
CI_LIMIT = {"wise": 54}


@pytest.mark.parametrize("editor", sorted(path.name for path in GOLDENS.iterdir()))
def test_bundled_suite_reproduces_the_committed_goldens(editor, tmp_path):
    report = tmp_path / "report.json"
    limit = [f"--wild-limit={CI_LIMIT[editor]}"] if editor in CI_LIMIT else []
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--wild", "--editor", editor, "-p", "no:cacheprovider", "-q", *limit,
         f"--wild-report={report}", "-W", "error::DeprecationWarning", "-W", "error::FutureWarning"],
        cwd=ROOT, capture_output=True, text=True, env=outer_xdist_removed(),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{CI_LIMIT.get(editor, 216)} snapshots passed" in done.stdout
    # a default run prints no warning, and transformers logs no deprecation of how we call it
    assert "warnings summary" not in output and "Warning:" not in output and "deprecat" not in output.lower(), output[-4000:]
    if editor in CI_LIMIT:  # the aggregates of a part of the suite are not the table's
        return
    results = json.loads(report.read_text())["results"]["wild"]
    expected = from_goldens(GOLDENS / editor / "tinyworld", "wild").means
    assert {m: f"{results[m]['value']:.3f}" for m in COLUMNS} == {m: f"{expected[m]:.3f}" for m in COLUMNS}
