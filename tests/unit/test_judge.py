"""The judge's parts against a real HTTP server on 127.0.0.1 (tests/judge_server.py): verdicts
parsed strictly, retries bounded and Retry-After honoured, timeouts, unjudged answers with
their reason, the cache answering a rerun with zero requests, requests actually concurrent,
and the API key in no verdict, reason or cache byte; then the grading of a run's rows (verdicts
beside exact match, disagreements, unjudged answers) and a local model judge."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.judge.cache import VerdictCache, verdict_key
from pytest_wild.judge.client import JudgeClient, retry_after
from pytest_wild.judge.grader import PUBLISHED, REPLY_TOKENS, Answer, Grader, grader_from_text, parse_verdict
from pytest_wild.judge.grading import grade, grade_unavailable, judge_section, summary_lines, unjudged_behind
from pytest_wild.judge.local import LocalJudge
from pytest_wild.judge.settings import api_key, judge_settings
from pytest_wild.scores.answers import exact_match, f1
from pytest_wild.scores.record import CaseResult

from ..judge_server import JudgeServer
from ..tiny_judge import write_judge

KEY = "sk-test-NEVER-WRITTEN-0123456789"


@pytest.mark.parametrize(("reply", "verdict"), [
    ("CORRECT", "CORRECT"), ("INCORRECT", "INCORRECT"), ("correct.", "CORRECT"), ("  **INCORRECT**  ", "INCORRECT"),
    ("\n\n`Correct`\nbecause it is", "CORRECT"), ("Correct, because the names match", None),
    ("The answer is CORRECT", None), ("CORRECT or INCORRECT", None), ("", None), ("INCORRECT!", None),
])
def test_a_verdict_is_exactly_one_word_on_the_first_line(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize(("reply", "verdict"), [
    ("A", "CORRECT"), ("B", "INCORRECT"),
    # the paper's code scores `llm_ans == "A"` on the content as sent: anything else is not
    # CORRECT there, and not a verdict here (unjudged, the documented difference)
    ("a", None), ("A.", None), ("**A**", None), (" A", None), ("A\n", None), ("A\nB", None), ("A ", None),
    ("`A`", None), ("b", None), ("B.", None), ("**B**", None), (" B", None), ("CORRECT", None), ("A: CORRECT", None),
    ("Answer: A", None), ("", None),
])
def test_the_papers_prompt_is_read_as_the_paper_reads_it_exactly_a_or_b(reply, verdict):
    assert PUBLISHED.read(reply) == verdict
    assert PUBLISHED.verdict(reply).verdict == verdict


def test_our_prompt_stays_lenient_about_decoration():
    assert Grader().read("  **correct.**\nbecause") == "CORRECT"


def test_the_papers_prompt_is_its_text_with_our_fields_after_an_empty_system_turn():
    system, user = PUBLISHED.messages(Answer("Who?", "Malia Obama", "sasha {gold}"))
    assert system == {"role": "system", "content": ""} and user["role"] == "user"
    assert user["content"].startswith("Your job is to look at a question, a gold target, and a predicted answer")
    assert "```\nQuestion: Who?\nGold target: Malia Obama\nPredicted answer: sasha {gold}\n```" in user["content"]
    assert user["content"].endswith('Just return the letters "A" or "B", with no text around it.')
    assert PUBLISHED.version != Grader().version and Grader().messages(Answer("q", "g", "p"))[0]["role"] == "user"


def test_a_prompt_file_must_hold_every_field_and_is_versioned_by_its_text():
    with pytest.raises(WildInputError, match=r"^p.txt: the grader prompt must contain \{prediction\}$"):
        grader_from_text("Q {question} G {gold}", "p.txt")
    mine = grader_from_text("{question}|{gold}|{prediction}", "p.txt")
    assert mine.version.startswith("sha256:") and mine.version != Grader().version
    assert mine.prompt("a {gold}", "b", "c") == "a {gold}|b|c"  # braces in an answer are text


@pytest.mark.parametrize("reply", [" " * 20_000, "CORRECT" + " " * 5_000_000 + "x", "*_` " * 1_000_000 + "x",
                                   "x" + " *" * 1_000_000 + ".", "\n" * 1_000_000])
def test_reading_a_reply_is_linear_in_its_length(reply):
    """A decoration regex took 49 s on 20,000 spaces and never ended on the second reply; a
    linear scan reads each in well under a second (the bound is generous for a busy CI box)."""
    started = time.monotonic()
    assert parse_verdict(reply) is None
    assert time.monotonic() - started < 5.0


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
    assert (client.asked, client.retries_sent) == (7, 5)
    assert dict(client.failed_attempts) == {"HTTP 500": 4, "timed out": 3}  # broken 3, flaky 1; hang 3
    assert set(server.authorizations) == {f"Bearer {KEY}"}  # the key is sent, and only in the header
    assert not any(KEY in v.reason for v in verdicts)


HOSTILE_REASONS = {
    "spaces": "no verdict in the reply (not CORRECT or INCORRECT)",
    "padded": "reply too large (over 64 KiB)",
    "huge": "reply too large (over 64 KiB)",
    "nested": "reply too large (over 64 KiB)",
    "nested-small": "malformed response (nested too deeply)",
    "trickle": "timed out after 1 attempt",
}


def test_a_hostile_reply_is_unjudged_with_why_within_the_timeout():
    """20,000 spaces, 5 MB around a verdict, 200 MB (streamed by the server, abandoned at 64 KiB by
    the client), JSON nested 100,000 and 30,000 deep, and a reply trickled a byte at a time (each
    read quick, the whole past the timeout): each is unjudged with its reason, and the whole
    judging ends near the 2 s timeout, not when the server is done."""
    with JudgeServer() as server:
        started = time.monotonic()
        verdicts, _ = ask(server, [*HOSTILE_REASONS, "right"], retries=0, timeout=2.0)
        took = time.monotonic() - started
    assert [v.reason for v in verdicts] == [*HOSTILE_REASONS.values(), ""]
    assert verdicts[-1].verdict == "CORRECT"  # the other answers are graded beside them
    assert took < 20.0  # the trickle alone would take about 10 s; the 200 MB far longer on a busy box


def test_a_stop_keeps_the_verdicts_given_and_leaves_the_rest_unjudged_at_once():
    """SIGTERM while judging (`stop` gives its reason once two requests hang on the server):
    a verdict already given is kept, the hanging answers and the one never asked are unjudged
    at once, without waiting for the server's 5 s or the 60 s timeout."""
    hanging = ["hang 1", "hang 2", "hang 3"]
    with JudgeServer(hang=5.0) as server:
        client = JudgeClient(server.url, "judge-model", KEY, concurrency=2, timeout=60.0, retries=0)
        client.stop = lambda: "received SIGTERM" if sum(h in server.seen for h in hanging) >= 2 else None
        started = time.monotonic()
        try:
            verdicts = client.judge([Answer("Q: Who?", "Malia Obama", p) for p in ["right", *hanging]])
        finally:
            client.close()
        took = time.monotonic() - started
    stopped = "run stopped (received SIGTERM)"
    assert verdicts[0].verdict == "CORRECT" or verdicts[0].reason == stopped  # asked first or never, by the cache's order
    assert [v.reason for v in verdicts[1:]] == [stopped] * 3
    assert sum(h in server.seen for h in hanging) == 2  # the third never asked
    assert took < 4.0


def test_the_papers_prompt_goes_to_the_server_after_an_empty_system_turn_and_its_letters_are_verdicts():
    with JudgeServer() as server:
        verdicts, _ = ask(server, ["right", "wrong", "chatty"], grader=PUBLISHED, retries=0)
    assert [v.verdict for v in verdicts] == ["CORRECT", "INCORRECT", None]
    assert verdicts[2].reason == "no verdict in the reply (not A or B)"
    assert server.systems == ["", "", ""]
    # the paper's request: model, temperature 0 and the messages, no token limit
    assert server.parameters == [{"model": "judge-model", "temperature": 0}] * 3
    with JudgeServer() as server:
        ask(server, ["right"], retries=0)
    assert server.parameters == [{"model": "judge-model", "temperature": 0, "max_tokens": REPLY_TOKENS}]


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


@pytest.mark.parametrize(("every", "reason"), [("echo", "no verdict in the reply (not CORRECT or INCORRECT)"),
                                               ("echo-500", "HTTP 500 after 1 attempt"), ("redirect", "HTTP 307")])
def test_a_server_echoing_the_key_or_sending_it_elsewhere_gets_it_nowhere(tmp_path, every, reason):
    """A reply carrying the request's Authorization header, as a 200's verdict or a 500's body,
    or a redirect to another address (not followed): unjudged, with our own words as the
    reason, and nothing of it cached."""
    with JudgeServer(every=every) as server:
        cache = VerdictCache(tmp_path / "judge.sqlite")
        verdicts, client = ask(server, ["right a", "wrong b"], cache=cache, retries=0)
        cache.close()
    assert [v.reason for v in verdicts] == [reason] * 2 and client.requests == server.requests == 2
    assert not any(KEY.encode() in path.read_bytes() for path in tmp_path.iterdir())


def test_the_key_comes_from_the_environment_and_the_settings_never_hold_it(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert api_key() == "sk-openai"
    monkeypatch.setenv("WILD_JUDGE_API_KEY", KEY)
    assert api_key() == KEY  # ours first
    settings = judge_settings("judge", tmp_path / "v.sqlite", "https://judge.example/v1?tenant=7#x", "grader")
    assert settings.described()["judge"] == "https://judge.example/v1"  # no query string in a report
    assert KEY not in repr(settings) and KEY not in repr(settings.described())
    with pytest.raises(WildInputError, match="^--wild-judge: the URL holds credentials") as refused:
        judge_settings("judge", tmp_path / "v.sqlite", f"https://u:{KEY}@judge.example/v1", "grader")
    assert KEY not in str(refused.value)
    assert judge_settings("em", tmp_path / "v.sqlite") is None


def rows_for(answers: list[tuple[str, str, str]]) -> list[CaseResult]:
    """One case per (target, edit answer, locality answer): the rows a run's workers send."""
    rows = []
    for i, (target, after, loc_after) in enumerate(answers):
        prompt = {"question": f"Q{i}?", "before": "x", "after": after, "score": exact_match(after, target),
                  "em": exact_match(after, target), "f1": f1(after, target)}
        locality = [{"question": f"L{i}?", "answer": "Paris", "before": loc_after, "after": loc_after, "same": True,
                     "em_after": exact_match(loc_after, "Paris")}]
        rows.append(CaseResult(id=f"c{i}", source=None, prompt=f"Q{i}?", target=target, subject=None, rephrase=None,
                               flags=[], modes={"wild": {"reliability": prompt["score"], "locality": 1.0,
                                                         "answers": {"prompt": prompt, "locality": locality}}}))
    return rows


def test_a_case_with_a_locality_question_left_out_has_no_locality_judge():
    """A locality question too long for the window was never asked (window.py): the judge's
    share over every locality question is not evaluable for that case."""
    rows = rows_for([("Malia Obama", "Malia Obama", "Paris"), ("Malia Obama", "Malia Obama", "Paris")])
    rows[1].modes["wild"]["locality_left_out"] = 1
    with JudgeServer(every="reference") as server:
        client = JudgeClient(server.url, "grader", KEY)
        grade(rows, client)
        client.close()
    assert [row.modes["wild"]["locality_judge"] for row in rows] == [1.0, None]
    assert [row.modes["wild"]["reliability"] for row in rows] == [1.0, 1.0]


def test_grading_writes_each_verdict_beside_exact_match_and_counts_where_they_disagree():
    """Against a lenient grader (CORRECT when every word of the reference is in the answer)."""
    rows = rows_for([("Malia Obama", "Malia Obama", "Paris"),  # both right
                     ("Malia Obama", "malia obama and sasha", "Paris, France"),  # the judge right, exact match wrong
                     ("Malia Obama", "Sasha", "Lyon"),  # both wrong
                     ("Malia Obama", "Malia", "Paris")])  # both wrong
    with JudgeServer(every="reference", failures=0) as server:
        client = JudgeClient(server.url, "grader", KEY)
        asked = grade(rows, client)
        client.close()
    assert asked == {"answers": 8, "from_cache": 0, "asked": 8, "requests": 8, "retries": 0, "failed_attempts": {}}
    scores = [row.modes["wild"] for row in rows]
    assert [s["reliability"] for s in scores] == [1.0, 1.0, 0.0, 0.0]
    assert [s["reliability_em"] for s in scores] == [1.0, 0.0, 0.0, 0.0]
    assert [s["locality_judge"] for s in scores] == [1.0, 1.0, 0.0, 1.0] and all(s["locality"] == 1.0 for s in scores)
    section = judge_section(rows, asked, {"judge": server.url, "model": "grader", "prompt_version": "v"})
    assert section["disagreements"]["count"] == section["disagreements"]["judge_correct_em_wrong"] == 1
    assert section["disagreements"]["answers"][0]["generated"] == "malia obama and sasha"
    assert section["unjudged"] == 0
    lines = summary_lines(section)
    assert lines[1].startswith("judge and exact match disagree on 1 of 4 edit answers (1 judged CORRECT with em 0")


def test_an_unjudged_answer_counts_neither_way_and_is_named_with_why():
    rows = rows_for([("Malia Obama", "Malia Obama", "Paris"), ("Paris", "Paris", "Paris")])
    asked = grade_unavailable(rows, "the judge could not be opened: no route")
    assert asked == {"answers": 4, "from_cache": 0, "asked": 0, "requests": 0, "retries": 0, "failed_attempts": {}}
    assert all(row.modes["wild"]["reliability"] is None and row.modes["wild"]["locality_judge"] is None
               for row in rows)
    assert [row.modes["wild"]["reliability_em"] for row in rows] == [1.0, 1.0]  # exact match stays beside
    assert unjudged_behind(rows, "wild", "reliability") == 2 and unjudged_behind(rows, "wild", "locality_judge") == 2
    section = judge_section(rows, asked, {"judge": "hf:j", "model": "j", "prompt_version": "v"})
    assert section["unjudged_reasons"] == {"the judge could not be opened: no route": 4}
    assert summary_lines(section)[-1].startswith("UNJUDGED: 4 answers, counted neither correct nor incorrect")


def test_a_local_model_judge_answers_through_the_engine_and_the_cache(tmp_path):
    judge_dir = write_judge(tmp_path / "judge", "CORRECT")
    cache = VerdictCache(tmp_path / "judge.sqlite")
    judge = LocalJudge(str(judge_dir), cache=cache, device="cpu")
    answers = [Answer(f"Q{i}?", "gold", f"prediction {i}") for i in range(5)]
    assert [v.verdict for v in judge.judge(answers)] == ["CORRECT"] * 5 and judge.requests == 5
    assert all(v.cached for v in judge.judge(answers)) and judge.requests == 5
    assert judge.model.startswith(f"hf:{judge_dir}@")
    cache.close()


@pytest.mark.parametrize(("reply", "verdict"), [("A", "CORRECT"), ("B", "INCORRECT"), ("CORRECT", None)])
def test_a_local_judge_given_the_papers_prompt_is_read_exactly_as_a_server_reply(tmp_path, reply, verdict):
    """It stops at EOS only and its reply is the text without special tokens, so "A" then
    end-of-sequence is CORRECT, and a word that is not a letter is not a verdict."""
    judge = LocalJudge(str(write_judge(tmp_path / "judge", reply)), grader=PUBLISHED, device="cpu")
    found = judge.judge([Answer("Q?", "gold", "prediction")])
    assert [v.verdict for v in found] == [verdict]


def test_attempts_that_never_reach_a_server_are_counted_by_name():
    """A refused connection is a request attempted that no server counts: the summary names
    every request by what it was, so its numbers add up against the server's."""
    import socket

    from pytest_wild.judge.grading import asked_text

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    client = JudgeClient(f"http://127.0.0.1:{port}/v1", "judge-model", KEY, backoff=0.01, retries=2)
    try:
        verdicts = client.judge([Answer("Q: Who?", "Malia Obama", "right")])
    finally:
        client.close()
    assert verdicts[0].reason == "connection failed (ConnectError) after 3 attempts"
    assert (client.asked, client.requests, client.retries_sent) == (1, 3, 2)
    assert dict(client.failed_attempts) == {"connection failed (ConnectError)": 3}
    section = {"answers": 150, "from_cache": 0, "asked": 150, "requests": 153, "retries": 3,
               "failed_attempts": {"HTTP 500": 2, "connection failed (ConnectError)": 1}}
    assert asked_text(section) == ("150 answers: 0 from the cache, 150 asked in 153 requests (3 retries; failed "
                                   "attempts: 2 HTTP 500, 1 connection failed (ConnectError))")
