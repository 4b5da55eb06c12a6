"""`--wild-metric judge` as users run it, through pytester, against a real chat-completions
server on 127.0.0.1 (tests/judge_server.py) or a local model judge (tests/tiny_judge.py):
verdicts with exact match and F1 beside them, disagreements, unjudged answers and the gates
on them, the cache (counted in the server's requests), sharded runs sharing it, and the API
key, which must appear in no output."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


from ..judge_server import JudgeServer
from ..tiny_judge import write_judge
from . import import_what_runs_import, outer_xdist_removed

KEY = "sk-wild-probe-key-0123456789"
CASES = 6  # tinyworld cases per run: 2 edit answers and 3 locality answers each
ANSWERS = CASES * 5


@pytest.fixture(scope="module", autouse=True)
def imported_once():
    import_what_runs_import("pytest_wild.editors.locate.rome", "pytest_wild.judge.local")


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("WILD_JUDGE_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return pytester


def judged(pytester, judge: list[str], *args: str, name: str = "report", editor: str = "ft-m"):
    """A judge run on the first CASES tinyworld cases; its result and report."""
    report = pytester.path / f"{name}.json"
    result = pytester.runpytest_inprocess(
        "--wild", "-p", "no:cacheprovider", f"--editor={editor}", f"--wild-limit={CASES}", "--wild-sampling=first",
        "--wild-metric=judge", *judge, f"--wild-report={report}", f"--wild-markdown={pytester.path / name}.md",
        f"--junitxml={pytester.path / name}.xml", *args)
    return result, (json.loads(report.read_text()) if report.exists() else None)


def server_args(server: JudgeServer, *more: str) -> list[str]:
    return [f"--wild-judge={server.url}", "--wild-judge-model=grader-1", *more]


def edit_answers(report: dict) -> list[dict]:
    return [sample["modes"]["wild"]["answers"][which] for sample in report["samples"] for which in ("prompt", "rephrase")]


def assert_key_written_nowhere(root: Path, *outputs: str) -> None:
    """Every file under `root` (reports, Markdown, JUnit XML, the verdict cache and its
    write-ahead log) and the run's own output, searched for the key's bytes."""
    for text in outputs:
        assert KEY not in text
    files = [path for path in root.rglob("*") if path.is_file()]
    assert any(path.name == "verdicts.sqlite3" for path in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_every_answer_is_graded_with_exact_match_and_f1_beside_by_our_prompt_or_the_papers(project):
    with JudgeServer(every="right") as server:
        # ROME misses a few of these cases by exact match, so there is something to disagree about
        first, report = judged(project, server_args(server), "--wild-gate=reliability>=0.9",
                               "--wild-gate=reliability_em>=0.9", editor="rome")
        assert server.requests == ANSWERS  # every answer once, none twice
        assert set(server.authorizations) == {f"Bearer {KEY}"}
        assert server.systems == [None] * ANSWERS  # our prompt: one user turn
        again, published = judged(project, server_args(server, "--wild-judge-prompt", "published"), "-n", "2",
                                  name="published", editor="rome")
        assert server.requests == 2 * ANSWERS and server.systems[ANSWERS:] == [""] * ANSWERS  # asked again, its own way
    answers = edit_answers(report)
    assert all(a["judge"] == "CORRECT" and a["score"] == 1.0 for a in answers)
    assert all({"em", "f1"} <= set(a) for a in answers)
    missed = [a for a in answers if a["em"] < 1.0]
    assert missed, "ROME misses some of these cases by exact match: the judge disagrees there"
    wild = report["results"]["wild"]
    assert wild["reliability"]["value"] == 1.0 and wild["reliability_em"]["value"] < 1.0
    assert {"reliability_f1", "generalization_em", "generalization_f1", "locality", "locality_judge"} <= set(wild)
    section = report["judge"]
    assert (section["answers"], section["from_cache"], section["requests"], section["unjudged"]) == (ANSWERS, 0, ANSWERS, 0)
    assert section["model"] == "grader-1" and section["prompt_version"] == "wild-grader-1"
    differ = section["disagreements"]
    assert differ["count"] == differ["judge_correct_em_wrong"] == len(missed) and differ["of_edit_answers"] == 2 * CASES
    assert [d["generated"] for d in differ["answers"]] == [a["after"] for a in missed]
    assert report["gates"][0]["passed"] and not report["gates"][1]["passed"] and first.ret == 1
    first.stdout.fnmatch_lines(["wild *reliability *1.000 *", "wild *  em *", "wild *  f1 *", "wild *locality *",
                                "wild *  LLM judge *",
                                f"judge grader-1 at {server.url} (prompt wild-grader-1): {ANSWERS} answers: "
                                f"0 from the cache, {ANSWERS} asked in {ANSWERS} requests",
                                f"judge and exact match disagree on {len(missed)} of {2 * CASES} edit answers "
                                f"({len(missed)} judged CORRECT with em 0, 0 INCORRECT with em 1): *"])
    again.stdout.fnmatch_lines([f"judge grader-1 at {server.url} (prompt published-llm-judge-1): {ANSWERS} answers: "
                                f"0 from the cache, {ANSWERS} asked in {ANSWERS} requests"])
    assert published["results"] == report["results"]  # "A" is CORRECT: the same verdicts, under xdist
    assert published["judge"]["disagreements"] == differ
    assert "| wild | ↳ em |" in (project.path / "report.md").read_text()
    assert_key_written_nowhere(project.path, first.stdout.str(), first.stderr.str(), again.stdout.str(),
                               again.stderr.str())


def test_unjudged_answers_count_neither_way_the_run_goes_on_and_a_gate_on_them_fails_unless_allowed(project, monkeypatch):
    """The first 15 requests fail (one at a time, no retries, so the same answers each run):
    those answers count neither way, every case's test runs, the summary and report say which
    and why, the cache keeps none of them, and a gate on the verdicts fails unless unjudged
    answers are allowed explicitly; locality keeps its own rule and its gate."""
    gates = ("--wild-gate=reliability>=0.5", "--wild-gate=locality>=0.5")
    runs = {}
    for allow in (False, True):
        monkeypatch.setenv("PYTEST_WILD_CACHE", str(project.path / f"cache-{allow}"))
        with JudgeServer(every="right", failures=15) as server:
            runs[allow] = judged(project, server_args(server, "--wild-judge-retries=0", "--wild-judge-concurrency=1",
                                                      *(["--wild-judge-allow-unjudged"] if allow else [])),
                                 *gates, name=f"allow-{allow}")
    (strict, report), (allowed, allowed_report) = runs[False], runs[True]
    section = report["judge"]
    assert section["unjudged"] == 15 and section["unjudged_reasons"] == {"HTTP 500 after 1 attempt": 15}
    assert (section["asked"], section["requests"], section["retries"]) == (section["answers"], section["answers"], 0)
    assert section["failed_attempts"] == {"HTTP 500": 15}
    unjudged = [a for s in report["samples"] for a in [*edit_answers({"samples": [s]}), *s["modes"]["wild"]["answers"]["locality"]]
                if a["judge"] == "unjudged"]
    assert len(unjudged) == len(section["unjudged_answers"]) == 15
    edits = [a for a in unjudged if "score" in a]
    assert edits and all(a["score"] is None for a in edits)
    wild = report["results"]["wild"]
    assert wild["reliability"]["n"] + wild["generalization"]["n"] == 2 * CASES - len(edits)
    assert wild["reliability"]["value"] == 1.0 and wild["reliability_em"]["n"] == CASES
    strict.stdout.fnmatch_lines(["UNJUDGED: 15 answers, counted neither correct nor incorrect "
                                 "(HTTP 500 after 1 attempt: 15): *",
                                 "gate reliability>=0.5 (wild): FAILED (observed 1.000; * answers unjudged: it fails "
                                 "until they are judged, or pass --wild-judge-allow-unjudged)"])
    strict_gate, locality_gate = report["gates"]
    assert 0 < strict_gate["unjudged"] < CASES and not strict_gate["passed"] and locality_gate["passed"]
    assert strict.ret == 1 and len(report["samples"]) == CASES  # the run went on to the end
    with sqlite3.connect(project.path / "cache-False" / "judge" / "verdicts.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == ANSWERS - 15
    assert allowed_report["judge"]["unjudged_answers"] == section["unjudged_answers"]
    assert allowed_report["gates"][0] == strict_gate | {"passed": True} and allowed.ret == 0


def test_a_local_model_judges_in_batches_its_verdicts_are_cached_and_a_prompt_file_has_its_own(project):
    judge = write_judge(project.path / "judge", "INCORRECT")
    prompt = project.path / "grader.txt"
    prompt.write_text("Q: {question}\nReference answer: {gold}\nAnswer to grade: {prediction}\nCORRECT or INCORRECT?\n")
    local = [f"--wild-judge=hf:{judge}"]
    first, report = judged(project, local, "--wild-limit=2")
    _, rerun = judged(project, local, "--wild-limit=2", name="rerun")
    _, own = judged(project, [*local, f"--wild-judge-prompt={prompt}"], "--wild-limit=2", name="own")
    answers = edit_answers(report)
    assert [a["judge"] for a in answers] == ["INCORRECT"] * 4 and all(a["score"] == 0.0 for a in answers)
    assert report["results"]["wild"]["reliability"]["value"] == 0.0
    section = report["judge"]
    assert section["judge"] == f"hf:{judge}" and (section["answers"], section["requests"]) == (10, 10)
    assert section["disagreements"]["judge_incorrect_em_right"] == sum(a["em"] == 1.0 for a in answers)
    first.stdout.fnmatch_lines([f"judge hf:{judge} (prompt wild-grader-1): 10 answers: 0 from the cache, 10 asked in 10 requests"])
    assert (rerun["judge"]["from_cache"], rerun["judge"]["requests"]) == (10, 0)
    assert rerun["results"] == report["results"]
    assert (own["judge"]["from_cache"], own["judge"]["requests"]) == (0, 10)  # the other prompt's verdicts are its own
    assert own["judge"]["prompt_version"].startswith("sha256:")
    assert own["config"]["evaluation"]["judge"]["prompt_version"] == own["judge"]["prompt_version"]


def test_shards_judged_at_once_share_the_cache_and_merge(project):
    """Two shards run at the same time against one server and one cache; their merged
    report's judge section counts every answer, and the unsharded rerun, under xdist, asks
    nothing."""
    with JudgeServer(every="right", latency=0.05) as server:
        base = [sys.executable, "-m", "pytest", "--wild", "-p", "no:cacheprovider", "--editor=ft-m",
                f"--wild-limit={CASES}", "--wild-metric=judge", *server_args(server)]
        env = outer_xdist_removed()
        shards = [subprocess.Popen([*base, f"--wild-shard={k}/2", f"--wild-report=shard{k}.json"], cwd=project.path,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for k in (1, 2)]
        outputs = [shard.communicate(timeout=300)[0].decode() for shard in shards]
        assert [shard.returncode for shard in shards] == [0, 0], outputs
        assert server.requests == ANSWERS
        done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "merge-reports", "shard1.json", "shard2.json",
                               "-o", "merged.json"], cwd=project.path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        whole, report = judged(project, server_args(server), "--wild-limit=6", "--wild-sampling=seeded", "-n", "2",
                               name="whole")
        assert server.requests == ANSWERS  # the rerun, whole and under xdist, asked nothing
    whole.stdout.fnmatch_lines([f"*{ANSWERS} answers: {ANSWERS} from the cache, 0 asked in 0 requests"])
    merged = json.loads((project.path / "merged.json").read_text())
    assert merged["results"] == report["results"]
    assert merged["judge"]["disagreements"] == report["judge"]["disagreements"]
    assert merged["judge"]["unjudged"] == 0 and "answers" not in merged["judge"]


def test_chat_context_puts_the_question_through_the_models_template_with_a_system_prompt(project):
    """A copy of the bundled model given a chat template: the context of every question is
    the template's own rendering, with the system prompt given (or none when it is empty),
    and the answer stops by the stop rules."""
    from ..tiny_models import chat_model

    model = project.path / "chat-model"
    tokenizer = chat_model(model)
    for system in ("Answer in a few words.",):  # none at all ("") in tests/unit/test_contexts.py
        report_path = project.path / "chat.json"
        result = project.runpytest_inprocess("--wild", "-p", "no:cacheprovider", "--editor=ft-m", f"--wild-model={model}",
                                              "--wild-limit=2", "--wild-context=chat", f"--wild-system-prompt={system}",
                                              f"--wild-report={report_path}")
        assert result.ret == 0, result.stdout.str()
        report = json.loads(report_path.read_text())
        assert report["config"]["evaluation"]["system_prompt"] == system
        for sample in report["samples"]:
            asked = sample["modes"]["wild"]["answers"]["prompt"]
            turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": asked["question"]}]
            assert asked["context"] == tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            assert asked["context"].startswith(f"<system> {system}\n<user> ")
            assert "\n" not in asked["after"] and "." not in asked["after"]


def test_a_sequence_is_graded_at_every_checkpoint_and_its_curve_is_the_judges(project):
    """A judge that calls every answer INCORRECT: the curve, the final scores and each case's
    `lost_at` follow its verdicts, though exact match finds every edit held (FT-M on tinyworld)."""
    with JudgeServer(every="wrong") as server:
        result, report = judged(project, server_args(server), "--wild-sequential=4", "--wild-checkpoints=1,2")
    points = report["sequence"]["curve"]
    assert [p["edits"] for p in points] == [1, 2, 4]
    assert all(p[kind]["wild"]["reliability"] == 0.0 for p in points for kind in ("final", "immediate"))
    for sample in report["samples"]:
        sequence = sample["sequence"]
        for at in [sequence["immediate"], *sequence["checkpoints"].values()]:
            assert at["wild"]["reliability"] == 0.0 and at["wild"]["reliability_em"] == 1.0
            assert at["wild"]["answers"]["prompt"]["judge"] == "INCORRECT"
        assert sequence["lost_at"] == min(int(n) for n in sequence["checkpoints"])
    assert report["results"]["wild"]["reliability"]["value"] == 0.0
    assert report["results"]["wild"]["reliability_em"]["value"] == 1.0
    assert report["judge"]["requests"] == server.requests < report["judge"]["answers"]  # each distinct answer once
