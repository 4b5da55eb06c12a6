"""The JSON Schemas the package ships, and the one record they describe: a case's result."""

import copy
import json
from pathlib import Path

import pytest

from pytest_wild.scores.record import OPTIONAL, REQUIRED, CaseResult, NotACaseResult
from tests.schemas import kind_of, problems, validator, written_problems

ROOT = Path(__file__).resolve().parents[2]

ROW = CaseResult(id="tw-0001", source="tinyworld-counterfact", prompt="Q: Which pet? A:", target="goose",
                 subject="Trelgo", rephrase=None, flags=[],
                 modes={"wild": {"reliability": 1.0, "generalization": None, "locality": 1.0, "locality_all": 1.0,
                                 "locality_em": 1.0,
                                 "answers": {"prompt": {"question": "Q: Which pet? A:", "before": " pony",
                                                        "after": " goose", "score": 1.0},
                                             "locality": [{"question": "Q: Whose job? A:", "answer": "smith",
                                                           "before": " smith", "after": " smith", "same": True,
                                                           "em_after": 1.0}]}}},
                 timing={"edit_seconds": 0.5, "evaluate_seconds": 0.1, "questions": 2})
CELL = {"value": 1.0, "stderr": None, "n": 1, "successes": 1}
REPORT = {
    "schema_version": 1, "complete": True, "interrupted": False, "stop_reason": None,
    "cases": {"selected": 1, "run": 1, "selected_before_sharding": 1, "not_evaluable": 0}, "not_evaluable": {},
    "results": {"wild": {"reliability": CELL}},
    "results_by_source": {"tinyworld-counterfact": {"wild": {"reliability": dict(CELL)}}},
    "samples": [ROW.to_json(timing=False)],
    "timing": {"summary": {}, "cases": {"tw-0001": ROW.timing}}, "gates": [], "flags": {}, "lost": [],
    "config": {"model": {"spec": "tinyworld"}, "editor": {"name": "ft-m", "hparams": {}}, "suite": None,
               "evaluation": {"modes": ["wild"], "metric": "em", "context": "question", "stop_rule": "published"},
               "batch_size": 1, "shard": None, "seed": 0},
    "versions": {"pytest-wild": "0.1.0"},
}


def test_both_schemas_are_valid_draft_2020_12_schemas():
    assert validator("report") and validator("golden")


def test_every_bundled_golden_matches_the_golden_schema():
    goldens = sorted((ROOT / "golden").rglob("*.json"))
    assert len(goldens) > 1000
    assert written_problems(ROOT / "golden") == []
    assert {kind_of(json.loads(path.read_text())) for path in goldens} == {"golden"}


def test_a_case_result_reads_back_from_its_json_unchanged():
    assert CaseResult.from_json(ROW.to_json()) == ROW
    assert "timing" not in ROW.to_json(timing=False) and list(ROW.to_json())[: len(REQUIRED)] == list(REQUIRED)


@pytest.mark.parametrize("change, field", [
    (lambda data: data.pop("modes"), "modes"),
    (lambda data: data.update(judge="CORRECT"), "judge"),
], ids=["missing", "unknown"])
def test_a_case_result_json_with_a_key_missing_or_unknown_is_refused_naming_it(change, field):
    data = ROW.to_json()
    change(data)
    with pytest.raises(NotACaseResult) as refused:
        CaseResult.from_json(data)
    assert refused.value.field == field


def test_the_record_and_the_schema_name_the_same_keys():
    """One name, one meaning: a key added to the record and not to the schema (or the other way)
    is caught here, not by a reader outside Python."""
    schema = json.loads((ROOT / "pytest_wild" / "schemas" / "report.schema.json").read_text())
    described = schema["$defs"]["caseResult"]
    assert set(described["required"]) == set(REQUIRED)
    assert set(described["properties"]) == set(REQUIRED) | set(OPTIONAL) - {"timing"}  # timing: kept apart


def test_a_report_breaking_its_schema_is_named_where():
    assert problems(REPORT, "report") == []
    broken = copy.deepcopy(REPORT)
    broken["samples"][0]["modes"]["wild"]["reliability"] = "high"
    broken["results"]["wild"]["reliability"]["n"] = 0
    del broken["schema_version"]
    found = problems(broken, "report")
    assert len(found) == 3
    assert any(line.startswith("$: 'schema_version' is a required property") for line in found)
    assert any(line.startswith("$.results.wild.reliability.n:") for line in found)
    assert any(line.startswith("$.samples[0].modes.wild.reliability:") for line in found)


def test_what_a_test_wrote_is_checked_and_other_json_is_left_alone(tmp_path):
    (tmp_path / "data.json").write_text('[{"prompt": "Q?"}]')
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "r.json").write_text(json.dumps(REPORT))
    assert written_problems(tmp_path) == []
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "c.json").write_text('{"case": {"id": "c"}, "scores": {}}')
    found = written_problems(tmp_path)
    assert len(found) == 3 and all("(golden) $.case: '" in line for line in found)
    (tmp_path / "golden" / "c.json").unlink()
