"""The documented numbers are the committed goldens' numbers: the table of the bundled suite in
docs/measured.md is `pytest-wild table` over the goldens, and the WILD lines of the README's
example run agree with them."""

import re
from pathlib import Path

from pytest_wild.cli import main
from pytest_wild.results.compare import from_goldens

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MEASURED = (ROOT / "docs" / "measured.md").read_text(encoding="utf-8")
GOLDENS = ROOT / "golden" / "tinyworld"


def test_the_measured_table_is_the_table_command_over_the_committed_goldens(capsys, monkeypatch):
    command = re.search(r"pytest-wild table golden/tinyworld/\{([a-z,-]+)\}/tinyworld", MEASURED)
    assert command, "docs/measured.md shows the command that makes its table"
    editors = command.group(1).split(",")
    from pytest_wild.editors import BUILTIN

    assert sorted(editors) == sorted(BUILTIN)
    monkeypatch.chdir(ROOT)
    assert main(["table", *[f"golden/tinyworld/{editor}/tinyworld" for editor in editors]]) == 0
    printed = capsys.readouterr().out
    assert printed in MEASURED, printed


def test_the_example_runs_wild_lines_agree_with_the_goldens():
    example = re.search(r"editor (\S+) on tinyworld, suite tinyworld: (\d+) cases evaluated.*?\n```", README, re.S)
    assert example, "the README shows an example run"
    editor, cases = example.group(1), int(example.group(2))
    expected = from_goldens(GOLDENS / editor / "tinyworld")
    assert cases == expected.cases
    shown = dict(re.findall(r"^wild {12}(\w+) +([0-9.]+) ", example.group(0), re.M))  # not the indented f1 rows
    assert shown and shown == {metric: f"{expected.means('wild')[metric]:.3f}" for metric in shown}
