"""The project's own gate: every built-in editor, on the bundled suite, must reproduce the
committed goldens (any changed generation fails until `golden/` is updated in the same
commit), and its aggregates must equal the goldens' to the third decimal (the goldens' are
the README's table, which tests/unit/test_readme.py holds to them). Each run is also the
check that a default run prints no warning (deprecations are errors in it)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_wild.results.compare import COLUMNS, from_goldens

from . import outer_xdist_removed

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "golden" / "tinyworld"


def test_every_builtin_editor_has_goldens():
    from pytest_wild.editors import BUILTIN

    assert {path.name for path in GOLDENS.iterdir()} == set(BUILTIN)
    for editor in BUILTIN:
        assert len(list((GOLDENS / editor / "tinyworld").glob("*.json"))) == 216, editor


# The whole bundled suite of every editor takes about 12 minutes of a 2-core machine's 20 (ROME
# alone 2 minutes): CI compares a seeded sample of 36 cases per editor (`--wild-limit=36`), its
# generations and its aggregates against the goldens of those cases. WILD_FULL_GOLDENS=1 compares
# all 216, as `pytest --wild --editor E` does; run it before committing goldens.
FULL = os.environ.get("WILD_FULL_GOLDENS") == "1"
SAMPLE = 36


@pytest.mark.parametrize("editor", sorted(path.name for path in GOLDENS.iterdir()))
def test_bundled_suite_reproduces_the_committed_goldens(editor, tmp_path):
    report = tmp_path / "report.json"
    limit = [] if FULL else [f"--wild-limit={SAMPLE}"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--wild", "--editor", editor, "-p", "no:cacheprovider", "-q", *limit,
         f"--wild-report={report}", "-W", "error::DeprecationWarning", "-W", "error::FutureWarning"],
        cwd=ROOT, capture_output=True, text=True, env=outer_xdist_removed(),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    data = json.loads(report.read_text())
    cases = sorted(sample["id"] for sample in data["samples"])
    assert len(cases) == (216 if FULL else SAMPLE) and f"{len(cases)} snapshots passed" in done.stdout
    # a default run prints no warning, and transformers logs no deprecation of how we call it
    assert "warnings summary" not in output and "Warning:" not in output and "deprecat" not in output.lower(), output[-4000:]
    compared = tmp_path / editor / "tinyworld"
    compared.mkdir(parents=True)
    for case in cases:
        shutil.copy(GOLDENS / editor / "tinyworld" / f"{case}.json", compared)
    expected = from_goldens(compared).means("wild")
    results = data["results"]["wild"]
    assert {m: f"{results[m]['value']:.3f}" for m in COLUMNS} == {m: f"{expected[m]:.3f}" for m in COLUMNS}
