import json
from pathlib import Path

import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.cases.suite import describe, find_suite, load_suite, sample

RECORDS = [
    {"id": f"c{i}", "prompt": f"Where is thing{i}?", "target": "here", "subject": f"thing{i}",
     "rephrase": f"Where can thing{i} be found?", "locality": [{"loc": "Sky colour?", "loc_ans": "blue"}]}
    for i in range(10)
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def test_suite_yaml_names_data_thresholds_and_hparams(tmp_path, data_file):
    suite_file = tmp_path / "mine.yaml"
    suite_file.write_text("name: mine\ndata: data.jsonl\nlimit: 4\nseed: 3\ncontext: qa_inst\n"
                          "thresholds: {reliability: 1, locality: 0.5}\nhparams: {ft-m: {lr: 0.1}}\n")
    suite = load_suite(find_suite(str(suite_file), tmp_path, tmp_path))
    assert suite.name == "mine" and suite.context == "qa_inst"
    assert len(suite.cases) == 4
    assert suite.cases == sample(load_suite(data_file).cases, 4, 3)
    assert suite.thresholds == {"reliability": 1.0, "locality": 0.5}
    assert suite.hparams == {"ft-m": {"lr": 0.1}}


def test_sampling_is_seeded_and_keeps_file_order(data_file):
    cases = load_suite(data_file).cases
    picked = sample(cases, 5, seed=1)
    assert picked == sample(cases, 5, seed=1) != sample(cases, 5, seed=2)
    assert [cases.index(c) for c in picked] == sorted(cases.index(c) for c in picked)


def test_names_resolve_to_project_then_bundled_suites(tmp_path):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text("data: x.json\n")
    assert find_suite("mine", tmp_path, tmp_path) == (tmp_path / "suites" / "mine.yaml").resolve()
    assert find_suite(None, tmp_path, tmp_path).name == "tinyworld.yaml"
    assert find_suite("WenDingY/QAEdit", tmp_path, tmp_path) == "WenDingY/QAEdit"
    with pytest.raises(WildInputError, match="--wild-suite: 'nothing'"):
        find_suite("nothing", tmp_path, tmp_path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("data: data.jsonl\ncontxt: chat\n", "unknown suite field 'contxt'"),
        ("data: missing.json\n", "field 'data' names"),
        ("data: data.jsonl\nthresholds: {reliability: 2}\n", "thresholds.reliability: expected a number in [0, 1]"),
        ("data: data.jsonl\nthresholds: {fluency: 1}\n", "thresholds.fluency: unknown metric"),
        ("data: data.jsonl\ncontext: poem\n", "field 'context' must be one of"),
        ("data: data.jsonl\nlimit: -1\n", "field 'limit' must be a non-negative integer"),
        ("name: [unclosed\n", "invalid YAML"),
        ("limit: 3\n", "give exactly one of the fields 'data'"),
    ],
)
def test_malformed_suite_files_name_the_file_and_field(tmp_path, data_file, body, message):
    suite_file = tmp_path / "bad.yaml"
    suite_file.write_text(body)
    with pytest.raises(WildInputError) as excinfo:
        load_suite(suite_file)
    assert str(excinfo.value).startswith(str(suite_file))
    assert message in str(excinfo.value)


def test_qaedit_is_bundled_with_its_licence_and_needs_no_data_directory(tmp_path, shared_data):
    suite = load_suite(find_suite("qaedit", tmp_path, tmp_path), rootdir=tmp_path)
    assert suite.name == "qaedit" and len(suite.cases) == 800 and suite.context == "question"
    bundled = Path(suite.source)
    assert bundled.read_bytes() == (shared_data / "qaedit-800.json").read_bytes()
    assert "Apache License" in (bundled.parent / "LICENSE").read_text()
    notice = (bundled.parent / "NOTICE").read_text()
    assert all(name in notice for name in ("WanliYoung/Revisit-Editing-Evaluation", "Natural Questions", "TriviaQA",
                                           "SimpleQA", "Apache License"))
    assert "hub WenDingY/QAEdit" == describe(find_suite("qaedit-full", tmp_path, tmp_path))[1]


def test_bundled_suites_read_their_benchmark_file_from_the_data_directory(tmp_path, shared_data):
    found = find_suite("qaedit-800", tmp_path, tmp_path)
    suite = load_suite(found, limit=5, rootdir=tmp_path, data_dir=shared_data)
    assert suite.name == "qaedit-800" and len(suite.cases) == 5
    assert suite.source == str((shared_data / "qaedit-800.json").resolve())
    with pytest.raises(WildInputError, match="name that directory with --wild-data=DIR"):
        load_suite(found, limit=5, rootdir=tmp_path)


def test_a_projects_suites_come_before_the_bundled_ones_and_are_listed(tmp_path, data_file):
    from pytest_wild.cases.suite import BUNDLED_SUITES, available_suites

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "tinyworld.yaml").write_text("data: ../data.jsonl\n")
    (tmp_path / "suites" / "mine.yaml").write_text("data: ../data.jsonl\n")
    found = available_suites(tmp_path)
    assert found["tinyworld"] == found["mine"].parent / "tinyworld.yaml"
    assert {"qaedit", "qaedit-full", "qaedit-800", "counterfact-1k"} <= set(found)
    assert found["qaedit-800"].parent == BUNDLED_SUITES
    assert find_suite("tinyworld", tmp_path, tmp_path) == found["tinyworld"].resolve()
