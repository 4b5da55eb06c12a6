"""bench/editors.py's own options, through its real command line: a bad `--suite` or `--model`
is one line naming the option and exit 1, found before any per-method child starts (no child's
traceback, no "benchmark failed")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "editors.py"


@pytest.mark.parametrize(("args", "option", "names"), [
    (("--suite", "no-such-suite"), "--suite", "no-such-suite"),
    (("--model", "/no/such/model", "--suite", "qaedit"), "--model", "/no/such/model"),
])
def test_bad_bench_option_is_one_line(tmp_path: Path, args: tuple[str, ...], option: str, names: str) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--methods", "memit", "--cases", "1", "--naive-cases", "1",
                           *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                               "HOME": str(tmp_path)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}:") and names in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "benchmark failed" not in done.stderr
    assert "statistics:" not in done.stdout  # stopped before any work


def test_the_mirage_bench_runs_a_shard_again_whose_report_is_partial(tmp_path: Path) -> None:
    """A shard stopped midway (SIGTERM writes a partial report) is neither skipped as done nor
    merged into its row; a complete one is."""
    mirage = mirage_bench()
    report = tmp_path / "report.json"
    assert not mirage.complete(report)  # none yet
    report.write_text('{"complete": false, "samples": []}')
    assert not mirage.complete(report)
    report.write_text("{not json")
    assert not mirage.complete(report)
    report.write_text('{"complete": true, "samples": []}')
    assert mirage.complete(report)


MIRAGE = BENCH.parent / "mirage.py"


def mirage_bench():
    """bench/mirage.py as a module (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mirage", MIRAGE)
    mirage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mirage)
    return mirage
ENV = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("through", ["0", "3"])
def test_the_mirage_bench_refuses_a_shard_beyond_its_shards(tmp_path: Path, through: str) -> None:
    done = subprocess.run([sys.executable, str(MIRAGE), "--shards", "2", "--through", through, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**ENV, "HOME": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"--through {through}: must be a shard number from 1 to --shards (2)")
    assert not any(tmp_path.iterdir())  # nothing run, nothing written


def test_the_mirage_bench_through_runs_only_the_first_shards(tmp_path: Path) -> None:
    """`--through 1` runs shard 1 of each row and leaves shard 2 for a later call, which runs
    shard 2 only (shard 1's complete report is not run again)."""
    out = tmp_path / "out"
    common = [sys.executable, str(MIRAGE), "--model", "tinyworld", "--suite", "tinyworld", "--editors", "ft-m",
              "--contexts", "question", "--limit", "4", "--shards", "2", "--out", str(out)]
    env = {**ENV, "HOME": str(tmp_path)}
    first = subprocess.run([*common, "--through", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    row = out / "ft-m-question"
    assert sorted(path.name for path in row.glob("shard-*")) == ["shard-1-of-2"]
    assert "| ft-m | question | 2 |" in first.stdout
    one = (row / "shard-1-of-2" / "report.json").stat().st_mtime_ns
    second = subprocess.run(common, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr
    assert sorted(path.name for path in row.glob("shard-*")) == ["shard-1-of-2", "shard-2-of-2"]
    assert (row / "shard-1-of-2" / "report.json").stat().st_mtime_ns == one
    assert "| ft-m | question | 4 |" in second.stdout


def test_the_mirage_bench_chat_edit_row_edits_the_questions_the_chat_row_asks(tmp_path: Path) -> None:
    """`--contexts chat,chat-edit,question` on a copy of the bundled model given a chat template: the
    chat-edit row's shard runs the chat row's shard's cases, with the edit prompt, rephrase and
    locality questions exactly the text the chat row puts to the model, asked bare (so edited
    as asked)."""
    import json

    from ..tiny_models import chat_model

    model = tmp_path / "chat-model"
    chat_model(model)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(MIRAGE), "--model", str(model), "--suite", "tinyworld", "--editors", "ft-m",
                           "--contexts", "chat,chat-edit,question", "--limit", "6", "--shards", "3", "--through", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**ENV, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "| ft-m | chat | 2 |" in done.stdout and "| ft-m | chat-edit | 2 |" in done.stdout
    brief = done.stdout.split("In brief:", 1)[1].split("versions:", 1)[0].strip().splitlines()  # one line an editor
    assert brief[0].startswith("| editor | n | teacher-forced rel | WILD rel, chat | WILD rel, bare question |")
    assert len(brief) == 3 and brief[2].startswith("| ft-m | 2 | ")
    chat = json.loads((out / "ft-m-chat" / "shard-1-of-3" / "report.json").read_text())
    edited = json.loads((out / "ft-m-chat-edit" / "shard-1-of-3" / "report.json").read_text())
    assert edited["config"]["evaluation"]["context"] == "question"
    assert [sample["id"] for sample in edited["samples"]] == [sample["id"] for sample in chat["samples"]]
    for asked_chat, asked_edited in zip(chat["samples"], edited["samples"]):
        for question in ("prompt", "rephrase"):
            put = asked_chat["modes"]["wild"]["answers"][question]["context"]
            assert put.startswith("<system> ") and put.endswith("<assistant>")
            assert asked_edited["modes"]["wild"]["answers"][question]["question"] == put
        assert asked_edited["prompt"] == asked_chat["modes"]["wild"]["answers"]["prompt"]["context"]
    suite = json.loads((out / "ft-m-chat-edit" / "shard-1-of-3" / "suite-in-chat-template.json").read_text())
    assert all(loc["loc"].endswith("<assistant>") for record in suite for loc in record["locality"])
    bare = json.loads((out / "ft-m-chat-edit" / "shard-1-of-3" / "questions-before-the-template.json").read_text())
    assert bare == {sample["id"]: sample["prompt"] for sample in chat["samples"]}


@pytest.mark.parametrize(("model", "why"), [
    ("tinyworld", "error: --wild-context chat: the model's tokenizer has no chat template"),
    ("{tmp}/no-such-model", "error: --wild-model: cannot load '{tmp}/no-such-model'"),
    ("{tmp}/evil", "error: --wild-model: {tmp}/evil/config.json: a link out of the model directory; refused"),
])
def test_the_mirage_bench_chat_edit_row_of_a_model_it_cannot_template_says_why(tmp_path: Path, model: str,
                                                                                 why: str) -> None:
    """The row's table line gives the one-line reason a run would give (no traceback); a model
    directory's link out of it is refused, not followed."""
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "config.json").symlink_to("/etc/passwd")
    done = subprocess.run([sys.executable, str(MIRAGE), "--model", model.format(tmp=tmp_path), "--suite", "tinyworld",
                           "--editors", "ft-m", "--contexts", "chat-edit", "--limit", "4", "--shards", "2",
                           "--through", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, env={**ENV, "HOME": str(tmp_path)})
    assert "Traceback" not in done.stderr, done.stderr
    assert f"| ft-m | chat-edit | no shard has a report yet: {why.format(tmp=tmp_path)}" in done.stdout
    assert "root:" not in done.stdout + done.stderr


def test_the_mirage_bench_lists_answers_from_editor_to_editor_in_turn() -> None:
    mirage = mirage_bench()
    found = [{"editor": editor, "context": context, "n": n} for editor, context, n in
             [("mend", "chat", 1), ("mend", "chat", 2), ("mend", "question", 1), ("ft", "question", 1), ("ft", "chat", 1)]]
    order = [(m["editor"], m["context"], m["n"]) for m in mirage.spread(found)]
    assert order == [("mend", "chat", 1), ("ft", "question", 1), ("mend", "question", 1), ("ft", "chat", 1),
                     ("mend", "chat", 2)]


def test_the_mirage_bench_lists_a_chat_edit_rows_answer_under_its_question_before_the_template(tmp_path: Path) -> None:
    """A chat-edit row's report holds the templated question; the answer list prints the question
    as the other rows do, from the file the row's shard wrote beside its suite."""
    import json

    mirage = mirage_bench()
    templated = "<system> be helpful <user> capital of France? <assistant>"
    sample = {"id": "X-1", "prompt": templated, "target": "Paris", "teacher_forced": {"prompt": 1.0},
              "modes": {"wild": {"reliability": 0.0, "answers": {"prompt": {"after": "Paris, in France, is"}}}}}
    report = {"results": {}, "samples": [sample], "timing": {"summary": {}}, "cases": {"run": 1}}
    for context in ("chat-edit", "question"):
        shard = tmp_path / f"ft-m-{context}" / "shard-1-of-1"
        shard.mkdir(parents=True)
        (shard / "report.json").write_text(json.dumps(report))
    (tmp_path / "ft-m-chat-edit" / "shard-1-of-1" / mirage.BARE_QUESTIONS).write_text('{"X-1": "capital of France?"}')
    reports = {("ft-m", context): tmp_path / f"ft-m-{context}" / "shard-1-of-1" / "report.json"
               for context in ("chat-edit", "question")}
    _, mirages = mirage.table(reports, tmp_path)
    assert [(m["context"], m["question"]) for m in mirages] == [("chat-edit", "capital of France?"),
                                                                ("question", templated)]
    for unreadable in ("{not json", '["capital of France?"]', '{"X-1": 7}'):  # the templated question, no traceback
        (tmp_path / "ft-m-chat-edit" / "shard-1-of-1" / mirage.BARE_QUESTIONS).write_text(unreadable)
        _, mirages = mirage.table(reports, tmp_path)
        assert mirages[0]["question"] == templated
