import json

import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.cases.loaders import load_file, load_hub


def test_real_qaedit_records_load(shared_data):
    cases = load_file(shared_data / "qaedit-800.json")
    assert len(cases) == 800
    first = cases[0]
    assert (first.id, first.source, first.target) == ("NQ-1104", "NQ", "Wilt Chamberlain *")
    assert len(first.locality) == 5 and first.locality[0].answer == "Michael"
    assert all(case.subject in case.prompt for case in cases)
    assert sum(case.target.startswith(" ") for case in cases) > 0


def test_real_counterfact_records_load(shared_data):
    cases = load_file(shared_data / "counterfact-edit.json")
    assert len(cases) == 10_000
    case = cases[0]
    assert (case.prompt, case.target, case.ground_truth) == (
        "The mother tongue of Danielle Darrieux is", "English", "French")
    assert case.rephrase.startswith("Where Danielle Darrieux is from")
    assert case.locality[0].answer == "French"


def test_jsonl_and_json_give_the_same_cases(shared_data, tmp_path):
    records = json.loads((shared_data / "qaedit-800.json").read_text())[:20]
    path = tmp_path / "part.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    as_json = tmp_path / "part.json"
    as_json.write_text(json.dumps(records))
    assert load_file(path) == load_file(as_json)


def test_hub_loader_reads_a_local_dataset_directory(shared_data, tmp_path):
    records = json.loads((shared_data / "qaedit-800.json").read_text())[:10]
    directory = tmp_path / "qaedit"
    directory.mkdir()
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cases = load_hub(str(directory), split="train")
    assert [c.id for c in cases] == [f"{r['source']}-{r['id']}" for r in records]
    assert cases[3].locality[2].question == records[3]["locality"][2]["loc"]


GOOD = {"id": 7, "prompt": "Who wrote Hamlet?", "target": "Shakespeare", "subject": "Hamlet",
        "rephrase": "Hamlet was written by whom?", "locality": [{"loc": "q", "loc_ans": "a"}]}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "target"}, "record 1: field 'target' is missing"),
        ({**GOOD, "prompt": 5}, "record 1: field 'prompt' must be a string, got int"),
        ({**GOOD, "subject": "Macbeth"}, "record 1: field 'subject' ('Macbeth') does not occur in 'prompt'"),
        ({**GOOD, "locality": "nope"}, "record 1: field 'locality' must be a list"),
        ({**GOOD, "locality": [{"loc": "q"}]}, "record 1: locality[0]: field 'loc_ans' is missing"),
        ({**GOOD, "id": 6}, "record 1: field 'id' repeats '6'"),
        ({**GOOD, "id": [6]}, "record 1: field 'id' must be a string or an integer"),
    ],
)
def test_malformed_records_name_file_record_and_field(tmp_path, record, message):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{**GOOD, "id": 6}, record]))
    with pytest.raises(WildInputError) as excinfo:
        load_file(path)
    assert str(excinfo.value).startswith(f"{path}: ")
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_broken_json_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(WildInputError, match=r"data.jsonl:2: invalid JSON"):
        load_file(path)
