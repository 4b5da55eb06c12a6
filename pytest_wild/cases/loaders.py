"""Read edit cases from QAEdit JSON/JSONL files, EasyEdit CounterFact files and hub datasets.

Every malformed record raises `WildInputError` naming the file, the record and the field,
so a user can fix the data without reading a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from .case import Case, Locality, WildInputError
from .files import read_text

QAEDIT_FIELDS = ("prompt", "target", "subject")
COUNTERFACT_FIELDS = ("prompt", "target_new", "subject")


def read_records(path: Path) -> list[Mapping]:
    """Records of a `.json` (a list, or an object with a `data` list) or `.jsonl` file."""
    text = read_text(path, "data file")
    if path.suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            records.append(_json(line, path, lineno))
        return records
    data = _json(text, path, 1)
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise WildInputError(f"{path}: expected a list of records at the top level")
    return data


def _json(text: str, path: Path, first_line: int):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WildInputError(f"{path}:{first_line + exc.lineno - 1}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise WildInputError(f"{path}:{first_line}: JSON nested too deeply to be edit records") from None


def detect_layout(record: Mapping) -> str:
    """'counterfact' for the EasyEdit CounterFact layout, else 'qaedit'."""
    return "counterfact" if "target_new" in record else "qaedit"


def cases_from_records(records: Iterable[Mapping], origin: str, layout: str = "auto") -> list[Case]:
    cases = []
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        where = f"{origin}: record {index}"
        if not isinstance(record, Mapping):
            raise WildInputError(f"{where}: expected an object, got {type(record).__name__}")
        kind = detect_layout(record) if layout == "auto" else layout
        case = _counterfact_case(record, where, index) if kind == "counterfact" else _qaedit_case(record, where, index)
        if case.id in seen:
            raise WildInputError(f"{where}: field 'id' repeats {case.id!r} (first at record {seen[case.id]})")
        seen[case.id] = index
        cases.append(case)
    return cases


def load_file(path: Path, layout: str = "auto") -> list[Case]:
    return cases_from_records(read_records(path), str(path), layout)


def load_hub(dataset_id: str, split: str = "train", layout: str = "auto") -> list[Case]:
    """A dataset through `datasets` (a hub id such as `WenDingY/QAEdit`, or a local
    dataset directory): imported here only, as it is heavy."""
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:
        raise WildInputError(f"{dataset_id}: cannot load dataset split {split!r} ({exc})") from None
    return cases_from_records(dataset, f"{dataset_id}[{split}]", layout)


def _text(record: Mapping, key: str, where: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise WildInputError(f"{where}: field {key!r} is missing")
        return None
    if not isinstance(value, str):
        raise WildInputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        hint = "" if required else " (leave it out when there is none)"
        raise WildInputError(f"{where}: field {key!r} is empty{hint}")
    return value


def _case_id(record: Mapping, key: str, index: int, where: str) -> str:
    """The record's id; QAEdit numbers its records per source (NQ 1104 and TQA 1104 both
    exist), so an integer id with a source becomes "NQ-1104"."""
    value = record.get(key, index)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WildInputError(f"{where}: field {key!r} must be a string or an integer")
    source = record.get("source")
    if isinstance(value, int) and isinstance(source, str) and source:
        return f"{source}-{value}"
    return str(value)


def _check_subject(prompt: str, subject: str, where: str) -> None:
    if subject not in prompt:
        raise WildInputError(f"{where}: field 'subject' ({subject!r}) does not occur in 'prompt'")


def _qaedit_case(record: Mapping, where: str, index: int) -> Case:
    prompt = _text(record, "prompt", where)
    subject = _text(record, "subject", where)
    _check_subject(prompt, subject, where)
    locality = record.get("locality", [])
    if not isinstance(locality, list):
        raise WildInputError(f"{where}: field 'locality' must be a list of {{loc, loc_ans}}")
    items = []
    for j, item in enumerate(locality):
        item_where = f"{where}: locality[{j}]"
        if not isinstance(item, Mapping):
            raise WildInputError(f"{item_where}: expected an object with 'loc' and 'loc_ans'")
        items.append(Locality(_text(item, "loc", item_where), _loc_answer(item, "loc_ans", item_where)))
    return Case(
        id=_case_id(record, "id", index, where),
        prompt=prompt,
        target=_text(record, "target", where),
        subject=subject,
        rephrase=_text(record, "rephrase", where, required=False),
        locality=tuple(items),
        source=str(record.get("source", "")),
        ground_truth=_text(record, "ground_truth", where, required=False),
    )


def _loc_answer(record: Mapping, key: str, where: str) -> str:
    """Locality answers are strings; some datasets store a list of aliases: take the first."""
    value = record.get(key)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return _text(record, key, where)


def _counterfact_case(record: Mapping, where: str, index: int) -> Case:
    prompt = _text(record, "prompt", where)
    subject = _text(record, "subject", where)
    # ROME's CounterFact writes the subject's place as "{}"; any other brace is the prompt's
    # own text (str.format would raise on it)
    prompt = prompt.replace("{}", subject)
    _check_subject(prompt, subject, where)
    locality = ()
    if record.get("locality_prompt") is not None:
        locality = (Locality(_text(record, "locality_prompt", where), _loc_answer(record, "locality_ground_truth", where)),)
    return Case(
        id=_case_id(record, "case_id", index, where),
        prompt=prompt,
        target=_text(record, "target_new", where),
        subject=subject,
        rephrase=_text(record, "rephrase_prompt", where, required=False),
        locality=locality,
        source="counterfact",
        ground_truth=_text(record, "ground_truth", where, required=False),
    )
