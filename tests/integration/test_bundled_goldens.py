"""The project's own gate: every built-in editor, on the bundled suite, must reproduce the
committed goldens (any changed generation fails until `golden/` is updated in the same
commit) and keep its measured scores (the README's table) within a margin."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 0.05

# Measured with `pytest --wild --editor E` on the bundled suite (216 cases); see README. `locality` is
# the published estimator (the first locality question), `locality_all` ours (all three).
MEASURED = {
    "ft": {"reliability": 1.000, "generalization": 1.000, "locality": 0.921, "locality_all": 0.934},
    "ft-l": {"reliability": 0.037, "generalization": 0.032, "locality": 1.000, "locality_all": 1.000},
    "ft-m": {"reliability": 1.000, "generalization": 1.000, "locality": 0.972, "locality_all": 0.975},
    "rome": {"reliability": 0.778, "generalization": 0.764, "locality": 1.000, "locality_all": 0.995},
    "r-rome": {"reliability": 0.667, "generalization": 0.620, "locality": 1.000, "locality_all": 1.000},
    "memit": {"reliability": 0.750, "generalization": 0.731, "locality": 0.995, "locality_all": 0.995},
    "alphaedit": {"reliability": 0.769, "generalization": 0.769, "locality": 0.986, "locality_all": 0.989},
}

def outer_xdist_removed() -> dict[str, str]:
    """The environment without the outer run's xdist variables, which would make syrupy and
    the plugin in the inner run believe they are an xdist worker."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}


def gates(editor: str) -> list[str]:
    args = []
    for metric, value in MEASURED[editor].items():
        args += ["--wild-gate", f"{metric}>={max(0.0, value - MARGIN):.3f}"]
    return args


def test_every_builtin_editor_has_measurements_and_goldens():
    from pytest_wild.editors import BUILTIN

    assert set(MEASURED) == set(BUILTIN)
    for editor in BUILTIN:
        assert len(list((ROOT / "golden" / "tinyworld" / editor / "tinyworld").glob("*.json"))) == 216, editor


@pytest.mark.parametrize("editor", sorted(MEASURED))
def test_bundled_suite_reproduces_the_committed_goldens(editor):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--wild", "--editor", editor, "-p", "no:cacheprovider", "-q",
         "--wild-threshold", "reliability>=0", *gates(editor)],
        cwd=ROOT, capture_output=True, text=True, env=outer_xdist_removed(),
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "216 passed" in done.stdout
    assert "216 snapshots passed" in done.stdout
