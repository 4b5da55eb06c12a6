"""`pytest-wild table` as a reader of a paper or a pull request's summary needs it: one row per
run that says what the run was, mean ± stderr, WILD beside teacher-forced with the gap, a
source lacking a mode shown as "-" with a note (not an exception name), and no field able to
add a cell or a row."""

import json
import math
import re
from pathlib import Path

import pytest

from pytest_wild.cli import main


def report(path: Path, editor: str, results: dict, metric: str = "em", context: str = "chat", cases: int = 4) -> Path:
    path.write_text(json.dumps({
        "config": {"editor": {"name": editor}, "model": {"spec": "smollm2-135m"}, "suite": {"name": "qaedit"},
                   "evaluation": {"context": context, "metric": metric}},
        "samples": [{"id": f"c{i}", "modes": {}} for i in range(cases)],
        "results": {mode: {name: {"value": value, "stderr": err, "n": cases} for name, (value, err) in metrics.items()}
                    for mode, metrics in results.items()},
    }))
    return path


def table(capsys, *args: str) -> tuple[int, list[str], str]:
    status = main(["table", *args])
    out = capsys.readouterr()
    return status, out.out.splitlines(), out.err


def test_a_row_names_its_run_and_shows_wild_beside_teacher_forced_with_the_gap(tmp_path, capsys):
    source = report(tmp_path / "memit.json", "memit", {
        "wild": {"reliability": (0.25, 0.1), "generalization": (0.5, 0.12), "locality": (1.0, 0.0)},
        "synthetic": {"reliability": (0.95, 0.02), "generalization": (0.75, 0.1), "locality": (0.9, 0.05)}})
    status, lines, err = table(capsys, str(source))
    assert status == 0 and err == ""
    head = [part.strip() for part in lines[0].strip("|").split("|")]
    assert head == ["editor", "model", "suite", "context", "metric", "cases", "source",
                    "reliability (wild)", "reliability (synthetic)", "reliability gap",
                    "generalization (wild)", "generalization (synthetic)", "generalization gap",
                    "locality (wild)", "locality (synthetic)"]
    row = [part.strip() for part in lines[2].strip("|").split("|")]
    assert row == ["`memit`", "`smollm2-135m`", "`qaedit`", "chat", "em", "4", f"`{source}`",
                   "0.250 ± 0.100", "0.950 ± 0.020", "+0.700", "0.500 ± 0.120", "0.750 ± 0.100", "+0.250",
                   "1.000 ± 0.000", "0.900 ± 0.050"]


def test_a_source_without_a_mode_shows_a_dash_and_a_note_and_the_others_still_print(tmp_path, capsys):
    both = report(tmp_path / "a.json", "ft-m", {"wild": {"reliability": (0.1, 0.05)}, "synthetic": {"reliability": (0.9, 0.05)}})
    wild_only = report(tmp_path / "b.json", "rome", {"wild": {"reliability": (0.2, 0.05)}})
    status, lines, _ = table(capsys, str(both), str(wild_only))
    assert status == 0
    assert lines[3].endswith("| 0.200 ± 0.050 | - | - |")
    assert f"- `-`: `{wild_only}` has no synthetic results (the run did not evaluate that mode: `--wild-eval`)" in lines
    status, lines, err = table(capsys, str(both), "--mode", "length")
    assert status == 2 and lines == []
    assert err.strip() == "pytest-wild table: --mode length: no source has results for it (they have: synthetic, wild)"


def test_a_judge_run_says_so_in_its_metric_column(tmp_path, capsys):
    judged = report(tmp_path / "judge.json", "memit", {"wild": {"reliability": (0.5, 0.1)}}, metric="judge")
    exact = report(tmp_path / "em.json", "memit", {"wild": {"reliability": (0.25, 0.1)}})
    _, lines, _ = table(capsys, str(judged), str(exact))
    assert [line.split("|")[5].strip() for line in lines[2:4]] == ["judge", "em"]


def test_goldens_give_mean_and_sample_standard_error(tmp_path, capsys):
    directory = tmp_path / "golden" / "tinyworld" / "ft-m" / "tinyworld"
    directory.mkdir(parents=True)
    for index, value in enumerate([1.0, 0.0, 1.0]):
        (directory / f"tw-{index}.json").write_text(json.dumps({"scores": {"wild": {"reliability": value}}}))
    status, lines, _ = table(capsys, str(directory))
    stderr = math.sqrt(((1 / 3) ** 2 * 2 + (2 / 3) ** 2) / 2 / 3)
    assert status == 0 and lines[2] == (f"| `ft-m` | `tinyworld` | `tinyworld` | - | em | 3 | `{directory}` | "
                                        f"0.667 ± {stderr:.3f} |")


@pytest.mark.parametrize("name", ["x | y", "x\n| injected | row |", "a`b|c", "<img src=x>", "[link](http://e)"])
def test_no_field_adds_a_cell_or_a_row_or_opens_html_or_a_link(tmp_path, capsys, name):
    """In the editor's cell (a code span, where only `|` is read) and the context's (text)."""
    source = report(tmp_path / "r.json", name, {"wild": {"reliability": (1.0, 0.0)}}, context=name)
    status, lines, _ = table(capsys, str(source))
    assert status == 0 and len(lines) == 3
    cells = lines[2].replace("\\|", "\0").strip("|").split("|")
    assert len(cells) == lines[0].count("|") - 1
    context = cells[3].strip()
    assert not re.search(r"(?<!\\)[<`]", context) and not re.search(r"(?<!\\)\]\(", context), context


def test_f1_kept_beside_a_metric_follows_its_mean_with_a_note(tmp_path, capsys):
    kept = report(tmp_path / "ft-m.json", "ft-m", {
        "wild": {"reliability": (0.0, 0.0), "reliability_f1": (0.213, 0.05), "locality": (0.3, 0.1)},
        "synthetic": {"reliability": (1.0, 0.0), "locality": (0.9, 0.05)}})
    older = report(tmp_path / "memit.json", "memit", {"wild": {"reliability": (0.25, 0.1), "locality": (1.0, 0.0)},
                                                     "synthetic": {"reliability": (0.8, 0.1), "locality": (1.0, 0.0)}})
    status, lines, _ = table(capsys, str(kept), str(older))
    assert status == 0
    head = [part.strip() for part in lines[0].strip("|").split("|")]
    ft_m, memit = ([part.strip() for part in line.strip("|").split("|")] for line in lines[2:4])
    assert ft_m[head.index("reliability (wild)")] == "0.000 ± 0.000 (F1 0.213)"
    assert ft_m[head.index("locality (wild)")] == "0.300 ± 0.100"  # no F1 kept for it
    assert memit[head.index("reliability (wild)")] == "0.250 ± 0.100"
    assert any(line.startswith("- (F1 …): the token F1 of the same answers") for line in lines)
    _, plain, _ = table(capsys, str(older))
    assert not any("F1" in line for line in plain)


def answered(path: Path, editor: str, answers: list[tuple[str, str, str, str, str]], metric: str = "em") -> Path:
    """A report as a run before F1 was kept writes it: EM aggregates, and per case (target,
    prompt answer, rephrase answer, first locality answer before, after) in the wild mode."""
    path.write_text(json.dumps({
        "config": {"editor": {"name": editor}, "model": {"spec": "smollm2-135m"}, "suite": {"name": "qaedit"},
                   "evaluation": {"context": "chat", "metric": metric}},
        "samples": [{"id": f"c{i}", "target": target,
                     "modes": {"wild": {"reliability": 0.0, "answers": {
                         "prompt": {"after": prompt}, "rephrase": {"after": rephrase},
                         "locality": [{"before": before, "after": after}]}}}}
                    for i, (target, prompt, rephrase, before, after) in enumerate(answers)],
        "results": {"wild": {"reliability": {"value": 0.0, "stderr": 0.0, "n": len(answers)},
                             "locality": {"value": 0.5, "stderr": 0.5, "n": len(answers)}}},
    }))
    return path


def test_f1_is_computed_from_the_answers_of_a_report_that_did_not_keep_it_and_said_so(tmp_path, capsys):
    older = answered(tmp_path / "memit.json", "memit", [
        ("Paris", "It is Paris", "Paris France", "Lyon", "Lyon"),  # F1 0.5, 0.667; locality unchanged: 1
        ("Rome", "no idea", "Rome", "Milan", "Turin"),  # F1 0, 1; locality changed, no common token: 0
    ])
    status, lines, _ = table(capsys, str(older))
    assert status == 0
    head = [part.strip() for part in lines[0].strip("|").split("|")]
    row = [part.strip() for part in lines[2].strip("|").split("|")]
    assert row[head.index("reliability")] == "0.000 ± 0.000 (F1 0.250)"
    assert "generalization" not in head  # the run kept no EM for it, and an F1 has no column of its own
    assert row[head.index("locality")] == "0.500 ± 0.500 (F1 0.500)"
    assert any(line.startswith("- F1 of ") and "computed here from the answers the report kept" in line
               for line in lines)


def test_f1_is_not_computed_under_the_f1_metric_nor_from_part_of_the_cases(tmp_path, capsys):
    f1_run = answered(tmp_path / "f1.json", "memit", [("Paris", "It is Paris", "Paris", "Lyon", "Lyon")], metric="f1")
    partial = answered(tmp_path / "partial.json", "rome", [("Paris", "It is Paris", "Paris", "Lyon", "Lyon"),
                                                           ("Rome", "Rome", "Rome", "Milan", "Milan")])
    record = json.loads(partial.read_text())
    del record["samples"][1]["modes"]["wild"]["answers"]["prompt"]  # not the shape a run writes
    partial.write_text(json.dumps(record))
    for path in (f1_run, partial):
        status, lines, _ = table(capsys, str(path))
        assert status == 0
        assert not any("F1" in line for line in lines), lines
