"""The judge's parts against a real HTTP server on 127.0.0.1 (tests/judge_server.py): verdicts
parsed strictly, retries bounded and Retry-After honoured, timeouts, unjudged answers with
their reason, the cache answering a rerun with zero requests, requests actually concurrent,
and the API key in no verdict, reason or cache byte."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_wild.cases import WildInputError
from pytest_wild.judge.cache import VerdictCache, verdict_key
from pytest_wild.judge.client import Answer, JudgeClient, retry_after
from pytest_wild.judge.grader import Grader, grader_from_text, parse_verdict

from ..judge_server import JudgeServer

KEY = "sk-test-NEVER-WRITTEN-0123456789"


@pytest.mark.parametrize(("reply", "verdict"), [
    ("CORRECT", "CORRECT"), ("INCORRECT", "INCORRECT"), ("correct.", "CORRECT"), ("  **INCORRECT**  ", "INCORRECT"),
    ("\n\n`Correct`\nbecause it is", "CORRECT"), ("Correct, because the names match", None),
    ("The answer is CORRECT", None), ("CORRECT or INCORRECT", None), ("", None), ("INCORRECT!", None),
])
def test_a_verdict_is_exactly_one_word_on_the_first_line(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_a_prompt_file_must_hold_every_field_and_is_versioned_by_its_text():
    with pytest.raises(WildInputError, match=r"^p.txt: the grader prompt must contain \{prediction\}$"):
        grader_from_text("Q {question} G {gold}", "p.txt")
    mine = grader_from_text("{question}|{gold}|{prediction}", "p.txt")
    assert mine.version.startswith("sha256:") and mine.version != Grader().version
    assert mine.prompt("a {gold}", "b", "c") == "a {gold}|b|c"  # braces in an answer are text


def ask(server: JudgeServer, predictions: list[str], **options):
    client = JudgeClient(server.url, "judge-model", KEY, backoff=0.01, **options)
    try:
        return client.judge([Answer("Q: Who?", "Malia Obama", p) for p in predictions]), client
    finally:
        client.close()


def test_verdicts_and_every_failure_is_unjudged_with_why():
    with JudgeServer(hang=2.0) as server:
        verdicts, client = ask(server, ["right", "wrong", "broken", "malformed", "chatty", "hang", "flaky"],
                               retries=2, timeout=0.5)
    by = dict(zip(["right", "wrong", "broken", "malformed", "chatty", "hang", "flaky"], verdicts))
    assert by["right"].verdict == "CORRECT" and by["wrong"].verdict == "INCORRECT" and by["flaky"].verdict == "CORRECT"
    assert (by["broken"].unjudged, by["broken"].reason) == (True, "HTTP 500 after 3 attempts")
    assert (by["hang"].unjudged, by["hang"].reason) == (True, "timed out after 3 attempts")
    assert by["malformed"].reason == "malformed response (not a chat completion)" and by["malformed"].unjudged
    assert by["chatty"].reason == "no verdict in the reply (not CORRECT or INCORRECT)" and by["chatty"].unjudged
    assert server.seen == {"right": 1, "wrong": 1, "broken": 3, "malformed": 1, "chatty": 1, "hang": 3, "flaky": 2}
    assert client.requests == server.requests == 12
    assert set(server.authorizations) == {f"Bearer {KEY}"}  # the key is sent, and only in the header
    assert not any(KEY in v.reason for v in verdicts)


def test_a_429_waits_for_its_retry_after_then_asks_again():
    with JudgeServer(retry_after="1") as server:
        started = time.monotonic()
        verdicts, _ = ask(server, ["busy"])
        waited = time.monotonic() - started
    assert verdicts[0].verdict == "CORRECT" and server.seen == {"busy": 2}
    assert 1.0 <= waited < 5.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 3.0) == 0.0  # a date in the past: at once
    assert retry_after("600", 3.0) == 60.0 and retry_after("soon", 3.0) == 3.0


def test_requests_run_concurrently_up_to_the_bound():
    """Counted by the server, not timed (bench/judge.py measures the speed-up)."""
    with JudgeServer(gather=8) as server:
        verdicts, _ = ask(server, [f"right {i}" for i in range(16)], concurrency=8)
    assert all(v.verdict == "CORRECT" for v in verdicts)
    assert server.most_in_flight == 8  # the bound, reached and never passed


def test_a_rerun_is_served_from_the_cache_with_zero_requests(tmp_path):
    answers = ["right a", "wrong b", "broken c", "right a"]
    with JudgeServer() as server:
        cache = VerdictCache(tmp_path / "judge.sqlite")
        first, _ = ask(server, answers, cache=cache, retries=1)
        asked = server.requests
        again, _ = ask(server, answers, cache=cache, retries=1)
        other, _ = ask(server, ["right a"], cache=cache, grader=grader_from_text("{question}\n{gold}\nAnswer to grade: "
                                                                                  "{prediction}", "p"))
    assert [v.verdict for v in first] == ["CORRECT", "INCORRECT", None, "CORRECT"]
    assert asked == 4  # "right a" once, "broken c" twice
    assert [v.verdict for v in again] == [v.verdict for v in first]
    assert [v.cached for v in again] == [True, True, False, True]
    assert server.requests - asked == 2 + 1  # only the unjudged answer again, and the other prompt's
    assert other[0].cached is False
    cache.close()
    assert KEY.encode() not in (tmp_path / "judge.sqlite").read_bytes()


def test_the_cache_keeps_every_verdict_written_from_several_threads_at_once(tmp_path):
    path = tmp_path / "judge.sqlite"

    def write(worker: int) -> None:
        cache = VerdictCache(path)
        for i in range(20):
            cache.put({verdict_key("q", "g", f"{worker}-{i}", "m", "v"): "CORRECT"})
        cache.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = [verdict_key("q", "g", f"{w}-{i}", "m", "v") for w in range(4) for i in range(20)]
    assert len(VerdictCache(path).get(keys)) == 80


def test_a_cache_that_is_not_a_database_or_is_a_link_is_one_line(tmp_path):
    (tmp_path / "bad.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(WildInputError, match=r"bad.sqlite: not a judge cache \(DatabaseError\); remove it"):
        VerdictCache(tmp_path / "bad.sqlite")
    (tmp_path / "link.sqlite").symlink_to(tmp_path / "bad.sqlite")
    with pytest.raises(WildInputError, match="link.sqlite: the judge cache is a link, refused"):
        VerdictCache(tmp_path / "link.sqlite")
