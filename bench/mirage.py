"""The mirage on a real model: every editor x wild / synthetic / length x reliability /
generalization / locality, exact match and F1, in the model's chat template and on the bare
question, with seconds per edit; then ten answers that teacher forcing calls a success and
WILD a failure.

    python bench/mirage.py                         # smollm2-135m, 100 QAEdit cases per editor and context
    python bench/mirage.py --limit 20 --editors ft-m,rome --contexts chat
    python bench/mirage.py --out DIR --table-only  # the table of what DIR holds so far (and "In brief")
    python bench/mirage.py --through 1             # shard 1 of every row only (10 cases each)

The --limit cases of each (editor, context) are run as --shards ordinary `pytest --wild
--wild-shard K/N` runs (each in a directory of its own under --out, with its report), shard 1
of every row first, then shard 2 of every row, and so on: a bench stopped at any point leaves
every row with about the same number of cases, each shard a spread sample of the --limit
(pytest-wild shards by case index modulo N), and a run whose report is there is not run again,
so a later session continues where one stopped. Each row's table line is the merge of the
shards it has (`pytest-wild merge-reports --allow-partial`) and says its n.

`--contexts chat-edit` adds a row that is not a published setting: the chat row's cases with
every question (the edit prompt, its rephrase, each locality question) already put through the
model's chat template, in a QAEdit file of the shard's own, run with `--wild-context question`,
so the editor edits the question exactly as the model is then asked it. The published editors
edit the bare question whatever the context of the evaluation; this row says whether the
mirage in the chat template comes from that mismatch. Its synthetic (teacher-forced) columns
read the templated questions, the other rows' the bare ones.

EM is the run's own score, with the standard error its report gives (sample standard deviation
over sqrt(n), as lm-evaluation-harness reports it); F1 is SQuAD token F1 of the same answers
(pytest_wild.scores.answers.f1), against the target for reliability and generalization and, for
locality, of the answer after the edit against the answer before it, 1 when the two are the
same answer (SQuAD's F1 of two empty answers is 0, and an instruct model asked the bare
question often says nothing); the published locality is their token identity. Synthetic
(teacher-forced) scores have no answers, so no F1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

EDITORS = ("ft", "ft-l", "ft-m", "rome", "r-rome", "memit", "alphaedit", "grace", "wise", "mend")
MODES = ("wild", "synthetic", "length")
METRICS = ("reliability", "generalization", "locality")
EDITED_IN_CHAT = "chat-edit"  # ours: edited and asked in the chat template (module docstring)
BARE_QUESTIONS = "questions-before-the-template.json"


def run(editor: str, context: str, shard: int, args, out: Path) -> Path:
    """One shard of one row: a pytest run and its report (or, when it fails before writing
    one, its output beside where the report would be). A shard with a complete report is not
    run again; one stopped midway (SIGTERM writes a partial report) is run again whole."""
    directory = (out / f"{editor}-{context}" / f"shard-{shard}-of-{args.shards}").resolve()
    report = directory / "report.json"
    if complete(report):
        return report
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--wild", "--editor", editor,
               f"--wild-model={args.model}", "--wild-eval", ",".join(MODES), f"--wild-report={report}"]
    if context == EDITED_IN_CHAT:
        from pytest_wild.cases.case import WildInputError

        try:
            suite = templated_suite(shard, args, directory)
        except WildInputError as exc:  # e.g. a model without a chat template: the row's table line says so
            (directory / "output.txt").write_text(f"error: {exc}\n")
            return report
        command += [f"--wild-suite={suite}", "--wild-context", "question"]
    else:
        command += [f"--wild-suite={args.suite}", "--wild-context", context, "--wild-limit", str(args.limit)]
        if args.shards > 1:
            command.append(f"--wild-shard={shard}/{args.shards}")
        if args.data:
            command.append(f"--wild-data={args.data}")
    hparams = dict(item.split("=", 1) for item in args.hparams)
    if editor in hparams:
        command.append(f"--wild-hparams={Path(hparams[editor]).resolve()}")
    print(f"{editor} / {context} / shard {shard} of {args.shards}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, env=os.environ)
    (directory / "output.txt").write_text(done.stdout + done.stderr)
    return report


def shard_cases(shard: int, args, directory: Path) -> list:
    """The cases shard K of a row runs: the suite's --limit sample as `--wild-limit` draws
    it, every --shards-th from the K-th (`--wild-shard K/N` with one case an edit batch)."""
    from pytest_wild.cases.suite import find_suite, load_suite

    found = find_suite(args.suite, directory, directory)
    data = Path(args.data).resolve() if args.data else None
    return load_suite(found, args.limit, None, directory, data).cases[shard - 1 :: args.shards]


def templated_suite(shard: int, args, directory: Path) -> Path:
    """Shard K's cases as a QAEdit file whose questions are put through the model's chat
    template (the `chat` context's text, system turn included), for the `chat-edit` row."""
    from transformers import AutoTokenizer

    from pytest_wild.cases.contexts import make_context
    from pytest_wild.model.load import check_model, resolve_model_spec

    check_model(args.model)  # the checks a run makes (files, links, tokenizer), each failure one line
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_spec(args.model)[0])

    def put(question: str) -> str:
        return make_context(question, "chat", tokenizer)

    cases = shard_cases(shard, args, directory)
    records = []
    for case in cases:
        record = case.as_record()
        record.update(prompt=put(case.prompt), rephrase=case.rephrase and put(case.rephrase),
                      locality=[{"loc": put(loc["loc"]), "loc_ans": loc["loc_ans"]} for loc in record["locality"]])
        records.append(record)
    path = directory / "suite-in-chat-template.json"
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    bare = {case.id: case.prompt for case in cases}
    (directory / BARE_QUESTIONS).write_text(json.dumps(bare, indent=1, ensure_ascii=False))
    return path


def bare_questions(row: Path) -> dict[str, str]:
    """Case id -> the question before the chat template, for a chat-edit row (whose report holds
    only the templated text): what the answer list prints. A file that does not read as such
    a mapping is passed over: those answers keep the templated question."""
    found: dict[str, str] = {}
    for path in sorted(row.glob(f"shard-*/{BARE_QUESTIONS}")):
        try:
            read = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(read, dict):
            found.update((key, value) for key, value in read.items() if isinstance(value, str))
    return found


def complete(report: Path) -> bool:
    """Whether a shard's report is there and says its run finished every selected case."""
    try:
        return json.loads(report.read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def merged(row: Path) -> Path | None:
    """The row's shards merged into one report (rewritten from whatever shards are there), or
    None when no shard has a report yet."""
    shards = sorted(path for path in row.glob("shard-*/report.json") if complete(path))
    if not shards:
        return None
    target = row / "merged.json"
    command = [sys.executable, "-m", "pytest_wild.cli", "merge-reports", *map(str, shards), "-o", str(target),
               "--allow-partial"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{row}: {done.stderr.strip()}")
    return target


def f1_scores(samples: list[dict], mode: str) -> dict[str, float | None]:
    """Metric -> mean F1 of the mode's answers (`pytest-wild table`'s reading of them; None
    where the mode kept no answers)."""
    from pytest_wild.results.compare import f1_of_answers

    found = f1_of_answers(samples).get(mode, {})
    return {metric: found[f"{metric}_f1"].value if f"{metric}_f1" in found else None for metric in METRICS}


def cell(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def em_cell(found: dict | None) -> str:
    """Mean ± standard error of one aggregate of a report, as the report states them."""
    if not found or found.get("value") is None:
        return "—"
    stderr = found.get("stderr")
    return f"{found['value']:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")


def table(reports: dict[tuple[str, str], Path | None], out: Path) -> tuple[list[str], list[dict]]:
    """The Markdown rows (a row without a report says its last shard's last line, such as why
    it stopped), and every answer that teacher forcing got right and WILD wrong."""
    head = ["editor", "context", "n", "s/edit"] + [f"{mode} {metric[:3]}" for mode in MODES for metric in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mirages = []
    for (editor, context), path in reports.items():
        if path is None:
            outputs = sorted((out / f"{editor}-{context}").glob("shard-*/output.txt"))
            tail = outputs[-1].read_text().strip().splitlines()[-1:] if outputs else []
            lines.append(f"| {editor} | {context} | no shard has a report yet{': ' if tail else ''}{' '.join(tail)[:200]} |")
            continue
        report = json.loads(path.read_text())
        results, samples = report["results"], report["samples"]
        seconds = report["timing"]["summary"].get("edit_seconds_mean")
        row = [editor, context, str(report["cases"]["run"]), cell(seconds)]
        for mode in MODES:
            f1s = f1_scores(samples, mode)
            for metric in METRICS:
                em = em_cell(results.get(mode, {}).get(metric))
                row.append(f"{em} / {cell(f1s[metric])}" if mode != "synthetic" else em)
        lines.append("| " + " | ".join(row) + " |")
        bare = bare_questions(out / f"{editor}-{context}") if context == EDITED_IN_CHAT else {}
        for sample in samples:
            wild = sample["modes"].get("wild", {})
            if sample["teacher_forced"].get("prompt") == 1.0 and wild.get("reliability") == 0.0:
                prompt = wild["answers"]["prompt"]
                mirages.append({"editor": editor, "context": context, "question": bare.get(sample["id"], sample["prompt"]),
                                "target": sample["target"], "wild answer": prompt["after"]})
    return lines, mirages


def brief(reports: dict[tuple[str, str], Path | None]) -> list[str]:
    """The mirage in a few numbers, one line per editor that has both a chat and a bare-question
    row: teacher-forced reliability (the same edits in both rows), WILD reliability in each
    context and the length mode's on the bare question (EM / F1), WILD locality in each; n is
    the smaller row's."""
    head = ["editor", "n", "teacher-forced rel", "WILD rel, chat", "WILD rel, bare question", "length rel, bare question",
            "WILD loc, chat", "WILD loc, bare question"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for editor in dict.fromkeys(editor for editor, _ in reports):
        paths = reports.get((editor, "chat")), reports.get((editor, "question"))
        if None in paths:
            continue
        chat, bare = (json.loads(path.read_text()) for path in paths)

        def read(report: dict, mode: str, metric: str, f1: bool = True) -> str:
            em = report["results"].get(mode, {}).get(metric, {}).get("value")
            return cell(em) + (f" / {cell(f1_scores(report['samples'], mode)[metric])}" if f1 else "")

        n = min(chat["cases"]["run"], bare["cases"]["run"])
        lines.append("| " + " | ".join([editor, str(n), read(bare, "synthetic", "reliability", f1=False),
                                         read(chat, "wild", "reliability"), read(bare, "wild", "reliability"),
                                         read(bare, "length", "reliability"), read(chat, "wild", "locality"),
                                         read(bare, "wild", "locality")]) + " |")
    return lines


def spread(mirages: list[dict]) -> list[dict]:
    """The answers taken from each editor in turn, and within an editor from each context in
    turn, so a short list shows every editor rather than the first row's."""
    def in_turn(groups: list[list[dict]]) -> list[dict]:
        depth = max((len(group) for group in groups), default=0)
        return [group[i] for i in range(depth) for group in groups if i < len(group)]

    rows: dict[str, dict[str, list[dict]]] = {}
    for mirage in mirages:
        rows.setdefault(mirage["editor"], {}).setdefault(mirage["context"], []).append(mirage)
    return in_turn([in_turn(list(contexts.values())) for contexts in rows.values()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--suite", default="qaedit")
    parser.add_argument("--data", help="--wild-data of every run")
    parser.add_argument("--hparams", action="append", default=[], metavar="EDITOR=FILE",
                        help="--wild-hparams of that editor's runs; repeatable")
    parser.add_argument("--limit", type=int, default=100, help="QAEdit cases per editor and context (default 100)")
    parser.add_argument("--shards", type=int, default=10, help="runs each row's --limit cases are split into (default 10)")
    parser.add_argument("--editors", default=",".join(EDITORS))
    parser.add_argument("--contexts", default="chat,question")
    parser.add_argument("--through", type=int, metavar="K",
                        help="run shards 1 to K of each row and stop (default: all --shards); a later call continues")
    parser.add_argument("--out", default="bench-mirage", help="where each run's directory and report go")
    parser.add_argument("--table-only", action="store_true", help="only the table of the runs already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    pairs = [(editor, context) for editor in args.editors.split(",") for context in args.contexts.split(",")]
    if args.through is not None and not 1 <= args.through <= args.shards:
        parser.error(f"--through {args.through}: must be a shard number from 1 to --shards ({args.shards})")
    if not args.table_only:
        for shard in range(1, (args.through or args.shards) + 1):
            for pair in pairs:
                run(*pair, shard, args, out)
    reports = {pair: merged(out / f"{pair[0]}-{pair[1]}") for pair in pairs}
    lines, mirages = table(reports, out)
    print("\n".join(lines))
    summary = brief(reports)
    if len(summary) > 2:
        print("\nIn brief:\n\n" + "\n".join(summary))
    first = next((path for path in reports.values() if path is not None), None)
    if first is not None:
        print(f"\nversions: {json.loads(first.read_text()).get('versions')}")
    print(f"\n{len(mirages)} answers teacher forcing scores 1.0 and WILD 0; ten, taken from editor to editor in turn:\n")
    for mirage in spread(mirages)[:10]:
        print(f"- {mirage['editor']}, {mirage['context']}: {mirage['question']!r} (target {mirage['target']!r}) "
              f"-> {mirage['wild answer']!r}")


if __name__ == "__main__":
    main()
