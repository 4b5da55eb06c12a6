import pytest

from pytest_wild.generation.stopping import find_stop, finish_text
from pytest_wild.scores.answers import exact_match, f1, inner_stops, normalize_answer, target_flags


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Wilt Chamberlain *", "wilt chamberlain"),
        ("The  Beatles.", "beatles"),
        ("an apple a day", "apple day"),
        ("Théâtre – “Nice”", "théâtre – “nice”"),
        (")", ""),
    ],
)
def test_normalize_answer_follows_squad(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1():
    assert exact_match(" Paris", "paris.") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert f1("Paris, France", "Paris") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1("London", "Paris") == 0.0


def test_flags_surface_targets_the_published_rule_cannot_match():
    assert target_flags("Robert C. Newton", "published")[0].startswith("inner-stop")
    assert target_flags("Robert C. Newton", "sentence") == []
    assert target_flags(")", "published")[0].startswith("empty-normalised")
    assert target_flags("Paris", "published") == []


def test_published_rule_stops_at_first_dot_or_newline():
    assert find_stop(" Robert C", "published", final=False) is None
    assert find_stop(" Robert C.", "published", final=False) == 9
    assert find_stop(" a\nb", "published", final=False) == 2
    assert finish_text(" Paris.", "published", "<eos>") == " Paris"
    assert finish_text(" Paris<eos>", "published", "<eos>") == " Paris"
    assert finish_text(" Paris.)", "published", "<eos>") == " Paris.)"


def test_sentence_rule_keeps_initials_abbreviations_and_decimals():
    assert find_stop(" Robert C.", "sentence", final=False) is None
    assert find_stop(" Robert C. Newton.", "sentence", final=False) == 17
    assert find_stop(" Dr. Who.", "sentence", final=False) == 8
    assert find_stop(" 3.", "sentence", final=False) is None
    assert find_stop(" 3.5 metres.", "sentence", final=False) == 11
    assert find_stop(" 3. And", "sentence", final=False) == 2
    assert finish_text(" Robert C. Newton. He", "sentence", None) == " Robert C. Newton"
    assert finish_text(" 1994.", "sentence", None) == " 1994"


def test_inner_stops_counts_the_targets_the_published_rule_cuts():
    targets = ["Grimsby", "Everton F.C.", "St. Louis", "3.5", "U.S.", "Paris."]
    assert inner_stops(targets, "published") == 4  # a final "." alone is stripped, not a stop inside
    assert inner_stops(targets, "sentence") == 0
