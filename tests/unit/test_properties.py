"""Properties of the parsers and name mappings that hostile or careless input reaches:
whatever the input, the answer is a value or one `WildInputError`, never another exception;
distinct case ids never share a golden file."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_wild.cases.case import WildInputError
from pytest_wild.cases.case import WINDOWS_RESERVED, case_key
from pytest_wild.cases.loaders import cases_from_records
from pytest_wild.results.gates import parse_rule
from pytest_wild.scores.metrics import EDIT_METRICS

FILE_NAME_CHARACTERS = set(string.ascii_letters + string.digits + "._+-")
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4),
                           max_leaves=12)


def is_portable_file_name(name: str) -> bool:
    return (0 < len(name) <= 120 and set(name) <= FILE_NAME_CHARACTERS and not name.startswith(".")
            and not name.endswith(".") and name.split(".")[0].lower() not in WINDOWS_RESERVED)


@settings(max_examples=300)
@given(st.lists(st.text(min_size=1, max_size=300), min_size=2, max_size=20, unique=True))
def test_distinct_case_ids_get_distinct_portable_file_names_even_ignoring_case(ids):
    keys = [case_key(case_id) for case_id in ids]
    assert all(is_portable_file_name(key) for key in keys), keys
    assert len({key.lower() for key in keys}) == len(ids)


@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,40}", fullmatch=True))
def test_plain_ids_are_their_own_file_names(case_id):
    if case_id.split(".")[0] not in WINDOWS_RESERVED:
        assert case_key(case_id) == case_id


@given(st.text(max_size=60))
def test_a_gate_rule_is_parsed_or_refused_in_one_line(text):
    try:
        rule = parse_rule(text, "--wild-gate", ("wild", "synthetic"))
    except WildInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("--wild-gate: ")
    else:
        assert rule.metric in EDIT_METRICS and rule.mode in (None, "wild", "synthetic")


@given(st.sampled_from(EDIT_METRICS), st.sampled_from([">=", ">", "<=", "<", "=="]),
       st.floats(min_value=0, max_value=1, allow_nan=False), st.sampled_from(["", "synthetic."]))
def test_written_gate_rules_read_back(metric, op, value, mode):
    rule = parse_rule(f"{mode}{metric}{op}{value:.3f}", "--wild-gate", ("wild", "synthetic"))
    assert (rule.metric, rule.op, rule.value) == (metric, op, float(f"{value:.3f}"))
    assert rule.mode == (mode[:-1] or None)


@settings(max_examples=300)
@given(st.lists(json_values, max_size=5))
def test_any_json_records_load_as_cases_or_fail_in_one_line(records):
    try:
        cases = cases_from_records(records, "data.json")
    except WildInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("data.json: record ")
    else:
        for case in cases:
            assert case.prompt.strip() and case.subject in case.prompt
            assert case.rephrase is None or case.rephrase.strip()


@given(st.text(min_size=1, alphabet=st.characters(blacklist_categories=("Cs",))).filter(str.strip),
       st.text(min_size=1).filter(str.strip))
def test_a_counterfact_prompt_with_braces_never_breaks_loading(extra, subject):
    record = {"case_id": 1, "prompt": "The {} of " + extra + "{0}{name}", "target_new": "x", "subject": subject}
    try:
        (case,) = cases_from_records([record], "cf.json")
    except WildInputError:
        return
    assert case.prompt.startswith("The " + subject)
