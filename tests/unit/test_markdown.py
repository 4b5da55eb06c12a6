"""Fields that reach Markdown stay one cell of one row and render as their text (issue 31):
the escaping helpers, and `pytest-wild table` over reports whose editor names were written to
inject a row, HTML and a link, through the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_wild.results.markdown import code, text
from pytest_wild.results.report import markdown_table

HOSTILE = "ft-m | 1.000 | 1 |\n| `evil` | 9 | 1.000 | 1.000 | 1.000 | 1.000 |\r\n<img src=x onerror=alert(1)> [x](http://e) **b** ~~s~~ &lt; \\"


def cells(row: str) -> int:
    """The cells GitHub's table parser finds in a row: unescaped pipes between the outer ones."""
    count, escaped = 0, False
    for ch in row.strip()[1:-1]:
        count += ch == "|" and not escaped
        escaped = ch == "\\" and not escaped
    return count + 1


@pytest.mark.parametrize("value", [HOSTILE, "`", "``a`", "a\u2028b\x00c", "plain ft-m"])
def test_a_field_is_one_line_with_no_markup_left(value):
    for escaped in (text(value), code(value)):
        assert len(escaped.splitlines()) == 1 and escaped.isprintable()
        assert cells(f"| {escaped} |") == 1
    assert "<" not in text(value).replace("\\<", "") and "[" not in text(value).replace("\\[", "")
    ticks = max((len(run) for run in code(value).strip("`").split(" ") if set(run) == {"`"}), default=0)
    fence = len(code(value)) - len(code(value).lstrip("`"))
    assert fence > ticks  # no run of backticks inside closes the span


def test_ordinary_names_are_unchanged():
    assert code("ft-m") == "`ft-m`" and text("WILD results: ft-m on tinyworld") == "WILD results: ft-m on tinyworld"


def test_the_job_summary_title_cannot_add_rows():
    plain = markdown_table({}, ["wild"], "WILD results: ft-m on m")
    lines = markdown_table({}, ["wild"], f"WILD results: {HOSTILE} on m")
    assert "\n".join(lines).count("\n") == "\n".join(plain).count("\n") and lines[1:] == plain[1:]
    assert lines[0].startswith("### WILD results: ft-m \\| 1.000") and "<img" not in lines[0].replace("\\<", "")


def report(name: str, sequence: bool = False) -> dict:
    found = {"samples": [], "config": {"editor": {"name": name}},
             "results": {"wild": {"reliability": {"value": 0.5}, "generalization": {"value": 0.25}}}}
    if sequence:
        point = {"edits": "3 |\n| x", "final": {"wild": {"reliability": 0.5}}, "immediate": {"wild": {}}, "capability": {}}
        found["sequence"] = {"curve": [point]}
    return found


@pytest.mark.parametrize("sequence", [False, True], ids=["table", "table-sequence"])
def test_the_table_command_keeps_each_report_on_its_own_row(tmp_path, sequence):
    (tmp_path / "evil.json").write_text(json.dumps(report(HOSTILE, sequence)))
    (tmp_path / "plain.json").write_text(json.dumps(report("memit", sequence)))
    done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "table", *(["--sequence"] if sequence else []),
                           "evil.json", "plain.json"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert len(rows) == 2 + (4 if sequence else 2)  # head and rule, then each report's rows only
    assert len({cells(row) for row in rows}) == 1  # every row has the head's cells
    assert rows[2].startswith("| ``ft-m \\| 1.000 \\| 1 \\| \\| `evil`"), rows[2]  # a longer fence: HTML and links literal


def test_a_sequence_curve_that_is_not_one_is_one_line(tmp_path):
    forged = report("memit", sequence=True)
    forged["sequence"]["curve"][0]["final"] = {"wild": {"reliability": "high"}}
    (tmp_path / "r.json").write_text(json.dumps(forged))
    done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "table", "--sequence", "r.json"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == ("pytest-wild table: r.json: field 'sequence.curve' is not a "
                                                            "sequence's curve (ValueError)"), done.stderr


def test_a_sequence_table_shows_the_kept_f1_after_each_metric(tmp_path):
    """Runs that kept F1 beside their metrics show it after a "/"; a run from before F1 was kept
    shows n/a there; a run with no F1 at all keeps the plain table."""
    kept = report("ft-m", sequence=True)
    kept["sequence"]["curve"][0]["final"] = {"wild": {"reliability": 0.0, "reliability_f1": 0.25, "locality": 1.0,
                                                      "locality_f1": 1.0, "generalization": None}}
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    (tmp_path / "old.json").write_text(json.dumps(report("memit", sequence=True)))

    def table(*names: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "table", "--sequence", *names], cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    both = table("kept.json", "old.json")
    assert both[0].startswith("| editor | edits | convention | reliability / F1 | generalization / F1 | locality / F1 |")
    assert both[2].startswith("| `ft-m` | 3 \\| \\| x | final | 0.000 / 0.250 | n/a / n/a | 1.000 / 1.000 |"), both[2]
    assert both[4].startswith("| `memit` | 3 \\| \\| x | final | 0.500 / n/a | n/a / n/a | n/a / n/a |"), both[4]
    assert table("old.json")[0].startswith("| editor | edits | convention | reliability | generalization | locality |")
